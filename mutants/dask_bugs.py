"""Historical dask.distributed bugs, re-planted into the installed dask: squall's teeth on
its dask target (``squall mutants --target dask``).

Each ``DaskBug`` names the bug, the dask issue it comes from (or the failure class, when
dask never had one number for it), and plants it for the duration of a
``with bug.active():`` block, by replacing **one** method of a dask class with
``unittest.mock.patch.object`` (as ``squall.mutants.catalog`` does on the reference
scheduler); outside the block dask holds its own method again.

Every bug planted here is on the **scheduler** side, which runs in this process for a
``LocalCluster`` (processes or not): patching the class reaches the live scheduler with
no plugin (the stealing extension included). Worker-side bugs (a worker handing over
a task it runs, data freed on a worker while a dependent needs it) would have to reach
the worker processes (a ``WorkerPlugin`` that patches in ``setup``): none is planted
yet; the scheduler-side forms of those two are. A bug is planted before its cluster
starts: dask binds some stream handlers (the steal responses) to methods when it starts.

``run_bug(bug)`` starts a validated ``DaskCluster`` (``squall.targets.dask.cluster``),
plants the bug, runs its small scenario, checks the cluster at quiescence and reports
what ``DaskValidator`` caught, by which invariant, and how long after the scenario began.
``run_baseline()`` runs every scenario with no bug planted: it must find nothing. The
scenarios are a few tasks each and are not shrunk (their size is reported instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

Method = Callable[..., Any]
SETTLE = 5.0  # seconds check_quiescent waits for the cluster to stop moving
WAIT = 30.0  # seconds a scenario waits for a condition on the cluster
PAUSE = 3.0  # seconds a worker is paused while another dies and rejoins


class DaskBugError(ValueError):
    """An unknown dask bug name (one line, listing the names)."""


# ---------------------------------------------------------------------- task bodies
# (module level: the worker processes import them by reference)


def inc(x: int) -> int:
    return x + 1


def slowinc(x: int, delay: float = 0.5) -> int:
    time.sleep(delay)
    return x + 1


# ---------------------------------------------------------------------- the bugs


def _remove_worker_dropping(processing: bool, lost: bool) -> Callable[[Method], Method]:
    """``Scheduler.remove_worker`` that drops its own recommendations for the removed
    worker's processing tasks (``processing``: they stay processing on a closed worker)
    and/or for the tasks whose only replica it held (``lost``: they stay in memory with
    no holder). Wraps the production coroutine: the recommendations are dropped in
    ``self.transitions``, which ``remove_worker`` calls once before its first await."""

    def make(original: Method) -> Method:
        async def remove_worker(self: Any, address: str, *, stimulus_id: str,
                                expected: bool = False, close: bool = True) -> Any:
            ws = self.workers.get(self.coerce_address(address))
            dropped: set[Any] = set()
            if ws is not None:
                if processing:
                    dropped |= {ts.key for ts in ws.processing}
                if lost:
                    dropped |= {ts.key for ts in ws.has_what
                                if ts.run_spec and set(ts.who_has or ()) == {ws}}
            if not dropped:
                return await original(self, address, stimulus_id=stimulus_id,
                                      expected=expected, close=close)
            production = self.transitions

            def transitions(recommendations: dict[Any, str], *args: Any,
                            **kwargs: Any) -> Any:
                for key in dropped:  # BUG: the removed worker's tasks are forgotten
                    recommendations.pop(key, None)
                return production(recommendations, *args, **kwargs)

            self.transitions = transitions
            try:
                return await original(self, address, stimulus_id=stimulus_id,
                                      expected=expected, close=close)
            finally:
                if self.__dict__.get("transitions") is transitions:
                    del self.transitions

        return remove_worker

    return make


def _remove_from_processing_keeps_prefix_count(original: Method) -> Method:
    """``WorkerState.remove_from_processing`` that forgets to take the task off the
    worker's per-prefix count, which dask's occupancy is computed from: the worker's
    occupancy only grows."""

    def remove_from_processing(self: Any, ts: Any) -> None:
        if ts in self.long_running:
            self.long_running.discard(ts)
        # BUG: self._remove_from_task_prefix_count(ts) is not called
        self.processing.remove(ts)
        for dts in ts.dependencies:
            if dts in self.needs_what:
                self._dec_needs_replica(dts)

    return remove_from_processing


def _add_to_memory_clears_waiters(original: Method) -> Method:
    """``SchedulerState._add_to_memory`` that, when a task finishes, clears each of its
    inputs' waiters instead of discarding only itself: an input still needed by another
    dependent is released (and freed on its workers) while that dependent runs. Wraps
    the production method: the waiters are cleared before it runs."""

    def _add_to_memory(self: Any, ts: Any, ws: Any, recommendations: Any,
                       client_msgs: Any, type: bytes, typename: str) -> None:
        for dts in ts.dependencies:
            if dts.waiters:
                dts.waiters.clear()  # BUG: the other dependents are no longer waiters
        original(self, ts, ws, recommendations, client_msgs, type=type, typename=typename)

    return _add_to_memory


def _processing_memory_trusts_sender(original: Method) -> Method:
    """``SchedulerState._transition_processing_memory`` without its check that the worker
    reporting a completion is the one the task is processing on (dask before run ids and
    that check): the completion is applied, the task leaves its owner's processing and is
    recorded in memory on the sender, which never ran it."""

    def _transition_processing_memory(self: Any, key: Any, stimulus_id: str, *,
                                      worker: str, **kwargs: Any) -> Any:
        ts = self.tasks[key]
        sender = self.workers.get(worker)
        owner = ts.processing_on
        if sender is None or owner is None or sender is owner:
            return original(self, key, stimulus_id, worker=worker, **kwargs)
        # BUG: applied as if from the owner, then the replica put on the sender
        out = original(self, key, stimulus_id, worker=owner.address, **kwargs)
        if ts.state == "memory" and owner in ts.who_has:
            self.remove_replica(ts, owner)
            self.add_replica(ts, sender)
        return out

    return _transition_processing_memory


def _move_task_confirm_takes_executing(original: Method) -> Method:
    """``WorkStealing.move_task_confirm`` that enacts a steal the victim refused because
    it had started the task: the task is handed to the thief while the victim still runs
    it, and its body runs twice. Wraps the production method: the victim's answer is
    read as "ready"."""

    def move_task_confirm(self: Any, *, key: str, state: str, stimulus_id: str,
                          worker: str | None = None) -> None:
        if state in ("executing", "long-running"):
            state = "ready"  # BUG: the victim's refusal is read as a give-up
        original(self, key=key, state=state, stimulus_id=stimulus_id, worker=worker)

    return move_task_confirm


def _transition_keeps_steal_in_flight(original: Method) -> Method:
    """``WorkStealing.transition`` that leaves a steal in flight when its task leaves
    processing (released, finished): the victim's late answer is then taken for the
    current task. Wraps the production method: the steal it dropped is put back."""

    def transition(self: Any, key: Any, start: str, finish: str, *args: Any,
                   **kwargs: Any) -> None:
        ts = self.scheduler.tasks.get(key) if start == "processing" else None
        info = self.in_flight.get(ts) if ts is not None else None
        original(self, key, start, finish, *args, **kwargs)
        if info is not None and ts not in self.in_flight:
            self._add_to_in_flight(ts, info)  # BUG: the steal outlives the task's processing

    return transition


def _move_task_confirm_trusts_address(original: Method) -> Method:
    """``WorkStealing.move_task_confirm`` that looks its thief up by address only: a
    thief that died and was replaced by a new worker at the same address passes for
    live, and the task is booked on the dead worker's record. Wraps the production
    method: for the call, the address maps to the stale record it holds."""

    def move_task_confirm(self: Any, *, key: str, state: str, stimulus_id: str,
                          worker: str | None = None) -> None:
        ts = self.scheduler.tasks.get(key)
        info = self.in_flight.get(ts) if ts is not None else None
        workers = self.scheduler.workers
        thief = info["thief"] if info is not None else None
        new = workers.get(thief.address) if thief is not None else None
        if thief is None or new is None or new is thief:
            original(self, key=key, state=state, stimulus_id=stimulus_id, worker=worker)
            return
        workers[thief.address] = thief  # BUG: the thief is recognised by its address
        try:
            original(self, key=key, state=state, stimulus_id=stimulus_id, worker=worker)
        finally:
            workers[thief.address] = new

    return move_task_confirm


# ---------------------------------------------------------------------- the scenarios


def _wait(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling the cluster's state, with a deadline


def _state(cluster: Any, key: str) -> str | None:
    ts = cluster.scheduler.tasks.get(key)
    return None if ts is None else str(ts.state)


def scenario_kill_while_processing(cluster: Any) -> dict[str, Any]:
    """One slow task processing on w0, w0 killed: it must be rescheduled on w1."""
    w0 = cluster.address_of("w0")
    fut = cluster.client.submit(slowinc, 1, delay=1.0, key="slow-1", workers=[w0],
                                allow_other_workers=True)
    _wait(lambda: _state(cluster, "slow-1") == "processing", "slow-1 to be processing")
    cluster.kill_worker("w0")
    _wait(lambda: w0 not in cluster.scheduler.workers, "w0 to be removed")
    return {"futures": [fut], "tasks": 1, "faults": 1}


def scenario_kill_only_replica(cluster: Any) -> dict[str, Any]:
    """One task's only replica on w0, w0 killed: it must be recomputed on w1."""
    w0 = cluster.address_of("w0")
    fut = cluster.client.submit(inc, 1, key="inc-1", workers=[w0], allow_other_workers=True)
    fut.result(timeout=WAIT)
    cluster.kill_worker("w0")
    _wait(lambda: w0 not in cluster.scheduler.workers, "w0 to be removed")
    return {"futures": [fut], "tasks": 1, "faults": 1}


