"""The reference scheduler as a pure state machine.

``SchedulerState.handle(stimulus) -> list[instruction]``: no I/O, no clock, no random
numbers. Task states (``SchedulerTaskState``) follow ``TRANSITIONS``; any other move raises
``InvalidTransition``. Every transition is logged with the stimulus that caused it and
shown to the observers (strict mode plugs in there).

Iteration order is always insertion order (dicts are used as ordered sets), so the same
stimuli give the same instructions in every process, whatever the hash seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from itertools import islice
from typing import TYPE_CHECKING, Any

from squall.core import protocol as p
from squall.core.estimates import DurationEstimator
from squall.core.translog import TransitionLog

if TYPE_CHECKING:
    from squall.core.view import StealingView



class SchedulerTaskState(StrEnum):
    """A task's state on the scheduler. The value is the state's name in messages and
    traces (a ``StrEnum`` member is that string: it compares, hashes and encodes as it)."""

    RELEASED = "released"
    WAITING = "waiting"
    NO_WORKER = "no-worker"
    PROCESSING = "processing"
    MEMORY = "memory"
    ERRED = "erred"
    FORGOTTEN = "forgotten"


class WorkerStatus(StrEnum):
    """A worker's status, the scheduler's view of it."""

    RUNNING = "running"
    PAUSED = "paused"
    CLOSING = "closing"
    DEAD = "dead"


# This module's own names for the members: a module global is read about four times faster
# than an enum attribute (Python 3.11), and the transitions read them all the time. Other
# modules name a state through its enum (SchedulerTaskState.MEMORY), which never collides
# with the worker's (WorkerTaskState.MEMORY).
# A state the machine stores is always a member, so the machine compares states by identity
# (``ts.state is MEMORY``); a state that comes in a message is a plain string: compare it
# with ``==`` (``msg.state == WorkerTaskState.RELEASED``).
RELEASED = SchedulerTaskState.RELEASED
WAITING = SchedulerTaskState.WAITING
NO_WORKER = SchedulerTaskState.NO_WORKER
PROCESSING = SchedulerTaskState.PROCESSING
MEMORY = SchedulerTaskState.MEMORY
ERRED = SchedulerTaskState.ERRED
FORGOTTEN = SchedulerTaskState.FORGOTTEN
TASK_STATES: tuple[SchedulerTaskState, ...] = tuple(SchedulerTaskState)
# States in which a task uses resources for someone: released when nobody needs it.
_HOLDS_CLAIM = (MEMORY, WAITING, NO_WORKER, PROCESSING)

RUNNING = WorkerStatus.RUNNING
PAUSED = WorkerStatus.PAUSED
CLOSING = WorkerStatus.CLOSING
DEAD = WorkerStatus.DEAD

DEFAULT_BANDWIDTH = 100e6  # bytes/s until told otherwise
DEFAULT_NBYTES = 1024  # size assumed for an output of unknown size
CANDIDATE_POOL = 10  # workers looked at per placement decision, whatever the cluster size
DEP_TASK_POOL = 2  # non-holders looked at besides the holders, for tasks with inputs
_NOTHING_HELD: dict[Any, int] = {}  # (read only) the holders of a task without inputs
_INFINITY = float("inf")


def heartbeat_interval(n_workers: int) -> float:
    """How often each of ``n_workers`` workers should send a heartbeat: every 0.5 s in a
    small cluster, less often in a large one so the scheduler hears about 50 a second at
    most (while every worker still reports at least every 5 s)."""
    return min(5.0, max(0.5, n_workers / 50))


class InvalidTransition(RuntimeError):
    """A task was asked to move along a transition the table does not allow."""


class LivelockError(RuntimeError):
    """One stimulus caused more transitions than the cap allows."""


# The error of a task given up because the workers running it kept dying.
KILLED_WORKER = "KilledWorker"


class TaskState:
    """The scheduler's record of one task. Collections are dicts used as ordered sets."""

    __slots__ = (
        "key", "prefix", "state", "priority", "duration_hint", "nbytes", "restrictions",
        "has_run_spec", "dependencies", "dependents", "waiting_on", "waiters", "who_has",
        "processing_on", "who_wants", "exception", "traceback", "exception_blame",
        "suspicious", "retries_left", "run_id",
    )

    def __init__(self, key: str, prefix: str, priority: tuple[int, int]) -> None:
        self.key = key
        self.prefix = prefix
        self.state = RELEASED
        self.priority = priority
        self.duration_hint: float | None = None
        self.nbytes = -1  # size of its last result; -1 until it has one
        self.restrictions: tuple[str, ...] = ()
        self.has_run_spec = False
        self.dependencies: dict[TaskState, None] = {}
        self.dependents: dict[TaskState, None] = {}
        self.waiting_on: dict[TaskState, None] = {}  # dependencies not in memory yet
        self.waiters: dict[TaskState, None] = {}  # dependents that still need our data
        self.who_has: dict[WorkerInfo, None] = {}
        self.processing_on: WorkerInfo | None = None
        self.who_wants: dict[str, None] = {}  # clients that want the result
        self.exception: str | None = None
        self.traceback = ""
        self.exception_blame: str | None = None
        self.suspicious = 0  # times a worker died while this task was processing on it
        self.retries_left = 0
        self.run_id = 0  # its current assignment (ComputeTask.run_id), while processing

    @property
    def killed(self) -> bool:
        """Whether its error is a KilledWorker: it was given up because the workers running
        it kept dying (or, blamed on an input, that input was)."""
        return (self.exception or "").startswith(KILLED_WORKER)

    def __repr__(self) -> str:
        return f"<Task {self.key!r} {self.state}>"


