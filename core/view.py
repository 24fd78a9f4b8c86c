"""The seams between squall's framework and a scheduler: typed Protocols, nothing else.

Invariants, chaos and scenarios speak to a scheduler only through these (docs/DESIGN.md,
principle 6), never through private attributes:

- ``FaultSurface``: what chaos acts through (``kill_worker``, ``pause_worker``,
  ``set_link``, ``skew_estimates``, ``add_worker``). The simulator changes simulated state;
  a real cluster sends signals to processes and configures the network proxy.
- ``ClientSurface``: what a scenario's client actions act through (``release_keys``,
  ``want_keys``: a client drops its futures, or asks for keys again), beside the fault
  surface of a runtime that performs them (the simulator's; see
  ``squall.chaos.clients``).
- ``ClusterView``: what the cluster-wide validator reads of a running cluster: its
  scheduler, its workers, the graph, the wanted keys, the results reported to the client,
  how often each body ran, the time and what is still in flight.
- ``StealingView``: what the stealing invariants read of a scheduler's work-stealing
  extension (``SchedulerState.stealing``).
- ``Target``: a scheduler implementation squall can validate: the runtimes it offers, how
  to start a cluster of a given ``ClusterShape`` in one of them (a FaultSurface, and where
  the runtime can, a ClusterView), the read-only view of its state, and its stimulus log
  for traces. The reference scheduler is the first (``squall.targets.reference``).
- ``ReusableCluster``: a GraphCluster that can be made ready for another scenario of its
  shape without new processes (``reset``), so exploration reuses one cluster.
- ``ReplayableTarget``: a target whose own state machines can be fed the stimulus records
  of a trace again (``squall replay`` of a trace of its runtime).
- ``GraphCluster``: a cluster that runs squall's task graphs and validates itself: what a
  target's own runtime gives the scenario runner (``squall.scenarios.target_run``); the
  reference scheduler's runtimes are driven by squall's simulator and client instead.

Typing only: importing this module runs no code of the scheduler's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from squall.core.graph import TaskGraph
    from squall.core.outcome import TargetReplay, Violation
    from squall.core.scheduler import SchedulerState
    from squall.core.worker import WorkerState

SIM = "sim"  # the runtime of squall's simulator: virtual time, deterministic
REAL = "real"  # the runtime of real processes on this machine

# Called with (receiver, stimulus) for every stimulus a state machine of the cluster
# receives: "scheduler" or a worker's name, and the stimulus as core/protocol.py defines it.
Recorder = Callable[[str, Any], None]


class FaultSurface(Protocol):
    """What every runtime offers chaos: the only way an injector touches a cluster."""

    def kill_worker(self, name: str) -> Any: ...

    def pause_worker(self, name: str, seconds: float) -> None: ...

    def set_link(self, src: str, dst: str, *, latency: float | None = None,
                 jitter: float | None = None, bandwidth: float | None = None,
                 down: bool | None = None) -> None: ...

    def skew_estimates(self, factor: float, prefix: str | None = None) -> None: ...

    def add_worker(self, name: str | None = None, threads: int | None = None) -> str: ...


class ClientSurface(Protocol):
    """What a runtime that performs client actions offers them (``squall.chaos.clients``):
    the scheduler's own client stimuli, sent by the named client."""

    def release_keys(self, client: str, keys: Sequence[str]) -> None:
        """``client`` drops its futures of ``keys`` (ClientReleasesKeys)."""

    def want_keys(self, client: str, keys: Sequence[str]) -> None:
        """``client`` asks for ``keys`` (again): an UpdateGraph carrying their tasks and
        everything they depend on, as the client knows them, wanting ``keys``."""


class WorkerView(Protocol):
    """A worker incarnation as the validator sees it: its state machine. (A runtime that
    holds the worker's values here also gives it ``data``: key -> value; the store checks
    run where it does.)"""

    @property
    def state(self) -> WorkerState: ...


class ClusterView(Protocol):
    """A running cluster, read only: what the cluster-wide invariants read."""

    @property
    def scheduler(self) -> SchedulerState: ...

    @property
    def workers(self) -> Mapping[str, WorkerView]:
        """The live worker incarnations, by name."""

    @property
    def all_workers(self) -> Sequence[WorkerView]:
        """Every worker incarnation so far, live or not, in the order they started."""

    @property
    def graph(self) -> TaskGraph:
        """Every task submitted so far."""

    @property
    def wanted(self) -> Set[str]:
        """The keys the client wants a result of."""

    @property
    def results(self) -> Mapping[str, tuple[str, Any]]:
        """Key -> ("memory", holders) or ("erred", "error:<blamed key>"), as reported to
        the client (a key reported lost again has none)."""

    @property
    def runs(self) -> Mapping[str, int]:
        """Key -> how many times its body started."""

    @property
    def now(self) -> float:
        """The cluster's time, in seconds (virtual in the simulator)."""

    @property
    def pending(self) -> int:
        """Messages and task bodies in flight: 0 when only housekeeping is left."""


