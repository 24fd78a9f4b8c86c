"""Mutants: a catalog of deliberate, documented bugs, to measure what exploration catches.

Each ``Mutant`` is one bug that a real scheduler has had, planted in the reference
scheduler, worker or work stealing by replacing **one** method for the duration of a
``with mutant.active():`` block (``unittest.mock.patch.object`` on the class). Production
code carries no switch and pays nothing: outside the block the class holds its own
method again. A buggy method is a copy of the production one with the bug marked
``# BUG:``, or a wrapper around it.

``squall mutants`` (``run_mutants``) explores with each mutant on and reports whether it
was caught, how fast, by which invariant, how small the shrunk trace is and whether it
replays to the same failure (with the mutant on). A failure counts as the mutant's only if
its shrunk scenario passes with the mutant off; it is then minimized further by trace
length (``squall.scenarios.minimize``). Last, it explores as long with no mutant, in each
scenario space the mutants used, where it must find nothing.

Exploration runs in forked processes (``--jobs``): the mutant's *name* travels to each
job, which switches it on itself (see ``squall.scenarios.explore``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import click

from squall.core import protocol as p
from squall.core import stealing as stealing_mod
from squall.core.scheduler import (
    DEAD,
    ERRED,
    MEMORY,
    NO_WORKER,
    PROCESSING,
    RELEASED,
    WAITING,
    SchedulerState,
    TaskState,
    WorkerInfo,
)
from squall.core.stealing import WorkStealing
from squall.core.worker import CANCELLED, EXECUTING, READY, WorkerState
from squall.core.worker import MEMORY as W_MEMORY
from squall.core.worker import RELEASED as W_RELEASED
from squall.core.worker import WAITING as W_WAITING

Method = Callable[..., Any]


class MutantError(ValueError):
    """An unknown mutant name (one line, listing the names)."""


@dataclass(frozen=True)
class Mutant:
    """One planted bug.

    ``make(original)`` returns the buggy method that replaces ``owner.attr`` (it gets the
    production method, to wrap it, and may keep per-activation state in its closure).
    ``space`` is the scenario space exploration draws from for it; ``caught_by`` the
    invariants expected to catch it, the one that fires in ``squall mutants`` first
    (documentation: whichever fires first is reported).
    """

    name: str
    title: str  # the bug, in one line
    models: str  # the failure mode real schedulers had, with references
    owner: type
    attr: str
    make: Callable[[Method], Method]
    space: str = "small"
    caught_by: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        return f"{self.owner.__name__}.{self.attr}"

    @contextmanager
    def active(self) -> Iterator[Mutant]:
        """The bug is live inside the block, and gone after it (even on an exception)."""
        original = self.owner.__dict__[self.attr]
        with mock.patch.object(self.owner, self.attr, self.make(original)):
            yield self


def _replace(fn: Method) -> Callable[[Method], Method]:
    """``make`` for a mutant that is a plain buggy copy of the method."""
    return lambda original: fn


# ---------------------------------------------------------------------- scheduler


def _remove_worker_bug(*, reschedule: bool, recompute: bool, retry_limit: bool) -> Method:
    """SchedulerState._remove_worker with one of its three duties dropped."""

    def _remove_worker(self: SchedulerState, ws: WorkerInfo, reason: str) -> None:
        died = reason != "closed"
        ws.status = DEAD
        del self.workers[ws.name]
        del self.running[ws]
        self._running_list = list(self.running)
        self._update_idleness(ws)
        for ext in self.extensions:
            ext.remove_worker(ws)
        recs: dict[TaskState, str] = {}
        for ts in list(ws.processing):
            if died:
                ts.suspicious += 1
            if not reschedule:
                continue  # BUG: the dead worker's tasks stay assigned to it
            if retry_limit and ts.suspicious > self.allowed_failures:
                ts.exception = (
                    f"KilledWorker: the worker running {ts.key!r} died {ts.suspicious} times "
                    f"(allowed_failures={self.allowed_failures})"
                )
                ts.exception_blame = ts.key
                recs[ts] = ERRED
            else:
                recs[ts] = RELEASED  # BUG (when retry_limit is off): retried forever
        killed = {ts: finish for ts, finish in recs.items() if finish == ERRED}
        if killed:
            self.transitions(killed)
            recs = {ts: finish for ts, finish in recs.items() if finish != ERRED}
        for ts in list(ws.has_what):
            del ts.who_has[ws]
            del ws.has_what[ts]
            ws.nbytes -= ts.nbytes
            if not ts.who_has and recompute:  # BUG (when off): the lost data is never recomputed
                recs[ts] = RELEASED
        self.transitions(recs)

    return _remove_worker


def _drifting_occupancy(original: Method) -> Method:
    """SchedulerState.occupancy kept as a running total (one per activation)."""
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


def _to_erred_keeps_dependents_waiting(self: SchedulerState, ts: TaskState) -> dict[TaskState, str]:
    recs: dict[TaskState, str] = {}
    ts.state = ERRED
    ts.waiting_on.clear()
    for dts in ts.dependencies:
        dts.waiters.pop(ts, None)
        if dts.state in (MEMORY, WAITING, NO_WORKER, PROCESSING) and not self._needed(dts):
            recs[dts] = RELEASED
    # BUG: the waiting dependents are not told: they wait for an input that will never come
    ts.waiters.clear()
    for client in ts.who_wants:
        self._out.append(p.KeyErred(
            stimulus_id=self._stimulus_id, client=client, key=ts.key,
            exception=ts.exception or "", traceback=ts.traceback,
            blame=ts.exception_blame or ts.key,
        ))
    return recs


def _handle_missing_data_ignored(self: SchedulerState, msg: p.MissingData) -> None:
    # BUG: a worker that could not fetch an input is not heard: the holder that lacks it
    # stays on record, and nothing is placed again or recomputed.
    return None


# ---------------------------------------------------------------------- work stealing


def _on_transition_keeps_steals(self: WorkStealing, state: SchedulerState, ts: TaskState,
                                start: str, finish: str, sid: str) -> None:
    if start == PROCESSING and finish != PROCESSING and self._moved:
        self._moved.pop(ts.key, None)
    # BUG: a steal stays open when its task leaves the victim (finished, released,
    # rescheduled): the victim's late answer is then taken as a confirmation.


def _close_keeps_thief_booked(self: WorkStealing, rec: Any) -> None:
    del self.in_flight[rec.ts.key]
    self._unbook(rec.victim, -rec.victim_cost)
    # BUG: the occupancy booked on the thief is never given back: every steal it took part
    # in leaves it looking busier, until stealing stops feeding it.
    stealing_mod._decrement(self._outgoing, rec.victim)
    stealing_mod._decrement(self._incoming, rec.thief)


def _force_move(state: SchedulerState, ts: TaskState, ws: WorkerInfo) -> None:
    """What move_processing does, without its check that ``ws`` is the live record."""
    old = ts.processing_on
    assert old is not None
    state._unassign(ts, old)
    state._assign(ts, ws)
    state.transition_counter += 1
    state.transition_log.add((ts.key, PROCESSING, PROCESSING, state.stimulus_id))
    for obs in state.observers:
        obs(state, ts, PROCESSING, PROCESSING, state.stimulus_id)


def _steal_response(*, by_name: bool, ignore_refusal: bool) -> Method:
    """WorkStealing.steal_response with the thief checked by name, or a refusal ignored."""

    def steal_response(self: WorkStealing, msg: p.StealResponse) -> None:
        state = self.state
        rec = self.in_flight.get(msg.key)
        orphan = False
        if rec is None:
            rec = self.orphans.get(msg.key)
            orphan = True
        if rec is None or rec.steal_id != msg.steal_id or msg.worker != rec.victim.name:
            self.stats["stale"] += 1
            return
        if orphan:
            del self.orphans[msg.key]
        else:
            self._close(rec)
        ts, thief = rec.ts, rec.thief
        if msg.state != RELEASED and not ignore_refusal:
            self.stats["refused"] += 1
            return
        # BUG (ignore_refusal): a victim that answered "executing" loses the task anyway.
        if by_name and thief.name in state.workers and ts.state == PROCESSING:
            # BUG (by_name): the thief is looked up by its address; a worker that left and
            # joined again at the same address passes, and the task goes to the old record.
            _force_move(state, ts, thief)
            self.count += 1
            self.stats["moved"] += 1
            return
        if not orphan and state.workers.get(thief.name) is thief and thief.status == "running":
            moved = self._moved.get(ts.key)
            origins = (moved[1] if moved else ()) + (rec.victim.name,)
            state.move_processing(ts, thief)
            self._moved[ts.key] = (state.time, origins)
            self.count += 1
            self.stats["moved"] += 1
        else:
            self.stats["thief-gone"] += 1
            ws = state.decide_worker(ts)
            if ws is None:
                state.transitions({ts: RELEASED})
            else:
                state.move_processing(ts, ws)

    return steal_response


def _candidates_bug(*, own_estimate: bool, skip_unknown: bool) -> Method:
    """WorkStealing._candidates valuing tasks with its own estimate, or skipping tasks of a
    prefix that has never finished."""

    def _candidates(self: WorkStealing, victim: WorkerInfo
                    ) -> list[tuple[int, int, TaskState, float]]:
        state = self.state
        estimator = state.estimator
        if own_estimate:
            # BUG: stealing prices a task with the user's hint (else the default), not the
            # estimate placement and occupancy use, which measurements keep current.
            def duration(prefix: str) -> float:
                return estimator._hinted.get(prefix, estimator.default)
        else:
            duration = estimator.duration
        now = state.time
        found: list[tuple[int, int, TaskState, float]] = []
        for i, ts in enumerate(reversed(victim.processing)):
            if i >= stealing_mod.SCAN_LIMIT or len(found) >= stealing_mod.MAX_CANDIDATES:
                break
            key = ts.key
            if key in self.in_flight or key in victim.executing or key in self.orphans:
                continue
            if skip_unknown and not estimator.is_known(ts.prefix):
                continue  # BUG: a prefix that never finished is never stolen
            m = self._moved.get(key)
            if m is not None and now - m[0] < self.settle:
                continue
            c = duration(ts.prefix)
            if c < stealing_mod.STEAL_OVERHEAD:
                continue
            nbytes = 0
            for dts in ts.dependencies:
                nbytes += dts.nbytes if dts.nbytes > 0 else 0
            ratio = (nbytes / state.bandwidth + stealing_mod.STEAL_OVERHEAD) / c
            found.append((math.floor(math.log2(ratio)), i, ts, c))
        found.sort(key=lambda c: (c[0], c[1]))
        return found

    return _candidates


def _balance_ignores_newcomers(original: Method) -> Method:
    """WorkStealing.balance that only ever looks at the workers of its first round."""
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


# ---------------------------------------------------------------------- worker


def _handle_steal_request_takes_executing(self: WorkerState, msg: p.StealRequest) -> None:
    ts = self.tasks.get(msg.key)
    # BUG: a task already executing is given up too (it goes on running, cancelled, while
    # the thief runs it again).
    if ts is not None and ts.runnable and ts.state in (W_WAITING, READY, EXECUTING):
        ts.runnable = False
        self._release(ts)
        state = W_RELEASED
    elif ts is None or not ts.runnable:
        state = W_RELEASED if ts is None else ts.state
    else:
        state = ts.state
    self._out.append(p.StealResponse(
        stimulus_id=self._sid, time=self.time, worker=self.name, key=msg.key,
        steal_id=msg.steal_id, state=state))


def _drop_inputs_eagerly(self: WorkerState, ts: Any) -> None:
    deps = list(ts.dependencies)
    for dts in deps:
        dts.dependents.pop(ts, None)
    ts.dependencies.clear()
    for dts in deps:
        # BUG: an input fetched here is dropped as soon as one task has used it, though
        # other tasks here still need it.
        if not dts.runnable and dts.state == W_MEMORY and self.tasks.get(dts.key) is dts:
            self._release(dts)


def _compute_task_resumes_nothing(original: Method) -> Method:
    """WorkerState._handle_compute_task that forgets a cancelled task it is asked for again."""

    def _handle_compute_task(self: WorkerState, msg: p.ComputeTask) -> None:
        ts = self.tasks.get(msg.key)
        if ts is not None and ts.state == CANCELLED:
            # BUG: the request is taken for a duplicate: the running body's result will be
            # dropped when it ends, and nobody computes the task.
            ts.runnable = True
            return
        original(self, msg)

    return _handle_compute_task


# ---------------------------------------------------------------------- the catalog


CATALOG: tuple[Mutant, ...] = (
    Mutant(
        "dead-worker-tasks-stranded",
        "a dead worker's processing tasks are not rescheduled",
        "processing tasks of a dead worker not rescheduled: they wait forever for a worker "
        "that is gone (dask/distributed worker-removal bugs, e.g. #6356, #3256)",
        SchedulerState, "_remove_worker",
        _replace(_remove_worker_bug(reschedule=False, recompute=True, retry_limit=True)),
        caught_by=("worker.dead-holds-nothing", "task.processing-worker-running"),
    ),
    Mutant(
        "lost-replica-not-recomputed",
        "a task whose only replica died stays 'in memory' with no holder",
        "the only replica of a dependency lost and never recomputed: dependents wait for "
        "data nobody has",
        SchedulerState, "_remove_worker",
        _replace(_remove_worker_bug(reschedule=True, recompute=False, retry_limit=True)),
        caught_by=("task.who-has-iff-memory",),
    ),
    Mutant(
        "retry-limit-ignored",
        "a task whose workers keep dying is retried forever, never erred (KilledWorker)",
        "a retry counter that never errs a task that keeps killing workers: a poison task "
        "takes down the cluster one worker after another (dask allowed-failures)",
        SchedulerState, "_remove_worker",
        _replace(_remove_worker_bug(reschedule=True, recompute=True, retry_limit=False)),
        space="fragile",
        caught_by=("task.retries-within-limit",),
    ),
    Mutant(
        "occupancy-drift",
        "occupancy is a running total instead of being derived from the tasks",
        "occupancy accumulated incrementally, so it drifts, even below zero, as estimates "
        "change (dask/distributed #1544, PR #9012)",
        SchedulerState, "occupancy", _drifting_occupancy,
        caught_by=("worker.occupancy-fresh", "worker.occupancy-non-negative"),
    ),
    Mutant(
        "error-not-propagated",
        "an erred task does not err its waiting dependents",
        "a failure that does not reach the tasks downstream: they wait forever for an input "
        "that will never come, and the client hangs",
        SchedulerState, "_to_erred", _replace(_to_erred_keeps_dependents_waiting),
        caught_by=("task.in-play-dependents-wait", "liveness.waiting-task-progresses"),
    ),
    Mutant(
        "missing-data-ignored",
        "a worker's report that a holder lacks an input is ignored",
        "a lost replica reported by a peer but kept on record: fetches fail forever and "
        "the task never runs",
        SchedulerState, "_handle_missing_data", _replace(_handle_missing_data_ignored),
        caught_by=("liveness.processing-task-runs", "liveness.worker-tasks-settled"),
    ),
    Mutant(
        "steal-confirm-after-release",
        "a steal stays open after its task left the victim, and a late answer confirms it",
        "a steal confirmed after the task was released or rescheduled, leaving it stuck on "
        "a worker that does not know it (dask/distributed #5370)",
        WorkStealing, "_on_transition", _replace(_on_transition_keeps_steals),
        space="stealing",
        caught_by=("steal.in-flight-task-live",),
    ),
    Mutant(
        "steal-booking-leak",
        "the occupancy a steal booked on its thief is not given back when it closes",
        "occupancy accounting that drifts with every steal (the booked half of #1544 / PR "
        "#9012): thieves look ever busier and stop being fed",
        WorkStealing, "_close", _replace(_close_keeps_thief_booked),
        space="imbalance",
        caught_by=("steal.in-flight-occupancy-zero",),
    ),
    Mutant(
        "steal-to-stale-record",
        "a steal's thief is checked by address, so a restarted thief's old record gets it",
        "a stolen task assigned to the stale record of a worker that rejoined at the same "
        "address: it stays processing forever (dask/distributed #6356, #6263, #3256)",
        WorkStealing, "steal_response",
        _replace(_steal_response(by_name=True, ignore_refusal=False)),
        space="restarts",
        caught_by=("task.processing-worker-running",),
    ),
    Mutant(
        "steal-refusal-ignored",
        "a steal is carried out although the victim answered that the task is running",
        "an executing task stolen, so it runs twice (dask/distributed #6689, #6869), the "
        "scheduler's half",
        WorkStealing, "steal_response",
        _replace(_steal_response(by_name=False, ignore_refusal=True)),
        space="stealing",
        caught_by=("steal.executing-never-stolen",),
    ),
    Mutant(
        "executing-task-stolen",
        "a worker gives up a task it is already executing when asked to",
        "an executing task stolen, so it runs twice (dask/distributed #6689, #6869), the "
        "worker's half",
        WorkerState, "_handle_steal_request", _replace(_handle_steal_request_takes_executing),
        space="stealing",
        caught_by=("e2e.no-duplicate-run",),
    ),
    Mutant(
        "split-estimates",
        "stealing prices tasks with the user's hint, placement with measured durations",
        "placement and stealing using different duration estimates, so tasks ping-pong "
        "(dask/distributed PR #9000)",
        WorkStealing, "_candidates", _replace(_candidates_bug(own_estimate=True,
                                                                skip_unknown=False)),
        space="imbalance",
        caught_by=("steal.books-shared-estimate",),
    ),
    Mutant(
        "unknown-duration-never-stolen",
        "tasks of a prefix that has never finished are never stolen",
        "unknown-duration tasks never stolen, so all work stays on the first worker "
        "(dask/distributed #5564, #3516)",
        WorkStealing, "_candidates", _replace(_candidates_bug(own_estimate=False,
                                                                skip_unknown=True)),
        space="imbalance",
        caught_by=("steal.idle-worker-fed",),
    ),
    Mutant(
        "newcomers-never-fed",
        "stealing only feeds the workers present at its first round",
        "new workers on scale-up stay idle (dask/distributed #4471, #1851, #7093)",
        WorkStealing, "balance", _balance_ignores_newcomers,
        space="imbalance",
        caught_by=("steal.idle-worker-fed",),
    ),
    Mutant(
        "freed-while-needed",
        "a worker drops a fetched input after its first use, though other tasks need it",
        "data freed while a dependent still needs it: the dependent runs without its input "
        "or waits for it forever",
        WorkerState, "_drop_inputs", _replace(_drop_inputs_eagerly),
        caught_by=("wtask.inputs-held-while-running",),
    ),
    Mutant(
        "cancelled-task-not-resumed",
        "a task cancelled while running and then asked for again is not resumed",
        "a task released and re-assigned while its body runs is lost: the result is dropped "
        "and nobody computes it (dask/distributed cancelled/resumed state bugs, #6869)",
        WorkerState, "_handle_compute_task", _compute_task_resumes_nothing,
        caught_by=("wtask.runnable-matches-state", "liveness.processing-task-runs"),
    ),
)

MUTANTS: dict[str, Mutant] = {m.name: m for m in CATALOG}
if len(MUTANTS) != len(CATALOG):  # pragma: no cover - a programming error, caught at import
    raise RuntimeError("two mutants share a name")


def mutant(name: str) -> Mutant:
    """The mutant called ``name``; MutantError lists the names when there is none."""
    try:
        return MUTANTS[name]
    except KeyError:
        raise MutantError(f"unknown mutant {name!r}; choose one of: "
                          f"{', '.join(MUTANTS)}") from None


@contextmanager
def switched_on(name: str | None) -> Iterator[Mutant | None]:
    """``with switched_on(name):`` the named mutant is live (None: nothing is)."""
    if name is None:
        yield None
        return
    with mutant(name).active() as m:
        yield m


__all__ = ["CATALOG", "MUTANTS", "Mutant", "MutantError", "mutant", "switched_on"]


# ---------------------------------------------------------------------- measuring


@dataclass
class MutantResult:
    """What exploring with one mutant on found."""

    mutant: str
    space: str
    budget: float
    detected: bool = False  # a failure was found, and it is the mutant's (``specific``)
    first_failure: float | None = None  # seconds of exploration until the first failing run
    elapsed: float = 0.0  # exploration and shrinking, seconds
    scenarios: int = 0
    caught_by: str = ""  # the invariant (or check) the shrunk scenario violates
    stimuli: int | None = None  # stimuli in the shrunk (and minimized) scenario's trace
    shrunk_stimuli: int | None = None  # as Hypothesis left it, before ``minimize``
    housekeeping: int | None = None  # of which clock ticks and heartbeats
    replays: int = 0
    replays_same: int = 0  # replays (mutant on) that reproduced the same failure
    specific: bool | None = None  # the shrunk scenario passes with the mutant off
    scenario: str = ""  # the shrunk scenario, in one line
    trace: str = ""
    error: str = ""  # a crash's last line, when the failure was one


@dataclass
class BaselineResult:
    """Exploring one scenario space with no mutant: it must find nothing."""

    space: str
    budget: float
    scenarios: int = 0
    violations: int = 0
    caught_by: str = ""
    scenario: str = ""
    trace: str = ""
    elapsed: float = 0.0


def _failure_name(f: Any) -> str:
    v = f.violation
    if v is not None:
        return str(v.invariant)
    if f.error:
        return "crash"
    return "wrong-results"


def measure_mutant(m: Mutant, *, budget: float, jobs: int = 1, seed: int = 0,
                   out_dir: str = "squall-mutants", replays: int = 5, space: str | None = None,
                   progress: Any = None, minimize_for: float | None = 20.0) -> MutantResult:
    """Explore with ``m`` on for ``budget`` seconds; check that the shrunk failure is the
    mutant's (it passes with the mutant off), minimize it further by trace length for up
    to ``minimize_for`` seconds (None: not), and replay its trace (see MutantResult)."""
    import time

    from squall.scenarios.explore import explore, failure_trace_path
    from squall.scenarios.minimize import minimize
    from squall.scenarios.replay import REPRODUCED, replay_trace
    from squall.scenarios.runner import run_scenario

    space = space or m.space
    result = MutantResult(m.name, space, budget)
    started = time.monotonic()
    found = explore(budget=budget, seed=seed, jobs=jobs, space=space, mutant=m.name,
                    out_dir=f"{out_dir}/{m.name}", progress=progress)
    result.elapsed = time.monotonic() - started
    result.scenarios = found.stats.scenarios
    f = found.failure
    if f is None:
        return result
    if found.stats.failed_at:
        result.first_failure = max(0.0, found.stats.failed_at - started)
    result.caught_by = _failure_name(f)
    result.scenario = f.scenario.describe()
    if f.error:
        result.error = f.error.strip().splitlines()[-1]
        return result
    assert f.outcome is not None
    result.shrunk_stimuli = f.outcome.n_stimuli
    # The mutant's doing? The same scenario with the mutant off must pass.
    result.specific = run_scenario(f.scenario, validate=True).ok
    if not result.specific:
        result.stimuli = f.outcome.n_stimuli
        result.trace = f.trace_path
        return result
    scenario, outcome, trace = f.scenario, f.outcome, f.trace_path
    if minimize_for is not None and minimize_for > 0:
        smaller, out, _ = minimize(scenario, outcome, same_failure(m, outcome),
                                   time_limit=minimize_for)
        if smaller is not scenario:
            path = failure_trace_path(f"{out_dir}/{m.name}", smaller)
            with m.active():
                out = run_scenario(smaller, trace=path, validate=True)
            scenario, outcome, trace = smaller, out, str(path)
            result.scenario = scenario.describe()
    result.stimuli = outcome.n_stimuli
    result.housekeeping = _housekeeping(trace)
    result.trace = trace
    recorded = outcome.violations[0] if outcome.violations else None
    with m.active():
        for _ in range(replays):
            r = replay_trace(trace)
            same = r.verdict == REPRODUCED and (
                recorded is None or r.violation is None
                or r.violation.invariant == recorded.invariant)
            result.replays += 1
            result.replays_same += int(same)
    result.detected = True
    return result


def same_failure(m: Mutant, first: Any) -> Callable[[Any], Any]:
    """A judge for ``minimize``: the candidate fails as ``first`` did with ``m`` on, and
    passes with it off."""
    from squall.scenarios.runner import run_scenario

    want = first.violations[0].invariant if first.violations else None

    def still_fails(candidate: Any) -> Any:
        with m.active():
            out = run_scenario(candidate, validate=True)
        if out.ok:
            return None
        got = out.violations[0].invariant if out.violations else None
        if got != want or not run_scenario(candidate, validate=True).ok:
            return None
        return out

    return still_fails


def _housekeeping(trace: str) -> int:
    """Clock ticks and heartbeats among a trace's stimuli."""
    from squall.scenarios.trace import Stim, read_trace

    return sum(1 for _, line in read_trace(trace)
               if type(line) is Stim and type(line.m) in (p.Tick, p.Heartbeat))


