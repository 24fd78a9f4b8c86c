"""Fault injectors: small serialisable structs that act only through the fault surface.

A chaos schedule is a tuple of these. Each is a frozen msgspec Struct tagged by ``kind``
with the time ``at`` it strikes (seconds after the graph is submitted: virtual in the
simulator, wall-clock in real mode), so a schedule is plain data: it serialises into a
scenario file and a trace, Hypothesis generates and shrinks it, and ``apply(surface)``
acts on anything that offers the fault surface (``kill_worker``, ``pause_worker``,
``set_link``, ``skew_estimates``, ``add_worker``): ``SimCluster`` or ``LocalCluster``.

Network faults name a worker and, optionally, the ``peer`` at the other end of the link
(a worker, ``"scheduler"``, or ``"*"``: everyone). They change the links both ways, so
slowing, cutting and healing a link compose. ``down`` cuts the connection: in real mode a
TCP connection is cut in both directions at once, and the simulator does the same.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec


class FaultSurface(Protocol):
    """What both runtimes offer chaos: the only way an injector touches a cluster."""

    def kill_worker(self, name: str) -> Any: ...
    def pause_worker(self, name: str, seconds: float) -> None: ...
    def set_link(self, src: str, dst: str, *, latency: float | None = None,
                 jitter: float | None = None, bandwidth: float | None = None,
                 down: bool | None = None) -> None: ...
    def skew_estimates(self, factor: float, prefix: str | None = None) -> None: ...
    def add_worker(self, name: str | None = None, threads: int | None = None) -> str: ...


class Fault(msgspec.Struct, tag_field="kind", frozen=True, kw_only=True, omit_defaults=True,
            forbid_unknown_fields=True):
    """Base of every fault kind; each kind defines ``apply(surface)``, how it acts on the
    fault surface (``AnyFault`` below is the union of the kinds)."""

    at: float = 0.0  # seconds after the graph is submitted

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
    """The worker's process dies (SIGKILL in real mode): its data and running tasks go."""

    worker: str

    def apply(self, surface: FaultSurface) -> None:
        surface.kill_worker(self.worker)


class PauseWorker(Fault, tag="pause", frozen=True):
    """The worker stops for ``seconds`` (SIGSTOP, then SIGCONT, in real mode)."""

    worker: str
    seconds: float = 1.0

    def apply(self, surface: FaultSurface) -> None:
        surface.pause_worker(self.worker, self.seconds)

    def check(self) -> None:
        super().check()
        if not self.seconds > 0:
            raise ValueError(f"pause fault: 'seconds' must be > 0, got {self.seconds}")


class SlowNetwork(Fault, tag="slow-link", frozen=True):
    """The links between ``worker`` and ``peer`` (both ways; ``*``: every one) get this
    latency, jitter (seconds) and bandwidth (bytes/s); a field left out stays as it is."""

    worker: str = "*"
    latency: float | None = None
    bandwidth: float | None = None
    jitter: float | None = None
    peer: str = "*"

    def apply(self, surface: FaultSurface) -> None:
        for src, dst in links_between(self.worker, self.peer):
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
        _check_ends("slow-link", self.worker, self.peer)


class Partition(Fault, tag="partition", frozen=True):
    """Cut the links between ``worker`` and ``peer`` (default: the scheduler and every
    peer), until a ``Heal`` -- or, with ``seconds``, heal them that much later."""

    worker: str
    peer: str = "*"
    seconds: float | None = None

    def apply(self, surface: FaultSurface) -> None:
        for src, dst in links_between(self.worker, self.peer):
            surface.set_link(src, dst, down=True)

    def check(self) -> None:
        super().check()
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"partition fault: 'seconds' must be > 0, got {self.seconds}")
        _check_ends("partition", self.worker, self.peer)

    def heal(self) -> Heal:
        """The Heal that ends this partition (at ``at + seconds`` if it has a duration)."""
        return Heal(at=self.at + (self.seconds or 0.0), worker=self.worker, peer=self.peer)


class Heal(Fault, tag="heal", frozen=True):
    """Reconnect the links a ``Partition`` cut (``*``: every partition, through
    ``ChaosDriver``, which remembers them)."""

    worker: str = "*"
    peer: str = "*"

    def apply(self, surface: FaultSurface) -> None:
        for src, dst in links_between(self.worker, self.peer):
            surface.set_link(src, dst, down=False)


