"""The bugs planted in the scheduler (``SchedulerState``) and its work stealing
(``WorkStealing``): copies of their methods with ``# BUG`` lines, and wrappers.

This module reads the names the scheduler's modules read (``MEMORY`` is the scheduler's
state here), so that a copy is the production source but for its marked lines (see the
convention at the top of ``squall.mutants.catalog``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from squall.core import protocol as p
from squall.core.scheduler import (
    _HOLDS_CLAIM,
    DEAD,
    ERRED,
    KILLED_WORKER,
    PROCESSING,
    RELEASED,
    RUNNING,
    InvalidTransition,
    Recommendations,
    SchedulerState,
    TaskState,
    WorkerInfo,
)
from squall.core.stealing import (
    MAX_CANDIDATES,
    SCAN_LIMIT,
    STEAL_OVERHEAD,
    InFlight,
    WorkStealing,
    _decrement,
    _ratio_then_tail,
)
from squall.core.worker import WorkerTaskState
from squall.mutants.copies import copy_of

Method = Callable[..., Any]

# ---------------------------------------------------------------------- scheduler


def remove_worker_bug(*, reschedule: bool, recompute: bool, retry_limit: bool) -> Method:
    """SchedulerState._remove_worker with one of its three duties dropped."""

    @copy_of(SchedulerState._remove_worker)
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
            # BUG (retry_limit off): retried forever; (reschedule off): the dead worker's
            # tasks stay assigned to it
            if reschedule and retry_limit and ts.suspicious > self.allowed_failures:  # BUG
                ts.exception = (
                    f"{KILLED_WORKER}: the worker running {ts.key!r} died {ts.suspicious} times "
                    f"(allowed_failures={self.allowed_failures})"
                )
                ts.exception_blame = ts.key
                recs[ts] = ERRED
            elif reschedule:  # BUG (reschedule off): not released, so never placed again
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
            if not ts.who_has and recompute:  # BUG (recompute off): lost data not recomputed
                recs[ts] = RELEASED
        self.transitions(recs)

    return _remove_worker


def drifting_occupancy(original: Method) -> Method:
    """SchedulerState.occupancy kept as a running total (one per activation): a rewrite,
    not a copy."""
    totals: dict[WorkerInfo, tuple[dict[str, int], float]] = {}

    def occupancy(self: SchedulerState, ws: WorkerInfo) -> float:
        counts, total = totals.get(ws, ({}, 0.0))
        duration = self.estimator.duration
        # BUG: only the tasks added or removed since the last call are priced, at today's
        # estimate; work counted earlier keeps the estimate of its day, so the total drifts
        # (even below zero) as estimates change.
        for prefix, n in ws.prefix_counts.items():
            delta = n - counts.get(prefix, 0)
            if delta:
                total += delta * duration(prefix)
        for prefix, n in counts.items():
            if prefix not in ws.prefix_counts:
                total -= n * duration(prefix)
        totals[ws] = (dict(ws.prefix_counts), total)
        if ws.fetch_bytes:
            total += ws.fetch_bytes / (ws.bandwidth or self.bandwidth)
        return total

    return occupancy


@copy_of(SchedulerState._to_erred)
def to_erred_keeps_dependents_waiting(self, ts: TaskState) -> Recommendations:
    recs: Recommendations = {}
    ts.state = ERRED
    ts.waiting_on.clear()
    for dts in ts.dependencies:
        dts.waiters.pop(ts, None)
        if dts.state in _HOLDS_CLAIM and not self._needed(dts):
            recs[dts] = RELEASED
    for dts in ts.dependents:
        # BUG: the waiting dependents are not told: they wait for an input that will never
        # come
        if False:  # BUG
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


def handle_missing_data_ignored(self: SchedulerState, msg: p.MissingData) -> None:
    """SchedulerState._handle_missing_data that does nothing: a stub, not a copy."""
    # BUG: a worker that could not fetch an input is not heard: the holder that lacks it
    # stays on record, and nothing is placed again or recomputed.
    return None


@copy_of(SchedulerState.move_processing)
def force_move(self, ts: TaskState, ws: WorkerInfo) -> None:
    """Reassign processing ``ts`` to the running worker ``ws`` (work stealing's confirm:
    the old worker has already given it up, so it gets no message; ``ws`` may be that
    same worker, which then gets the task anew). Logged and shown to observers as
    processing -> processing."""
    old = ts.processing_on
    if ts.state is not PROCESSING or old is None:
        raise InvalidTransition(f"task {ts.key!r}: cannot move a {ts.state} task from "
                                f"{old!r} to {ws!r} (stimulus {self._stimulus_id})")
    if False:  # BUG: whether ws is a running worker's live record is not checked
        raise InvalidTransition(f"task {ts.key!r}: cannot move to {ws!r}, not a running "
                                f"worker (stimulus {self._stimulus_id})")
    self._unassign(ts, old)
    self._assign(ts, ws)
    self.transition_counter += 1
    self.transition_log.add((ts.key, PROCESSING, PROCESSING, self._stimulus_id))
    for obs in self.observers:
        obs(self, ts, PROCESSING, PROCESSING, self._stimulus_id)


# ---------------------------------------------------------------------- work stealing


@copy_of(WorkStealing._on_transition)
def on_transition_keeps_steals(self, state: SchedulerState, ts: TaskState, start: str,
                               finish: str, sid: str) -> None:
    # Any move off the victim (finished, erred, released, rescheduled, reassigned)
    # ends the task's open steal: its answer will be stale.
    if start is PROCESSING:
        if finish is not PROCESSING and self._moved:
            self._moved.pop(ts.key, None)
        # BUG: a steal stays open when its task leaves the victim (finished, released,
        # rescheduled): the victim's late answer is then taken as a confirmation.
        if False:  # BUG
            rec = self.in_flight.get(ts.key)
            if rec is not None and rec.ts is ts:
                self._close(rec)
                self.stats["closed"] += 1
        if False:  # BUG: (orphaned steals too)
            rec = self.orphans.get(ts.key)
            if rec is not None and rec.ts is ts:
                del self.orphans[ts.key]
                self.stats["closed"] += 1


@copy_of(WorkStealing._close)
def close_keeps_thief_booked(self, rec: InFlight) -> None:
    del self.in_flight[rec.ts.key]
    self._unbook(rec.victim, -rec.victim_cost)
    # BUG: the occupancy booked on the thief is never given back: every steal it took part
    # in leaves it looking busier, until stealing stops feeding it.
    pass  # BUG
    _decrement(self._outgoing, rec.victim)
    _decrement(self._incoming, rec.thief)


def steal_response_bug(*, by_name: bool, ignore_refusal: bool) -> Method:
    """WorkStealing.steal_response with the thief checked by name, or a refusal ignored."""

    def stale(state: SchedulerState, thief: WorkerInfo) -> bool:
        return by_name and thief.name in state.workers

    def move(state: SchedulerState, ts: TaskState, ws: WorkerInfo) -> None:
        if by_name:
            force_move(state, ts, ws)
        else:
            state.move_processing(ts, ws)

    @copy_of(WorkStealing.steal_response)
    def steal_response(self, msg: p.StealResponse) -> None:
        state = self.state
        rec = self.in_flight.get(msg.key)
        orphan = False
        if rec is None:
            rec = self.orphans.get(msg.key)
            orphan = True
        if rec is None or rec.steal_id != msg.steal_id or msg.worker != rec.victim.name:
            self.stats["stale"] += 1  # closed meanwhile, or an older steal's answer
            return
        if orphan:
            del self.orphans[msg.key]
        else:
            self._close(rec)
        ts, thief = rec.ts, rec.thief
        # BUG (ignore_refusal): a victim that answered "executing" loses the task anyway.
        if msg.state != WorkerTaskState.RELEASED and not ignore_refusal:  # BUG
            self.stats["refused"] += 1  # started, or done: it stays where it is
            return
        # BUG (by_name): the thief is looked up by its address; a worker that left and
        # joined again at the same address passes, and the task goes to the old record.
        if stale(state, thief) or not orphan and state.workers.get(thief.name) is thief and thief.status is RUNNING:  # BUG
            moved = self._moved.get(ts.key)
            origins = (moved[1] if moved else ()) + (rec.victim.name,)
            move(state, ts, thief)  # BUG (by_name): even to a record that is not live
            self._moved[ts.key] = (state.time, origins)
            self.count += 1
            self.stats["moved"] += 1
        else:
            # The victim gave it up and the thief is gone: place it again (maybe on the
            # victim, which then gets it anew). Not via "released", which would also drop
            # inputs only this task needs.
            self.stats["thief-gone"] += 1
            ws = state.decide_worker(ts)
            if ws is None:
                state.transitions({ts: RELEASED})
            else:
                state.move_processing(ts, ws)

    return steal_response


def candidates_bug(*, own_estimate: bool, skip_unknown: bool) -> Method:
    """WorkStealing._candidates valuing tasks with its own estimate, or skipping tasks of a
    prefix that has never finished."""

    def hinted(estimator: Any) -> Callable[[str], float]:
        def duration(prefix: str) -> float:
            return float(estimator._hinted.get(prefix, estimator.default))
        return duration

    def unknown(state: SchedulerState, ts: TaskState) -> bool:
        return skip_unknown and not state.estimator.is_known(ts.prefix)

    @copy_of(WorkStealing._candidates)
    def _candidates(self, victim: WorkerInfo) -> list[tuple[int, int, TaskState, float]]:
        """Stealable tasks from the tail of the victim's queue, cheapest to move first."""
        state = self.state
        # BUG (own_estimate): stealing prices a task with the user's hint (else the
        # default), not the estimate placement and occupancy use, which measurements keep
        # current.
        duration = hinted(state.estimator) if own_estimate else state.estimator.duration  # BUG
        now = state.time
        executing = victim.executing
        in_flight = self.in_flight
        orphans = self.orphans
        moved = self._moved
        bandwidth = state.bandwidth
        found: list[tuple[int, int, TaskState, float]] = []
        for i, ts in enumerate(reversed(victim.processing)):
            if i >= SCAN_LIMIT or len(found) >= MAX_CANDIDATES:
                break
            key = ts.key
            # BUG (skip_unknown): a prefix that never finished is never stolen
            if key in in_flight or key in executing or key in orphans or unknown(state, ts):  # BUG
                continue
            m = moved.get(key)
            if m is not None and now - m[0] < self.settle:
                continue
            c = duration(ts.prefix)
            if c < STEAL_OVERHEAD:
                continue  # moving it costs more than running it
            nbytes = 0
            for dts in ts.dependencies:
                nbytes += dts.nbytes if dts.nbytes > 0 else 0
            # For the order only (the thief chosen may hold some inputs already). Ratios
            # within a factor of two count as equal: then the tail, which runs last, first.
            ratio = (nbytes / bandwidth + STEAL_OVERHEAD) / c
            found.append((math.floor(math.log2(ratio)), i, ts, c))
        found.sort(key=_ratio_then_tail)
        return found

    return _candidates


def balance_ignores_newcomers(original: Method) -> Method:
    """WorkStealing.balance that only ever looks at the workers of its first round: a
    wrapper, not a copy."""
    first: dict[WorkStealing, frozenset[str]] = {}

    def balance(self: WorkStealing) -> int:
        state = self.state
        if self not in first and state.running:
            first[self] = frozenset(ws.name for ws in state.running)
        known = first.get(self, frozenset())
        # BUG: the thieves are drawn from the workers there were at the first round; a worker
        # that joins later (scale-up, a restart) is never fed by stealing.
        saved = state.idle
        state.idle = {ws: None for ws in saved if ws.name in known}
        try:
            return int(original(self))
        finally:
            state.idle = saved

    return balance
