"""Strict mode for one state machine: SchedulerValidator and WorkerValidator.

Each attaches to its machine's transition observer. A transition only *notes* what it
touched (the task, its dependencies and dependents) and the move that touched it: within
one stimulus the state may legitimately be mid-update (a worker's data is stripped before
the transitions it causes run). ``after_stimulus(msg)`` then checks what was touched, and
the first broken invariant raises InvariantViolation naming the move that touched it.

A task touched only as a neighbour gets the invariants a neighbour's move can break
(``Invariant.neighbours``); a move between states its neighbours do not tell apart
(waiting -> processing, say) touches only the task itself.

Aggregates (a worker's stored bytes, its processing set, its per-prefix counts, what it
must fetch) are checked against the validator's own ledger: a per-task snapshot of what
the task contributes, updated when the task is touched. So a check costs what the
transition touched, never the size of the graph. ``check_full()`` recounts everything
from scratch, checks every invariant on every entity and starts the ledger afresh.

Neither class needs a simulator: the real runtime runs a SchedulerValidator inside the
scheduler process and a WorkerValidator inside each worker.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from squall.core import protocol as p
from squall.core.scheduler import (
    TASK_STATES,
    SchedulerState,
    SchedulerTaskState,
    TaskState,
    WorkerInfo,
    WorkerStatus,
)
from squall.core.worker import WORKER_TASK_STATES, WorkerState, WorkerTaskState, WTask
from squall.invariants.base import FULL, INCREMENTAL, Invariant, by_state
from squall.invariants.catalog import CATALOG
from squall.invariants.scheduler_checks import (
    CLUSTER_INVARIANTS,
    TASK_INVARIANTS,
    TRANSITION_INVARIANTS,
    WORKER_INVARIANTS,
)
from squall.invariants.stealing_checks import (
    RESPONSE_INVARIANTS,
    STEAL_INVARIANTS,
    answers_before,
    field,
    open_steals,
    stealing_extension,
)
from squall.invariants.violation import InvariantViolation
from squall.invariants.worker_checks import (
    WSTATE_INVARIANTS,
    WTASK_INVARIANTS,
    WTRANSITION_INVARIANTS,
)

RECENT = 32  # stimuli kept in the ring for violation reports
WORKER_STATUSES = tuple(WorkerStatus)
Move = tuple[str, str, str]  # (key, start, finish): the transition that touched an entity
NAMED: Move = ("", "", "")  # touched because the stimulus names it, not by a transition


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cycle collector paused: a recount allocates one snapshot per task and frees
    the old ones, nothing cyclic, yet would set off collections that walk the whole heap."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


class Reporter:
    """What the validators of one run share: the ring of recent stimuli, the callbacks
    called with each violation before it is raised, and the trace path to mention."""

    def __init__(self, recent: int = RECENT) -> None:
        self.recent: deque[tuple[str, Any]] = deque(maxlen=recent)
        self.on_violation: list[Callable[[InvariantViolation], Any]] = []
        self.trace_path = ""
        self.collected: list[InvariantViolation] | None = None  # set: collect, don't raise

    def report(self, inv: Invariant, entity: str, detail: str, move: Move | None,
               stimulus_id: str, time: float, story: Any = ()) -> None:
        key, start, finish = move or NAMED
        exc = InvariantViolation(inv, entity, detail, key=key, start=start, finish=finish,
                                 stimulus_id=stimulus_id, time=time, recent=self.recent,
                                 story=story, trace_path=self.trace_path)
        if self.collected is not None:
            self.collected.append(exc)
            return
        for callback in self.on_violation:
            callback(exc)
        raise exc


Checks = tuple[Callable[..., Any], ...]
INVARIANT_OF: dict[Callable[..., Any], Invariant] = {inv.check: inv for inv in CATALOG}


def _table(invariants: list[Invariant], states: tuple[str, ...], scopes: tuple[str, ...],
           neighbours_only: bool = False) -> dict[str, Checks]:
    """state -> the check functions to run, in catalog order."""
    return {s: tuple(inv.check for inv in invs)
            for s, invs in by_state(invariants, states, scopes, neighbours_only).items()}


def _pairs(invariants: list[Invariant], scopes: tuple[str, ...]) -> Checks:
    return tuple(inv.check for inv in invariants if inv.scope in scopes)


_INC = (INCREMENTAL,)
_ALL = (INCREMENTAL, FULL)
_TASK_INC = _table(TASK_INVARIANTS, TASK_STATES, _INC)
_TASK_NEAR = _table(TASK_INVARIANTS, TASK_STATES, _INC, neighbours_only=True)
_TASK_ALL = _table(TASK_INVARIANTS, TASK_STATES, _ALL)
_TASK_UNKNOWN = _pairs([i for i in TASK_INVARIANTS if i.states is None], _ALL)
_WORKER_INC = _table(WORKER_INVARIANTS, WORKER_STATUSES, _INC)
_WORKER_ALL = _table(WORKER_INVARIANTS, WORKER_STATUSES, _ALL)
_CLUSTER_INC = _pairs(CLUSTER_INVARIANTS, _INC)
_CLUSTER_ALL = _pairs(CLUSTER_INVARIANTS, _ALL)
_STEAL = _pairs(STEAL_INVARIANTS, _ALL)
_RESPONSE = _pairs(RESPONSE_INVARIANTS, _ALL)
_MOVES = _pairs(TRANSITION_INVARIANTS, _ALL)
_WTASK_INC = _table(WTASK_INVARIANTS, WORKER_TASK_STATES, _INC)
_WTASK_NEAR = _table(WTASK_INVARIANTS, WORKER_TASK_STATES, _INC, neighbours_only=True)
_WTASK_ALL = _table(WTASK_INVARIANTS, WORKER_TASK_STATES, _ALL)
_WTASK_UNKNOWN = _pairs([i for i in WTASK_INVARIANTS if i.states is None], _ALL)
_WSTATE_INC = _pairs(WSTATE_INVARIANTS, _INC)
_WSTATE_ALL = _pairs(WSTATE_INVARIANTS, _ALL)
_WMOVES = _pairs(WTRANSITION_INVARIANTS, _ALL)


class WorkerLedger:
    """The validator's own account of one worker, summed from per-task snapshots."""

    __slots__ = ("n_has", "nbytes", "n_proc", "prefix", "need_count", "need_bytes", "fetch")

    def __init__(self) -> None:
        self.n_has = 0  # tasks whose who_has names the worker
        self.nbytes = 0  # their sizes
        self.n_proc = 0  # tasks processing on it
        self.prefix: dict[str, int] = {}  # their prefixes, counted
        self.need_count: dict[TaskState, int] = {}  # inputs it lacks -> tasks needing each
        self.need_bytes: dict[TaskState, int] = {}  # their sizes when first needed
        self.fetch = 0  # sum of need_bytes