class WorkerInfo:
    """The scheduler's record of one worker (one incarnation of a worker name)."""

    __slots__ = (
        "name", "nthreads", "status", "processing", "has_what", "nbytes", "prefix_counts",
        "needs", "fetch_bytes", "executing", "last_seen", "incarnation", "bandwidth",
    )

    def __init__(self, name: str, nthreads: int, incarnation: int, now: float) -> None:
        self.name = name
        self.nthreads = nthreads
        self.status = RUNNING
        self.processing: dict[TaskState, None] = {}
        self.has_what: dict[TaskState, None] = {}
        self.nbytes = 0  # bytes of has_what
        self.prefix_counts: dict[str, int] = {}  # prefix -> tasks of it processing here
        self.needs: dict[TaskState, int] = {}  # dependency -> processing tasks here needing it
        self.fetch_bytes = 0  # bytes of ``needs`` this worker has to fetch
        self.executing: dict[str, float] = {}  # key -> elapsed, from the last heartbeat
        self.last_seen = now
        self.incarnation = incarnation
        self.bandwidth: float | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.name!r}#{self.incarnation} {self.status} {len(self.processing)}>"


Observer = Callable[["SchedulerState", TaskState, SchedulerTaskState, SchedulerTaskState, str],
                    None]
Recommendations = dict[TaskState, SchedulerTaskState]
TransitionFn = Callable[[TaskState, str], Recommendations]


