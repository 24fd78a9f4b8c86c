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

Adding a kind is writing its struct here: a ``Fault`` subclass with its tag, its fields and
``apply``, registered with ``@fault_kind`` (its label and colour in the report, how
Hypothesis draws it) and, if a rate schedule is to draw it, an ``at_rate`` class method
(``squall.chaos.kinds`` says what each part is for). The rest of squall finds it in the
registry. Only a kind that needs the clusters to do something new also needs a new method
of the fault surface, in each runtime.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import Any

import msgspec

from squall.chaos.kinds import PREFIX, WORKER, Maybe, RateDraw, fault_kind
from squall.core.view import ClientSurface, FaultSurface


class Fault(msgspec.Struct, tag_field="kind", frozen=True, kw_only=True, omit_defaults=True,
            forbid_unknown_fields=True):
    """Base of every fault kind; each kind defines ``apply(surface)``, how it acts on the
    fault surface, and registers itself (``@fault_kind``). Fields named ``worker`` and
    ``peer`` name workers: the minimizer moves a fault to another worker through them.

    A kind may also define ``at_rate(draw, t)``, a class method: the faults a rate
    schedule draws (from ``draw``, a ``squall.chaos.kinds.RateDraw``) when the kind
    strikes at ``t``; a kind without it is not drawn at a rate."""

    at: float = 0.0  # seconds after the graph is submitted

    def apply(self, surface: FaultSurface) -> None:
        """Act on the cluster, through its fault surface only. (Every registered kind
        defines its own: ``register`` refuses one that does not.)"""
        raise NotImplementedError(f"fault kind {self.kind_name()!r} defines no apply()")

    def drive(self, driver: ChaosDriver) -> bool:
        """Apply through ``driver`` (which remembers the links cut so far); False if the
        surface refused it. Most kinds only ``apply``."""
        driver.act(self)
        return True

    def check(self) -> None:
        """Raise ValueError naming the bad field."""
        if not self.at >= 0:
            raise ValueError(f"{self.kind_name()} fault: 'at' must be >= 0, got {self.at}")

    def ending(self) -> Fault | None:
        """The fault that ends this one, if it lasts a given time (a timed partition's heal):
        the timeline schedules it too."""
        return None

    def timeout_verdict(self) -> Fault | None:
        """The fault that the failure detector's verdict on this one amounts to (the
        minimizer tries it, sooner, in place of the wait; its ``at`` is this fault's);
        None: there is none."""
        return None

    def kind_name(self) -> str:
        return str(type(self).__struct_config__.tag)

    def params(self) -> dict[str, Any]:
        """The fault's fields except ``at``: what a trace records beside its kind."""
        return {f: getattr(self, f) for f in self.__struct_fields__ if f != "at"}


# What a rate schedule draws from (``at_rate``). A drawn pause of 1 s is written out in
# JSON, as it always was: msgspec leaves out a default only if it is the very object, and
# a literal 1.0 here would be PauseWorker's default.
PAUSES = (0.1, 0.5, float("1"), 2.0)  # seconds a worker is paused
LATENCIES = (0.005, 0.02, 0.05)  # seconds a slow link takes
BANDWIDTHS = (None, 50e6, 10e6)  # bytes/s of a slow link (None: as it was)
SKEW_FACTORS = (10.0, 0.1, 3.0, 0.3)


@fault_kind(label="kill", colour="red", draw={"worker": WORKER}, rank=0)
class KillWorker(Fault, tag="kill", frozen=True):
    """The worker's process dies (SIGKILL in real mode): its data and running tasks go."""

    worker: str

    def apply(self, surface: FaultSurface) -> None:
        surface.kill_worker(self.worker)

    @classmethod
    def at_rate(cls, draw: RateDraw, t: float) -> list[Fault]:
        """A worker dies, and its name joins again shortly after."""
        victim = draw.victim(t)
        if victim is None:
            return []
        back = round(t + draw.rng.uniform(0.2, 1.0), 3)
        draw.out_until(victim, back)
        return [KillWorker(at=t, worker=victim), JoinWorker(at=back, worker=victim)]


@fault_kind(label="paused", colour="orange",
            draw={"worker": WORKER, "seconds": (0.5, 0.1, 3.0)}, rank=1)
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

    @classmethod
    def at_rate(cls, draw: RateDraw, t: float) -> list[Fault]:
        victim = draw.victim(t)
        if victim is None:
            return []
        seconds = draw.rng.choice(PAUSES)
        draw.out_until(victim, t + seconds)
        return [PauseWorker(at=t, worker=victim, seconds=seconds)]