class StealingView(Protocol):
    """A work-stealing extension as the stealing invariants read it (see
    ``squall.invariants.stealing_checks``): each open steal by task, and the occupancy
    booked for steals in flight."""

    @property
    def in_flight(self) -> Mapping[Any, Any]: ...

    @property
    def in_flight_occupancy(self) -> Mapping[Any, float]: ...


class LinkShape(Protocol):
    """One worker's links (to and from everyone) when a cluster starts."""

    @property
    def worker(self) -> str: ...

    @property
    def latency(self) -> float | None: ...

    @property
    def bandwidth(self) -> float | None: ...

    @property
    def jitter(self) -> float | None: ...


class ClusterShape(Protocol):
    """What a cluster looks like when it starts (``squall.scenarios.model.ClusterShape``
    is one). ``tick_interval`` and ``max_time`` are the simulator's."""

    @property
    def workers(self) -> int: ...

    @property
    def threads(self) -> int: ...

    @property
    def latency(self) -> float: ...

    @property
    def bandwidth(self) -> float: ...

    @property
    def jitter(self) -> float: ...

    @property
    def links(self) -> Sequence[LinkShape]: ...

    @property
    def stealing(self) -> bool: ...

    @property
    def allowed_failures(self) -> int: ...

    @property
    def heartbeat_interval(self) -> float | None: ...

    @property
    def heartbeat_timeout(self) -> float | None: ...

    @property
    def tick_interval(self) -> float: ...

    @property
    def max_time(self) -> float: ...


class TaskFuture(Protocol):
    """One key's result to come (a ``distributed.Future``, say)."""

    def done(self) -> bool: ...

    def result(self, timeout: float | None = None) -> Any:
        """The value, or the task's error raised."""

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(future)`` (from any thread) once it is done."""


@runtime_checkable
class GraphCluster(FaultSurface, Protocol):
    """A running cluster of a target's own runtime, as the scenario runner drives it: it
    computes a squall ``TaskGraph`` whose tasks have real bodies (``func(*args, *input
    values)``), checks its own invariants (strict mode: the target's validator) and says
    what they found. ``workers``: the live workers by name. It is closed after the run."""

    @property
    def workers(self) -> Mapping[str, Any]: ...

    def compute(self, graph: TaskGraph) -> Mapping[str, TaskFuture]:
        """Submit every task of ``graph``; a future per key."""

    def check(self, final: bool = False) -> None:
        """The full checks, the cluster being quiescent (``final``: at the run's end)."""

    @property
    def violations(self) -> Sequence[Violation]:
        """What strict mode found so far, first first."""

    @property
    def invariant_checks(self) -> int: ...

    @property
    def transitions(self) -> int:
        """The state transitions the cluster made so far (as many as it can count)."""

    def close(self) -> None: ...


class Target(Protocol):
    """A scheduler implementation the framework validates.

    ``start`` returns a cluster of ``shape`` in ``runtime`` (one of ``runtimes``), with its
    starting links set and strict mode on if ``validate``. What runs the ``SIM`` runtime
    is squall's simulator (``squall.core.sim.SimCluster``), whatever state machines it
    drives; what runs ``REAL`` is the target's own processes. ``record``: the stimulus log
    will be read (a real cluster then streams every stimulus to this process);
    ``network``: links will be slowed or cut (a real cluster then routes every connection
    through a proxy). A cluster that must be closed is a context manager.
    """

    @property
    def name(self) -> str: ...

    @property
    def runtimes(self) -> tuple[str, ...]: ...

    def start(self, runtime: str, shape: ClusterShape, *, seed: int = 0,
              validate: bool = True, record: bool = False,
              network: bool = False) -> FaultSurface: ...

    def view(self, cluster: FaultSurface) -> ClusterView | None:
        """The cluster's state, read only, where this process can see it (else None)."""

    def log_stimuli(self, cluster: FaultSurface, recorder: Recorder) -> None:
        """Call ``recorder(receiver, stimulus)`` for every stimulus the cluster's state
        machines receive from now on (a real cluster: as its records arrive here)."""


@runtime_checkable
class ReusableCluster(Protocol):
    """A cluster that can run another scenario of its shape after ``reset()``."""

    def reset(self, shape: ClusterShape, *, validate: bool, network: bool) -> bool:
        """Make the cluster as it started (every key released, fresh strict mode, counts
        and clock from zero) for a scenario of ``shape`` in these modes; False if it cannot
        be reused for that (close it then)."""


@runtime_checkable
class ReplayableTarget(Target, Protocol):
    """A target that replays the records its ``log_stimuli`` gave into fresh state machines
    of its own."""

    def replay(self, stimuli: Iterable[tuple[int, str, Mapping[str, Any]]], *,
               validate: bool = True) -> TargetReplay:
        """Feed ``(line number, receiver, record)``, in the trace's order, to new state
        machines, checking as they go that each behaves as recorded and, with
        ``validate``, the invariants after each stimulus."""
