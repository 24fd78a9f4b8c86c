"""The reference worker as a pure state machine.

``WorkerState.handle(stimulus) -> list[instruction]``. It decides what to run and what
to fetch; its runtime (the simulator or a real process) executes task bodies, moves the
bytes and stores the values, and reports back with ExecuteSuccess/Failure and
GatherDepSuccess/Failure. It never reads a clock: a stimulus's ``time`` is "now".

Task states on the worker (a task with no record is "released"):
  waiting    assigned to us, some inputs not here yet
  ready      assigned to us, inputs here, waiting for a thread
  executing  running on a thread
  cancelled  running, but the scheduler no longer wants it: its result will be dropped
  memory     value stored here
  error      its body raised; the scheduler has been told
  fetch      an input we need, to be fetched from a peer
  flight     an input being fetched
  missing    an input no known peer has; the scheduler has been told
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import islice
from typing import Any

from squall.core import protocol as p
from squall.core.translog import TransitionLog

WAITING = "waiting"
READY = "ready"
EXECUTING = "executing"
CANCELLED = "cancelled"
MEMORY = "memory"
ERROR = "error"
FETCH = "fetch"
FLIGHT = "flight"
MISSING = "missing"
RELEASED = "released"
WORKER_TASK_STATES = (WAITING, READY, EXECUTING, CANCELLED, MEMORY, ERROR, FETCH, FLIGHT,
                      MISSING, RELEASED)

WORKER_TRANSITIONS: frozenset[tuple[str, str]] = frozenset({
    (RELEASED, WAITING), (RELEASED, READY), (RELEASED, FETCH),
    (WAITING, READY), (WAITING, RELEASED),
    (READY, EXECUTING), (READY, RELEASED),
    (EXECUTING, MEMORY), (EXECUTING, ERROR), (EXECUTING, CANCELLED),
    (CANCELLED, EXECUTING), (CANCELLED, RELEASED),
    (FETCH, FLIGHT), (FETCH, RELEASED), (FETCH, WAITING), (FETCH, READY),
    (FLIGHT, MEMORY), (FLIGHT, FETCH), (FLIGHT, MISSING), (FLIGHT, RELEASED),
    (MISSING, FETCH), (MISSING, RELEASED), (MISSING, WAITING), (MISSING, READY),
    (MEMORY, RELEASED), (ERROR, RELEASED),
})

# old state -> the states it may move to (WORKER_TRANSITIONS, looked up without a tuple)
_ALLOWED: dict[str, frozenset[str]] = {
    old: frozenset(new for o, new in WORKER_TRANSITIONS if o == old)
    for old in WORKER_TASK_STATES
}

DEFAULT_FETCH_LIMIT = 4  # concurrent transfers from peers
FETCH_BATCH_BYTES = 50_000_000  # gather several keys from one peer in one transfer


def _queued(ts: WTask) -> tuple[int, int, WTask]:
    """A task's entry on a worker heap: flat (priority[0], priority[1], task) entries
    compare about twice as fast as (priority, task)."""
    return ts.priority[0], ts.priority[1], ts


class InvalidWorkerTransition(RuntimeError):
    pass


class WTask:
    """The worker's record of one task."""

    __slots__ = ("key", "state", "prefix", "priority", "duration", "runnable", "dependencies",
                 "dependents", "waiting_for", "who_has", "nbytes", "start_time", "discard",
                 "coming_from", "run_id")

    def __init__(self, key: str) -> None:
        self.key = key
        self.state = RELEASED
        self.prefix = ""
        self.priority: tuple[int, int] = (0, 0)
        self.duration = 0.0
        self.runnable = False  # the scheduler asked us to compute it
        self.dependencies: dict[WTask, None] = {}
        self.dependents: dict[WTask, None] = {}
        self.waiting_for: dict[WTask, None] = {}  # dependencies not in memory here
        self.who_has: list[str] = []  # peers believed to hold it (for fetching)
        self.nbytes = 0
        self.start_time = 0.0
        self.discard = False  # in flight but no longer wanted: drop on arrival
        self.coming_from: str | None = None
        self.run_id = 0  # the scheduler's assignment (ComputeTask.run_id) its report answers

    def __repr__(self) -> str:
        return f"<WTask {self.key!r} {self.state}>"

    def __lt__(self, other: WTask) -> bool:  # heap tie-break, never reached in practice
        return self.key < other.key


WorkerObserver = Callable[["WorkerState", WTask, str, str, str], None]