def _worker_task_state(key: str, dask_worker: Any = None) -> str | None:
    ts = dask_worker.state.tasks.get(key)
    return None if ts is None else str(ts.state)


def scenario_steal_while_executing(cluster: Any) -> dict[str, Any]:
    """One slow task executing on w0; work stealing asks w0 to give it to w1 (the request
    ``balance`` would send, sent directly): w0 refuses, it is running."""
    w0, w1 = cluster.address_of("w0"), cluster.address_of("w1")
    key = "slow-steal"
    fut = cluster.client.submit(slowinc, 1, delay=1.0, key=key, workers=[w0],
                                allow_other_workers=True)
    _wait(lambda: cluster.client.run(_worker_task_state, key, workers=[w0]).get(w0)
          == "executing", f"{key} to be executing on w0")
    s = cluster.scheduler

    def request() -> None:
        stealing = s.extensions["stealing"]
        stealing.move_task_request(s.tasks[key], s.workers[w0], s.workers[w1])

    cluster._on_loop(request)
    fut.result(timeout=WAIT)
    return {"futures": [fut], "tasks": 1, "faults": 0}


def scenario_release_while_stealing(cluster: Any) -> dict[str, Any]:
    """A slow task executing on w0 and a second one waiting behind it there; a steal of
    the second to w1 is requested and, before w0 can answer, its client releases it (both
    on the scheduler's loop, in one go, so the answer comes after the release)."""
    w0, w1 = cluster.address_of("w0"), cluster.address_of("w1")
    client = cluster.client
    first = client.submit(slowinc, 1, delay=1.0, key="slow-first", workers=[w0])
    second = client.submit(slowinc, 2, delay=0.1, key="slow-second", workers=[w0])
    _wait(lambda: _state(cluster, "slow-second") == "processing"
          and client.run(_worker_task_state, "slow-first", workers=[w0]).get(w0)
          == "executing", "slow-first executing on w0 and slow-second processing there")
    s = cluster.scheduler

    def request_then_release() -> None:
        stealing = s.extensions["stealing"]
        stealing.move_task_request(s.tasks["slow-second"], s.workers[w0], s.workers[w1])
        s.client_releases_keys(["slow-second"], client.id, stimulus_id="squall-release")

    cluster._on_loop(request_then_release)
    first.result(timeout=WAIT)
    del second
    return {"futures": [first], "tasks": 2, "faults": 0}


