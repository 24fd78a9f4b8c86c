"""The reference worker as a pure state machine.

``WorkerState.handle(stimulus) -> list[instruction]``. It decides what to run and what
to fetch; its runtime (the simulator or a real process) executes task bodies, moves the
bytes and stores the values, and reports back with ExecuteSuccess/Failure and
GatherDepSuccess/Failure. It never reads a clock: a stimulus's ``time`` is "now".

Task states on the worker, ``WorkerTaskState`` (a task with no record is "released"):
  waiting    assigned to us, some inputs not here yet
  ready      assigned to us, inputs here, waiting for a thread
  executing  running on a thread
  cancelled  running, but the scheduler no longer wants it: its result will be dropped
  memory     value stored here
  error      its body raised; the scheduler has been told
  fetch      an input we need, to be fetched from a peer
  flight     an input being fetched
  missing    an input no known peer has; the scheduler has been told

A task moves only along ``WORKER_TRANSITIONS``, through the transition table as on the
scheduler: ``_transition(ts, finish)`` looks the move up (an absent one raises
``InvalidWorkerTransition``), makes it, logs it and shows it to the observers, then runs
the table's function for it: the bookkeeping that follows the move wherever it is made (a
thread given back, stored bytes counted, waiting dependents woken, a released task's
record dropped). The caller does what it made the move for: it sets what the stimulus
says (sizes, holders, flags) before, and queues the task, starts its body or its
transfer, or reports to the scheduler after. Every move into "released" ends in the one
release path, ``_to_released``; ``_release`` is the one way to ask for it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from enum import StrEnum
from itertools import islice
from typing import Any

from squall.core import protocol as p
from squall.core.translog import TransitionLog


class WorkerTaskState(StrEnum):
    """A task's state on a worker. The value is the state's name in messages and traces
    (a ``StrEnum`` member is that string: it compares, hashes and encodes as it)."""

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


# This module's own names for the states: a module global is read about four times faster
# than an enum attribute (Python 3.11), and the transitions read them all the time. Other
# modules name a state through its enum (WorkerTaskState.MEMORY), which never collides with
# the scheduler's (SchedulerTaskState.MEMORY).
# A state the machine stores is always a member, so the machine compares states by identity
# (``ts.state is MEMORY``); a state that comes in a message is a plain string: compare it
# with ``==`` (``msg.state == WorkerTaskState.RELEASED``).
WAITING = WorkerTaskState.WAITING
READY = WorkerTaskState.READY
EXECUTING = WorkerTaskState.EXECUTING
CANCELLED = WorkerTaskState.CANCELLED
MEMORY = WorkerTaskState.MEMORY
ERROR = WorkerTaskState.ERROR
FETCH = WorkerTaskState.FETCH
FLIGHT = WorkerTaskState.FLIGHT
MISSING = WorkerTaskState.MISSING
RELEASED = WorkerTaskState.RELEASED
WORKER_TASK_STATES: tuple[WorkerTaskState, ...] = tuple(WorkerTaskState)

WORKER_TRANSITIONS: frozenset[tuple[WorkerTaskState, WorkerTaskState]] = frozenset({
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


WorkerObserver = Callable[["WorkerState", WTask, WorkerTaskState, WorkerTaskState, str], None]
# What follows a move, given the task and the state it left (None: nothing does).
Effects = Callable[[WTask, WorkerTaskState], None] | None


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
        self._out: list[p.WorkerInstruction] = []
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
        # Every move of WORKER_TRANSITIONS, from each state, and the bookkeeping that
        # follows it wherever it is made (None: none does). What a move is made for --
        # queueing the task to run or to fetch, starting its body or its transfer -- its
        # caller does, right after.
        to_released = self._to_released
        self._table: dict[WorkerTaskState, dict[WorkerTaskState, Effects]] = {
            RELEASED: {WAITING: None, READY: None, FETCH: None},
            WAITING: {READY: None, RELEASED: to_released},
            READY: {EXECUTING: None, RELEASED: to_released},
            EXECUTING: {MEMORY: self._to_memory, ERROR: self._leaves_thread,
                        CANCELLED: None},  # a cancelled body runs on
            CANCELLED: {EXECUTING: None, RELEASED: to_released},
            FETCH: {FLIGHT: None, RELEASED: to_released, WAITING: None, READY: None},
            FLIGHT: {MEMORY: self._to_memory, FETCH: None, MISSING: None, RELEASED: to_released},
            MISSING: {FETCH: None, RELEASED: to_released, WAITING: None, READY: None},
            MEMORY: {RELEASED: to_released},
            ERROR: {RELEASED: to_released},
        }

    # ------------------------------------------------------------------ public API

    def handle(self, stimulus: p.WorkerStimulus) -> list[p.WorkerInstruction]:
        """Apply one stimulus; return the instructions it causes, in order."""
        handler = self._handlers.get(type(stimulus))
        if handler is None:
            raise TypeError(f"WorkerState cannot handle {type(stimulus).__name__}")
        out: list[p.WorkerInstruction] = []
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
                       if ts.state is EXECUTING},
        )

    def in_memory(self) -> list[str]:
        return [k for k, ts in self.tasks.items() if ts.state is MEMORY]

    # ------------------------------------------------------------------ transitions engine

    def _transition(self, ts: WTask, finish: WorkerTaskState) -> None:
        """Move ``ts`` to ``finish`` along the table: log the move and show it to the
        observers, then carry out what follows from it (which may move other tasks)."""
        start = ts.state
        try:
            effects = self._table[start][finish]
        except KeyError:
            raise InvalidWorkerTransition(
                f"worker {self.name!r}, task {ts.key!r}: no transition {start} -> {finish} "
                f"(stimulus {self._sid})"
            ) from None
        ts.state = finish
        self.transition_counter += 1
        self.transition_log.add((ts.key, start, finish, self._sid))
        if self.observers:
            for obs in self.observers:
                obs(self, ts, start, finish, self._sid)
        if effects is not None:
            effects(ts, start)

    def _leaves_thread(self, ts: WTask, start: WorkerTaskState) -> None:
        del self.executing[ts]

    def _to_memory(self, ts: WTask, start: WorkerTaskState) -> None:
        """Its value (``ts.nbytes``) is stored here, computed or fetched: its waiting
        dependents may be ready."""
        if start is EXECUTING:
            del self.executing[ts]
        self.nbytes += ts.nbytes
        for dts in ts.dependents:
            if ts in dts.waiting_for:
                del dts.waiting_for[ts]
                if not dts.waiting_for and dts.state is WAITING:
                    self._transition(dts, READY)
                    heapq.heappush(self.ready, _queued(dts))

    def _to_released(self, ts: WTask, start: WorkerTaskState) -> None:
        """Every move into "released", the one release path: a stored value is dropped, a
        body that ended gives its thread back, the record and its links go, and so do the
        inputs fetched only for it."""
        if start is MEMORY:
            self.nbytes -= ts.nbytes
            self._out.append(p.ReleaseData(stimulus_id=self._sid, worker=self.name,
                                           keys=(ts.key,)))
        elif start is CANCELLED:
            del self.executing[ts]  # its body ended
        deps = list(ts.dependencies)
        for dts in deps:
            dts.dependents.pop(ts, None)
        for dts in ts.dependents:
            dts.dependencies.pop(ts, None)
            dts.waiting_for.pop(ts, None)
        self.tasks.pop(ts.key, None)
        for dts in deps:
            self._release_if_unneeded(dts)

    # ------------------------------------------------------------------ releasing

    def _release(self, ts: WTask) -> None:
        """Nobody needs ``ts`` here any more: the one way to let it go. A running body
        cannot be stopped: its task is cancelled, and released when the body ends. An input
        on its way is dropped when it lands."""
        state = ts.state
        if state is EXECUTING:
            self._transition(ts, CANCELLED)  # can't stop a thread: drop the result later
        elif state is FLIGHT:
            ts.discard = True  # arrives later; dropped then
            ts.runnable = False
        elif state is not CANCELLED:
            self._transition(ts, RELEASED)

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
        if ts.state is CANCELLED:
            ts.runnable = True
            self._transition(ts, EXECUTING)  # resumed: its result is wanted again
            return
        elif ts.state is MEMORY:
            ts.runnable = True
            self._out.append(p.TaskFinished(
                stimulus_id=self._sid, time=self.time, worker=self.name, key=ts.key,
                nbytes=ts.nbytes, duration=msg.duration, run_id=ts.run_id))
            return
        elif ts.runnable and ts.state in (WAITING, READY, EXECUTING, ERROR):
            return  # a duplicate request
        elif ts.state is FLIGHT:
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
            if dts.state is MEMORY:
                continue
            ts.waiting_for[dts] = None
            if dts.state in (RELEASED, MISSING):
                dts.who_has = list(dep.holders)
                dts.nbytes = dep.nbytes
                self._transition(dts, FETCH)
                heapq.heappush(self.to_fetch, _queued(dts))
            elif dts.state is FETCH:
                dts.who_has = list(dep.holders)
            elif dts.state is FLIGHT:
                dts.discard = False
        if ts.waiting_for:
            self._transition(ts, WAITING)
        else:
            self._transition(ts, READY)
            heapq.heappush(self.ready, _queued(ts))

    def _handle_free_keys(self, msg: p.FreeKeys) -> None:
        for key in msg.keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            if ts.state in (WAITING, READY, EXECUTING, CANCELLED, ERROR) or ts.runnable:
                ts.runnable = False
                if ts.dependents and ts.state is MEMORY:
                    continue  # still an input of a task here: keep it as a replica
                self._release(ts)
            elif ts.state is MEMORY and not ts.dependents:
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
        if ts.state is CANCELLED:
            # The runtime stored the value nobody wants: it drops it.
            self._out.append(p.ReleaseData(stimulus_id=self._sid, worker=self.name,
                                           keys=(ts.key,)))
            self._transition(ts, RELEASED)
            return
        ts.nbytes = msg.nbytes
        self._transition(ts, MEMORY)
        self._out.append(p.TaskFinished(
            stimulus_id=self._sid, time=msg.time, worker=self.name, key=ts.key,
            nbytes=msg.nbytes, duration=msg.duration, run_id=ts.run_id))
        self._drop_inputs(ts)

    def _handle_execute_failure(self, msg: p.ExecuteFailure) -> None:
        ts = self.tasks.get(msg.key)
        if ts is None or ts.state not in (EXECUTING, CANCELLED):
            return
        if ts.state is CANCELLED:
            self._transition(ts, RELEASED)
            return
        self._transition(ts, ERROR)
        self._out.append(p.TaskErred(
            stimulus_id=self._sid, time=msg.time, worker=self.name, key=ts.key,
            exception=msg.exception, traceback=msg.traceback, run_id=ts.run_id))
        self._drop_inputs(ts)
        # The scheduler owns the error from here on; keep no record of it.
        ts.runnable = False
        self._transition(ts, RELEASED)

    def _drop_inputs(self, ts: WTask) -> None:
        """After ts ran, inputs fetched only for it are dropped."""
        deps = list(ts.dependencies)
        for dts in deps:
            dts.dependents.pop(ts, None)
        ts.dependencies.clear()
        for dts in deps:
            self._release_if_unneeded(dts)

    def _handle_gather_success(self, msg: p.GatherDepSuccess) -> None:
        self._gather_done(msg.holder, msg.nbytes, missing=())

    def _handle_gather_failure(self, msg: p.GatherDepFailure) -> None:
        self._gather_done(msg.holder, msg.nbytes, missing=msg.keys)

    def _gather_done(self, holder: str, received: dict[str, int],
                     missing: tuple[str, ...]) -> None:
        for ts in self.in_flight.pop(holder, []):
            if ts.state is not FLIGHT:
                continue
            ts.coming_from = None
            compute = self._compute_after_flight.pop(ts.key, None)
            if ts.key in received:
                ts.nbytes = received[ts.key]
                self._transition(ts, MEMORY)
                if ts.discard and not ts.dependents and not ts.runnable:
                    ts.discard = False
                    self._release(ts)
                    continue
                ts.discard = False
                if ts.runnable:
                    self._out.append(p.TaskFinished(
                        stimulus_id=self._sid, time=self.time, worker=self.name, key=ts.key,
                        nbytes=ts.nbytes, duration=ts.duration, run_id=ts.run_id))
                continue
            # not received: this holder does not have it (or is unreachable)
            if holder in ts.who_has:
                ts.who_has.remove(holder)
            if compute is not None and ts.runnable:
                # Asked to compute it while it was on its way, and it did not come: compute
                # (by way of "fetch", not queued for fetching).
                ts.runnable = False
                ts.discard = False
                self._transition(ts, FETCH)
                self._handle_compute_task(compute)
                continue
            if ts.discard and not ts.dependents:
                ts.discard = False
                self._transition(ts, RELEASED)
                continue
            ts.discard = False
            if ts.who_has:
                self._transition(ts, FETCH)
                heapq.heappush(self.to_fetch, _queued(ts))
            else:
                self._transition(ts, MISSING)
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
            if ts.state is not READY or self.tasks.get(ts.key) is not ts:
                continue  # stale heap entry
            self._transition(ts, EXECUTING)
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
            if ts.state is not FETCH or self.tasks.get(ts.key) is not ts:
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
                    if holder in other.who_has and other.state is FETCH and other is not ts \
                            and other not in batch:
                        batch.append(other)
                        total += other.nbytes
                        if total >= FETCH_BATCH_BYTES:
                            break
            for t in batch:
                t.coming_from = holder
                self._transition(t, FLIGHT)
            in_flight[holder] = batch
            self._out.append(p.GatherDep(
                stimulus_id=self._sid, worker=self.name, holder=holder,
                keys=(ts.key,) if len(batch) == 1 else tuple([t.key for t in batch]),
                nbytes=total))
        for entry in busy:
            heapq.heappush(to_fetch, entry)
