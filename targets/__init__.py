"""squall.targets: the schedulers squall validates, each behind the ``Target`` seam
(``squall.core.view.Target``).

- ``reference``: ``ReferenceTarget``, squall's own scheduler, in the simulator and in real
  processes.
"""

from squall.targets.reference import ReferenceTarget

__all__ = ["ReferenceTarget"]