def scenario_thief_rejoins_while_stealing(cluster: Any) -> dict[str, Any]:
    """A slow task executing on w0 and a second one waiting behind it there; w0 is paused
    (SIGSTOP), a steal of the second to w1 is requested, w1 is killed and a new w1 joins
    at the same address (network mode: a name keeps its port); then w0 resumes and
    answers that it gave the task up."""
    w0, w1 = cluster.address_of("w0"), cluster.address_of("w1")
    client = cluster.client
    # (slow-first outlasts the pause, so slow-second is still waiting when w0 answers)
    first = client.submit(slowinc, 1, delay=PAUSE + 1.0, key="slow-first", workers=[w0])
    second = client.submit(slowinc, 2, delay=0.1, key="slow-second", workers=[w0],
                           allow_other_workers=True)
    _wait(lambda: _state(cluster, "slow-second") == "processing"
          and client.run(_worker_task_state, "slow-first", workers=[w0]).get(w0)
          == "executing", "slow-first executing on w0 and slow-second processing there")
    s = cluster.scheduler
    paused = time.monotonic()
    cluster.pause_worker("w0", PAUSE)

    def request() -> None:
        stealing = s.extensions["stealing"]
        stealing.move_task_request(s.tasks["slow-second"], s.workers[w0], s.workers[w1])

    cluster._on_loop(request)
    cluster.kill_worker("w1")
    cluster.add_worker("w1")
    if cluster.address_of("w1") != w1:
        raise RuntimeError(f"w1 rejoined at {cluster.address_of('w1')}, not {w1}")
    if time.monotonic() - paused > PAUSE - 0.3:
        raise RuntimeError("w1 took too long to rejoin: w0 resumed first")
    _wait(lambda: not s.extensions["stealing"].in_flight, "w0's answer to the steal")
    first.result(timeout=WAIT)
    return {"futures": [first, second], "tasks": 2, "faults": 3}