def run_mutants(mutants: list[Mutant], *, budget: float, jobs: int = 1, seed: int = 0,
                out_dir: str = "squall-mutants", replays: int = 5, baseline: bool = True,
                say: Callable[[str], Any] | None = None,
                ) -> tuple[list[MutantResult], list[BaselineResult], dict[str, Any]]:
    """Measure every mutant, then (``baseline``) explore each of their scenario spaces as
    long with no mutant. ``say`` gets a line as each measurement ends."""
    results: list[MutantResult] = []
    for i, m in enumerate(mutants, 1):
        r = measure_mutant(m, budget=budget, jobs=jobs, seed=seed, out_dir=out_dir,
                           replays=replays)
        results.append(r)
        if say is not None:
            what = (f"caught by {r.caught_by} after {_seconds(r.first_failure)} s, shrunk to "
                    f"{r.stimuli} stimuli" if r.detected else "NOT caught"
                    + (f" ({r.caught_by}: the scheduler fails so without it too)"
                       if r.caught_by else ""))
            say(f"[{i}/{len(mutants)}] {m.name}: {what}")
    base: list[BaselineResult] = []
    if baseline:
        spaces = list(dict.fromkeys(m.space for m in mutants))
        for i, space in enumerate(spaces, 1):
            b = measure_baseline(space, budget=budget, jobs=jobs, seed=seed, out_dir=out_dir)
            base.append(b)
            if say is not None:
                say(f"[{i}/{len(spaces)}] baseline {space}: {b.scenarios} scenarios, "
                    f"{b.violations} violation(s)" + (f" ({b.caught_by})" if b.violations else ""))
    return results, base, summarize(results, base)