_EMPTY_LEDGER = WorkerLedger()  # read-only stand-in for a worker no snapshot names

# What a neighbour's invariants read of a task is whether it is in memory, in play
# (waiting, no-worker, processing), erred, released or forgotten, and its links. A move
# between two in-play states changes none of it: it touches only the task. On a worker,
# neighbours tell apart only memory and released (registered or not).
_QUIET_FOR_NEIGHBOURS = frozenset({
    ("waiting", "processing"), ("waiting", "no-worker"), ("no-worker", "processing"),
    ("processing", "processing"),
})
_NEIGHBOURS_SEE = (WorkerTaskState.MEMORY, WorkerTaskState.RELEASED)
# a task the worker was asked to compute, from a state in which it was not:
_TAKEN_ON = (WorkerTaskState.WAITING, WorkerTaskState.READY)
_NOT_ASKED = (WorkerTaskState.RELEASED, WorkerTaskState.FETCH, WorkerTaskState.MISSING)

# A task's snapshot: (state, processing_on, prefix, holders, nbytes, inputs the worker lacks)
Snapshot = tuple[str, WorkerInfo | None, str, tuple[WorkerInfo, ...], int, tuple[TaskState, ...]]


# A task's result held, or being computed: what the scheduler may let go
_HELD = (SchedulerTaskState.MEMORY, SchedulerTaskState.PROCESSING)