def _forge_task_finished(key: str, run_id: int, dask_worker: Any = None) -> None:
    """(On a worker, by ``client.run``) tell the scheduler that ``key`` finished here."""
    dask_worker.batched_send({
        "op": "task-finished", "key": key, "run_id": run_id, "nbytes": 28,
        "type": b"", "typename": "int", "metadata": {}, "thread": 0,
        "startstops": [], "stimulus_id": f"squall-forged-{key}"})


def scenario_foreign_completion(cluster: Any) -> dict[str, Any]:
    """A slow task executing on w0; w1, which does not own it, reports it finished (a
    forged message with the task's current run id: what a worker that lost the task to a
    steal or a reschedule would send late). The scheduler must not believe it."""
    w0, w1 = cluster.address_of("w0"), cluster.address_of("w1")
    key = "slow-owned"
    fut = cluster.client.submit(slowinc, 1, delay=1.0, key=key, workers=[w0],
                                allow_other_workers=False)
    _wait(lambda: cluster.client.run(_worker_task_state, key, workers=[w0]).get(w0)
          == "executing", f"{key} to be executing on w0")
    run_id = int(cluster._on_loop(lambda: cluster.scheduler.tasks[key].run_id))
    cluster.client.run(_forge_task_finished, key, run_id, workers=[w1])
    # (the result is not fetched here: a gather from w1 would find the key missing there
    # and dask would mend its record before the quiescent check compares the two sides)
    return {"futures": [fut], "tasks": 1, "faults": 1}