def measure_baseline(space: str, *, budget: float, jobs: int = 1, seed: int = 0,
                     out_dir: str = "squall-mutants", progress: Any = None) -> BaselineResult:
    """Explore ``space`` for ``budget`` seconds with no mutant."""
    import time

    from squall.scenarios.explore import explore

    result = BaselineResult(space, budget)
    started = time.monotonic()
    found = explore(budget=budget, seed=seed, jobs=jobs, space=space,
                    out_dir=f"{out_dir}/baseline-{space}", progress=progress)
    result.elapsed = time.monotonic() - started
    result.scenarios = found.stats.scenarios
    if found.failure is not None:
        result.violations = 1
        result.caught_by = _failure_name(found.failure)
        result.scenario = found.failure.scenario.describe()
        result.trace = found.failure.trace_path
    return result


def summarize(results: list[MutantResult], baseline: list[BaselineResult], *,
              max_seconds: float = 60.0, max_stimuli: int = 30) -> dict[str, Any]:
    """The figures: how many mutants were caught in time, small, and replayable; how many
    false alarms the unmutated scheduler raised."""
    caught = [r for r in results if r.detected]
    in_time = [r for r in caught if r.first_failure is not None
               and r.first_failure <= max_seconds]
    small = [r for r in caught if r.stimuli is not None and r.stimuli <= max_stimuli]
    replayed = [r for r in caught if r.replays and r.replays_same == r.replays]
    false_alarms = sum(b.violations for b in baseline)
    return {
        "mutants": len(results),
        "detected": len(caught),
        "detected_within_seconds": len(in_time),
        "max_seconds": max_seconds,
        "shrunk_within_stimuli": len(small),
        "max_stimuli": max_stimuli,
        "replay_same_always": len(replayed),
        "slowest_first_failure": max((r.first_failure or 0.0 for r in caught), default=0.0),
        "largest_shrunk_trace": max((r.stimuli or 0 for r in caught), default=0),
        "baseline_spaces": [b.space for b in baseline],
        "baseline_scenarios": sum(b.scenarios for b in baseline),
        "false_alarms": false_alarms,
        "ok": (len(in_time) == len(small) == len(replayed) == len(results)
               and false_alarms == 0),
    }