class SchedulerState:
    """Tasks, workers and clients, moved only by ``handle``."""

    def __init__(
        self,
        *,
        allowed_failures: int = 3,
        bandwidth: float = DEFAULT_BANDWIDTH,
        heartbeat_timeout: float | None = None,
        transition_log_size: int = 10_000,
        default_duration: float | None = None,
    ) -> None:
        self.tasks: dict[str, TaskState] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.running: dict[WorkerInfo, None] = {}
        self.idle: dict[WorkerInfo, None] = {}  # running, fewer tasks than threads
        self.saturated: dict[WorkerInfo, None] = {}  # running, more tasks than threads
        self.unrunnable: dict[TaskState, None] = {}  # tasks in no-worker
        self.estimator = (
            DurationEstimator() if default_duration is None else DurationEstimator(default_duration)
        )
        self.allowed_failures = allowed_failures
        self.bandwidth = bandwidth
        self.heartbeat_timeout = heartbeat_timeout
        self.time = 0.0
        self.transition_log = TransitionLog(transition_log_size)
        self.transition_counter = 0
        self.stale_reports = 0  # results from workers not assigned the task, ignored
        self.removals: dict[str, int] = {}  # reason -> workers removed for it, so far
        self.observers: list[Observer] = []
        # Extensions (work stealing) get the stimuli they care about.
        self.extensions: list[Any] = []
        self.stealing: StealingView | None = None  # the work-stealing extension, if any
        self._incarnations = 0
        self._set_removals = 0  # deletions from idle/saturated since they were compacted
        self._generation = 0  # order of submission, for priorities
        self._rr = 0  # round-robin pointer over ``running`` for root-task placement
        self._runs = 0  # assignments so far: each ComputeTask gets the next run id
        self._running_list: list[WorkerInfo] = []
        # decide_worker's memo of occupancy() per thread of each worker, valid for one
        # estimator version; a worker's entry is dropped whenever a task is assigned to it
        # or taken from it.
        self._occupancy_per_thread: dict[WorkerInfo, float] = {}
        self._occupancies_version = -1
        self._out: list[p.SchedulerInstruction] = []
        self._stimulus_id = ""
        # the stimulus being handled (for observers: why a transition happens)
        self.stimulus: p.SchedulerStimulus | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            p.UpdateGraph: self._handle_update_graph,
            p.ClientReleasesKeys: self._handle_client_releases_keys,
            p.AddWorker: self._handle_add_worker,
            p.RemoveWorker: self._handle_remove_worker,
            p.TaskFinished: self._handle_task_finished,
            p.TaskErred: self._handle_task_erred,
            p.MissingData: self._handle_missing_data,
            p.Heartbeat: self._handle_heartbeat,
            p.StealResponse: self._handle_steal_response,
            p.Tick: self._handle_tick,
            p.SkewEstimates: self._handle_skew_estimates,
        }
        self._table: dict[tuple[SchedulerTaskState, SchedulerTaskState], TransitionFn] = {
            (RELEASED, WAITING): self._released_waiting,
            (RELEASED, FORGOTTEN): self._released_forgotten,
            (WAITING, PROCESSING): self._waiting_processing,
            (WAITING, NO_WORKER): self._waiting_no_worker,
            (WAITING, RELEASED): self._waiting_released,
            (WAITING, ERRED): self._waiting_erred,
            (NO_WORKER, PROCESSING): self._no_worker_processing,
            (NO_WORKER, RELEASED): self._no_worker_released,
            (PROCESSING, MEMORY): self._processing_memory,
            (PROCESSING, RELEASED): self._processing_released,
            (PROCESSING, ERRED): self._processing_erred,
            (MEMORY, RELEASED): self._memory_released,
            (ERRED, RELEASED): self._erred_released,
        }

    # ------------------------------------------------------------------ public API

    TRANSITIONS: tuple[tuple[SchedulerTaskState, SchedulerTaskState], ...] = (
        (RELEASED, WAITING), (RELEASED, FORGOTTEN),
        (WAITING, PROCESSING), (WAITING, NO_WORKER), (WAITING, RELEASED), (WAITING, ERRED),
        (NO_WORKER, PROCESSING), (NO_WORKER, RELEASED),
        (PROCESSING, MEMORY), (PROCESSING, RELEASED), (PROCESSING, ERRED),
        (MEMORY, RELEASED), (ERRED, RELEASED),
    )

    def handle(self, stimulus: p.SchedulerStimulus) -> list[p.SchedulerInstruction]:
        """Apply one stimulus; return the instructions it causes, in order."""
        handler = self._handlers.get(type(stimulus))
        if handler is None:
            raise TypeError(f"SchedulerState cannot handle {type(stimulus).__name__}")
        out: list[p.SchedulerInstruction] = []
        self._out = out
        self._stimulus_id = stimulus.stimulus_id
        self.stimulus = stimulus
        if stimulus.time > self.time:
            self.time = stimulus.time
        handler(stimulus)
        self.transition_log.trim()
        return out

    def occupancy(self, ws: WorkerInfo) -> float:
        """Expected seconds of work queued on ``ws``: derived, never accumulated."""
        durations = self.estimator.durations  # estimator.duration(), without a call each
        total = 0.0
        for prefix, count in ws.prefix_counts.items():
            d = durations.get(prefix)
            total += count * (self.estimator.duration(prefix) if d is None else d)
        if ws.fetch_bytes:
            total += self._transfer_time(ws.fetch_bytes, ws)
        return total

    def remembered_occupancy(self, ws: WorkerInfo) -> float | None:
        """What placement remembers of ``ws``'s occupancy per thread and would use now
        without recomputing it (None: nothing). Read by the invariants: a remembered value
        must equal its recomputation."""
        if self._occupancies_version != self.estimator.version:
            return None
        return self._occupancy_per_thread.get(ws)

    def transfer_cost(self, ts: TaskState, ws: WorkerInfo) -> float:
        """Seconds to bring the inputs of ``ts`` that ``ws`` lacks."""
        total, held = self._input_bytes(ts)
        lacking = total - held.get(ws, 0)
        return self._transfer_time(lacking, ws) if lacking else 0.0

    def _transfer_time(self, nbytes: int, ws: WorkerInfo) -> float:
        """Seconds to bring ``nbytes`` to ``ws``."""
        return nbytes / (ws.bandwidth or self.bandwidth)

    def _input_bytes(self, ts: TaskState) -> tuple[int, dict[WorkerInfo, int]]:
        """Bytes of all the inputs of ``ts``, and of those each holder has (holders in
        the order of the inputs)."""
        total = 0
        held: dict[WorkerInfo, int] = {}
        for dts in ts.dependencies:
            nbytes = dts.nbytes if dts.nbytes >= 0 else DEFAULT_NBYTES
            total += nbytes
            for ws in dts.who_has:
                held[ws] = held.get(ws, 0) + nbytes
        return total, held

    def decide_worker(self, ts: TaskState) -> WorkerInfo | None:
        """The running worker where ``ts`` is expected to start soonest, or None: the
        least occupancy per thread plus transfer time of the inputs it lacks.

        Looks at the holders of the task's inputs plus a bounded pool of idle (or,
        failing that, round-robin) workers, so the cost does not grow with cluster size.
        Ties go to the worker holding fewer bytes.
        """
        if not self.running:
            return None
        if ts.dependencies:
            total, held = self._input_bytes(ts)
        else:
            total, held = 0, _NOTHING_HELD
        if ts.restrictions:
            allowed = [self.workers[n] for n in ts.restrictions if n in self.workers]
            candidates = [ws for ws in allowed if ws in self.running]
        elif ts.dependencies:
            candidates = []
            for ws in held:  # (a loop: for one or two holders, cheaper than a comprehension)
                if ws.status is RUNNING:
                    candidates.append(ws)
            # Non-holders all lack every input; a couple of them is enough to compare.
            candidates.extend(self._candidate_pool(DEP_TASK_POOL))
        else:
            candidates = self._candidate_pool(CANDIDATE_POOL)
        # (A worker listed twice costs the same twice, so it cannot win twice.)
        # Occupancies per thread are remembered until the worker's queue or an estimate
        # changes: placing a batch of root tasks looks at the same few workers again and again.
        known = self._occupancy_per_thread
        if self._occupancies_version != self.estimator.version:
            known.clear()
            self._occupancies_version = self.estimator.version
        occupancy = self.occupancy
        transfer_time = self._transfer_time
        best: WorkerInfo | None = None
        best_start = _INFINITY
        best_nbytes = 0
        for ws in candidates:
            start = known.get(ws)
            if start is None:
                start = known[ws] = occupancy(ws) / ws.nthreads
            if total:
                lacking = total - held.get(ws, 0)
                if lacking:  # the inputs it lacks
                    start += transfer_time(lacking, ws)
            if start < best_start or (start == best_start and ws.nbytes < best_nbytes):
                best, best_start, best_nbytes = ws, start, ws.nbytes
        return best

    def _candidate_pool(self, size: int) -> list[WorkerInfo]:
        """Up to ``size`` idle workers; if none is idle, the next ones round-robin."""
        pool = list(islice(self.idle, size))
        if pool:
            return pool
        workers = self._running_list
        n = len(workers)
        k = min(n, size)
        start = self._rr % n
        self._rr = start + k
        end = start + k
        return workers[start:end] if end <= n else workers[start:] + workers[:end - n]

    # ------------------------------------------------------------------ transitions engine

    def transitions(self, recommendations: Recommendations,
                    queued: Iterable[tuple[TaskState, SchedulerTaskState]] = ()) -> None:
        """Apply recommendations, and those they cause, until none are left; then each
        ``queued`` one in turn, with all it causes before the next."""
        cap = 20 * len(self.tasks) + 1000
        count = 0
        table = self._table
        log = self.transition_log.add
        observers = self.observers
        sid = self._stimulus_id
        after = iter(queued)
        try:
            while True:
                if not recommendations:
                    nxt = next(after, None)
                    if nxt is None:
                        break
                    recommendations[nxt[0]] = nxt[1]
                ts, finish = recommendations.popitem()
                start = ts.state
                if start == finish or start is FORGOTTEN:
                    continue
                fn = table.get((start, finish))
                if fn is None:
                    # Two-step paths through "released" are allowed where each step is.
                    if (start, RELEASED) in table and (RELEASED, finish) in table:
                        recommendations[ts] = finish
                        fn = table[(start, RELEASED)]
                        finish = RELEASED
                    else:
                        raise InvalidTransition(
                            f"task {ts.key!r}: no transition {start} -> {finish} "
                            f"(stimulus {sid})"
                        )
                more = fn(ts, sid)
                actual = ts.state
                if actual == start:
                    continue  # e.g. no-worker -> processing with still no worker
                count += 1
                log((ts.key, start, actual, sid))
                if observers:
                    for obs in observers:
                        obs(self, ts, start, actual, sid)
                if more:
                    recommendations.update(more)
                if count > cap:
                    raise LivelockError(
                        f"stimulus {sid} caused more than {cap} transitions (last: {ts.key!r} "
                        f"{start} -> {actual})"
                    )
        finally:
            self.transition_counter += count

    def _needed(self, ts: TaskState) -> bool:
        return bool(ts.who_wants) or bool(ts.waiters)

    def _released_waiting(self, ts: TaskState, sid: str) -> Recommendations:
        recs: Recommendations = {}
        ts.state = WAITING
        ts.waiting_on.clear()
        for dts in ts.dependencies:
            if dts.state is ERRED:
                recs[ts] = ERRED
                ts.exception_blame = dts.exception_blame or dts.key
                ts.exception = dts.exception
                ts.traceback = dts.traceback
                return recs
        for dts in ts.dependencies:
            dts.waiters[ts] = None
            # A dependency whose last holder was just removed is still "memory" until its
            # own release (pending in this stimulus) runs: wait for it, don't place on it.
            if dts.state is not MEMORY or not dts.who_has:
                ts.waiting_on[dts] = None
                if dts.state is RELEASED:
                    recs[dts] = WAITING
        if not ts.waiting_on:
            recs[ts] = PROCESSING
        return recs

    def _released_forgotten(self, ts: TaskState, sid: str) -> Recommendations:
        recs: Recommendations = {}
        ts.state = FORGOTTEN
        for dts in ts.dependencies:
            dts.dependents.pop(ts, None)
            dts.waiters.pop(ts, None)
            if not dts.dependents and not dts.who_wants and dts.state in (RELEASED, ERRED, MEMORY):
                recs[dts] = FORGOTTEN
            elif dts.state in _HOLDS_CLAIM and not self._needed(dts):
                recs[dts] = RELEASED
        for dts in ts.dependents:
            dts.dependencies.pop(ts, None)
        ts.dependents.clear()
        del self.tasks[ts.key]
        return recs

    def _waiting_processing(self, ts: TaskState, sid: str) -> Recommendations:
        ws = self.decide_worker(ts)
        if ws is None:
            return self._waiting_no_worker(ts, sid)
        self._assign(ts, ws)
        return {}

    def _waiting_no_worker(self, ts: TaskState, sid: str) -> Recommendations:
        ts.state = NO_WORKER
        self.unrunnable[ts] = None
        return {}

    def _no_worker_processing(self, ts: TaskState, sid: str) -> Recommendations:
        ws = self.decide_worker(ts)
        if ws is None:
            return {}
        del self.unrunnable[ts]
        self._assign(ts, ws)
        return {}

    def _waiting_released(self, ts: TaskState, sid: str) -> Recommendations:
        # An input's error may have been pinned on it (to err next) when a dependent that
        # erred let it go first: released, it is not erred, and blames no one.
        ts.exception = None
        ts.traceback = ""
        ts.exception_blame = None
        ts.state = RELEASED
        return self._after_release(ts)

    def _no_worker_released(self, ts: TaskState, sid: str) -> Recommendations:
        del self.unrunnable[ts]
        ts.state = RELEASED
        return self._after_release(ts)

    def _after_release(self, ts: TaskState) -> Recommendations:
        """Common tail of every move into "released": wait again if still needed (keeping
        our claims on our inputs, so an input only we need is not freed and recomputed),
        else drop those claims and be forgotten once nothing refers to us."""
        recs: Recommendations = {}
        ts.waiting_on.clear()
        if ts.who_wants or any(d.state in (WAITING, PROCESSING, NO_WORKER) for d in ts.dependents):
            recs[ts] = WAITING
            # our dependents that wait on us must still be waiting on us
            for dts in ts.dependents:
                if dts.state in (WAITING, NO_WORKER, PROCESSING):
                    ts.waiters[dts] = None
            return recs
        for dts in ts.dependencies:
            dts.waiters.pop(ts, None)
            if dts.state in _HOLDS_CLAIM and not self._needed(dts):
                recs[dts] = RELEASED
        if not ts.dependents:
            recs[ts] = FORGOTTEN
        return recs

    def _waiting_erred(self, ts: TaskState, sid: str) -> Recommendations:
        return self._to_erred(ts)

    def _to_erred(self, ts: TaskState) -> Recommendations:
        recs: Recommendations = {}
        ts.state = ERRED
        ts.waiting_on.clear()
        for dts in ts.dependencies:
            dts.waiters.pop(ts, None)
            if dts.state in _HOLDS_CLAIM and not self._needed(dts):
                recs[dts] = RELEASED
        for dts in ts.dependents:
            if dts.state is WAITING:
                dts.exception = ts.exception
                dts.traceback = ts.traceback
                dts.exception_blame = ts.exception_blame or ts.key
                recs[dts] = ERRED
        ts.waiters.clear()
        for client in ts.who_wants:
            self._out.append(p.KeyErred(
                stimulus_id=self._stimulus_id, client=client, key=ts.key,
                exception=ts.exception or "", traceback=ts.traceback,
                blame=ts.exception_blame or ts.key,
            ))
        return recs

    def _processing_memory(self, ts: TaskState, sid: str) -> Recommendations:
        # Called by the task-finished handler after it set ts.nbytes; the worker is
        # the one the task was processing on.
        ws = ts.processing_on
        assert ws is not None
        self._unassign(ts, ws)
        ts.state = MEMORY
        ts.who_has[ws] = None
        ws.has_what[ts] = None
        ws.nbytes += ts.nbytes
        recs: Recommendations = {}
        for dts in ts.dependents:
            if ts in dts.waiting_on:
                del dts.waiting_on[ts]
                if not dts.waiting_on and dts.state is WAITING:
                    recs[dts] = PROCESSING
        for dts in ts.dependencies:
            waiters = dts.waiters
            waiters.pop(ts, None)
            if not waiters and not dts.who_wants and dts.state in _HOLDS_CLAIM:  # not needed
                recs[dts] = RELEASED
        if ts.who_wants:
            holders = (ws.name,)
            for client in ts.who_wants:
                self._out.append(p.KeyInMemory(
                    stimulus_id=sid, client=client, key=ts.key, holders=holders,
                    nbytes=ts.nbytes,
                ))
        elif not ts.waiters:
            recs[ts] = RELEASED
        return recs

    def _processing_released(self, ts: TaskState, sid: str) -> Recommendations:
        ws = ts.processing_on
        assert ws is not None
        self._unassign(ts, ws)
        if ws.status is not DEAD:
            self._out.append(p.FreeKeys(stimulus_id=sid, time=self.time, worker=ws.name,
                                        keys=(ts.key,)))
        ts.state = RELEASED
        return self._after_release(ts)

    def _processing_erred(self, ts: TaskState, sid: str) -> Recommendations:
        ws = ts.processing_on
        assert ws is not None
        self._unassign(ts, ws)
        return self._to_erred(ts)

    def _memory_released(self, ts: TaskState, sid: str) -> Recommendations:
        recs: Recommendations = {}
        for ws in ts.who_has:
            del ws.has_what[ts]
            ws.nbytes -= ts.nbytes
            if ws.status is not DEAD:
                self._out.append(p.FreeKeys(stimulus_id=sid, time=self.time, worker=ws.name,
                                            keys=(ts.key,)))
        ts.who_has.clear()
        # ts.nbytes keeps the last result's size: dependents still processing are unassigned
        # after this, and must take back from fetch_bytes what they added for it.
        ts.state = RELEASED
        # Dependents that are processing elsewhere can no longer fetch us: re-place them.
        for dts in ts.dependents:
            if dts.state in (PROCESSING, NO_WORKER):
                recs[dts] = RELEASED
            elif dts.state is WAITING:
                dts.waiting_on[ts] = None
        # Clients holding the result learn it is gone; they hear again when it is recomputed.
        for client in ts.who_wants:
            self._out.append(p.KeyLost(stimulus_id=sid, client=client, key=ts.key))
        recs.update(self._after_release(ts))
        return recs

    def _erred_released(self, ts: TaskState, sid: str) -> Recommendations:
        ts.exception = None
        ts.traceback = ""
        ts.exception_blame = None
        ts.state = RELEASED
        recs: Recommendations = {}
        for dts in ts.dependents:
            if dts.state is ERRED:
                recs[dts] = RELEASED
        if not ts.dependents and not ts.who_wants:
            recs[ts] = FORGOTTEN
        elif ts.who_wants:
            recs[ts] = WAITING
        return recs

    # ------------------------------------------------------------------ assignment

    def _assign(self, ts: TaskState, ws: WorkerInfo) -> None:
        ts.state = PROCESSING
        ts.processing_on = ws
        ws.processing[ts] = None
        self._occupancy_per_thread.pop(ws, None)
        ws.prefix_counts[ts.prefix] = ws.prefix_counts.get(ts.prefix, 0) + 1
        deps = []
        needs = ws.needs
        for dts in ts.dependencies:
            who_has = dts.who_has
            if ws not in who_has:
                n = needs.get(dts, 0)
                if n == 0:
                    ws.fetch_bytes += dts.nbytes
                needs[dts] = n + 1
            deps.append(p.DepInfo(dts.key, tuple([w.name for w in who_has]), dts.nbytes))
        self._update_idleness(ws)
        self._runs += 1
        ts.run_id = self._runs
        self._out.append(p.ComputeTask(
            stimulus_id=self._stimulus_id, time=self.time, worker=ws.name, key=ts.key,
            prefix=ts.prefix, priority=ts.priority,
            duration=self.estimator.duration(ts.prefix), deps=tuple(deps), run_id=ts.run_id,
        ))

    def _unassign(self, ts: TaskState, ws: WorkerInfo) -> None:
        del ws.processing[ts]
        self._occupancy_per_thread.pop(ws, None)
        n = ws.prefix_counts[ts.prefix] - 1
        if n:
            ws.prefix_counts[ts.prefix] = n
        else:
            del ws.prefix_counts[ts.prefix]
        for dts in ts.dependencies:
            m = ws.needs.get(dts)
            if m is not None:
                if m == 1:
                    del ws.needs[dts]
                    ws.fetch_bytes -= dts.nbytes
                else:
                    ws.needs[dts] = m - 1
        ts.processing_on = None
        self._update_idleness(ws)

    def _update_idleness(self, ws: WorkerInfo) -> None:
        """Keep ``ws`` in ``idle`` (fewer tasks than threads) or ``saturated`` (more), or in
        neither (exactly busy, or not running)."""
        idle, saturated = self.idle, self.saturated
        excess = len(ws.processing) - ws.nthreads if ws.status is RUNNING else 0
        if excess < 0:
            idle[ws] = None
            if ws not in saturated:
                return
            del saturated[ws]
        elif excess > 0:
            saturated[ws] = None
            if ws not in idle:
                return
            del idle[ws]
        else:
            if ws not in idle and ws not in saturated:
                return
            idle.pop(ws, None)
            saturated.pop(ws, None)
        self._set_removals += 1
        if self._set_removals > 4 * (len(idle) + len(saturated)) + 64:
            # A dict keeps deleted slots until it resizes, and iteration walks over them:
            # copying compacts it, so taking the first few idle workers stays O(1).
            self.idle = dict(idle)
            self.saturated = dict(saturated)
            self._set_removals = 0

    # ------------------------------------------------------------------ stimulus handlers

    def _handle_update_graph(self, msg: p.UpdateGraph) -> None:
        new: list[tuple[TaskState, p.TaskSpecMsg]] = []
        tasks = self.tasks
        hint = self.estimator.hint
        generation = self._generation
        for spec in msg.tasks:
            if spec.key in tasks:
                continue  # submitted before: keep its record and links
            generation += 1
            ts = TaskState(spec.key, spec.prefix, (-spec.priority, generation))
            ts.duration_hint = spec.duration
            ts.restrictions = spec.restrictions
            ts.has_run_spec = spec.has_run_spec
            hint(spec.prefix, spec.duration)
            tasks[spec.key] = ts
            new.append((ts, spec))
        self._generation = generation
        for ts, spec in new:
            for dep in spec.deps:
                dts = tasks.get(dep)
                if dts is None:
                    raise KeyError(f"update-graph: task {spec.key!r} depends on unknown key {dep!r}")
                ts.dependencies[dts] = None
                dts.dependents[ts] = None
        recs: Recommendations = {}
        client = msg.client
        for key in msg.wanted:
            ts = tasks[key]
            ts.who_wants[client] = None
            if ts.state is MEMORY:
                self._out.append(p.KeyInMemory(
                    stimulus_id=msg.stimulus_id, client=client, key=ts.key,
                    holders=tuple(w.name for w in ts.who_has), nbytes=ts.nbytes))
            elif ts.state is ERRED:
                self._out.append(p.KeyErred(
                    stimulus_id=msg.stimulus_id, client=client, key=ts.key,
                    exception=ts.exception or "", traceback=ts.traceback,
                    blame=ts.exception_blame or ts.key))
            elif ts.state is RELEASED:
                recs[ts] = WAITING
        # In the order the client listed them, one at a time: dependencies enter waiting
        # before their dependents, and a task's dependencies pulled into "waiting" by it
        # are placed before later roots.
        self.transitions({}, queued=recs.items())

    def _handle_client_releases_keys(self, msg: p.ClientReleasesKeys) -> None:
        recs: Recommendations = {}
        for key in msg.keys:
            ts = self.tasks.get(key)
            if ts is None or msg.client not in ts.who_wants:
                continue
            del ts.who_wants[msg.client]
            if not ts.who_wants and not ts.waiters:
                if ts.state in (MEMORY, WAITING, NO_WORKER, PROCESSING) or (
                        ts.state is ERRED and not ts.dependents):
                    # (an erred key's error stands for its dependents: releasing it would
                    # reset them and run it again; it is forgotten after them)
                    recs[ts] = RELEASED
                elif ts.state is RELEASED and not ts.dependents:
                    recs[ts] = FORGOTTEN
        self.transitions(recs)
        # Released tasks that nobody refers to any more are forgotten.
        for key in msg.keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state is RELEASED and not ts.dependents and not ts.who_wants:
                self.transitions({ts: FORGOTTEN})

    def _handle_add_worker(self, msg: p.AddWorker) -> None:
        old = self.workers.get(msg.worker)
        if old is not None:
            # A new incarnation at the same address: the old one is gone.
            self._remove_worker(old, reason="replaced")
        self._incarnations += 1
        ws = WorkerInfo(msg.worker, msg.nthreads, self._incarnations, msg.time)
        ws.bandwidth = msg.bandwidth
        self.workers[ws.name] = ws
        self.running[ws] = None
        self._running_list = list(self.running)
        self._update_idleness(ws)
        for ext in self.extensions:
            ext.add_worker(ws)
        if self.unrunnable:
            self.transitions({ts: PROCESSING for ts in list(self.unrunnable)})

    def _handle_remove_worker(self, msg: p.RemoveWorker) -> None:
        ws = self.workers.get(msg.worker)
        if ws is not None:
            self._remove_worker(ws, reason=msg.reason)

    def _remove_worker(self, ws: WorkerInfo, reason: str) -> None:
        died = reason != "closed"
        self.removals[reason] = self.removals.get(reason, 0) + 1
        ws.status = DEAD
        del self.workers[ws.name]
        del self.running[ws]
        self._running_list = list(self.running)
        self._update_idleness(ws)
        for ext in self.extensions:
            ext.remove_worker(ws)
        recs: Recommendations = {}
        for ts in list(ws.processing):
            if died:
                ts.suspicious += 1
            if ts.suspicious > self.allowed_failures:
                ts.exception = (
                    f"{KILLED_WORKER}: the worker running {ts.key!r} died {ts.suspicious} times "
                    f"(allowed_failures={self.allowed_failures})"
                )
                ts.exception_blame = ts.key
                recs[ts] = ERRED
            else:
                recs[ts] = RELEASED
        # Tasks given up (KilledWorker) are erred first: releasing an input lost with the
        # worker would otherwise recommend them "released" over it, and retry them.
        killed = {ts: finish for ts, finish in recs.items() if finish is ERRED}
        if killed:
            self.transitions(killed)
            recs = {ts: finish for ts, finish in recs.items() if finish is not ERRED}
        for ts in list(ws.has_what):
            del ts.who_has[ws]
            del ws.has_what[ts]
            ws.nbytes -= ts.nbytes
            if not ts.who_has:
                recs[ts] = RELEASED
        self.transitions(recs)

    def _handle_task_finished(self, msg: p.TaskFinished) -> None:
        ts = self.tasks.get(msg.key)
        ws = self.workers.get(msg.worker)
        if ts is None or ws is None or ts.state is not PROCESSING or ts.processing_on is not ws \
                or (msg.run_id and msg.run_id != ts.run_id):
            # (A report of an earlier assignment to the same worker, which was freed and
            # given the task again meanwhile, is stale too: its result may be gone.)
            self._stale(msg.key, ws, ts)
            return
        ts.nbytes = msg.nbytes
        self.estimator.observe(ts.prefix, msg.duration)
        ws.executing.pop(msg.key, None)
        self.transitions({ts: MEMORY})

    def _stale(self, key: str, ws: WorkerInfo | None, ts: TaskState | None) -> None:
        """A report from a worker that does not own the task: count it, apply nothing, and
        tell the worker to drop the result unless we have it recorded there."""
        self.stale_reports += 1
        # Not to the worker the task is assigned to now: that would cancel its new run.
        if ws is not None and (ts is None or ws not in ts.who_has and ts.processing_on is not ws):
            self._out.append(p.FreeKeys(stimulus_id=self._stimulus_id, time=self.time,
                                        worker=ws.name, keys=(key,)))

    def _handle_task_erred(self, msg: p.TaskErred) -> None:
        ts = self.tasks.get(msg.key)
        ws = self.workers.get(msg.worker)
        if ts is None or ws is None or ts.state is not PROCESSING or ts.processing_on is not ws \
                or (msg.run_id and msg.run_id != ts.run_id):
            self._stale(msg.key, ws, ts)
            return
        ts.exception = msg.exception
        ts.traceback = msg.traceback
        ts.exception_blame = ts.key
        ws.executing.pop(msg.key, None)
        self.transitions({ts: ERRED})

    def _handle_missing_data(self, msg: p.MissingData) -> None:
        ts = self.tasks.get(msg.key)
        holder = self.workers.get(msg.holder)
        if ts is None:
            return
        recs: Recommendations = {}
        if holder is not None and holder in ts.who_has:
            del ts.who_has[holder]
            del holder.has_what[ts]
            holder.nbytes -= ts.nbytes
            if not ts.who_has:
                recs[ts] = RELEASED  # lost: recompute from lineage
        # The asking worker's tasks that needed it are placed again with fresh holders.
        asker = self.workers.get(msg.worker)
        if asker is not None and ts not in recs:
            for dts in ts.dependents:
                if dts.state is PROCESSING and dts.processing_on is asker:
                    recs[dts] = RELEASED
        self.transitions(recs)

    def _handle_heartbeat(self, msg: p.Heartbeat) -> None:
        ws = self.workers.get(msg.worker)
        if ws is None:
            return
        ws.last_seen = msg.time
        ws.executing = dict(msg.executing)
        for key, elapsed in msg.executing.items():
            ts = self.tasks.get(key)
            if ts is not None:
                self.estimator.observe_running(ts.prefix, elapsed)

    def _handle_steal_response(self, msg: p.StealResponse) -> None:
        for ext in self.extensions:
            ext.steal_response(msg)

    def _handle_tick(self, msg: p.Tick) -> None:
        if self.heartbeat_timeout is not None:
            limit = msg.time - self.heartbeat_timeout
            for ws in [w for w in self.running if w.last_seen < limit]:
                self._remove_worker(ws, reason="heartbeat-timeout")
        for ext in self.extensions:
            ext.tick(msg.time)

    def _handle_skew_estimates(self, msg: p.SkewEstimates) -> None:
        self.estimator.skew(msg.factor, msg.prefix)

    # ------------------------------------------------------------------ helpers for extensions

    def emit(self, instruction: p.SchedulerInstruction) -> None:
        """Add an instruction to the current handle()'s output (for extensions)."""
        self._out.append(instruction)

    def move_processing(self, ts: TaskState, ws: WorkerInfo) -> None:
        """Reassign processing ``ts`` to the running worker ``ws`` (work stealing's confirm:
        the old worker has already given it up, so it gets no message; ``ws`` may be that
        same worker, which then gets the task anew). Logged and shown to observers as
        processing -> processing."""
        old = ts.processing_on
        if ts.state is not PROCESSING or old is None:
            raise InvalidTransition(f"task {ts.key!r}: cannot move a {ts.state} task from "
                                    f"{old!r} to {ws!r} (stimulus {self._stimulus_id})")
        if ws.status is not RUNNING or self.workers.get(ws.name) is not ws:
            raise InvalidTransition(f"task {ts.key!r}: cannot move to {ws!r}, not a running "
                                    f"worker (stimulus {self._stimulus_id})")
        self._unassign(ts, old)
        self._assign(ts, ws)
        self.transition_counter += 1
        self.transition_log.add((ts.key, PROCESSING, PROCESSING, self._stimulus_id))
        for obs in self.observers:
            obs(self, ts, PROCESSING, PROCESSING, self._stimulus_id)

    @property
    def stimulus_id(self) -> str:
        return self._stimulus_id

    def states_count(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ts in self.tasks.values():
            counts[ts.state] = counts.get(ts.state, 0) + 1
        return counts

    def story(self, keys: Iterable[str]) -> list[tuple[str, str, str, str]]:
        """The logged transitions of these keys, oldest first."""
        wanted = set(keys)
        return [t for t in self.transition_log if t[0] in wanted]