class SchedulerValidator:
    """Strict mode for a SchedulerState: incremental after each stimulus, full on demand."""

    def __init__(self, state: SchedulerState, *, reporter: Reporter | None = None) -> None:
        self.state = state
        self.reporter = reporter if reporter is not None else Reporter()
        self.checks = 0  # invariant evaluations
        self.removed = 0  # worker records removed so far (deaths, as the scheduler sees them)
        # keys whose result (or run) the scheduler gave up while no client wanted it, or
        # whose run it gave up when its worker reported one of its inputs missing (it
        # cannot tell a report from before a fresh assignment from one after it), in
        # order: a key let go may be computed again once it is needed again
        self.let_go: list[str] = []
        # run id -> how many keys were let go before that assignment (once any was)
        self.handed_out: dict[int, int] = {}
        self.deps_seen: dict[TaskState, int] = {}  # dependency count when first checked
        self.n_no_worker = 0  # registered tasks in no-worker, per the snapshots
        self._snap: dict[TaskState, Snapshot] = {}
        self._ledgers: dict[WorkerInfo, WorkerLedger] = {}
        self._touched: dict[TaskState, Move] = {}
        self._touched_w: dict[WorkerInfo, Move] = {}
        self._known: dict[str, WorkerInfo] = dict(state.workers)
        self._open: dict[str, tuple[Any, WorkerInfo]] = {}  # steals open after the last check
        self._thieves: dict[str, WorkerInfo] = {}  # their thieves (orphans left out)
        self._thief_gone: int | None = None  # the extension's thief-gone count then
        self.stimulus: Any = None  # the stimulus being checked (None in a full check)
        # StealResponses the stealing extension was handed (None: no extension seen yet)
        ext = stealing_extension(state)
        self.steal_answers: int | None = None if ext is None else answers_before(ext, None)
        with _no_gc():
            self._rebuild()
        state.observers.append(self._observe)

    def detach(self) -> None:
        if self._observe in self.state.observers:
            self.state.observers.remove(self._observe)

    # ------------------------------------------------------------------ hooks

    def _observe(self, state: SchedulerState, ts: TaskState, start: str, finish: str,
                 sid: str) -> None:
        move = (ts.key, start, finish)
        touched = self._touched
        touched[ts] = move
        if finish == SchedulerTaskState.PROCESSING:
            if self.let_go:
                self.handed_out[ts.run_id] = len(self.let_go)
        elif finish == SchedulerTaskState.RELEASED and start in _HELD and (
                not ts.who_wants or (start == SchedulerTaskState.PROCESSING
                                     and isinstance(state.stimulus, p.MissingData))):
            self.let_go.append(ts.key)
        if (start, finish) not in _QUIET_FOR_NEIGHBOURS:
            for d in ts.dependencies:
                if d not in touched:
                    touched[d] = move
            for d in ts.dependents:
                if d not in touched:
                    touched[d] = move
        self.checks += len(_MOVES)
        for fn in _MOVES:
            detail = fn(self, ts, start, finish, sid)
            if detail is not None:
                self._report(INVARIANT_OF[fn], f"task {ts.key!r}", detail, move, ts.key, sid)

    def after_stimulus(self, msg: Any) -> None:
        """Check what the stimulus ``msg`` (just handled) touched."""
        self.reporter.recent.append(("scheduler", msg))
        state = self.state
        touched, touched_w = self._touched, self._touched_w
        self.stimulus = msg
        try:
            self._note_named(msg)
            if len(state.workers) != len(self._known) or type(msg) is p.AddWorker:
                self._membership_changed()
            before = None  # where a steal response's task was processing before it
            if type(msg) is p.StealResponse:
                snap = self._snap.get(state.tasks.get(msg.key))  # type: ignore[arg-type]
                before = snap[1] if snap is not None else None
            for ts, move in touched.items():
                # A neighbour's move changes nothing the ledger counts, except what a
                # processing task must fetch.
                if move[0] == ts.key or move is NAMED or ts.state == SchedulerTaskState.PROCESSING:
                    self._update(ts)
            for ts, move in touched.items():
                # Touched only by a neighbour's move: what such a move can break.
                table = _TASK_INC if move[0] == ts.key or move is NAMED else _TASK_NEAR
                fns = table.get(ts.state) or _TASK_UNKNOWN
                self.checks += len(fns)
                for fn in fns:
                    detail = fn(self, ts)
                    if detail is not None:
                        self._report(INVARIANT_OF[fn], f"task {ts.key!r}", detail, move, ts.key)
            self._check_workers(touched_w, _WORKER_INC)
            self.checks += len(_CLUSTER_INC)
            for fn in _CLUSTER_INC:
                detail = fn(self, touched_w)
                if detail is not None:
                    self._report(INVARIANT_OF[fn], "cluster", detail, None)
            ext = stealing_extension(state) if state.extensions else None
            if ext is not None:
                self._check_stealing(ext, msg, before)
        finally:
            self.stimulus = None
            touched.clear()
            touched_w.clear()

    def _note_named(self, msg: Any) -> None:
        """Entities a stimulus may change without a transition: the keys and workers it
        names (a holder dropped by missing-data, a task moved by a steal response)."""
        tasks, workers = self.state.tasks, self.state.workers
        touched, touched_w = self._touched, self._touched_w
        key = getattr(msg, "key", None)
        if key is not None:
            ts = tasks.get(key)
            if ts is not None and ts not in touched:
                touched[ts] = NAMED
        for key in getattr(msg, "keys", ()):
            ts = tasks.get(key)
            if ts is not None and ts not in touched:
                touched[ts] = NAMED
        for name in (getattr(msg, "worker", None), getattr(msg, "holder", None)):
            ws = workers.get(name) if name is not None else None
            if ws is not None and ws not in touched_w:
                touched_w[ws] = NAMED

    def _membership_changed(self) -> None:
        """Workers joined or left: the records that left are checked as dead ones."""
        workers = self.state.workers
        for name, ws in self._known.items():
            if workers.get(name) is not ws:
                self.removed += 1
                self._touched_w.setdefault(ws, NAMED)
        self._known = dict(workers)

    # ------------------------------------------------------------------ full check

    def check_full(self, *, collect: bool = False) -> list[InvariantViolation]:
        """Recount everything and check every invariant on every entity. Raises the first
        violation, or with ``collect`` returns them all."""
        rep = self.reporter
        if collect:
            rep.collected = []
        try:
            with _no_gc():
                self._check_everything()
            return rep.collected or []
        finally:
            rep.collected = None

    def _check_everything(self) -> None:
        self._rebuild()
        state = self.state
        for ts in state.tasks.values():
            fns = _TASK_ALL.get(ts.state) or _TASK_UNKNOWN
            self.checks += len(fns)
            for fn in fns:
                detail = fn(self, ts)
                if detail is not None:
                    self._report(INVARIANT_OF[fn], f"task {ts.key!r}", detail, None, ts.key)
        workers: dict[WorkerInfo, Move] = dict.fromkeys(state.workers.values(), NAMED)
        for group in (state.running, state.idle, state.saturated):
            for ws in group:
                workers.setdefault(ws, NAMED)
        self._check_workers(workers, _WORKER_ALL)
        self.checks += len(_CLUSTER_ALL)
        for fn in _CLUSTER_ALL:
            detail = fn(self, workers)
            if detail is not None:
                self._report(INVARIANT_OF[fn], "cluster", detail, None)
        ext = stealing_extension(state)
        if ext is not None:
            self._check_stealing(ext, None, None)

    # ------------------------------------------------------------------ internals

    def _check_workers(self, workers: dict[WorkerInfo, Move],
                       table: dict[str, Checks]) -> None:
        ledgers = self._ledgers
        empty = _EMPTY_LEDGER
        for ws, move in workers.items():
            fns = table.get(ws.status, ())
            self.checks += len(fns)
            ledger = ledgers.get(ws, empty)
            for fn in fns:
                detail = fn(self, ws, ledger)
                if detail is not None:
                    self._report(INVARIANT_OF[fn], f"worker {ws.name!r}", detail, move)

    def _check_stealing(self, ext: Any, msg: Any, before: WorkerInfo | None) -> None:
        if self.steal_answers is None:  # the first look at the extension
            self.steal_answers = answers_before(ext, msg)
        elif type(msg) is p.StealResponse:
            self.steal_answers += 1
        if type(msg) is p.StealResponse:
            ts = self.state.tasks.get(msg.key)
            moved = ts is not None and self._touched.get(ts, NAMED)[0] == msg.key
            self.checks += len(_RESPONSE)
            for fn in _RESPONSE:
                detail = fn(self, msg, before, self._open.get(msg.key), moved)
                if detail is not None:
                    self._report(INVARIANT_OF[fn], f"task {msg.key!r}", detail, None, msg.key)
        self.checks += len(_STEAL)
        for fn in _STEAL:
            detail = fn(self, ext)
            if detail is not None:
                self._report(INVARIANT_OF[fn], "stealing", detail, None)
        self._open = {key: (field(entry, "steal_id"), field(entry, "victim"))
                      for key, _, entry in open_steals(self, ext, orphans=True)}
        self._thieves = ({key: field(entry, "thief") for key, _, entry in open_steals(self, ext)}
                         if ext.in_flight else {})
        stats = getattr(ext, "stats", None)
        self._thief_gone = stats.get("thief-gone") if isinstance(stats, dict) else None

    def _report(self, inv: Invariant, entity: str, detail: Any, move: Move | None,
                key: str | None = None, sid: str | None = None) -> None:
        if isinstance(detail, tuple):
            entity, detail = detail
        state = self.state
        story = state.story([key]) if key else ()
        self.reporter.report(inv, entity, str(detail), move,
                             state.stimulus_id if sid is None else sid, state.time, story)

    def _ledger(self, ws: WorkerInfo) -> WorkerLedger:
        ledger = self._ledgers.get(ws)
        if ledger is None:
            ledger = self._ledgers[ws] = WorkerLedger()
        return ledger

    def _snapshot(self, ts: TaskState) -> Snapshot | None:
        if ts.state == SchedulerTaskState.FORGOTTEN or self.state.tasks.get(ts.key) is not ts:
            return None
        ws = ts.processing_on
        lacks = tuple(d for d in ts.dependencies if ws not in d.who_has) if ws else ()
        return (ts.state, ws, ts.prefix, tuple(ts.who_has), ts.nbytes, lacks)

    def _update(self, ts: TaskState) -> None:
        """Bring the ledger up to date with ``ts``: withdraw its old snapshot, add the new."""
        old = self._snap.get(ts)
        new = self._snapshot(ts)
        if old == new:
            return
        move = self._touched.get(ts, NAMED)
        if old is not None:
            self._apply(old, -1, move)
        if new is None:
            del self._snap[ts]
            self.deps_seen.pop(ts, None)
        else:
            self._snap[ts] = new
            self._apply(new, 1, move)

    def _apply(self, snap: Snapshot, sign: int, move: Move) -> None:
        state, ws, prefix, holders, nbytes, lacks = snap
        touched_w = self._touched_w
        if state == SchedulerTaskState.NO_WORKER:
            self.n_no_worker += sign
        if ws is not None:
            if ws not in touched_w:
                touched_w[ws] = move
            ledger = self._ledger(ws)
            ledger.n_proc += sign
            n = ledger.prefix.get(prefix, 0) + sign
            if n:
                ledger.prefix[prefix] = n
            else:
                del ledger.prefix[prefix]
            counts = ledger.need_count
            for d in lacks:
                c = counts.get(d, 0) + sign
                if c == 0:
                    del counts[d]
                    ledger.fetch -= ledger.need_bytes.pop(d)
                else:
                    counts[d] = c
                    if c == 1 and sign > 0:
                        ledger.need_bytes[d] = d.nbytes
                        ledger.fetch += d.nbytes
        for h in holders:
            if h not in touched_w:
                touched_w[h] = move
            ledger = self._ledger(h)
            ledger.n_has += sign
            ledger.nbytes += sign * nbytes

    def _rebuild(self) -> None:
        """Snapshots and ledgers recounted from the whole state."""
        self._snap = {}
        self._ledgers = {}
        self.n_no_worker = 0
        saved = self._touched_w
        self._touched_w = {}  # the recount's worker notes are not wanted
        try:
            for ts in self.state.tasks.values():
                snap = self._snapshot(ts)
                if snap is not None:
                    self._snap[ts] = snap
                    self._apply(snap, 1, NAMED)
        finally:
            self._touched_w = saved
        live = set(self.state.tasks.values())
        self.deps_seen = {ts: n for ts, n in self.deps_seen.items() if ts in live}


