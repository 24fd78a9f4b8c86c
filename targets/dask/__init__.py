"""squall.targets.dask: dask.distributed as a squall target.

- ``view``: read-only views of dask's scheduler and worker state in squall's vocabulary,
  so the catalog's invariant checks run on them unchanged.
- ``invariants``: which catalog invariants apply to dask (and how, or why not), and the
  dask-only invariants (queued and root-ish tasks, unrunnable, restrictions, resources,
  replicas, seceded and cancelled tasks).
- ``checker``: the incremental checking engines for dask's scheduler and worker states.
- ``hooks``: ``DaskValidator``, strict mode on a live dask cluster.

Only ``hooks`` (and what starts a cluster) imports distributed; ``require_dask()`` says
what to install when it is missing or of a version squall does not support.
"""

from __future__ import annotations

import re

# The distributed releases squall's dask target is built and tested against (pyproject's
# "dask" extra pins the same range).
SUPPORTED = ">=2026.8,<2026.9"
_LOW, _HIGH = (2026, 8), (2026, 9)
INSTALL = "pip install 'squall[dask]'"


class DaskUnavailable(ImportError):
    """dask.distributed is missing, or of a version outside ``SUPPORTED``."""


def supported(version: str) -> bool:
    """Whether a distributed version string is in ``SUPPORTED``."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is None:
        return False
    year_month = (int(m.group(1)), int(m.group(2)))
    return _LOW <= year_month < _HIGH


def require_dask() -> str:
    """Import distributed and return its version; ``DaskUnavailable`` (one line, saying
    what to install) when it is missing or unsupported."""
    try:
        import distributed
    except ImportError:
        raise DaskUnavailable(f"dask.distributed is not installed: {INSTALL}") from None
    version = str(getattr(distributed, "__version__", "?"))
    if not supported(version):
        raise DaskUnavailable(f"dask.distributed {version} is installed; squall supports "
                              f"distributed{SUPPORTED}: {INSTALL}")
    return version


__all__ = ["INSTALL", "SUPPORTED", "DaskUnavailable", "require_dask", "supported"]