class SkewEstimates(Fault, tag="skew", frozen=True):
    """Multiply the scheduler's duration estimates (of one prefix, or all) by ``factor``:
    placement and stealing see it, results never do."""

    factor: float
    prefix: str | None = None

    def apply(self, surface: FaultSurface) -> None:
        surface.skew_estimates(self.factor, self.prefix)

    def check(self) -> None:
        super().check()
        if not self.factor > 0:
            raise ValueError(f"skew fault: 'factor' must be > 0, got {self.factor}")


class JoinWorker(Fault, tag="join", frozen=True):
    """A worker joins (named: a new incarnation under the name of a dead one)."""

    worker: str | None = None
    threads: int | None = None

    def apply(self, surface: FaultSurface) -> None:
        surface.add_worker(self.worker, self.threads)

    def check(self) -> None:
        super().check()
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"join fault: 'threads' must be >= 1, got {self.threads}")


AnyFault = KillWorker | PauseWorker | SlowNetwork | Partition | Heal | SkewEstimates | JoinWorker
FAULT_KINDS: tuple[type[Fault], ...] = (KillWorker, PauseWorker, SlowNetwork, Partition, Heal,
                                        SkewEstimates, JoinWorker)


def links_between(worker: str, peer: str = "*") -> list[tuple[str, str]]:
    """The directed links (src, dst) between two ends; ``("*", "*")`` is every link."""
    if worker == "*" and peer == "*":
        return [("*", "*")]
    return [(worker, peer), (peer, worker)]


def _check_ends(kind: str, worker: str, peer: str) -> None:
    if not worker:
        raise ValueError(f"{kind} fault: 'worker' must name a worker or '*'")
    if worker == peer and worker != "*":
        raise ValueError(f"{kind} fault: 'peer' must differ from 'worker' ({worker!r})")


def timeline(faults: tuple[Fault, ...] | list[Fault]) -> list[Fault]:
    """The faults in the order they strike, a timed partition followed by its heal."""
    out: list[Fault] = []
    for f in faults:
        out.append(f)
        if isinstance(f, Partition) and f.seconds is not None:
            out.append(f.heal())
    # Stable: faults at the same time keep the schedule's order (a cut before its heal).
    return sorted(out, key=lambda f: f.at)


class ChaosDriver:
    """Applies faults to a surface, counts them by kind and remembers what it cut, so
    ``Heal("*")`` and ``heal_all`` reconnect every partitioned link.

    A fault the surface refuses (a join under the name of a live worker) is skipped and
    not counted.
    """

    def __init__(self, surface: FaultSurface) -> None:
        self.surface = surface
        self.cut: dict[tuple[str, str], None] = {}  # partitioned (worker, peer), in order
        self.counts: dict[str, int] = {}  # fault kind -> faults applied

    def apply(self, fault: AnyFault) -> bool:
        """Apply one fault now; False if the surface refused it."""
        if isinstance(fault, Heal):
            if fault.worker == "*" and fault.peer == "*":
                self.heal_all()
            else:
                # Each partition it covers is healed on the very links it cut (a cut of
                # one link is set on that link, more specific than the heal's).
                for worker, peer in [e for e in self.cut if _covers(fault, e)]:
                    del self.cut[(worker, peer)]
                    if (worker, peer) != (fault.worker, fault.peer):
                        Heal(worker=worker, peer=peer).apply(self.surface)
                fault.apply(self.surface)
        else:
            try:
                fault.apply(self.surface)
            except ValueError:
                if not isinstance(fault, JoinWorker):
                    raise
                return False  # that worker is alive: nothing joins
            if isinstance(fault, Partition):
                self.cut[(fault.worker, fault.peer)] = None
        kind = fault.kind_name()
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return True

    def heal_all(self) -> None:
        for worker, peer in list(self.cut):
            Heal(worker=worker, peer=peer).apply(self.surface)
        self.cut.clear()

    def schedule(self, at: Any, faults: tuple[Fault, ...]) -> None:
        """Schedule every fault with ``at(time, fn, *args)`` (``SimCluster.at``)."""
        for fault in timeline(faults):
            at(fault.at, self.apply, fault)


def _covers(heal: Heal, end: tuple[str, str]) -> bool:
    """Whether ``heal`` reconnects the partition between ``end`` = (worker, peer)."""
    want = set(links_between(heal.worker, heal.peer))
    return bool(want & set(links_between(*end))) or (
        heal.peer == "*" and heal.worker in end) or (heal.worker == "*" and heal.peer in end)