@fault_kind(label="slow link", colour="brown",
            draw={"worker": WORKER, "latency": (0.05, 0.5), "bandwidth": (None, 1e6)}, rank=3)
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

    @classmethod
    def at_rate(cls, draw: RateDraw, t: float) -> list[Fault]:
        """Any worker's links to the scheduler, another worker or everyone (nobody is put
        out of action)."""
        rng = draw.rng
        worker = rng.choice(draw.names)
        peers = ["*", "scheduler", *[n for n in draw.names if n != worker]]
        latency = rng.choice(LATENCIES)
        return [SlowNetwork(at=t, worker=worker, peer=rng.choice(peers), latency=latency,
                            jitter=round(latency * rng.choice((0.0, 0.4)), 4),
                            bandwidth=rng.choice(BANDWIDTHS))]


@fault_kind(label="cut off", colour="red", draw={"worker": WORKER}, rank=4)
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

    def ending(self) -> Fault | None:
        return self.heal() if self.seconds is not None else None

    def timeout_verdict(self) -> Fault | None:
        """A worker cut off from everyone for good is declared dead: as if it died."""
        if self.peer == "*" and self.seconds is None:
            return KillWorker(at=self.at, worker=self.worker)
        return None

    @classmethod
    def at_rate(cls, draw: RateDraw, t: float) -> list[Fault]:
        """A worker cut off from everyone, or only from the scheduler, for up to the
        outage."""
        victim = draw.victim(t)
        if victim is None:
            return []
        seconds = round(draw.rng.uniform(0.2, draw.outage), 3)
        draw.out_until(victim, t + seconds + 1.0)  # time to rejoin after the heal
        return [Partition(at=t, worker=victim, peer=draw.rng.choice(("*", "scheduler")),
                          seconds=seconds)]


@fault_kind(label="heal", colour="green")
class Heal(Fault, tag="heal", frozen=True):
    """Reconnect the links a ``Partition`` (or any fault) cut: between ``worker`` and
    ``peer``, and every cut ``ChaosDriver`` remembers that they cover (``*``: every one)."""

    worker: str = "*"
    peer: str = "*"

    def apply(self, surface: FaultSurface) -> None:
        for src, dst in links_between(self.worker, self.peer):
            surface.set_link(src, dst, down=False)

    def drive(self, driver: ChaosDriver) -> bool:
        if self.worker == "*" and self.peer == "*":
            driver.heal_all()
            return True
        # Each cut it covers is healed on the very links it cut (a cut of one link is set
        # on that link, more specific than the heal's).
        own = tuple(links_between(self.worker, self.peer))
        for links in [cut for cut in driver.cut if self.covers(cut)]:
            del driver.cut[links]
            if links != own:
                driver.reconnect(links)
        driver.act(self)
        return True

    def covers(self, links: tuple[tuple[str, str], ...]) -> bool:
        """Whether this heal reconnects a cut of ``links``."""
        ends = {end for link in links for end in link}
        return bool(set(links_between(self.worker, self.peer)) & set(links)) or (
            self.peer == "*" and self.worker in ends) or (self.worker == "*" and self.peer in ends)


@fault_kind(label="skew", colour="gray",
            draw={"factor": (10.0, 0.1, 100.0, 0.01), "prefix": PREFIX}, rank=2)
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

    @classmethod
    def at_rate(cls, draw: RateDraw, t: float) -> list[Fault]:
        prefix = draw.rng.choice([None, *draw.prefixes])
        return [SkewEstimates(at=t, factor=draw.rng.choice(SKEW_FACTORS), prefix=prefix)]


@fault_kind(label="join", colour="green",
            draw={"worker": Maybe(WORKER), "threads": (None, 2)}, rank=5)
class JoinWorker(Fault, tag="join", frozen=True):
    """A worker joins (named: a new incarnation under the name of a dead one)."""

    worker: str | None = None
    threads: int | None = None

    def apply(self, surface: FaultSurface) -> None:
        surface.add_worker(self.worker, self.threads)

    def drive(self, driver: ChaosDriver) -> bool:
        try:
            driver.act(self)
        except ValueError:
            return False  # that worker is alive: nothing joins
        return True

    def check(self) -> None:
        super().check()
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"join fault: 'threads' must be >= 1, got {self.threads}")

    @classmethod
    def at_rate(cls, draw: RateDraw, t: float) -> list[Fault]:
        return [JoinWorker(at=t)]


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


def timeline(faults: Iterable[Fault]) -> list[Fault]:
    """The faults in the order they strike, each followed by the fault that ends it (a
    timed partition by its heal)."""
    out: list[Fault] = []
    for f in faults:
        out.append(f)
        end = f.ending()
        if end is not None:
            out.append(end)
    # Stable: faults at the same time keep the schedule's order (a cut before its heal).
    return sorted(out, key=lambda f: f.at)


Links = tuple[tuple[str, str], ...]


