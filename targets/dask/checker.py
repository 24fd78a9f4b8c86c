"""The checking engines for dask's state machines: ``SchedulerChecker`` (a scheduler's
``SchedulerState``) and ``WorkerChecker`` (a worker's ``worker_state_machine.WorkerState``).

Each is fed what happened -- ``note_transition(key, start, finish, stimulus_id)`` for
every transition, ``note_keys``/``note_worker`` for what a stimulus names (dask changes
replicas, seceded tasks and steals without a transition) -- and ``checkpoint()`` then
checks what was touched: the task, and, when its move is one its neighbours can tell,
its dependencies and dependents; the workers those tasks are on or held by. The
catalog's functions (``squall.invariants``) run unchanged on the views of ``view.py``,
where ``invariants.APPLICABILITY`` says they apply, beside the dask-only invariants.

Aggregates (what a worker holds, processes, must fetch, per prefix) are checked against
the checker's own ledger, summed from a per-task snapshot updated when the task is
touched, as squall's own validator does: a checkpoint costs what the stimulus touched,
never the size of the graph. ``check_full()`` recounts everything and checks every
entity. Nothing here raises inside dask: a broken invariant becomes an
``InvariantViolation`` appended to ``violations`` (first one per invariant and entity).

No hooks and no event loop here (``hooks.py`` installs them); importing this module
imports no dask.
"""

from __future__ import annotations

import ast
import re
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from squall.invariants.base import (
    CLUSTER,
    END_TO_END,
    FULL,
    INCREMENTAL,
    LIVENESS,
    QUIESCENT,
    STEAL,
    TASK,
    WORKER,
    WORKER_STATE,
    WORKER_TASK,
    Invariant,
)
from squall.invariants.catalog import CATALOG
from squall.invariants.scheduler_checks import TRANSITION_INVARIANTS
from squall.invariants.validator import WorkerLedger
from squall.invariants.violation import InvariantViolation
from squall.invariants.worker_checks import WTRANSITION_INVARIANTS
from squall.targets.dask.invariants import (
    DASK_INVARIANTS,
    applying,
    known_state_checks,
    state_table,
    worker_status_table,
)
from squall.targets.dask.view import (
    DASK_TASK_STATES,
    DASK_WORKER_TASK_STATES,
    STIMULUS_ID_UNSET,
    SchedulerView,
    WorkerStateView,
    worker_status,
    worker_task_key,
)

RECENT = 32  # stimuli kept for violation reports
MAX_VIOLATIONS = 200  # kept per checker; the first of each (invariant, entity) only
Move = tuple[Any, str, str]  # (key, start, finish) of the transition that touched it
NAMED: Move = ("", "", "")  # touched because a stimulus names it

_ALL = (INCREMENTAL, FULL)
_INC = (INCREMENTAL,)
_EVERY = (*CATALOG, *DASK_INVARIANTS)


_MOVE_IDS = {inv.id for inv in (*TRANSITION_INVARIANTS, *WTRANSITION_INVARIANTS)}


def _of(entity: str, transition: bool = False) -> list[Invariant]:
    """The invariants (catalog and dask-only) about ``entity``; task and worker-task ones
    split into per-transition checks (five arguments) and state checks."""
    return [inv for inv in _EVERY
            if inv.entity == entity and (inv.id in _MOVE_IDS) == transition]


# ---------------------------------------------------------------- the tables, built once

_TASK = _of(TASK)
_TASK_INC = state_table(_TASK, DASK_TASK_STATES, scopes=_INC)
_TASK_NEAR = state_table(_TASK, DASK_TASK_STATES, scopes=_INC, neighbours_only=True)
_TASK_ALL = state_table(_TASK, DASK_TASK_STATES, scopes=_ALL)
_TASK_UNKNOWN = known_state_checks(_TASK)
_TASK_MOVES = tuple(applying(_of(TASK, transition=True)))
_WORKER = _of(WORKER)
_WORKER_INC = worker_status_table(_WORKER, _INC)
_WORKER_ALL = worker_status_table(_WORKER, _ALL)
_CLUSTER = [inv for inv in applying(_of(CLUSTER)) if inv.scope in _ALL]
_CLUSTER_INC = tuple(inv for inv in _CLUSTER if inv.scope == INCREMENTAL)
_CLUSTER_ALL = tuple(_CLUSTER)
_STEAL = [inv for inv in applying(_of(STEAL))]
_RESPONSE_IDS = ("steal.executing-never-stolen", "steal.given-up-task-moved")
_STEAL_STATE = tuple(inv for inv in _STEAL if inv.id not in _RESPONSE_IDS)
_STEAL_RESPONSE = tuple(inv for inv in _STEAL if inv.id in _RESPONSE_IDS)
_QUIESCENT = tuple(inv for inv in applying((*_of(CLUSTER), *_of(LIVENESS), *_of(END_TO_END)))
                   if inv.scope == QUIESCENT or inv.id == "e2e.no-duplicate-run")