def scenario_map(cluster: Any) -> dict[str, Any]:
    """Eight small tasks of one prefix, all gathered."""
    futs = cluster.client.map(inc, range(8), key=[f"inc-{i}" for i in range(8)])
    cluster.client.gather(futs)
    return {"futures": futs, "tasks": 8, "faults": 0}


def scenario_shared_input(cluster: Any) -> dict[str, Any]:
    """``x``; a fast and a slow dependent of ``x``; only the dependents are wanted."""
    from dask._task_spec import Task, TaskRef

    dsk = {"x": Task("x", inc, 1), "fast": Task("fast", inc, TaskRef("x")),
           "slow": Task("slow", slowinc, TaskRef("x"), 0.5)}
    futs = cluster.client.get(dsk, ["fast", "slow"], sync=False)
    _wait(lambda: all(f.done() for f in futs) or bool(cluster.violations),
          "fast and slow to finish (or a violation)")
    return {"futures": futs, "tasks": 3, "faults": 0}


# ---------------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class DaskBug:
    """One historical dask bug: ``make(original)`` returns the buggy method that replaces
    ``owner_path``'s ``attr`` (``module:Class``) while ``active()``."""

    name: str
    issue: str  # "#5370", or the failure class when dask has no one issue for it
    title: str  # the bug, in one line
    owner_path: str
    attr: str
    make: Callable[[Method], Method]
    scenario: Callable[[Any], dict[str, Any]]
    caught_by: tuple[str, ...] = ()
    workers: int = 2
    network: bool = False  # the cluster's network mode (a worker name keeps its port)
    # dask's active memory manager: off where its own replica moves would mend (at
    # random) the state the bug leaves before the quiescent check compares the two sides
    memory_manager: bool = True
    # When ``attr`` is a dispatch table (a dict of functions, as dask's transitions are
    # found), the entry replaced: patching the method itself would not reach the table.
    entry: tuple[str, ...] | None = None

    @property
    def owner(self) -> type:
        import importlib

        module, _, cls = self.owner_path.partition(":")
        return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]

    @property
    def target(self) -> str:
        where = f"[{', '.join(self.entry)}]" if self.entry is not None else ""
        return f"{self.owner.__name__}.{self.attr}{where}"

    @contextmanager
    def active(self) -> Iterator[DaskBug]:
        """The bug is live in this process's dask inside the block, gone after it."""
        owner = self.owner
        original = owner.__dict__[self.attr]
        if self.entry is not None:
            with mock.patch.dict(original, {self.entry: self.make(original[self.entry])}):
                yield self
            return
        with mock.patch.object(owner, self.attr, self.make(original)):
            yield self


SCHED = "distributed.scheduler"

DASK_CATALOG: tuple[DaskBug, ...] = (
    DaskBug(
        "dask-dead-worker-tasks-stranded", "no single issue",
        "a dead worker's processing tasks are not rescheduled: they stay processing on a "
        "closed worker", f"{SCHED}:Scheduler", "remove_worker",
        _remove_worker_dropping(processing=True, lost=False),
        scenario_kill_while_processing,
        caught_by=("worker.dead-holds-nothing", "task.processing-worker-running"),
    ),
    DaskBug(
        "dask-lost-replica-not-recomputed", "no single issue",
        "a task whose only replica died stays in memory with no holder, never recomputed",
        f"{SCHED}:Scheduler", "remove_worker",
        _remove_worker_dropping(processing=False, lost=True),
        scenario_kill_only_replica,
        caught_by=("task.who-has-iff-memory",),
    ),
    DaskBug(
        "dask-occupancy-drift", "#1544",
        "a task leaving a worker is not taken off its prefix count: occupancy drifts up",
        f"{SCHED}:WorkerState", "remove_from_processing",
        _remove_from_processing_keeps_prefix_count,
        scenario_map,
        caught_by=("worker.prefix-counts", "worker.occupancy-fresh"),
    ),
    DaskBug(
        "dask-input-freed-while-needed", "no single issue",
        "a finished task clears its inputs' waiters: an input another dependent still "
        "needs is released", f"{SCHED}:SchedulerState", "_add_to_memory",
        _add_to_memory_clears_waiters,
        scenario_shared_input,
        caught_by=("task.inputs-in-memory", "task.waiters-in-play",
                   "task.in-play-dependents-wait"),
    ),
)