class ChaosDriver:
    """Applies faults to a surface, counts them by kind and remembers what each cut (the
    links it set down), so ``Heal("*")`` and ``heal_all`` reconnect every cut link.

    A fault the surface refuses (a join under the name of a live worker) is skipped and
    not counted.
    """

    def __init__(self, surface: FaultSurface) -> None:
        self.surface = surface
        self.cut: dict[Links, None] = {}  # the links each fault cut, in order
        self.counts: dict[str, int] = {}  # fault kind -> faults applied

    def apply(self, fault: Fault) -> bool:
        """Apply one fault now; False if the surface refused it."""
        if not fault.drive(self):
            return False
        kind = fault.kind_name()
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return True

    def act(self, fault: Fault) -> None:
        """``fault.apply`` on the surface, remembering the links it cuts."""
        watch = _CutWatch(self.surface)
        fault.apply(watch)
        if watch.cut:
            self.cut[tuple(watch.cut)] = None

    def reconnect(self, links: Links) -> None:
        for src, dst in links:
            self.surface.set_link(src, dst, down=False)

    def heal_all(self) -> None:
        for links in list(self.cut):
            self.reconnect(links)
        self.cut.clear()

    def schedule(self, at: Any, faults: Iterable[Fault]) -> None:
        """Schedule every fault with ``at(time, fn, *args)`` (``SimCluster.at``)."""
        for fault in timeline(faults):
            at(fault.at, self.apply, fault)


class _CutWatch:
    """A fault surface passed through, noting the links set down."""

    def __init__(self, surface: FaultSurface) -> None:
        self._surface = surface
        self.cut: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._surface, name)

    def set_link(self, src: str, dst: str, **kwargs: Any) -> None:
        self._surface.set_link(src, dst, **kwargs)
        if kwargs.get("down"):
            self.cut.append((src, dst))


# ------------------------------------------------------------------ what a fault does


def describe_call(method: str, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What a trace records of a fault-surface call (``FaultInjected.target`` and
    ``params``): the worker it names (``name``) or the link (``src->dst``), and its other
    arguments that are not None, in the order they were given."""
    names = _positional(method)
    names += tuple(f"arg{i}" for i in range(len(names), len(args)))  # not in FaultSurface
    named = dict(zip(names, args, strict=False)) | kwargs
    if "src" in named or "dst" in named:
        target = f"{named.pop('src', '*')}->{named.pop('dst', '*')}"
    else:
        name = named.pop("name", None)
        if name is None:  # a client action names its client
            name = named.pop("client", None)
        target = "" if name is None else str(name)
    return target, {k: v for k, v in named.items() if v is not None}


@functools.cache
def _positional(method: str) -> tuple[str, ...]:
    """The names of a surface method's positional parameters (``FaultSurface``'s, or
    ``ClientSurface``'s)."""
    fn = getattr(FaultSurface, method, None) or getattr(ClientSurface, method, None)
    if fn is None:
        return ()
    return tuple(p.name for p in list(inspect.signature(fn).parameters.values())[1:]
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def surface_methods() -> tuple[str, ...]:
    """The methods of the fault surface, as ``FaultSurface`` declares them, then those of
    the client surface (``ClientSurface``: client actions)."""
    return tuple(name for proto in (FaultSurface, ClientSurface)
                 for name, value in vars(proto).items()
                 if callable(value) and not name.startswith("_"))


# A surface call after which the worker it names has no process: its state is gone.
ENDS_PROCESS = frozenset({"kill_worker"})
# What a fault does, by the surface calls it makes (``effects``): each surface method's
# name, and "cut" / "reconnect" for a link set down / up.
OUT_OF_ACTION = frozenset({"kill_worker", "pause_worker", "cut"})  # a worker dead or unreachable
UNNOTICED = frozenset({"pause_worker", "cut"})  # ... that only a heartbeat timeout notices


class SurfaceProbe:
    """A fault surface that only writes down the calls made to it: (method, target,
    params), as a trace would record them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, *describe_call(method, args, kwargs)))
            return ""

        return call


def effects(fault: Fault) -> frozenset[str]:
    """What ``fault`` does to a cluster, by the surface calls it makes: each method's name,
    and "cut" / "reconnect" for links set down / up."""
    probe = SurfaceProbe()
    fault.apply(probe)
    out = {method for method, _, _ in probe.calls}
    for method, _, params in probe.calls:
        if method == "set_link" and params.get("down") is not None:
            out.add("cut" if params["down"] else "reconnect")
    return frozenset(out)


def surface_calls(faults: Iterable[Fault]) -> list[tuple[str, str, Fault]]:
    """The fault-surface calls a ``ChaosDriver`` makes for ``faults`` (their timeline), as
    (method, target) -- what each trace line of a fault names -- and the fault making it."""
    probe = SurfaceProbe()
    driver = ChaosDriver(probe)
    out: list[tuple[str, str, Fault]] = []
    for fault in timeline(faults):
        driver.apply(fault)
        out += [(method, target, fault) for method, target, _ in probe.calls]
        probe.calls.clear()
    return out


# The client actions register as kinds too (``squall.chaos.clients``): wherever a fault
# decodes, they do.
from squall.chaos import clients as _clients  # noqa: E402,F401  (registers them)