_WTASK = _of(WORKER_TASK)
_WTASK_INC = state_table(_WTASK, DASK_WORKER_TASK_STATES, scopes=_INC, worker=True)
_WTASK_NEAR = state_table(_WTASK, DASK_WORKER_TASK_STATES, scopes=_INC, worker=True,
                          neighbours_only=True)
_WTASK_ALL = state_table(_WTASK, DASK_WORKER_TASK_STATES, scopes=_ALL, worker=True)
_WTASK_UNKNOWN = known_state_checks(_WTASK)
_WTASK_MOVES = tuple(applying(_of(WORKER_TASK, transition=True)))
_WSTATE = [inv for inv in applying(_of(WORKER_STATE))]
_WSTATE_INC = tuple(inv for inv in _WSTATE if inv.scope == INCREMENTAL)
_WSTATE_ALL = tuple(inv for inv in _WSTATE if inv.scope in _ALL)

# Moves between states a neighbour's invariants do not tell apart: in play (waiting,
# queued, no-worker, processing) to in play. On a worker, neighbours tell apart only
# memory and released/forgotten.
_IN_PLAY = frozenset({"waiting", "queued", "no-worker", "processing"})
_W_NEIGHBOURS_SEE = frozenset({"memory", "released", "forgotten"})
# A task the scheduler may legitimately have run again after it left one of these for
# one of those (a worker lost, a result lost, a reschedule, a retry), or after it was
# forgotten (submitted anew).
_TAKEN_BACK_FROM = frozenset({"processing", "memory", "erred"})
_TAKEN_BACK_TO = frozenset({"released", "waiting", "queued", "no-worker"})


class _Reports:
    """What a checker found: violations (the first per invariant and entity), and the
    ring of recent stimuli shown with them."""

    def __init__(self) -> None:
        self.violations: list[InvariantViolation] = []
        self.recent: deque[tuple[str, Any]] = deque(maxlen=RECENT)
        self.found = 0  # broken checks, counting repeats
        self._seen: set[tuple[str, str]] = set()

    def add(self, exc: InvariantViolation) -> None:
        self.found += 1
        mark = (exc.id, exc.entity)
        if mark in self._seen or len(self.violations) >= MAX_VIOLATIONS:
            return
        self._seen.add(mark)
        self.violations.append(exc)


def _sid(sid: str) -> str:
    return "" if sid == STIMULUS_ID_UNSET else sid


