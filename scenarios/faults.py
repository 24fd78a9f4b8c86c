"""Timed faults: a chaos schedule is a tuple of these, applied through the fault surface.

Each fault is a small frozen msgspec Struct tagged by ``kind`` with the virtual time
``at`` it strikes, so a schedule is plain data: it serialises into a scenario file and a
trace, Hypothesis generates and shrinks it, and ``apply(surface)`` acts on anything that
offers the fault surface (``kill_worker``, ``pause_worker``, ``set_link``,
``skew_estimates``, ``add_worker``): the simulator today, the real runtime later.

Links are changed per worker: a worker's links to and from everyone (``(w, "*")`` and
``("*", w)``), so that slowing, partitioning and healing one worker compose.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec


class FaultSurface(Protocol):
    def kill_worker(self, name: str) -> None: ...
    def pause_worker(self, name: str, seconds: float) -> None: ...
    def set_link(self, src: str, dst: str, *, latency: float | None = None,
                 jitter: float | None = None, bandwidth: float | None = None,
                 down: bool | None = None) -> None: ...
    def skew_estimates(self, factor: float, prefix: str | None = None) -> None: ...
    def add_worker(self, name: str | None = None, threads: int | None = None) -> str: ...


class Fault(msgspec.Struct, tag_field="kind", frozen=True, kw_only=True, omit_defaults=True,
            forbid_unknown_fields=True):
    at: float = 0.0  # virtual seconds after the graph is submitted

    def apply(self, surface: FaultSurface) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Raise ValueError naming the bad field."""
        if not self.at >= 0:
            raise ValueError(f"{self.kind_name()} fault: 'at' must be >= 0, got {self.at}")

    def kind_name(self) -> str:
        return str(type(self).__struct_config__.tag)

    def params(self) -> dict[str, Any]:
        """The fault's fields except ``at``: what a trace records beside its kind."""
        return {f: getattr(self, f) for f in self.__struct_fields__ if f != "at"}


class KillWorker(Fault, tag="kill", frozen=True):
    worker: str

    def apply(self, surface: FaultSurface) -> None:
        surface.kill_worker(self.worker)


class PauseWorker(Fault, tag="pause", frozen=True):
    worker: str
    seconds: float = 1.0

    def apply(self, surface: FaultSurface) -> None:
        surface.pause_worker(self.worker, self.seconds)

    def check(self) -> None:
        super().check()
        if not self.seconds > 0:
            raise ValueError(f"pause fault: 'seconds' must be > 0, got {self.seconds}")


class SlowLink(Fault, tag="slow-link", frozen=True):
    """The worker's links (both ways; ``*``: every link) get this latency/bandwidth."""

    worker: str = "*"
    latency: float | None = None
    bandwidth: float | None = None
    jitter: float | None = None

    def apply(self, surface: FaultSurface) -> None:
        for src, dst in _worker_links(self.worker):
            surface.set_link(src, dst, latency=self.latency, bandwidth=self.bandwidth,
                             jitter=self.jitter)

    def check(self) -> None:
        super().check()
        for name in ("latency", "jitter"):
            v = getattr(self, name)
            if v is not None and not v >= 0:
                raise ValueError(f"slow-link fault: {name!r} must be >= 0, got {v}")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ValueError(f"slow-link fault: 'bandwidth' must be > 0, got {self.bandwidth}")


class Partition(Fault, tag="partition", frozen=True):
    """Cut the worker off from the scheduler and every peer, until a ``Heal``."""

    worker: str

    def apply(self, surface: FaultSurface) -> None:
        for src, dst in _worker_links(self.worker):
            surface.set_link(src, dst, down=True)


class Heal(Fault, tag="heal", frozen=True):
    """Reconnect a partitioned worker (``*``: every partition, through ``ChaosDriver``)."""

    worker: str = "*"

    def apply(self, surface: FaultSurface) -> None:
        for src, dst in _worker_links(self.worker):
            surface.set_link(src, dst, down=False)


class Skew(Fault, tag="skew", frozen=True):
    """Multiply the scheduler's duration estimates (of one prefix, or all)."""

    factor: float
    prefix: str | None = None

    def apply(self, surface: FaultSurface) -> None:
        surface.skew_estimates(self.factor, self.prefix)

    def check(self) -> None:
        super().check()
        if not self.factor > 0:
            raise ValueError(f"skew fault: 'factor' must be > 0, got {self.factor}")


class JoinWorker(Fault, tag="join", frozen=True):
    """A worker joins (named: a new incarnation at the address of a dead one)."""

    worker: str | None = None
    threads: int | None = None

    def apply(self, surface: FaultSurface) -> None:
        try:
            surface.add_worker(self.worker, self.threads)
        except ValueError:
            pass  # that worker is still alive: nothing joins

    def check(self) -> None:
        super().check()
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"join fault: 'threads' must be >= 1, got {self.threads}")


AnyFault = KillWorker | PauseWorker | SlowLink | Partition | Heal | Skew | JoinWorker
FAULT_KINDS: tuple[type[Fault], ...] = (KillWorker, PauseWorker, SlowLink, Partition, Heal,
                                        Skew, JoinWorker)


def _worker_links(worker: str) -> list[tuple[str, str]]:
    if worker == "*":
        return [("*", "*")]
    return [(worker, "*"), ("*", worker)]


class ChaosDriver:
    """Applies faults to a surface and remembers what it cut, so ``Heal("*")`` and
    ``heal_all`` reconnect every partitioned worker."""

    def __init__(self, surface: FaultSurface) -> None:
        self.surface = surface
        self.cut: dict[str, None] = {}  # partitioned workers, in order

    def apply(self, fault: Fault) -> None:
        if isinstance(fault, Partition):
            self.cut[fault.worker] = None
        elif isinstance(fault, Heal):
            if fault.worker == "*":
                self.heal_all()
                return
            self.cut.pop(fault.worker, None)
        fault.apply(self.surface)

    def heal_all(self) -> None:
        for worker in list(self.cut):
            Heal(worker=worker).apply(self.surface)
        self.cut.clear()

    def schedule(self, at: Any, faults: tuple[Fault, ...]) -> None:
        """Schedule every fault with ``at(time, fn, *args)`` (``SimCluster.at``)."""
        for fault in faults:
            at(fault.at, self.apply, fault)