DASK_CATALOG += (
    DaskBug(
        "dask-executing-task-stolen", "no single issue",
        "a steal the victim refused because it was executing is enacted: the task runs on "
        "both", "distributed.stealing:WorkStealing", "move_task_confirm",
        _move_task_confirm_takes_executing,
        scenario_steal_while_executing,
        caught_by=("steal.executing-never-stolen", "e2e.no-duplicate-run"),
    ),
)

DASK_CATALOG += (
    DaskBug(
        "dask-steal-confirmed-after-release", "#5370",
        "a steal stays in flight after its task was released, so the victim's late answer "
        "is confirmed against a task that moved on", "distributed.stealing:WorkStealing",
        "transition", _transition_keeps_steal_in_flight,
        scenario_release_while_stealing,
        caught_by=("steal.in-flight-task-live",),
    ),
)

DASK_CATALOG += (
    DaskBug(
        "dask-steal-to-rejoined-thief", "#6356",
        "a steal is confirmed to the stale record of a thief that rejoined at the same "
        "address: the task stays processing on a dead worker",
        "distributed.stealing:WorkStealing", "move_task_confirm",
        _move_task_confirm_trusts_address,
        scenario_thief_rejoins_while_stealing,
        caught_by=("dask.task.processing-on-live-worker", "worker.dead-holds-nothing"),
        network=True,
    ),
)

DASK_CATALOG += (
    DaskBug(
        "dask-foreign-completion-applied", "no single issue",
        "a completion reported by a worker that does not own the task is applied: the task "
        "is recorded in memory on a worker that never ran it",
        f"{SCHED}:SchedulerState", "_TRANSITIONS_TABLE",
        _processing_memory_trusts_sender,
        scenario_foreign_completion,
        caught_by=("cluster.memory-agrees",),
        entry=("processing", "memory"),
        memory_manager=False,
    ),
)

DASK_BUGS: dict[str, DaskBug] = {b.name: b for b in DASK_CATALOG}


def dask_bug(name: str) -> DaskBug:
    try:
        return DASK_BUGS[name]
    except KeyError:
        raise DaskBugError(f"no dask bug {name!r}; the catalog: "
                           f"{', '.join(DASK_BUGS)}") from None


# ---------------------------------------------------------------------- measuring


@dataclass
class DaskBugResult:
    """What one run found: ``bug`` is None for the baseline of a scenario."""

    bug: str | None
    scenario: str
    caught: bool
    caught_by: str | None
    seconds: float | None  # from the scenario's start to the first violation
    violations: int
    tasks: int
    faults: int
    expected: bool  # caught by one of the bug's own invariants (baseline: found nothing)
    error: str | None = None
    invariants: list[str] = field(default_factory=list)
    trace: str = ""  # the run's trace (``squall replay`` reads it), if one was asked for
    stimuli: int = 0  # its length: the stimuli the scheduler and the workers received