class SchedulerChecker:
    """Strict mode for a dask ``SchedulerState`` (see the module docstring). ``v.state``
    (this object's ``state``) is the ``SchedulerView`` the checks read."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.state = SchedulerView(raw)
        self.reports = _Reports()
        self.checks = 0  # invariant evaluations
        self.checkpoints = 0
        self.deps_seen = DepsSeen()  # TaskView -> dependency count when first seen
        self.n_no_worker = 0  # registered tasks reading as no-worker (queued too)
        # key -> times the scheduler took the task back (a rerun is then legitimate)
        self.taken_back: dict[Any, int] = {}
        self.sid = ""  # the stimulus being handled (its id)
        self.started = time.time()  # violations are timed from here
        self._snap: dict[int, tuple[Any, ...]] = {}
        self._ledgers: dict[Any, WorkerLedger] = {}
        self._touched: dict[int, tuple[Any, Move]] = {}
        self._touched_w: dict[int, tuple[Any, Move]] = {}
        self._membership = self._members()
        self._known: dict[str, Any] = dict(raw.workers)
        self._steals_open = False
        self._rebuild()

    @property
    def violations(self) -> list[InvariantViolation]:
        return self.reports.violations

    # ------------------------------------------------------------------ feeding

    def note_transition(self, key: Any, start: str, finish: str, stimulus_id: str) -> None:
        """dask moved ``key`` from ``start`` to ``finish`` (call while the task is still
        in ``tasks``, as dask's transition hook is)."""
        ts = self.raw.tasks.get(key)
        if ts is None:
            return
        sid = _sid(stimulus_id)
        self.sid = sid
        move = (key, start, finish)
        touched = self._touched
        touched[id(ts)] = (ts, move)
        if not (start in _IN_PLAY and finish in _IN_PLAY):
            for d in ts.dependencies:
                if id(d) not in touched:
                    touched[id(d)] = (d, move)
            for d in ts.dependents:
                if id(d) not in touched:
                    touched[id(d)] = (d, move)
        if finish == "forgotten" or start in _TAKEN_BACK_FROM and finish in _TAKEN_BACK_TO:
            self.taken_back[key] = self.taken_back.get(key, 0) + 1
        view = self.state.task(ts)
        self.checks += len(_TASK_MOVES)
        for inv in _TASK_MOVES:
            detail = self._run(inv, view, start, finish, sid)
            if detail is not None:
                self._report(inv, f"task {key!r}", detail, move, key, sid)

    def note_keys(self, keys: Iterable[Any]) -> None:
        """A stimulus names these keys: dask may have changed their holders, a steal
        moved them, they seceded... (the tasks processing on their inputs' holders too)."""
        tasks = self.raw.tasks
        for key in keys:
            ts = tasks.get(key)
            if ts is not None:
                self.note_task(ts)

    def note_task(self, ts: Any) -> None:
        """dask changed ``ts`` (a dask TaskState) without a transition: a replica added or
        dropped, say (the tasks processing that need it too: what they lack changed)."""
        touched = self._touched
        if id(ts) not in touched:
            touched[id(ts)] = (ts, NAMED)
        near = (ts.key, "", "")
        for d in ts.dependents:
            if d.processing_on is not None and id(d) not in touched:
                touched[id(d)] = (d, near)

    def note_worker(self, address: Any) -> None:
        ws = self.raw.workers.get(address) if isinstance(address, str) else None
        if ws is not None and id(ws) not in self._touched_w:
            self._touched_w[id(ws)] = (ws, NAMED)

    def note_stimulus(self, receiver: str, what: Any, stimulus_id: str = "") -> None:
        self.reports.recent.append((receiver, what))
        if stimulus_id:
            self.sid = stimulus_id

    # ------------------------------------------------------------------ checking

    def pending(self) -> bool:
        return bool(self._touched or self._touched_w) or self._members() != self._membership

    def checkpoint(self) -> None:
        """Check what was touched since the last checkpoint."""
        members = self._members()
        if not self._touched and not self._touched_w and members == self._membership:
            return
        self.checkpoints += 1
        touched, touched_w = self._touched, self._touched_w
        try:
            if members != self._membership:
                self._membership_changed(members)
            for ts, move in touched.values():
                if move[0] == ts.key or move is NAMED or ts.processing_on is not None:
                    self._update(ts, move)
            view = self.state
            for ts, move in touched.values():
                state = ts._state
                own = move[0] == ts.key or move is NAMED
                invs = (_TASK_INC if own else _TASK_NEAR).get(state)
                if invs is None:
                    invs = _TASK_UNKNOWN
                if invs:
                    self._check_task(view.task(ts), invs, move)
                if state == "forgotten" or self.raw.tasks.get(ts.key) is not ts:
                    self._drop(ts)
            self._check_workers(touched_w.values(), _WORKER_INC)
            self._check_cluster(touched_w, _CLUSTER_INC)
            ext = self.raw.extensions.get("stealing")
            if ext is not None and (ext.in_flight or self._steals_open):
                self._check_stealing()
                self._steals_open = bool(ext.in_flight)
        finally:
            touched.clear()
            touched_w.clear()

    def check_full(self) -> None:
        """Recount everything and check every invariant on every task and worker."""
        self._touched.clear()
        self._touched_w.clear()
        self._membership = self._members()
        self._known = dict(self.raw.workers)
        self._rebuild()
        view = self.state
        for ts in list(self.raw.tasks.values()):
            invs = _TASK_ALL.get(ts._state)
            self._check_task(view.task(ts), _TASK_UNKNOWN if invs is None else invs, NAMED)
        workers: dict[int, tuple[Any, Move]] = {
            id(ws): (ws, NAMED) for ws in self.raw.workers.values()}
        for group in (self.raw.running, self.raw.idle.values(), self.raw.saturated):
            for ws in group:
                workers.setdefault(id(ws), (ws, NAMED))
        self._check_workers(workers.values(), _WORKER_ALL)
        self._check_cluster(workers, _CLUSTER_ALL)
        if self.raw.extensions.get("stealing") is not None:
            self._check_stealing()

    def recount(self) -> None:
        """Recount the ledger from the whole state (after dask moved data in bulk)."""
        self._rebuild()

    def check_steal_response(self, key: Any, state: str, worker: str, steal_id: str,
                             before: Any, opened: tuple[str, Any] | None) -> None:
        """After dask handled a steal response: ``before`` is the (dask) worker the task
        was processing on before it, ``opened`` the ``(stimulus_id, victim)`` of the steal
        of ``key`` open before it (None)."""
        view = self.state
        ts = self.raw.tasks.get(key)
        moved = ts is not None and self._touched.get(id(ts), (None, NAMED))[1][0] == key
        msg = _StealAnswer(key, state, worker, steal_id)
        b = None if before is None else view.worker(before)
        o = None if opened is None else (opened[0], view.worker(opened[1]))
        self.checks += len(_STEAL_RESPONSE)
        for inv in _STEAL_RESPONSE:
            detail = self._run(inv, msg, b, o, moved)
            if detail is not None:
                self._report(inv, f"task {key!r}", detail, None, key)

    def quiescent(self, workers: dict[str, dict[str, Any]], runs: dict[Any, int]) -> None:
        """The checks of a quiet cluster: agreement with each worker, liveness and reruns.
        ``workers``: address -> {key: state as squall reads it} of the tasks each worker
        has (released ones left out); ``runs``: key -> bodies started on all workers."""
        cv = _QuiescentView(self, workers, runs)
        self.checks += len(_QUIESCENT)
        for inv in _QUIESCENT:
            try:
                found = inv.check(cv)
            except Exception as e:
                found = ("cluster", f"the check raised {type(e).__name__}: {e}")
            if found is not None:
                entity, detail = found
                self._report(inv, entity, detail, None, _key_of(entity))

    # ------------------------------------------------------------------ internals

    def _run(self, inv: Invariant, *args: Any) -> Any:
        try:
            return inv.check(self, *args)
        except Exception as e:  # a check that cannot read the state found it broken
            return f"the check raised {type(e).__name__}: {e}"

    def _check_task(self, ts: Any, invs: tuple[Invariant, ...], move: Move) -> None:
        self.checks += len(invs)
        for inv in invs:
            try:
                detail = inv.check(self, ts)
            except Exception as e:
                detail = f"the check raised {type(e).__name__}: {e}"
            if detail is not None:
                self._report(inv, f"task {ts.key!r}", detail, move, ts.key)

    def _check_workers(self, workers: Iterable[tuple[Any, Move]],
                       table: dict[str, tuple[Invariant, ...]]) -> None:
        view = self.state
        empty = _EMPTY_LEDGER
        for ws, move in workers:
            invs = table.get(ws.status.name, ())
            if not invs:
                continue
            self.checks += len(invs)
            wv = view.worker(ws)
            ledger = self._ledgers.get(ws, empty)
            for inv in invs:
                try:
                    detail = inv.check(self, wv, ledger)
                except Exception as e:
                    detail = f"the check raised {type(e).__name__}: {e}"
                if detail is not None:
                    self._report(inv, f"worker {ws.address!r}", detail, move)

    def _check_cluster(self, workers: dict[int, tuple[Any, Move]],
                       invs: tuple[Invariant, ...]) -> None:
        view = self.state
        ws_views = [view.worker(ws) for ws, _ in workers.values()]
        self.checks += len(invs)
        for inv in invs:
            try:
                detail = inv.check(self, ws_views)
            except Exception as e:
                detail = f"the check raised {type(e).__name__}: {e}"
            if detail is not None:
                self._report(inv, "cluster", detail, None)

    def _check_stealing(self) -> None:
        ext = self.state.stealing
        self.checks += len(_STEAL_STATE)
        for inv in _STEAL_STATE:
            try:
                detail = inv.check(self, ext)
            except Exception as e:
                detail = f"the check raised {type(e).__name__}: {e}"
            if detail is not None:
                self._report(inv, "stealing", detail, None)

    def _report(self, inv: Invariant, entity: str, detail: Any, move: Move | None,
                key: Any = None, sid: str | None = None) -> None:
        if isinstance(detail, tuple):
            entity, detail = detail
        story: list[Any] = []
        if key is not None and key != "":
            try:
                story = list(self.raw.story(key))
            except Exception:  # a story is a courtesy
                story = []
        k, start, finish = move or NAMED
        dask_state = ""
        ts = self.raw.tasks.get(key) if key not in (None, "") else None
        if ts is not None and ts._state == "queued":
            dask_state = " (dask: queued)"
        self.reports.add(InvariantViolation(
            inv, entity + dask_state, str(detail), key=_text(k), start=start, finish=finish,
            stimulus_id=self.sid if sid is None else sid, time=time.time() - self.started,
            recent=self.reports.recent, story=story))

    def _members(self) -> tuple[int, int]:
        return len(self.raw.workers), getattr(self.raw, "_workers_removed_total", 0)

    def _membership_changed(self, members: tuple[int, int]) -> None:
        """Workers joined or left: dask removed a leaver's replicas without transitions,
        so the ledger is recounted, and the records that left are checked as dead."""
        workers = self.raw.workers
        for address, ws in self._known.items():
            if workers.get(address) is not ws:
                self._touched_w.setdefault(id(ws), (ws, NAMED))
        for ws in workers.values():
            self._touched_w.setdefault(id(ws), (ws, NAMED))
        self._known = dict(workers)
        self._membership = members
        self._rebuild()

    def _drop(self, ts: Any) -> None:
        old = self._snap.get(id(ts))
        if old is not None:
            self._apply(old, -1)
            del self._snap[id(ts)]
        view = self.state._tv.get(id(ts))
        if view is not None:
            self.deps_seen.pop(view, None)
        self.state.forget(ts)

    def _snapshot(self, ts: Any) -> tuple[Any, ...] | None:
        state = ts._state
        if state == "forgotten" or self.raw.tasks.get(ts.key) is not ts:
            return None
        ws = ts.processing_on
        if ws is not None:
            lacks = tuple(d for d in ts.dependencies if d.who_has is None or ws not in d.who_has)
            seceded = ts in ws.long_running
        else:
            lacks = ()
            seceded = False
        return (ts, state, ws, ts.prefix.name, seceded, tuple(ts.who_has or ()),
                ts.get_nbytes(), lacks)

    def _update(self, ts: Any, move: Move) -> None:
        old = self._snap.get(id(ts))
        new = self._snapshot(ts)
        if old == new:
            return
        if old is not None:
            self._apply(old, -1)
        if new is None:
            self._snap.pop(id(ts), None)
        else:
            self._snap[id(ts)] = new
            self._apply(new, 1)

    def _apply(self, snap: tuple[Any, ...], sign: int) -> None:
        _, state, ws, prefix, seceded, holders, nbytes, lacks = snap
        touched_w = self._touched_w
        if state == "no-worker" or state == "queued":
            self.n_no_worker += sign
        if ws is not None:
            if id(ws) not in touched_w:
                touched_w[id(ws)] = (ws, NAMED)
            ledger = self._ledger(ws)
            ledger.n_proc += sign
            if not seceded:
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
                        ledger.need_bytes[d] = d.get_nbytes()
                        ledger.fetch += ledger.need_bytes[d]
        for h in holders:
            if id(h) not in touched_w:
                touched_w[id(h)] = (h, NAMED)
            ledger = self._ledger(h)
            ledger.n_has += sign
            ledger.nbytes += sign * nbytes

    def _ledger(self, ws: Any) -> WorkerLedger:
        ledger = self._ledgers.get(ws)
        if ledger is None:
            ledger = self._ledgers[ws] = WorkerLedger()
        return ledger

    def _rebuild(self) -> None:
        self._snap = {}
        self._ledgers = {}
        self.n_no_worker = 0
        saved = self._touched_w
        self._touched_w = {}
        try:
            for ts in list(self.raw.tasks.values()):
                snap = self._snapshot(ts)
                if snap is not None:
                    self._snap[id(ts)] = snap
                    self._apply(snap, 1)
        finally:
            self._touched_w = saved
        live = {id(ts) for ts in self.raw.tasks.values()}
        self.deps_seen = DepsSeen(
            {v: n for v, n in self.deps_seen.items() if id(v.raw) in live})
        for k in [k for k in self.state._tv if k not in live]:
            del self.state._tv[k]


_EMPTY_LEDGER = WorkerLedger()


class DepsSeen(dict[Any, int]):
    """TaskView -> its dependency count when first checked. A task dask marked
    ``has_lost_dependencies`` counts anew: dask forgets released scattered data (it
    cannot be recomputed) even while a dependent that already ran holds its result."""

    def setdefault(self, ts: Any, count: int) -> int:  # type: ignore[override]
        if getattr(ts.raw, "has_lost_dependencies", False):
            self[ts] = count
            return count
        return super().setdefault(ts, count)


class _StealAnswer:
    """dask's steal-response as squall's ``StealResponse``: the victim's answer, with
    dask's worker states read as squall's (executing stays; ready, constrained and
    waiting -- the victim gave the task up -- read as released)."""

    __slots__ = ("key", "state", "worker", "steal_id")

    def __init__(self, key: Any, state: str, worker: str, steal_id: str) -> None:
        self.key = key
        self.state = ("executing" if state in ("executing", "long-running")
                      else "released" if state in ("ready", "constrained", "waiting")
                      else state)
        self.worker = worker
        self.steal_id = steal_id


class _Machine:
    """A worker's tasks as fetched at quiescence: key -> state (as squall reads it)."""

    __slots__ = ("tasks",)

    def __init__(self, tasks: dict[Any, str]) -> None:
        self.tasks = {k: _Task(k, s) for k, s in tasks.items()}


class _Task:
    __slots__ = ("key", "state")

    def __init__(self, key: Any, state: str) -> None:
        self.key = key
        self.state = state


class _Results:
    """What a client has of a quiet dask cluster: the wanted keys that ended in memory or
    erred, and the bodies started."""

    def __init__(self, raw: Any, runs: dict[Any, int]) -> None:
        self.runs = runs
        self.results: dict[Any, tuple[str, Any]] = {}
        for key, ts in raw.tasks.items():
            if ts.who_wants and ts._state in ("memory", "erred"):
                self.results[key] = (ts._state, None)


class _QuiescentView:
    """What the quiescent catalog checks read (``cv``), for a dask cluster."""

    def __init__(self, checker: SchedulerChecker, workers: dict[str, dict[Any, str]],
                 runs: dict[Any, int]) -> None:
        self.state = checker.state
        self._machines = {a: _Machine(t) for a, t in workers.items()}
        self.cluster = _Results(checker.raw, runs)
        self.legit_reruns = checker.taken_back

    def worker_states(self) -> dict[str, _Machine]:
        return self._machines

    def wanted(self) -> set[Any]:
        return {k for k, ts in self.state.raw.tasks.items() if ts.who_wants}


def _key_of(entity: str) -> Any:
    m = re.search(r"task (.+)$", entity)
    if m is None:
        return None
    try:
        return ast.literal_eval(m.group(1))
    except (ValueError, SyntaxError):
        return None


def _text(key: Any) -> str:
    return key if isinstance(key, str) else str(key)


# ---------------------------------------------------------------- worker side


class WorkerChecker:
    """Strict mode for a dask worker's ``WorkerState`` (see the module docstring). ``wv``
    in the checks is this object: ``ws`` the view, ``data`` the store, and the recounts
    ``mem_bytes``, ``n_ready`` (and, in full checks, ``queued_ready``, ``queued_fetch``)."""

    def __init__(self, raw: Any, *, name: str = "") -> None:
        self.raw = raw
        self.ws = WorkerStateView(raw)
        self.data = self.ws.store
        self.name = name or getattr(raw, "address", "") or "worker"
        self.reports = _Reports()
        self.checks = 0
        self.checkpoints = 0
        self.inputs: dict[Any, tuple[Any, ...]] = {}
        self.runs: dict[Any, int] = {}  # key -> bodies started here (ready -> executing)
        self.mem_bytes = 0
        self._n_ready = 0
        self.queued_ready: set[Any] = set()
        self.queued_fetch: set[Any] = set()
        self.sid = ""
        self.started = time.time()
        self._snap: dict[int, tuple[Any, str, int]] = {}
        self._touched: dict[int, tuple[Any, Move]] = {}
        self._rebuild()

    @property
    def violations(self) -> list[InvariantViolation]:
        return self.reports.violations

    @property
    def n_ready(self) -> int:
        """Tasks ready for a thread (none count while the worker is paused)."""
        return self._n_ready if self.raw.running else 0

    def note_transition(self, key: Any, start: str, finish: str,
                        stimulus_id: str = "") -> None:
        ts = self.raw.tasks.get(key)
        if finish == "executing" and start in ("ready", "constrained"):
            self.runs[key] = self.runs.get(key, 0) + 1
        if ts is None:
            return
        move = (key, start, finish)
        touched = self._touched
        touched[id(ts)] = (ts, move)
        if start in _W_NEIGHBOURS_SEE or finish in _W_NEIGHBOURS_SEE:
            for d in ts.dependencies:
                if id(d) not in touched:
                    touched[id(d)] = (d, move)
            for d in ts.dependents:
                if id(d) not in touched:
                    touched[id(d)] = (d, move)
        sid = stimulus_id or self.sid
        view = self.ws.task(ts)
        self.checks += len(_WTASK_MOVES)
        for inv in _WTASK_MOVES:
            try:
                detail = inv.check(self, view, start, finish, sid)
            except Exception as e:
                detail = f"the check raised {type(e).__name__}: {e}"
            if detail is not None:
                self._report(inv, key, detail, move)

    def note_stimulus(self, ev: Any) -> None:
        """The stimulus ``ev`` is about to be handled: remember it and what it names."""
        self.sid = getattr(ev, "stimulus_id", "") or ""
        self.reports.recent.append((self.name, _describe_event(ev)))
        tasks = self.raw.tasks
        touched = self._touched
        for key in _event_keys(ev):
            ts = tasks.get(key)
            if ts is not None and id(ts) not in touched:
                touched[id(ts)] = (ts, NAMED)

    def after_stimulus(self, ev: Any = None) -> None:
        """Check what the stimulus (just handled) touched."""
        if ev is not None:
            for key in _event_keys(ev):
                ts = self.raw.tasks.get(key)
                if ts is not None and id(ts) not in self._touched:
                    self._touched[id(ts)] = (ts, NAMED)
        self.checkpoints += 1
        touched = self._touched
        try:
            for ts, move in touched.values():
                if move[0] == ts.key or move is NAMED:
                    self._update(ts)
            ws = self.ws
            tasks = self.raw.tasks
            for ts, move in touched.values():
                if tasks.get(ts.key) is not ts:
                    self.ws.forget(ts)
                    continue
                own = move[0] == ts.key or move is NAMED
                invs = (_WTASK_INC if own else _WTASK_NEAR).get(worker_task_key(ts))
                if invs is None:
                    invs = _WTASK_UNKNOWN
                if invs:
                    self._check_task(ws.task(ts), invs, move)
            self._check_state(_WSTATE_INC)
        finally:
            touched.clear()

    def check_full(self) -> None:
        self._touched.clear()
        self._rebuild()
        raw = self.raw
        ws = self.ws
        self.queued_ready = {ws.task(t) for t in (*raw.ready, *raw.constrained)}
        self.queued_fetch = {ws.task(t) for heap in raw.data_needed.values() for t in heap}
        try:
            for ts in list(raw.tasks.values()):
                invs = _WTASK_ALL.get(worker_task_key(ts))
                self._check_task(ws.task(ts), _WTASK_UNKNOWN if invs is None else invs, NAMED)
            self._check_state(_WSTATE_ALL)
        finally:
            self.queued_ready = set()
            self.queued_fetch = set()

    def tasks_now(self) -> dict[Any, str]:
        """key -> state as squall reads it, of every task but released and errored ones
        (dask's worker keeps both until the scheduler frees them; squall's drops them)."""
        out = {}
        for key, ts in self.raw.tasks.items():
            state = self.ws.task(ts).state
            if state != "released" and state != "error":
                out[key] = state
        return out

    def _check_task(self, wt: Any, invs: tuple[Invariant, ...], move: Move) -> None:
        self.checks += len(invs)
        for inv in invs:
            try:
                detail = inv.check(self, wt)
            except Exception as e:
                detail = f"the check raised {type(e).__name__}: {e}"
            if detail is not None:
                self._report(inv, wt.key, detail, move)

    def _check_state(self, invs: tuple[Invariant, ...]) -> None:
        self.checks += len(invs)
        for inv in invs:
            try:
                detail = inv.check(self)
            except Exception as e:
                detail = f"the check raised {type(e).__name__}: {e}"
            if detail is not None:
                self._report(inv, None, detail, None)

    def _report(self, inv: Invariant, key: Any, detail: Any, move: Move | None) -> None:
        entity = f"worker {self.name!r}" + (f", task {key!r}" if key is not None else "")
        if isinstance(detail, tuple):
            entity, detail = detail
        story: list[Any] = []
        if key is not None:
            try:
                story = list(self.raw.story(key))
            except Exception:
                story = []
        k, start, finish = move or NAMED
        self.reports.add(InvariantViolation(
            inv, entity, str(detail), key=_text(k), start=start, finish=finish,
            stimulus_id=self.sid, time=time.time() - self.started, recent=self.reports.recent, story=story))

    def _update(self, ts: Any) -> None:
        old = self._snap.get(id(ts))
        new = self._snapshot(ts)
        if old == new:
            return
        if old is not None:
            self._apply(old, -1)
        if new is None:
            self._snap.pop(id(ts), None)
        else:
            self._snap[id(ts)] = new
            self._apply(new, 1)

    def _snapshot(self, ts: Any) -> tuple[Any, str, int] | None:
        if self.raw.tasks.get(ts.key) is not ts:
            return None
        return (ts, ts.state, ts.nbytes or 0)

    def _apply(self, snap: tuple[Any, str, int], sign: int) -> None:
        _, state, nbytes = snap
        if state == "memory":
            self.mem_bytes += sign * nbytes
        elif state == "ready":
            self._n_ready += sign

    def _rebuild(self) -> None:
        self._snap = {}
        self.mem_bytes = 0
        self._n_ready = 0
        for ts in list(self.raw.tasks.values()):
            snap = self._snapshot(ts)
            if snap is not None:
                self._snap[id(ts)] = snap
                self._apply(snap, 1)
        live = {id(ts) for ts in self.raw.tasks.values()}
        for k in [k for k in self.ws._tv if k not in live]:
            del self.ws._tv[k]


def _event_keys(ev: Any) -> tuple[Any, ...]:
    """Keys a worker stimulus may change without a transition of theirs."""
    key = getattr(ev, "key", None)
    if key is not None:
        return (key,)
    for name in ("keys", "who_has", "data"):
        keys = getattr(ev, name, None)
        if keys:
            return tuple(keys)
    return ()


def _describe_event(ev: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"op": type(ev).__name__}
    key = getattr(ev, "key", None)
    if key is not None:
        out["key"] = _text(key)
    keys = _event_keys(ev)
    if keys and key is None:
        out["keys"] = [_text(k) for k in keys[:5]] + (["..."] if len(keys) > 5 else [])
    for name in ("worker", "stimulus_id"):
        value = getattr(ev, name, None)
        if value:
            out[name] = str(value)
    return out


def story_rows(story: Iterable[Any]) -> list[list[Any]]:
    """dask's story records as lists of plain values (they travel between processes)."""
    rows = []
    for rec in story:
        rows.append([x if isinstance(x, str | int | float | bool) or x is None else str(x)
                     for x in rec])
    return rows


__all__ = ["SchedulerChecker", "WorkerChecker", "story_rows", "worker_status"]
