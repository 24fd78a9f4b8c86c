"""squall.targets: the schedulers squall validates, each behind the ``Target`` seam
(``squall.core.view.Target``).

- ``reference``: ``ReferenceTarget``, squall's own scheduler, in the simulator and in real
  processes.
- ``dask``: ``DaskTarget`` (``squall.targets.dask.cluster``), dask.distributed's own
  scheduler and worker processes on this machine (the ``dask`` extra).

Every target is known here by its name and the runtimes it offers (``TARGETS``), so
``runtime_names()`` lists them and ``target_for(runtime)`` finds the target that runs one,
without importing a target's own package (dask, say) before it is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from squall.targets.reference import ReferenceTarget

if TYPE_CHECKING:
    from squall.core.view import Target

# target name -> (the runtimes it offers, "module:class"), in the order runtimes are listed
TARGETS: dict[str, tuple[tuple[str, ...], str]] = {
    "reference": (("sim", "real"), "squall.targets.reference:ReferenceTarget"),
    "dask": (("dask",), "squall.targets.dask.cluster:DaskTarget"),
}


def runtime_names() -> tuple[str, ...]:
    """Every runtime some target offers: what ``squall run --runtime`` accepts."""
    return tuple(r for runtimes, _ in TARGETS.values() for r in runtimes)


def target_named(name: str) -> Target:
    """The target called ``name``; ValueError (one line, listing them) if there is none."""
    entry = TARGETS.get(name)
    if entry is None:
        raise ValueError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
    module, _, cls = entry[1].partition(":")
    target: Target = getattr(import_module(module), cls)()
    return target


def target_for(runtime: str) -> Target:
    """The target that offers ``runtime``; ValueError (one line, listing the runtimes) if
    none does."""
    for name, (runtimes, _) in TARGETS.items():
        if runtime in runtimes:
            return target_named(name)
    raise ValueError(f"unknown runtime {runtime!r}; choose one of: "
                     f"{', '.join(runtime_names())}")


__all__ = ["TARGETS", "ReferenceTarget", "runtime_names", "target_for", "target_named"]