class WorkerState:
    def __init__(self, name: str, nthreads: int = 1, *, fetch_limit: int = DEFAULT_FETCH_LIMIT,
                 transition_log_size: int = 2_000) -> None:
        if nthreads < 1:
            raise ValueError(f"worker {name!r}: nthreads must be >= 1, got {nthreads}")
        self.name = name
        self.nthreads = nthreads
        self.fetch_limit = fetch_limit
        self.tasks: dict[str, WTask] = {}
        # Heaps of _queued(task) entries; stale entries are skipped when popped.
        self.ready: list[tuple[int, int, WTask]] = []
        self.executing: dict[WTask, None] = {}  # executing and cancelled: both hold a thread
        self.to_fetch: list[tuple[int, int, WTask]] = []  # heap of fetch-state tasks
        self.in_flight: dict[str, list[WTask]] = {}  # peer -> keys being fetched from it
        # Compute requests for keys that were in flight: carried out if the transfer fails.
        self._compute_after_flight: dict[str, p.ComputeTask] = {}
        self.nbytes = 0  # bytes of tasks in memory
        self.time = 0.0
        self.transition_log = TransitionLog(transition_log_size)
        self.transition_counter = 0
        self.observers: list[WorkerObserver] = []
        self._out: list[Any] = []
        self._sid = ""
        self._handlers: dict[type, Callable[[Any], None]] = {
            p.ComputeTask: self._handle_compute_task,
            p.FreeKeys: self._handle_free_keys,
            p.StealRequest: self._handle_steal_request,
            p.ExecuteSuccess: self._handle_execute_success,
            p.ExecuteFailure: self._handle_execute_failure,
            p.GatherDepSuccess: self._handle_gather_success,
            p.GatherDepFailure: self._handle_gather_failure,
        }

    # ------------------------------------------------------------------ public API

    def handle(self, stimulus: Any) -> list[Any]:
        handler = self._handlers.get(type(stimulus))
        if handler is None:
            raise TypeError(f"WorkerState cannot handle {type(stimulus).__name__}")
        out: list[Any] = []
        self._out = out
        self._sid = stimulus.stimulus_id
        if stimulus.time > self.time:
            self.time = stimulus.time
        handler(stimulus)
        # (each checks the same first, but most stimuli leave nothing to start)
        if self.to_fetch and len(self.in_flight) < self.fetch_limit:
            self._ensure_communicating()
        if self.ready and len(self.executing) < self.nthreads:
            self._ensure_computing()
        self.transition_log.trim()
        return out

    def heartbeat(self, time: float, stimulus_id: str) -> p.Heartbeat:
        """What this worker tells the scheduler periodically: how long each task has run."""
        return p.Heartbeat(
            stimulus_id=stimulus_id, time=time, worker=self.name,
            executing={ts.key: max(0.0, time - ts.start_time) for ts in self.executing
                       if ts.state == EXECUTING},
        )

    def in_memory(self) -> list[str]:
        return [k for k, ts in self.tasks.items() if ts.state == MEMORY]

    # ------------------------------------------------------------------ transitions

    def _set_state(self, ts: WTask, new: str) -> None:
        old = ts.state
        if new not in _ALLOWED[old]:
            raise InvalidWorkerTransition(
                f"worker {self.name!r}, task {ts.key!r}: no transition {old} -> {new} "
                f"(stimulus {self._sid})"
            )
        ts.state = new
        self.transition_counter += 1
        self.transition_log.add((ts.key, old, new, self._sid))
        if self.observers:
            for obs in self.observers:
                obs(self, ts, old, new, self._sid)

    def _forget(self, ts: WTask) -> None:
        """Drop a released task's record and its links."""
        for dts in ts.dependencies:
            dts.dependents.pop(ts, None)
        for dts in ts.dependents:
            dts.dependencies.pop(ts, None)
            dts.waiting_for.pop(ts, None)
        self.tasks.pop(ts.key, None)

    def _release(self, ts: WTask) -> None:
        """Move ``ts`` to released and drop whatever only it needed."""
        state = ts.state
        if state == EXECUTING:
            self._set_state(ts, CANCELLED)  # can't stop a thread: drop the result later
            return
        if state == CANCELLED:
            return
        if state == FLIGHT:
            ts.discard = True  # arrives later; dropped then
            ts.runnable = False
            return
        if state == MEMORY:
            self.nbytes -= ts.nbytes
            self._out.append(p.ReleaseData(stimulus_id=self._sid, worker=self.name,
                                           keys=(ts.key,)))
        self._set_state(ts, RELEASED)
        deps = list(ts.dependencies)
        self._forget(ts)
        for dts in deps:
            self._release_if_unneeded(dts)

    def _release_if_unneeded(self, ts: WTask) -> None:
        """A fetched input nobody here needs any more is dropped."""
        if not ts.runnable and not ts.dependents and ts.key in self.tasks:
            self._release(ts)

    # ------------------------------------------------------------------ handlers

    def _handle_compute_task(self, msg: p.ComputeTask) -> None:
        ts = self.tasks.get(msg.key)
        if ts is None:
            ts = self.tasks[msg.key] = WTask(msg.key)
        ts.run_id = msg.run_id  # whatever happens below, its report answers this request
        if ts.state == CANCELLED:
            ts.runnable = True
            self._set_state(ts, EXECUTING)  # resumed: its result is wanted again
            return
        elif ts.state == MEMORY:
            ts.runnable = True
            self._out.append(p.TaskFinished(
                stimulus_id=self._sid, time=self.time, worker=self.name, key=ts.key,
                nbytes=ts.nbytes, duration=msg.duration, run_id=ts.run_id))
            return
        elif ts.runnable and ts.state in (WAITING, READY, EXECUTING, ERROR):
            return  # a duplicate request
        elif ts.state == FLIGHT:
            ts.runnable = True  # an input on its way: report it when it lands
            ts.discard = False
            self._compute_after_flight[ts.key] = msg
            return
        ts.runnable = True
        ts.prefix = msg.prefix
        ts.priority = msg.priority
        ts.duration = msg.duration
        for dep in msg.deps:
            dts = self.tasks.get(dep.key)
            if dts is None:
                dts = self.tasks[dep.key] = WTask(dep.key)
                dts.priority = msg.priority
                dts.nbytes = dep.nbytes
            ts.dependencies[dts] = None
            dts.dependents[ts] = None
            if dts.state == MEMORY:
                continue
            ts.waiting_for[dts] = None
            if dts.state in (RELEASED, MISSING):
                dts.who_has = list(dep.holders)
                dts.nbytes = dep.nbytes
                self._set_state(dts, FETCH)
                heapq.heappush(self.to_fetch, _queued(dts))
            elif dts.state == FETCH:
                dts.who_has = list(dep.holders)
            elif dts.state == FLIGHT:
                dts.discard = False
        if ts.waiting_for:
            self._set_state(ts, WAITING)
        else:
            self._set_state(ts, READY)
            heapq.heappush(self.ready, _queued(ts))

    def _handle_free_keys(self, msg: p.FreeKeys) -> None:
        for key in msg.keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            if ts.state in (WAITING, READY, EXECUTING, CANCELLED, ERROR) or ts.runnable:
                ts.runnable = False
                if ts.dependents and ts.state == MEMORY:
                    continue  # still an input of a task here: keep it as a replica
                self._release(ts)
            elif ts.state == MEMORY and not ts.dependents:
                self._release(ts)

    def _handle_steal_request(self, msg: p.StealRequest) -> None:
        ts = self.tasks.get(msg.key)
        if ts is not None and ts.runnable and ts.state in (WAITING, READY):
            ts.runnable = False
            self._release(ts)
            state = RELEASED
        elif ts is None or not ts.runnable:
            state = RELEASED if ts is None else ts.state
        else:
            state = ts.state
        self._out.append(p.StealResponse(
            stimulus_id=self._sid, time=self.time, worker=self.name, key=msg.key,
            steal_id=msg.steal_id, state=state))

    def _handle_execute_success(self, msg: p.ExecuteSuccess) -> None:
        ts = self.tasks.get(msg.key)
        if ts is None or ts.state not in (EXECUTING, CANCELLED):
            return
        del self.executing[ts]
        if ts.state == CANCELLED:
            self._out.append(p.ReleaseData(stimulus_id=self._sid, worker=self.name,
                                           keys=(ts.key,)))
            self._set_state(ts, RELEASED)
            deps = list(ts.dependencies)
            self._forget(ts)
            for dts in deps:
                self._release_if_unneeded(dts)
            return
        ts.nbytes = msg.nbytes
        self.nbytes += msg.nbytes
        self._set_state(ts, MEMORY)
        self._out.append(p.TaskFinished(
            stimulus_id=self._sid, time=msg.time, worker=self.name, key=ts.key,
            nbytes=msg.nbytes, duration=msg.duration, run_id=ts.run_id))
        self._landed(ts)
        self._drop_inputs(ts)

    def _handle_execute_failure(self, msg: p.ExecuteFailure) -> None:
        ts = self.tasks.get(msg.key)
        if ts is None or ts.state not in (EXECUTING, CANCELLED):
            return
        del self.executing[ts]
        if ts.state == CANCELLED:
            self._set_state(ts, RELEASED)
            deps = list(ts.dependencies)
            self._forget(ts)
            for dts in deps:
                self._release_if_unneeded(dts)
            return
        self._set_state(ts, ERROR)
        self._out.append(p.TaskErred(
            stimulus_id=self._sid, time=msg.time, worker=self.name, key=ts.key,
            exception=msg.exception, traceback=msg.traceback, run_id=ts.run_id))
        self._drop_inputs(ts)
        # The scheduler owns the error from here on; keep no record of it.
        ts.runnable = False
        self._set_state(ts, RELEASED)
        self._forget(ts)

    def _drop_inputs(self, ts: WTask) -> None:
        """After ts ran, inputs fetched only for it are dropped."""
        deps = list(ts.dependencies)
        for dts in deps:
            dts.dependents.pop(ts, None)
        ts.dependencies.clear()
        for dts in deps:
            self._release_if_unneeded(dts)

    def _landed(self, ts: WTask) -> None:
        """``ts`` is now in memory here: its waiting dependents may become ready."""
        for dts in ts.dependents:
            if ts in dts.waiting_for:
                del dts.waiting_for[ts]
                if not dts.waiting_for and dts.state == WAITING:
                    self._set_state(dts, READY)
                    heapq.heappush(self.ready, _queued(dts))

    def _handle_gather_success(self, msg: p.GatherDepSuccess) -> None:
        self._gather_done(msg.holder, msg.nbytes, missing=())

    def _handle_gather_failure(self, msg: p.GatherDepFailure) -> None:
        self._gather_done(msg.holder, msg.nbytes, missing=msg.keys)

    def _gather_done(self, holder: str, received: dict[str, int],
                     missing: tuple[str, ...]) -> None:
        for ts in self.in_flight.pop(holder, []):
            if ts.state != FLIGHT:
                continue
            ts.coming_from = None
            compute = self._compute_after_flight.pop(ts.key, None)
            if ts.key in received:
                ts.nbytes = received[ts.key]
                self.nbytes += ts.nbytes
                self._set_state(ts, MEMORY)
                if ts.discard and not ts.dependents and not ts.runnable:
                    ts.discard = False
                    self._release(ts)
                    continue
                ts.discard = False
                if ts.runnable:
                    self._out.append(p.TaskFinished(
                        stimulus_id=self._sid, time=self.time, worker=self.name, key=ts.key,
                        nbytes=ts.nbytes, duration=ts.duration, run_id=ts.run_id))
                self._landed(ts)
                continue
            # not received: this holder does not have it (or is unreachable)
            if holder in ts.who_has:
                ts.who_has.remove(holder)
            if compute is not None and ts.runnable:
                # Asked to compute it while it was on its way, and it did not come: compute.
                ts.runnable = False
                ts.discard = False
                self._set_state(ts, FETCH)
                self._handle_compute_task(compute)
                continue
            if ts.discard and not ts.dependents:
                ts.discard = False
                self._set_state(ts, RELEASED)
                self._forget(ts)
                continue
            ts.discard = False
            if ts.who_has:
                self._set_state(ts, FETCH)
                heapq.heappush(self.to_fetch, _queued(ts))
            else:
                self._set_state(ts, MISSING)
                self._out.append(p.MissingData(
                    stimulus_id=self._sid, time=self.time, worker=self.name, key=ts.key,
                    holder=holder))
        del missing  # every requested key not received is handled above

    # ------------------------------------------------------------------ scheduling on the worker

    def _ensure_computing(self) -> None:
        ready = self.ready
        executing = self.executing
        while ready and len(executing) < self.nthreads:
            ts = heapq.heappop(ready)[2]
            if ts.state != READY or self.tasks.get(ts.key) is not ts:
                continue  # stale heap entry
            self._set_state(ts, EXECUTING)
            ts.start_time = self.time
            executing[ts] = None
            self._out.append(p.Execute(stimulus_id=self._sid, worker=self.name, key=ts.key))

    def _ensure_communicating(self) -> None:
        to_fetch = self.to_fetch
        in_flight = self.in_flight
        busy: list[tuple[int, int, WTask]] = []  # waiting on peers already sending
        while to_fetch and len(in_flight) < self.fetch_limit and len(busy) < 64:
            entry = heapq.heappop(to_fetch)
            ts = entry[2]
            if ts.state != FETCH or self.tasks.get(ts.key) is not ts:
                continue
            for holder in ts.who_has:
                if holder not in in_flight:
                    break
            else:
                # every holder is busy sending to us: look at the next key, retry this one
                # when a transfer ends
                busy.append(entry)
                continue
            batch = [ts]
            total = ts.nbytes
            # other keys waiting on the same peer travel in the same transfer (a bounded
            # scan of the heap; most entries are on other peers, so that is checked first)
            if total < FETCH_BATCH_BYTES:
                for _, _, other in islice(to_fetch, 64):
                    if holder in other.who_has and other.state == FETCH and other is not ts \
                            and other not in batch:
                        batch.append(other)
                        total += other.nbytes
                        if total >= FETCH_BATCH_BYTES:
                            break
            for t in batch:
                t.coming_from = holder
                self._set_state(t, FLIGHT)
            in_flight[holder] = batch
            self._out.append(p.GatherDep(
                stimulus_id=self._sid, worker=self.name, holder=holder,
                keys=(ts.key,) if len(batch) == 1 else tuple([t.key for t in batch]),
                nbytes=total))
        for entry in busy:
            heapq.heappush(to_fetch, entry)