class WorkerValidator:
    """Strict mode for a WorkerState. ``data``: the runtime's store of values (key ->
    value), when there is one to compare with. ``on_run(wv, wt, move, sid)`` is called
    when the worker takes a task on to compute (-> waiting or ready, from released, fetch
    or missing) and when its body starts (ready -> executing)."""

    def __init__(self, ws: WorkerState, *, data: Any = None, reporter: Reporter | None = None,
                 on_run: Callable[[WorkerValidator, WTask, Move, str], None] | None = None,
                 ) -> None:
        self.ws = ws
        self.data = data
        self.reporter = reporter if reporter is not None else Reporter()
        self.on_run = on_run
        self.checks = 0
        self.transitions = 0  # seen by the observer
        self.mem_bytes = 0  # bytes of registered tasks in memory, per the snapshots
        self.n_ready = 0  # registered ready tasks, per the snapshots
        self.queued_ready: set[WTask] = set()  # filled by check_full
        self.queued_fetch: set[WTask] = set()
        # key -> the inputs the scheduler named when it asked for it (its body needs them
        # all here: the worker's own links to an input go when it drops the input)
        self.inputs: dict[str, tuple[str, ...]] = {}
        self._snap: dict[WTask, tuple[str, int]] = {}
        self._touched: dict[WTask, Move] = {}
        self._sid = ""  # the stimulus being checked
        self._rebuild()
        ws.observers.append(self._observe)

    def detach(self) -> None:
        if self._observe in self.ws.observers:
            self.ws.observers.remove(self._observe)

    def _observe(self, ws: WorkerState, wt: WTask, start: str, finish: str, sid: str) -> None:
        self.transitions += 1
        move = (wt.key, start, finish)
        touched = self._touched
        touched[wt] = move
        if start in _NEIGHBOURS_SEE or finish in _NEIGHBOURS_SEE:
            for d in wt.dependencies:
                if d not in touched:
                    touched[d] = move
            for d in wt.dependents:
                if d not in touched:
                    touched[d] = move
        self.checks += len(_WMOVES)
        for fn in _WMOVES:
            detail = fn(self, wt, start, finish, sid)
            if detail is not None:
                self._report(INVARIANT_OF[fn], wt.key, detail, move, sid)
        if self.on_run is not None and (finish == WorkerTaskState.EXECUTING
                                        and start == WorkerTaskState.READY
                                        or finish in _TAKEN_ON and start in _NOT_ASKED):
            self.on_run(self, wt, move, sid)

    def after_stimulus(self, msg: Any) -> None:
        """Check what the stimulus ``msg`` (just handled) touched."""
        ws = self.ws
        self.reporter.recent.append((ws.name, msg))
        self._sid = msg.stimulus_id
        touched = self._touched
        cls = type(msg)
        if cls is p.ComputeTask:
            self.inputs[msg.key] = tuple(d.key for d in msg.deps)
        elif cls is p.ExecuteSuccess or cls is p.ExecuteFailure:
            self.inputs.pop(msg.key, None)
        try:
            tasks = ws.tasks
            for key in _named_keys(msg):
                wt = tasks.get(key)
                if wt is not None and wt not in touched:
                    touched[wt] = NAMED
            for wt, move in touched.items():
                if move[0] == wt.key or move is NAMED:  # a neighbour's move changes neither
                    self._update(wt)
            for wt, move in touched.items():
                table = _WTASK_INC if move[0] == wt.key or move is NAMED else _WTASK_NEAR
                fns = table.get(wt.state) or _WTASK_UNKNOWN
                self.checks += len(fns)
                for fn in fns:
                    detail = fn(self, wt)
                    if detail is not None:
                        self._report(INVARIANT_OF[fn], wt.key, detail, move)
            self._check_state(_WSTATE_INC)
        finally:
            touched.clear()

    def check_full(self, *, collect: bool = False) -> list[InvariantViolation]:
        """Recount and check everything on this worker; raise the first violation, or
        with ``collect`` return them all."""
        rep = self.reporter
        if collect:
            rep.collected = []
        try:
            with _no_gc():
                self._check_everything()
            return rep.collected or []
        finally:
            rep.collected = None
            self.queued_ready = set()
            self.queued_fetch = set()

    def _check_everything(self) -> None:
        self._rebuild()
        ws = self.ws
        self.queued_ready = {entry[-1] for entry in ws.ready}
        self.queued_fetch = {entry[-1] for entry in ws.to_fetch}
        for wt in ws.tasks.values():
            fns = _WTASK_ALL.get(wt.state) or _WTASK_UNKNOWN
            self.checks += len(fns)
            for fn in fns:
                detail = fn(self, wt)
                if detail is not None:
                    self._report(INVARIANT_OF[fn], wt.key, detail, None)
        self._check_state(_WSTATE_ALL)

    def _check_state(self, fns: Checks) -> None:
        self.checks += len(fns)
        for fn in fns:
            detail = fn(self)
            if detail is not None:
                self._report(INVARIANT_OF[fn], None, detail, None)

    def _report(self, inv: Invariant, key: str | None, detail: Any, move: Move | None,
                sid: str | None = None) -> None:
        ws = self.ws
        entity = f"worker {ws.name!r}" + (f", task {key!r}" if key is not None else "")
        if isinstance(detail, tuple):
            entity, detail = detail
        story = [t for t in ws.transition_log if t[0] == key] if key else ()
        self.reporter.report(inv, entity, str(detail), move,
                             self._sid if sid is None else sid, ws.time, story)

    def _snapshot(self, wt: WTask) -> tuple[str, int] | None:
        if wt.state == WorkerTaskState.RELEASED or self.ws.tasks.get(wt.key) is not wt:
            return None
        return (wt.state, wt.nbytes)

    def _update(self, wt: WTask) -> None:
        old = self._snap.get(wt)
        new = self._snapshot(wt)
        if old == new:
            return
        if old is not None:
            self._apply(old, -1)
        if new is None:
            del self._snap[wt]
        else:
            self._snap[wt] = new
            self._apply(new, 1)

    def _apply(self, snap: tuple[str, int], sign: int) -> None:
        state, nbytes = snap
        if state == WorkerTaskState.MEMORY:
            self.mem_bytes += sign * nbytes
        elif state == WorkerTaskState.READY:
            self.n_ready += sign

    def _rebuild(self) -> None:
        self._snap = {}
        self.mem_bytes = 0
        self.n_ready = 0
        for wt in self.ws.tasks.values():
            snap = self._snapshot(wt)
            if snap is not None:
                self._snap[wt] = snap
                self._apply(snap, 1)


def _named_keys(msg: Any) -> tuple[str, ...]:
    """Keys a worker stimulus may change without a transition (a flag, a holder list)."""
    key = getattr(msg, "key", None)
    if key is not None:
        return (key,)
    keys = getattr(msg, "keys", None)
    if keys is not None:
        return tuple(keys)
    if type(msg) is p.GatherDepSuccess:
        return tuple(msg.nbytes)
    return ()