def _run(scenario: Callable[[Any], dict[str, Any]], bug: DaskBug | None,
         workers: int, network: bool = False, trace: str | Path | None = None,
         memory_manager: bool = True) -> DaskBugResult:
    from squall.targets.dask.cluster import DaskCluster

    name = scenario.__name__.removeprefix("scenario_")
    # (planted before the cluster starts: dask binds some stream handlers, the steal
    # responses among them, to its extensions' methods when it starts)
    planted = bug.active() if bug is not None else _nothing()
    with planted, DaskCluster(workers=workers, threads=1, network=network,
                              memory_manager=memory_manager) as cluster:
        cluster.check()  # settle the start before the clock starts
        records: list[tuple[str, Any]] = []
        if trace is not None:
            cluster.log_stimuli(lambda receiver, stimulus: records.append((receiver, stimulus)))
        started = time.time()
        error = None
        size = {"tasks": 0, "faults": 0}
        try:
            size = scenario(cluster)
            cluster.validator.check_quiescent(cluster.client, timeout=SETTLE)
        except Exception as e:  # a scenario that cannot finish under the bug
            error = f"{type(e).__name__}: {e}".splitlines()[0]
        found = list(cluster.validator.violations)
        recorded = list(records)  # (records still arriving are not in the trace)
        if trace is not None:
            _write_trace(trace, bug, name, workers, recorded, cluster, found)
        seconds = None
        checker = getattr(cluster.validator, "checker", None)
        base = getattr(checker, "started", None)
        if found and isinstance(base, float):  # violation times count from the checker's start
            seconds = max(0.0, base + float(found[0].time) - started)
        ids = [str(getattr(v.invariant, "id", v.invariant)) for v in found]
        caught_by = ids[0] if ids else None
        if bug is None:
            expected = not found
        else:
            expected = any(i in bug.caught_by for i in ids)
        return DaskBugResult(
            bug.name if bug is not None else None, name, bool(found), caught_by, seconds,
            len(found), int(size.get("tasks", 0)), int(size.get("faults", 0)), expected,
            error, sorted(set(ids)), str(trace or ""), len(recorded))


def _write_trace(path: str | Path, bug: DaskBug | None, scenario: str, workers: int,
                 records: list[tuple[str, Any]], cluster: Any, found: list[Any]) -> None:
    """The run's trace: its scenario is a hand-written function, so the header names it
    (with the cluster's shape) and holds no graph; the stimuli and faults are as recorded."""
    from squall.core.outcome import Outcome
    from squall.scenarios.model import ClusterShape, ExplicitGraph, Scenario
    from squall.scenarios.target_run import write_trace

    name = f"{bug.name}: {scenario}" if bug is not None else scenario
    header = Scenario(name=name, workload=ExplicitGraph(tasks=()),
                      cluster=ClusterShape(workers=workers, threads=1), runtime="dask")
    violations = [v.to_violation() for v in found]
    outcome = Outcome(results_ok=True, makespan=cluster.now(), n_tasks=0,
                      transitions=cluster.transitions, digest="", n_stimuli=len(records),
                      invariant_checks=cluster.invariant_checks, violations=violations[:20])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_trace(path, header, records, cluster.faults, outcome,
                phase="end" if violations else "done")


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def run_bug(bug: DaskBug, trace: str | Path | None = None) -> DaskBugResult:
    """Run ``bug``'s scenario with the bug planted (writing its trace to ``trace``)."""
    return _run(bug.scenario, bug, bug.workers, bug.network, trace, bug.memory_manager)


def run_baseline(bugs: tuple[DaskBug, ...] | list[DaskBug] = DASK_CATALOG
                 ) -> list[DaskBugResult]:
    """Every distinct scenario of ``bugs`` with no bug planted (must find nothing)."""
    seen: dict[Callable[[Any], dict[str, Any]], tuple[int, bool, bool]] = {}
    for b in bugs:
        seen.setdefault(b.scenario, (b.workers, b.network, b.memory_manager))
    return [_run(s, None, w, n, memory_manager=m) for s, (w, n, m) in seen.items()]
