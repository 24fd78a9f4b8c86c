"""A deterministic simulated cluster driving the real state machines.

One thread, a virtual clock that jumps to the next event, a seeded RNG split into named
sub-streams, and a simulated network with per-link latency, jitter and bandwidth. Task
bodies take their *actual* simulated duration (which may differ from the hint the
scheduler sees) and produce values derived from their key and inputs, so every result
is checked against a sequential evaluation of the graph. Same seed, same stimuli, byte
for byte: ``Outcome.digest`` hashes the stream.

It also provides the fault surface chaos acts through: ``kill_worker``,
``pause_worker``, ``set_link``, ``skew_estimates`` and ``add_worker``, callable at any
virtual time with ``at(time, method, *args)``; and the client surface client actions act
through (``squall.chaos.clients``): ``release_keys`` and ``want_keys``, each the
scheduler's own client stimulus (ClientReleasesKeys, UpdateGraph) from a named client,
handled at once (the clients live beside the scheduler: no link). Each client's futures
are kept apart (``wanted_by``): a key's result stays wanted while any client wants it, and
a report to a client that released the key is dropped, as a released future is.

Connections, as in the real runtime: a link set ``down`` cuts the connection between its
ends (both ways, like a TCP connection) and what was on it is lost. A worker whose
connection to the scheduler was cut, or whom the scheduler declared dead (heartbeat
timeout), is not heard any more: whatever it sends is refused, and the scheduler answers
its first message it can reach with "close". The worker then restarts clean, as a new
incarnation under its name, and registers again -- so no stale result is ever applied.
A transfer from a peer across a cut link waits for the link (retrying every
``GATHER_RETRY`` s) while the peer is alive and still a member; only a dead or removed
peer makes it fail, so a cut link alone never makes data count as lost.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import os
import random
import time as wallclock
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from squall.core import protocol as p
from squall.core.driver import SchedulerDriver, WorkerDriver
from squall.core.graph import GraphError, TaskGraph, TaskSpec
from squall.core.oracle import error_problem, expected_results, output_bytes, task_value
from squall.core.outcome import Outcome
from squall.core.scheduler import SchedulerState, heartbeat_interval
from squall.core.worker import WorkerState
from squall.invariants import Validator

SCHEDULER = "scheduler"
CLIENT = "client"
AUTO = "auto"  # heartbeat_interval: scaled with the number of workers, as the scheduler says
GATHER_RETRY = 1.0  # virtual seconds between attempts to fetch across a cut link
_digest_encoder = msgspec.msgpack.Encoder()
# Stimuli are encoded for the stream digest in batches: one call per batch is far cheaper
# than one per stimulus, and a batch small enough to still be in cache when encoded is
# cheaper than a large one. (The digest depends on it: changing it changes every digest.)
DIGEST_BATCH = 256


class SimulationError(RuntimeError):
    """The simulated cluster was driven into something impossible (a runtime bug)."""


class TimeBudgetExceeded(SimulationError):
    """Virtual time passed ``max_time`` while the work was still progressing (a task body
    running for the first time, or an input on its way to a worker that will run it): the
    run is slow, not stuck. Not a violation: nothing was found wrong, nothing was proved
    right either."""


@dataclass(slots=True)
class Link:
    latency: float
    jitter: float = 0.0
    bandwidth: float = 100e6
    down: bool = False


class SimScheduler(SchedulerDriver):
    """The scheduler's side of the simulated cluster: the one driver loop around its
    ``SchedulerState``. Results are recorded as they are reported; work for the workers
    waits in ``outbox`` (worker -> messages, in order) until the cluster sends it, once the
    stimulus is handled."""

    __slots__ = ("cluster", "outbox")

    def __init__(self, cluster: SimCluster) -> None:
        validator = cluster.validator.scheduler if cluster.validator is not None else None
        super().__init__(SCHEDULER, cluster.scheduler, validator)
        self.recorders.append(cluster._record)
        self.cluster = cluster
        self.outbox: dict[str, list[Any]] = {}

    def send_to_worker(self, ins: Any) -> None:
        msgs = self.outbox.get(ins.worker)
        if msgs is None:
            self.outbox[ins.worker] = [ins]
        else:
            msgs.append(ins)

    compute = send_to_worker  # no bodies to ship here: straight to the outbox, one call

    def report_in_memory(self, ins: p.KeyInMemory) -> None:
        c = self.cluster
        if ins.client in c.wanted_by.get(ins.key, ()):  # (else a future released)
            c.results[ins.key] = ("memory", ins.holders)

    def report_erred(self, ins: p.KeyErred) -> None:
        c = self.cluster
        if ins.client in c.wanted_by.get(ins.key, ()):
            c.results[ins.key] = ("erred", f"error:{ins.blame}")

    def report_lost(self, ins: p.KeyLost) -> None:
        c = self.cluster
        if ins.client in c.wanted_by.get(ins.key, ()):
            c.results.pop(ins.key, None)


class SimWorker(WorkerDriver):
    """A simulated worker process: the one driver loop around its ``WorkerState``, and what
    the process holds (values, busy time, its connection to the scheduler). Reports to the
    scheduler wait in ``outbox`` until the cluster sends them, once the stimulus is
    handled."""

    __slots__ = ("cluster", "data", "alive", "paused_until", "busy", "incarnation",
                 "ws", "broken", "forgotten", "told", "outbox", "held")

    def __init__(self, cluster: SimCluster, name: str, nthreads: int, incarnation: int) -> None:
        super().__init__(name, WorkerState(name, nthreads))
        self.recorders.append(cluster._record)
        self.cluster = cluster
        self.outbox: list[Any] = []
        self.data: dict[str, int] = {}
        self.alive = True
        self.paused_until = 0.0
        self.busy = 0.0
        self.incarnation = incarnation
        self.ws: Any = None  # the scheduler's WorkerInfo of this incarnation, once registered
        self.broken = False  # its connection to the scheduler was cut
        self.forgotten = False  # the scheduler declared it dead
        self.told = False  # a "close" is on its way to it
        # message batches that arrived while it was paused, in arrival order (None: none)
        self.held: list[list[Any]] | None = None

    def execute(self, ins: p.Execute) -> None:
        """The body runs for its actual simulated duration."""
        c = self.cluster
        key = ins.key
        runs = c.runs
        runs[key] = runs.get(key, 0) + 1
        spec = c._specs[key]
        duration = spec.actual_duration
        c._push(c.now + duration, c._execute_done, (self, spec, duration))

    def gather(self, ins: p.GatherDep) -> None:
        self.cluster._start_gather(self, ins)

    def release(self, ins: p.ReleaseData) -> None:
        data = self.data
        for key in ins.keys:
            data.pop(key, None)

    def send_to_scheduler(self, ins: Any) -> None:
        self.outbox.append(ins)


class SimCluster:
    """``SimCluster(workers=4, threads=1, seed=0).run(graph) -> Outcome``.

    Step by step: ``submit(graph)`` (any number of graphs, at any virtual time),
    ``advance(seconds)`` (faults and checks in between), ``drain() -> Outcome``. The
    cluster is a ``squall.core.view.ClusterView`` and a ``FaultSurface``.
    """

    def __init__(
        self,
        workers: int = 4,
        threads: int = 1,
        seed: int = 0,
        *,
        latency: float = 0.001,
        bandwidth: float = 100e6,
        jitter: float = 0.0,
        validate: bool | None = None,
        stealing: bool = False,
        allowed_failures: int = 3,
        heartbeat_interval: float | str | None = AUTO,
        heartbeat_timeout: float | None = None,
        tick_interval: float = 0.1,
        stall_timeout: float = 30.0,
        max_time: float = 1e7,
    ) -> None:
        if workers < 0 or threads < 1:
            raise ValueError(f"need workers >= 0 and threads >= 1, got {workers}, {threads}")
        if isinstance(heartbeat_interval, str) and heartbeat_interval != AUTO:
            raise ValueError(f"heartbeat_interval must be seconds, None or {AUTO!r}, "
                             f"got {heartbeat_interval!r}")
        self.seed = seed
        self.threads = threads
        self.rng = {name: random.Random(f"{seed}:{name}")
                    for name in ("network", "faults", "durations", "workload")}
        self.default_link = Link(latency, jitter, bandwidth)
        # (src, dst) -> the link fields set for it; each field of a link comes from the
        # most specific entry that sets it (exact, (src, *), (*, dst), (*, *)), so slowing
        # one link of a cut-off worker neither heals it nor outlives the heal.
        self._links: dict[tuple[str, str], dict[str, Any]] = {}
        self._link_cache: dict[tuple[str, str], Link] = {}
        self._last_arrival: dict[tuple[str, str], float] = {}
        self.scheduler = SchedulerState(allowed_failures=allowed_failures, bandwidth=bandwidth,
                                        heartbeat_timeout=heartbeat_timeout)
        self.stealing = None
        if stealing:
            from squall.core.stealing import WorkStealing

            self.stealing = WorkStealing(self.scheduler)
        self.heartbeat_interval = heartbeat_interval
        self.tick_interval = tick_interval
        self.stall_timeout = stall_timeout
        self.max_time = max_time
        self.now = 0.0
        self.workers: dict[str, SimWorker] = {}  # live workers by name
        self.all_workers: list[SimWorker] = []  # every incarnation, for busy time
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...], bool]] = []
        self._seq = 0
        self._periodic = 0  # events queued that are periodic housekeeping (ticks, heartbeats)
        self._sid = 0
        self._digest = hashlib.sha256()  # (hardware-accelerated here: twice blake2b's speed)
        self._unhashed: list[Any] = []
        self._n_hashed = 0  # stimuli hashed into _digest (the rest wait in _unhashed)
        self.recorders: list[Callable[[str, Any], None]] = []  # (target, stimulus)
        self.faults: dict[str, int] = {}
        self.refused = 0  # messages from cut-off or declared-dead incarnations, dropped
        self.rejoins = 0  # workers that restarted clean after being cut off or declared dead
        self.runs: dict[str, int] = {}  # key -> body starts
        self.graph = TaskGraph()  # every task submitted so far
        self._specs: dict[str, TaskSpec] = self.graph.tasks
        self._order: list[str] = []  # the keys submitted, each graph in topological order
        self.results: dict[str, tuple[str, Any]] = {}
        self.wanted: set[str] = set()  # the keys a client wants
        self.wanted_by: dict[str, set[str]] = {}  # key -> the clients that want it
        self._held: dict[str, TaskSpec] = {}  # tasks held back until a client wants them
        self.until = 0.0  # a run lasts at least this long (client actions to come)
        self._client_backlog = 0  # graphs submitted, not delivered yet
        self._done_time = 0.0
        self._incarnations = 0
        self._worker_names = 0
        self._started = False
        if validate is None:
            validate = os.environ.get("SQUALL_VALIDATE", "") not in ("", "0")
        self.validator: Validator | None = Validator(self) if validate else None
        # The scheduler's process; each SimWorker is a worker's.
        self._scheduler_driver = SimScheduler(self)
        for _ in range(workers):
            self._start_worker(None, threads)

    # ------------------------------------------------------------------ the fault surface

    def kill_worker(self, name: str) -> None:
        """The worker's process dies now: its data and running tasks are gone."""
        sw = self.workers.pop(name, None)
        if sw is None:
            return
        self._count_fault("kill")
        self._process_ends(sw)

    def _process_ends(self, sw: SimWorker) -> None:
        """The worker's process is gone: data and running tasks with it."""
        name = sw.name
        sw.alive = False
        sw.data.clear()
        # The scheduler sees the connection drop after the link's latency; across a cut
        # link, the launcher's notice (same machine, no network) tells it at once.
        msg = p.RemoveWorker(stimulus_id=self._new_sid("worker-died"), time=self.now,
                             worker=name, reason="died")
        if not self._send_to_scheduler(name, [msg]):
            self._send_to_scheduler(None, [msg])
        if self.validator is not None:
            self.validator.worker_gone(sw.state)
            sw.validator = None

    def pause_worker(self, name: str, seconds: float) -> None:
        """The worker stops (SIGSTOP) for ``seconds``: nothing it does progresses."""
        sw = self.workers.get(name)
        if sw is not None:
            sw.paused_until = max(sw.paused_until, self.now + seconds)
            self._count_fault("pause")

    def set_link(self, src: str, dst: str, *, latency: float | None = None,
                 jitter: float | None = None, bandwidth: float | None = None,
                 down: bool | None = None) -> None:
        """Change the link(s) from ``src`` to ``dst`` (a worker, "scheduler" or "*")."""
        entry = self._links.setdefault((src, dst), {})
        for field, value in (("latency", latency), ("jitter", jitter),
                             ("bandwidth", bandwidth), ("down", down)):
            if value is not None:
                entry[field] = value
        self._link_cache.clear()
        self._count_fault("link-down" if down else "link")
        if down:
            # Cut connections to the scheduler are gone for good: what was on them is lost,
            # and the worker will have to register again once it can reach the scheduler.
            for sw in self.workers.values():
                if not sw.broken and self._connection(sw.name, SCHEDULER)[1]:
                    sw.broken = True

    def skew_estimates(self, factor: float, prefix: str | None = None) -> None:
        self._count_fault("skew")
        self._send_to_scheduler(None, [p.SkewEstimates(
            stimulus_id=self._new_sid("skew"), time=self.now, factor=factor, prefix=prefix)])

    def add_worker(self, name: str | None = None, threads: int | None = None) -> str:
        """A worker joins (at ``name``: a new incarnation at the same address)."""
        if name is not None and name in self.workers:
            raise ValueError(f"worker {name!r} is alive; kill it before replacing it")
        sw = self._start_worker(name, threads or self.threads)
        if self._started:
            self._count_fault("join")
        return sw.name

    def at(self, time: float, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` at virtual ``time`` (a fault, a new worker, ...)."""
        self._push(time, self._call, (fn, args))

    # ------------------------------------------------------------------ the client surface

    def release_keys(self, client: str, keys: Sequence[str]) -> None:
        """``client`` drops its futures of ``keys`` now: a key no client wants any more
        needs no result (the one it had is dropped)."""
        if self._client_backlog:  # behind the client's graph on its way: in order
            self._push(self.now, self._call, (SimCluster.release_keys, (self, client, keys)))
            return
        self._count_fault("release")
        wanted_by = self.wanted_by
        for key in keys:
            clients = wanted_by.get(key)
            if clients is not None and client in clients:
                clients.discard(client)
                if not clients:
                    del wanted_by[key]
                    self.wanted.discard(key)
                    self.results.pop(key, None)
        self._deliver_to_scheduler([p.ClientReleasesKeys(
            stimulus_id=self._new_sid("client-releases-keys"), time=self.now, client=client,
            keys=tuple(keys))])

    def want_keys(self, client: str, keys: Sequence[str]) -> None:
        """``client`` asks for ``keys`` now: an UpdateGraph carrying their tasks and every
        task they depend on (in a topological order), wanting ``keys``. A key held back
        from the first submission is submitted with it. ValueError if a key is not one
        the clients know."""
        specs = self.graph.tasks
        held = self._held
        unknown = [k for k in keys if k not in specs and k not in held]
        if unknown:
            raise ValueError(f"want: key(s) never given to the cluster: {unknown[:5]}")
        if self._client_backlog:  # behind the client's graph on its way: in order
            self._push(self.now, self._call, (SimCluster.want_keys, (self, client, keys)))
            return
        order: list[str] = []  # keys and their ancestors, dependencies first
        seen: set[str] = set()
        for key in keys:
            stack: list[tuple[str, bool]] = [(key, False)]
            while stack:
                k, done = stack.pop()
                if done:
                    order.append(k)
                    continue
                if k in seen:
                    continue
                seen.add(k)
                stack.append((k, True))
                spec = specs.get(k) or held[k]
                stack.extend((d, False) for d in reversed(spec.deps) if d not in seen)
        new = [held.pop(k) for k in order if k in held]
        if new:
            self.graph = TaskGraph([*self.graph, *new])
            self._specs = specs = self.graph.tasks
            self._order.extend(spec.key for spec in new)
        self._count_fault("want")
        for key in keys:
            self.wanted_by.setdefault(key, set()).add(client)
            self.wanted.add(key)
        self._deliver_to_scheduler([p.UpdateGraph(
            stimulus_id=self._new_sid("update-graph"), time=self.now, client=client,
            tasks=tuple([specs[k].to_msg() for k in order]), wanted=tuple(keys))])

    # ------------------------------------------------------------------ running

    def run(self, graph: TaskGraph, *, wanted: Iterable[str] | None = None,
            later: Iterable[str] = (), until: float = 0.0) -> Outcome:
        """``submit(graph, wanted=wanted, later=later)``, then ``drain()``: run until every
        wanted key has a result (and at least until virtual time ``until``: client actions
        to come), and check them all."""
        # A run allocates millions of short-lived acyclic objects beside a large live heap;
        # the cyclic GC's repeated scans of that heap would cost ~40% of the wall time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            graph, order = self._hold(graph, self._check(graph), later)
            self.until = max(self.until, until)
            started = wallclock.perf_counter()
            self._submit(graph, order, wanted)
            outcome = self._drain()
            outcome.wall_time = wallclock.perf_counter() - started
        finally:
            # Nothing the GC tracks is allocated between here and the return: the first
            # collection (of everything the run allocated) is left to the caller's time.
            if gc_was_enabled:
                gc.enable()
        return outcome

    def submit(self, graph: TaskGraph, *, wanted: Iterable[str] | None = None,
               later: Iterable[str] = ()) -> None:
        """Submit ``graph`` now (GraphError if it is not valid). Its tasks may depend on
        keys submitted before; its own keys must be new. ``wanted``: the keys the client
        wants a result of (default: every key of ``graph``). ``later``: keys of ``graph``
        held back, submitted when a client wants them (``want_keys``); whatever depends
        on one must be held back too. Nothing runs until ``advance``, ``drain`` or
        ``run``."""
        self._submit(*self._hold(graph, self._check(graph), later), wanted)

    def advance(self, seconds: float) -> None:
        """Run every event due in the next ``seconds`` of virtual time; the clock then reads
        ``now + seconds``. Nothing is judged here: an unfinished key or a quiet cluster is
        a failure only for ``drain``."""
        if not seconds >= 0:
            raise ValueError(f"advance needs seconds >= 0, got {seconds}")
        until = self.now + seconds
        events = self._events
        pop = heapq.heappop
        while events and events[0][0] <= until:
            t, _, fn, args, periodic = pop(events)
            self.now = t
            if periodic:
                self._periodic -= 1
            fn(*args)
        self.now = until

    def drain(self) -> Outcome:
        """Run until every wanted key has a result and every death is noticed, then check
        every result (strict mode: and the end-of-run invariants). SimulationError if the
        cluster gets stuck on the way; ``TimeBudgetExceeded`` (one) if virtual time passes
        ``max_time`` while the work still progresses (slow, not stuck: no violation)."""
        gc_was_enabled = gc.isenabled()
        gc.disable()  # as in run()
        try:
            started = wallclock.perf_counter()
            outcome = self._drain()
            outcome.wall_time = wallclock.perf_counter() - started
        finally:
            if gc_was_enabled:
                gc.enable()
        return outcome

    def _check(self, graph: TaskGraph) -> list[str]:
        """``graph``'s keys in a topological order, if it can be submitted now."""
        known = self.graph.tasks
        if known:
            again = [key for key in graph.tasks if key in known]
            if again:
                raise GraphError(f"key(s) submitted before: {again[:5]}")
        order = graph.validate(known=known)
        for spec in graph:
            if spec.func is not None:
                raise GraphError(f"task {spec.key!r} has a real function; the simulator runs "
                                 "simulated bodies (sim_duration, fails)")
        return order

    def _hold(self, graph: TaskGraph, order: list[str],
              later: Iterable[str]) -> tuple[TaskGraph, list[str]]:
        """``graph`` without the keys held back (``later``), and its order."""
        later = set(later)
        if not later:
            return graph, order
        unknown = sorted(later - graph.tasks.keys())
        if unknown:
            raise GraphError(f"key(s) to submit later are not in the graph: {unknown[:5]}")
        specs = graph.tasks
        now = TaskGraph(specs[k] for k in order if k not in later)
        now.validate(known=self.graph.tasks)  # nothing in it depends on a key held back
        for k in order:
            if k in later:
                self._held[k] = specs[k]
        return now, [k for k in order if k not in later]

    def _submit(self, graph: TaskGraph, order: list[str], wanted: Iterable[str] | None) -> None:
        if wanted is None:
            wanted = order
        else:
            wanted = list(wanted)
            unknown = [k for k in wanted if k not in graph.tasks and k not in self.graph.tasks]
            if unknown:
                raise GraphError(f"wanted key(s) never submitted: {unknown[:5]}")
        # The first graph is held as it is; later ones join a copy (never the caller's).
        self.graph = TaskGraph([*self.graph, *graph]) if self._order else graph
        self._specs = self.graph.tasks
        self._order.extend(order)
        self.wanted.update(wanted)
        for key in wanted:
            self.wanted_by.setdefault(key, set()).add(CLIENT)
        # Delivered in turn (as a message from the client's machine); a client action
        # meanwhile waits behind it: a client's messages arrive in the order it sends them.
        self._client_backlog += 1
        self._push(self.now, self._deliver_from_client, ([p.UpdateGraph(
            stimulus_id=self._new_sid("update-graph"), time=self.now, client=CLIENT,
            tasks=graph.to_msgs(order), wanted=tuple(wanted))],))
        if not self._started:
            self._started = True
            self._schedule_periodic()

    def _drain(self) -> Outcome:
        self._loop()
        return self._outcome(self.graph, self._order)

    def _loop(self) -> None:
        events = self._events
        pop = heapq.heappop
        results = self.results
        wanted = self.wanted
        validator = self.validator
        max_time = self.max_time
        stuck_since: float | None = None
        # Done when every wanted key has a result and the scheduler has heard of every
        # death (a result reported just before its holder died is not a result yet), and
        # no client action is still to come. (Clients change what is wanted as it runs;
        # a result is only ever kept for a wanted key.)
        while len(results) < len(wanted) or self._death_unnoticed() or (
                events and events[0][0] <= self.until):
            if not events:
                self._stuck("no events left")
            t, _, fn, args, periodic = pop(events)
            self.now = t
            if not periodic:
                stuck_since = None
            else:
                self._periodic -= 1
                if self.pending == 0:  # nothing but housekeeping left
                    if stuck_since is None:
                        stuck_since = t
                    elif t - stuck_since > self.stall_timeout:
                        self._stuck(f"no progress for {self.stall_timeout:g} virtual seconds")
            if t > max_time:
                self._over_time()
            fn(*args)
            if validator is not None and self.pending == 0:
                validator.quiescent(self)
        self._done_time = self.now
        if validator is not None:
            validator.check_end(self)

    @property
    def pending(self) -> int:
        """Events queued that are not periodic housekeeping: 0 when the cluster is quiet."""
        return len(self._events) - self._periodic

    def _death_unnoticed(self) -> bool:
        known = self.scheduler.workers
        return any(not sw.alive and sw.ws is not None and known.get(sw.name) is sw.ws
                   for sw in self.all_workers)

    def _over_time(self) -> None:
        """Virtual time passed ``max_time``: over budget if the work still progresses
        (``TimeBudgetExceeded``), else stuck (a livelock keeps events coming, but nothing
        new gets done)."""
        why = f"virtual time passed max_time={self.max_time:g}"
        progressing = self._progressing()
        if not progressing:
            self._stuck(why)
        missing = len(self.wanted) - len(self.results)
        raise TimeBudgetExceeded(
            f"time budget exceeded at t={self.now:.3f}: {why} with work still progressing "
            f"({progressing}); {missing} keys unfinished")

    def _progressing(self) -> str:
        """What shows that the work still progresses ("": nothing does): a task body
        running on a member worker for the first time (or again, as often as deaths
        account for), or a transfer on its way to a member worker, bringing data."""
        member = self._member
        deaths = sum(1 for sw in self.all_workers if not sw.alive or sw.broken or sw.forgotten)
        runs = self.runs
        executing: list[str] = []
        fetching: list[str] = []
        for _, _, fn, args, _ in self._events:
            func = getattr(fn, "__func__", None)
            if func is SimCluster._execute_done:
                sw, spec = args[0], args[1]
                if member(sw) and runs.get(spec.key, 0) <= 1 + deaths:
                    executing.append(spec.key)
            elif func is SimCluster._gather_done:
                if member(args[0]) and args[2]:
                    fetching.extend(args[2])
        what = []
        if executing:
            what.append(f"{len(executing)} task(s) executing: {sorted(executing)[:3]}")
        if fetching:
            what.append(f"{len(fetching)} input(s) on their way: {sorted(fetching)[:3]}")
        return "; ".join(what)

    def _member(self, sw: SimWorker) -> bool:
        """Whether the scheduler hears ``sw`` (alive, connected, this incarnation a member):
        what it computes counts."""
        return (sw.alive and not sw.broken and not sw.forgotten and sw.ws is not None
                and self.scheduler.workers.get(sw.name) is sw.ws)

    def _stuck(self, why: str) -> None:
        missing = sorted(self.wanted - set(self.results))
        if self.validator is not None:
            self.validator.check_stuck(self, why)
        raise SimulationError(
            f"cluster stuck at t={self.now:.3f}: {why}; {len(missing)} keys unfinished, "
            f"first: {missing[:5]}"
        )

    def _outcome(self, graph: TaskGraph, order: list[str]) -> Outcome:
        expected = expected_results(graph, order)
        wrong: list[str] = []
        n_erred = 0
        sched = self.scheduler
        workers = self.workers
        results = self.results
        tasks = sched.tasks
        wanted = self.wanted
        every_key = len(wanted) == len(expected)  # (wanted keys are keys of the graph)
        # In graph order, not the set's: records made in that order are read in it.
        for key, want in expected.items():
            if not every_key and key not in wanted:
                continue
            got = results.get(key)
            if got is None:
                wrong.append(key)
            elif got[0] == "erred":
                n_erred += 1
                if not self._error_explained(key, got[1], want):
                    wrong.append(key)
            else:
                ts = tasks.get(key)
                if ts is None or not ts.who_has:
                    wrong.append(key)
                    continue
                for ws in ts.who_has:
                    sw = workers.get(ws.name)
                    if sw is None or sw.data.get(key) != want:
                        wrong.append(key)
                        break
        busy: dict[str, float] = {}
        for sw in self.all_workers:
            busy[sw.name] = busy.get(sw.name, 0.0) + sw.busy
        transitions = sched.transition_counter + sum(
            sw.state.transition_counter for sw in self.all_workers)
        return Outcome(
            results_ok=not wrong,
            makespan=self._done_time,
            n_tasks=len(graph),
            transitions=transitions,
            digest=self._stream_digest(),
            busy=busy,
            n_stimuli=self._n_hashed + len(self._unhashed),
            n_erred=n_erred,
            wrong=sorted(wrong)[:20],
            stale_reports=sched.stale_reports,
            faults=dict(self.faults),
            invariant_checks=self.validator.checks if self.validator is not None else 0,
            runs={k: n for k, n in self.runs.items() if n > 1},
            steals=self.stealing.count if self.stealing is not None else 0,
        )

    def _stream_digest(self) -> str:
        self._flush_digest()
        return self._digest.hexdigest()[:32]

    def _error_explained(self, key: str, reported: str, want: int | str) -> bool:
        blame = reported.removeprefix("error:")
        blamed = self.scheduler.tasks.get(blame)
        killed = blamed is not None and blamed.killed
        return error_problem(self.graph, key, blame, want, killed=killed) is None

    # ------------------------------------------------------------------ events and network

    def _push(self, t: float, fn: Callable[..., None], args: tuple[Any, ...],
              periodic: bool = False) -> None:
        self._seq = seq = self._seq + 1
        if periodic:
            self._periodic += 1
        heapq.heappush(self._events, (t, seq, fn, args, periodic))

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        fn(*args)

    def _new_sid(self, kind: str) -> str:
        self._sid += 1
        return f"{kind}-{self._sid}"

    def _count_fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def _link(self, src: str, dst: str) -> Link:
        link = self._link_cache.get((src, dst))
        if link is None:
            links = self._links
            entries = [e for e in (links.get((src, dst)), links.get((src, "*")),
                                   links.get(("*", dst)), links.get(("*", "*"))) if e]
            if not entries:
                link = self.default_link
            else:
                d = self.default_link
                fields: dict[str, Any] = {"latency": d.latency, "jitter": d.jitter,
                                          "bandwidth": d.bandwidth, "down": d.down}
                for entry in reversed(entries):  # the most specific entry wins
                    fields.update(entry)
                link = Link(**fields)
            self._link_cache[(src, dst)] = link
        return link

    def _connection(self, src: str, dst: str) -> tuple[Link, bool]:
        """The link from src to dst, and whether the connection between them is cut (a
        cut link cuts both ways)."""
        if not self._links:  # no link was ever set: the default link everywhere
            return self.default_link, False
        link = self._link(src, dst)
        return link, link.down or self._link(dst, src).down

    def _arrival(self, src: str, dst: str) -> float | None:
        """When a message sent now from src reaches dst (FIFO per link), or None if cut."""
        link, cut = self._connection(src, dst)
        if cut:
            return None
        delay = link.latency
        if link.jitter:
            delay += link.jitter * (2 * self.rng["network"].random() - 1)
            delay = max(delay, 0.0)
        arrival = self.now + delay
        key = (src, dst)
        last = self._last_arrival.get(key, 0.0)
        if arrival < last:
            arrival = last
        self._last_arrival[key] = arrival
        return arrival

    def _record(self, target: str, msg: Any) -> None:
        """A stimulus is delivered: into the stream digest, and to the recorders (traces)."""
        batch = self._unhashed
        batch.append(msg)
        if len(batch) >= DIGEST_BATCH:
            self._flush_digest()
        if self.recorders:
            for rec in self.recorders:
                rec(target, msg)

    def _flush_digest(self) -> None:
        if self._unhashed:
            self._digest.update(_digest_encoder.encode(self._unhashed))
            self._n_hashed += len(self._unhashed)
            self._unhashed = []

    # ------------------------------------------------------------------ scheduler side

    def _send_to_scheduler(self, src: str | None, msgs: list[Any], periodic: bool = False,
                           sender: SimWorker | None = None) -> bool:
        """``periodic``: housekeeping (heartbeats) that must not count as progress pending.
        ``sender``: the worker incarnation whose connection carries it. False: cut, lost."""
        if src is None:  # client or cluster manager: same machine, no link
            self._push(self.now, self._deliver_to_scheduler, (msgs, sender), periodic)
            return True
        t = self._arrival(src, SCHEDULER)
        if t is None:
            return False
        self._push(t, self._deliver_to_scheduler, (msgs, sender), periodic)
        return True

    def _deliver_from_client(self, msgs: list[Any]) -> None:
        self._client_backlog -= 1
        self._deliver_to_scheduler(msgs)

    def _deliver_to_scheduler(self, msgs: list[Any], sender: SimWorker | None = None) -> None:
        if sender is not None and (sender.broken or sender.forgotten):
            self._refuse(sender, len(msgs))
            return
        driver = self._scheduler_driver
        stimulate = driver.stimulate
        outbox = driver.outbox
        for msg in msgs:
            stimulate(msg)
            if sender is not None and type(msg) is p.AddWorker:
                # (before its work is sent: that goes to this incarnation's connection)
                sender.ws = self.scheduler.workers.get(sender.name)
            if outbox:
                self._send_to_workers(outbox)

    def _refuse(self, sw: SimWorker, n: int) -> None:
        """Messages from a connection the scheduler does not know (any more): dropped, and
        the worker is told to close (as the real scheduler answers an unknown peer)."""
        self.refused += n
        self._tell_to_close(sw)

    def _tell_to_close(self, sw: SimWorker) -> None:
        if sw.told or not sw.alive:
            return
        t = self._arrival(SCHEDULER, sw.name)
        if t is not None:  # else lost: it is told when a later message gets through
            sw.told = True
            self._push(t, self._close_worker, (sw,))

    def _close_worker(self, sw: SimWorker) -> None:
        """"close" reaches the worker: it restarts clean, a new incarnation under its name."""
        if not sw.alive or self.workers.get(sw.name) is not sw:
            return
        if sw.paused_until > self.now:
            self._push(sw.paused_until, self._close_worker, (sw,))
            return
        del self.workers[sw.name]
        self.rejoins += 1
        self._process_ends(sw)
        self._start_worker(sw.name, sw.state.nthreads)

    def _forget_declared_dead(self) -> None:
        """Workers the scheduler declared dead (heartbeat timeout) are told to close, as the
        real scheduler does; their connection is no longer heard."""
        known = self.scheduler.workers
        for sw in self.workers.values():
            if sw.ws is not None and not sw.forgotten and known.get(sw.name) is not sw.ws:
                sw.forgotten = True
                if not sw.broken:
                    self._tell_to_close(sw)

    def _send_to_workers(self, outbox: dict[str, list[Any]]) -> None:
        """What one stimulus made the scheduler send, one message batch per worker; the
        outbox is left empty."""
        for name, msgs in outbox.items():
            sw = self.workers.get(name)
            if sw is None or sw.broken:  # a cut connection: lost
                continue
            if sw.ws is not self.scheduler.workers.get(name):
                continue  # sent to an older incarnation's connection: gone with its process
            t = self._arrival(SCHEDULER, name)
            if t is not None:
                self._push(t, self._deliver_to_worker, (sw, msgs))
        outbox.clear()

    # ------------------------------------------------------------------ worker side

    def _start_worker(self, name: str | None, threads: int) -> SimWorker:
        if name is None:
            while f"w{self._worker_names}" in self.workers:
                self._worker_names += 1
            name = f"w{self._worker_names}"
            self._worker_names += 1
        self._incarnations += 1
        sw = SimWorker(self, name, threads, self._incarnations)
        self.workers[name] = sw
        self.all_workers.append(sw)
        if self.validator is not None:
            self.validator.watch_worker(sw.state)
            sw.validator = self.validator.workers.get(sw.state)
        # Workers of the initial cluster are registered before anything is submitted.
        if not self._send_to_scheduler(name if self._started else None, [p.AddWorker(
                stimulus_id=self._new_sid("add-worker"), time=self.now, worker=name,
                nthreads=threads)], sender=sw):
            sw.broken = True  # cut off from the start: it registers once it is told to
        every = self._heartbeat_every()
        if every and self._started:
            self._push(self.now + every, self._heartbeat, (sw,), True)
        return sw

    def _deliver_to_worker(self, sw: SimWorker, msgs: list[Any]) -> None:
        if not sw.alive:
            return
        if sw.paused_until > self.now:
            # Held in arrival order, as a stopped process's socket buffer holds them: each
            # batch deferred on its own would let a later one overtake it when the pause
            # is extended meanwhile (a steal request before the task it steals).
            if sw.held is None:
                sw.held = []
                self._push(sw.paused_until, self._release_held, (sw,))
            sw.held.append(msgs)
            return
        stimulate = sw.stimulate
        for msg in msgs:
            stimulate(msg)
            if sw.outbox:  # what the stimulus made it report: one message batch
                self._send_to_scheduler(sw.name, sw.outbox, sender=sw)
                sw.outbox = []

    def _release_held(self, sw: SimWorker) -> None:
        """The pause that held ``sw``'s messages is over (or was extended: then they are
        held again, in the same order)."""
        held, sw.held = sw.held or [], None
        for msgs in held:
            self._deliver_to_worker(sw, msgs)

    def _execute_done(self, sw: SimWorker, spec: TaskSpec, duration: float) -> None:
        if not sw.alive:
            return
        if sw.paused_until > self.now:
            self._push(sw.paused_until, self._execute_done, (sw, spec, duration))
            return
        key = spec.key
        sw.busy += duration
        sid = self._new_sid("execute")
        if spec.fails:
            msg: Any = p.ExecuteFailure(stimulus_id=sid, time=self.now, key=key,
                                        exception=f"SimulatedError: task {key!r} failed")
        else:
            data = sw.data
            inputs: list[int] = []
            try:
                for d in spec.deps:  # (a loop: cheaper than a comprehension for 0-3 inputs)
                    inputs.append(data[d])
            except KeyError as e:
                raise SimulationError(
                    f"worker {sw.name!r} ran {key!r} without its input {e.args[0]!r}") from None
            data[key] = task_value(key, inputs)
            msg = p.ExecuteSuccess(stimulus_id=sid, time=self.now, key=key,
                                   nbytes=output_bytes(spec), duration=duration)
        sw.stimulate(msg)
        if sw.outbox:
            self._send_to_scheduler(sw.name, sw.outbox, sender=sw)
            sw.outbox = []

    def _start_gather(self, sw: SimWorker, ins: p.GatherDep) -> None:
        holder = self.workers.get(ins.holder)
        link, cut = self._connection(ins.holder, sw.name)
        if cut and holder is not None and holder.ws is not None and \
                self.scheduler.workers.get(holder.name) is holder.ws:
            # The peer is alive and a member: the fetch waits for the link to come back.
            self._push(self.now + GATHER_RETRY, self._retry_gather, (sw, ins))
            return
        if holder is None or cut:
            # connection refused (dead peer) or timed out (cut link to a removed peer)
            delay = 2 * link.latency if holder is None else 1.0
            self._push(self.now + delay, self._gather_done, (sw, ins.holder, {}, ins.keys, {}))
            return
        start = max(self.now, holder.paused_until)
        data = holder.data
        specs = self._specs
        values: dict[str, int] = {}
        sizes: dict[str, int] = {}
        missing: list[str] = []
        for k in ins.keys:
            if k in data:
                values[k] = data[k]
                sizes[k] = output_bytes(specs[k])
            else:
                missing.append(k)
        t = start + link.latency + sum(sizes.values()) / link.bandwidth
        self._push(t, self._gather_done, (sw, ins.holder, values, tuple(missing), sizes))

    def _retry_gather(self, sw: SimWorker, ins: p.GatherDep) -> None:
        if not sw.alive:
            return
        if sw.paused_until > self.now:
            self._push(sw.paused_until, self._retry_gather, (sw, ins))
            return
        self._start_gather(sw, ins)

    def _gather_done(self, sw: SimWorker, holder: str, values: dict[str, int],
                     missing: tuple[str, ...], sizes: dict[str, int]) -> None:
        if not sw.alive:
            return
        if sw.paused_until > self.now:
            self._push(sw.paused_until, self._gather_done, (sw, holder, values, missing, sizes))
            return
        sw.data.update(values)
        sid = self._new_sid("gather")
        msg: Any
        if missing:
            msg = p.GatherDepFailure(stimulus_id=sid, time=self.now, holder=holder,
                                     keys=missing, nbytes=sizes)
        else:
            msg = p.GatherDepSuccess(stimulus_id=sid, time=self.now, holder=holder, nbytes=sizes)
        sw.stimulate(msg)
        if sw.outbox:
            self._send_to_scheduler(sw.name, sw.outbox, sender=sw)
            sw.outbox = []

    # ------------------------------------------------------------------ periodic events

    def _schedule_periodic(self) -> None:
        if self.stealing is not None or self.scheduler.heartbeat_timeout is not None:
            self._push(self.now + self.tick_interval, self._tick, (), True)
        every = self._heartbeat_every()
        if every:
            for sw in self.workers.values():
                self._push(self.now + every, self._heartbeat, (sw,), True)

    def _tick(self) -> None:
        self._deliver_to_scheduler([p.Tick(stimulus_id=self._new_sid("tick"), time=self.now)])
        self._forget_declared_dead()
        self._push(self.now + self.tick_interval, self._tick, (), True)

    def _heartbeat(self, sw: SimWorker) -> None:
        if not sw.alive:
            return
        if sw.paused_until <= self.now:
            hb = sw.state.heartbeat(self.now, self._new_sid("heartbeat"))
            self._send_to_scheduler(sw.name, [hb], periodic=True, sender=sw)
        every = self._heartbeat_every()
        assert every is not None
        self._push(self.now + every, self._heartbeat, (sw,), True)

    def _heartbeat_every(self) -> float | None:
        """Seconds between a worker's heartbeats (None: no heartbeats)."""
        if not isinstance(self.heartbeat_interval, str):  # seconds, or None (the only
            return self.heartbeat_interval  # string the constructor lets through is AUTO)
        every = heartbeat_interval(len(self.workers))
        timeout = self.scheduler.heartbeat_timeout
        return every if timeout is None else min(every, timeout / 4)