# ---------------------------------------------------------------------- squall mutants


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


@click.command("mutants")
@click.option("--budget", type=float, default=60.0, show_default=True,
              metavar="SECONDS-PER-MUTANT",
              help="seconds of exploration per mutant (and per space for the baseline)")
@click.option("--jobs", type=int, default=1, show_default=True, help="processes")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="write one object per mutant, the baseline and a summary here")
@click.option("--mutant", "names", multiple=True, metavar="NAME",
              help="measure only this mutant (repeatable; default: all)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--replays", type=int, default=5, show_default=True,
              help="times each shrunk trace is replayed")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="squall-mutants",
              show_default=True, help="where the shrunk traces are written")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="also explore with no mutant, which must find nothing")
@click.option("--list", "list_only", is_flag=True, help="list the catalog and exit")
def mutants_command(budget: float, jobs: int, json_path: str | None, names: tuple[str, ...],
                    seed: int, replays: int, out_dir: str, baseline: bool,
                    list_only: bool) -> None:
    """Explore with each planted bug on: is it caught, how fast, by what, how small?"""
    import json
    import sys

    from rich.console import Console
    from rich.table import Table

    from squall.cli.main import SquallError

    if not budget > 0:
        raise SquallError(f"--budget must be > 0 seconds, got {budget}")
    if jobs < 1:
        raise SquallError(f"--jobs must be >= 1, got {jobs}")
    if replays < 1:
        raise SquallError(f"--replays must be >= 1, got {replays}")
    try:
        chosen = [mutant(n) for n in names] if names else list(CATALOG)
    except MutantError as e:
        raise SquallError(str(e)) from None
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a file or a pipe: no need to fold the names
    if list_only:
        table = Table(title=f"{len(chosen)} mutants (squall mutants --mutant NAME)")
        table.add_column("name", no_wrap=True)
        for col in ("replaces", "the bug", "the failure mode it models", "space"):
            table.add_column(col, overflow="fold")
        for m in chosen:
            table.add_row(m.name, m.target, m.title, m.models, m.space)
        console.print(table)
        return
    err = Console(stderr=True)
    with err.status(f"exploring with each of {len(chosen)} mutant(s) on, {budget:g} s each"):
        results, base, summary = run_mutants(chosen, budget=budget, jobs=jobs, seed=seed,
                                             out_dir=out_dir, replays=replays,
                                             baseline=baseline, say=err.print)

    table = Table(title=f"squall mutants: {budget:g} s of exploration each, {jobs} job(s), "
                        f"seed {seed}")
    for col, justify in (("mutant", "left"), ("space", "left"), ("detected", "left"),
                         ("first failure (s)", "right"), ("caught by", "left"),
                         ("shrunk (stimuli)", "right"), ("of which ticks/hb", "right"),
                         ("replays same", "right"),
                         ("scenarios", "right")):
        table.add_column(col, justify=justify,  # type: ignore[arg-type]
                         no_wrap=col in ("mutant", "caught by"))
    for r in results:
        detected = ("[green]yes[/]" if r.detected else
                    "[red]no[/]" if not r.caught_by else "[red]not its own[/]")
        table.add_row(r.mutant, r.space, detected, _seconds(r.first_failure),
                      r.caught_by or "-", "-" if r.stimuli is None else str(r.stimuli),
                      "-" if r.housekeeping is None else str(r.housekeeping),
                      f"{r.replays_same}/{r.replays}" if r.replays else "-", str(r.scenarios))
    console.print(table)
    if base:
        bt = Table(title="baseline: the same budget with no mutant (must find nothing)")
        for col in ("space", "scenarios", "violations", "found"):
            bt.add_column(col)
        for b in base:
            bt.add_row(b.space, str(b.scenarios), str(b.violations),
                       f"{b.caught_by}: {b.trace}" if b.violations else "-")
        console.print(bt)
    for r in results:
        if r.trace:
            console.print(f"{r.mutant}: squall replay {r.trace} --mutant {r.mutant}",
                          highlight=False, soft_wrap=True)
    console.print(
        f"detected {summary['detected']}/{summary['mutants']} "
        f"({summary['detected_within_seconds']} within {summary['max_seconds']:g} s), "
        f"{summary['shrunk_within_stimuli']} shrunk to <= {summary['max_stimuli']} stimuli, "
        f"{summary['replay_same_always']} replayed to the same failure every time; "
        f"false alarms: {summary['false_alarms']}")
    if json_path is not None:
        doc = {"mutants": [dict(vars(r), title=MUTANTS[r.mutant].title,
                                models=MUTANTS[r.mutant].models,
                                replaces=MUTANTS[r.mutant].target) for r in results],
               "baseline": [vars(b) for b in base], "summary": summary}
        try:
            with open(json_path, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2)
        except OSError as e:
            raise SquallError(f"cannot write {json_path!r}: {e.strerror}") from None
    sys.exit(0 if summary["ok"] else 1)
