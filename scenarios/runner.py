"""``run_scenario(scenario) -> Outcome``: one scenario, one run, optionally one trace.

The scheduler under test is a ``Target`` (``squall.core.view``; default: the one that
offers the scenario's runtime, ``squall.targets.target_for``: the reference scheduler for
"sim" and "real", dask.distributed for "dask"): the runner starts the scenario's cluster
in the scenario's runtime through it, reads its state through its view and counts its
stimuli through its stimulus log. A runtime of a target's own (not "sim" nor "real") runs
through ``squall.scenarios.target_run``.

In the simulator, strict mode is on by default. A violation (an ``InvariantViolation``,
or the core refusing an impossible transition, a livelock, a stuck cluster, or a state
machine's handler raising any other exception) ends the run
and is returned in ``Outcome.violations``, never raised; the trace, if asked for, ends
with the outcome line either way. A run whose virtual time passes the scenario's
``max_time`` while its work still progresses is slow, not stuck: it ends with
``Outcome.budget_exceeded`` saying so (no violation; phase "budget" in the trace).
"""

from __future__ import annotations

import time as wallclock
from collections.abc import Callable
from pathlib import Path
from typing import Any

from squall.chaos.clients import held_back, last_action
from squall.chaos.injectors import ChaosDriver
from squall.core.outcome import Outcome, Violation
from squall.core.scheduler import InvalidTransition, LivelockError
from squall.core.sim import SimCluster, SimulationError, TimeBudgetExceeded
from squall.core.view import REAL, SIM, ClusterView, Target
from squall.core.worker import InvalidWorkerTransition
from squall.invariants import InvariantViolation
from squall.invariants.cluster_validator import END, QUIESCENT, RUNNING, STUCK
from squall.scenarios.model import Scenario, ScenarioError
from squall.scenarios.reach import ReachTracker
from squall.scenarios.trace import SimRecorder, TraceWriter
from squall.targets import target_for


class RuntimeUnavailable(ScenarioError):
    """The requested runtime cannot run here (one line saying why)."""


# Errors the core raises when a state machine is driven somewhere impossible: each is a
# violation of the invariant named here, reproducible by replay.
_CORE_ERRORS: tuple[tuple[type[BaseException], str, str], ...] = (
    (InvalidTransition, "scheduler.transition-table",
     "a scheduler task moves only along the transition table"),
    (InvalidWorkerTransition, "worker.transition-table",
     "a worker task moves only along the worker's transition table"),
    (LivelockError, "scheduler.no-livelock",
     "one stimulus causes a bounded number of transitions"),
)


# A state machine's handler that raises anything else has a bug (a TypeError, a KeyError,
# ...): a violation too, named for the machine, so that it is traced, shrunk, minimized and
# replayed like any other. Its entity is the exception's type and where it was raised, so
# that minimizing keeps the same crash. An exception raised elsewhere (the simulator, the
# invariants: squall itself) is not the scheduler's and is raised as it is.
_SCHEDULER_CRASH = ("scheduler.handles-every-stimulus",
                    "the scheduler handles every stimulus without raising an exception")
_WORKER_CRASH = ("worker.handles-every-stimulus",
                 "a worker handles every stimulus without raising an exception")
_HANDLERS: dict[str, tuple[str, str]] = {  # module -> the machine its code is part of
    "squall.core.scheduler": _SCHEDULER_CRASH,
    "squall.core.stealing": _SCHEDULER_CRASH,
    "squall.core.estimates": _SCHEDULER_CRASH,
    "squall.core.worker": _WORKER_CRASH,
}
CRASH_INVARIANTS = frozenset((_SCHEDULER_CRASH[0], _WORKER_CRASH[0]))


def _crash_site(exc: BaseException) -> tuple[str, str] | None:
    """(module, "file:line") of the innermost squall frame of ``exc``'s traceback."""
    site = None
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith("squall."):
            site = (module, f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}")
        tb = tb.tb_next
    return site


def violation_from(exc: BaseException, time: float = 0.0) -> Violation | None:
    """The serialisable Violation an exception stands for, or None if it is not one."""
    if isinstance(exc, InvariantViolation):
        return exc.to_violation()
    for cls, invariant, text in _CORE_ERRORS:
        if isinstance(exc, cls):
            return Violation(invariant=invariant, text=text, entity="",
                             detail=str(exc).splitlines()[0], time=time,
                             stimulus_id=_sid_in(str(exc)))
    site = _crash_site(exc) if isinstance(exc, Exception) else None
    if site is not None and site[0] in _HANDLERS:
        invariant, text = _HANDLERS[site[0]]
        first = (str(exc).splitlines() or [""])[0][:200]
        return Violation(invariant=invariant, text=text,
                         entity=f"{type(exc).__name__} at {site[1]}",
                         detail=f"{type(exc).__name__}: {first}", time=time)
    if isinstance(exc, TimeBudgetExceeded):  # slow, not stuck
        return None
    if isinstance(exc, SimulationError):
        msg = str(exc).splitlines()[0]
        if msg.startswith("cluster stuck"):
            return Violation(invariant="liveness.progress",
                             text="every wanted key is eventually computed or erred",
                             entity="cluster", detail=msg, time=time)
        return Violation(invariant="sim.consistent", text="the simulated runtime stays "
                         "consistent with what the state machines asked of it",
                         entity="cluster", detail=msg, time=time)
    return None


def _sid_in(message: str) -> str:
    """The stimulus id a core error message names ("(stimulus X)" / "stimulus X caused")."""
    for marker in ("(stimulus ", "stimulus "):
        i = message.find(marker)
        if i >= 0:
            rest = message[i + len(marker):]
            return rest.split(")")[0].split(" ")[0]
    return ""


class _Counter:
    """Counts the stimuli delivered (for the outcome of a run a violation interrupted)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, target: str, msg: Any) -> None:
        self.n += 1


class _Progress:
    """Reports how many wanted keys have a result, every few thousand stimuli."""

    __slots__ = ("view", "total", "report", "n")

    def __init__(self, view: ClusterView, total: int,
                 report: Callable[[int, int], None]) -> None:
        self.view = view
        self.total = total
        self.report = report
        self.n = 0

    def __call__(self, target: str, msg: Any) -> None:
        self.n += 1
        if self.n % 2000 == 0:
            self.report(len(self.view.results), self.total)


# The phase a trace's outcome line records, by the validator's phase when it stopped the run:
# "stimulus" (a per-stimulus check: replay must see it recur at that stimulus), "stuck" or
# "end"; "done" when nothing stopped it, "budget" when its time budget did (not judged).
_TRACE_PHASE = {RUNNING: "stimulus", QUIESCENT: "stuck", STUCK: "stuck", END: "end"}


def run_scenario(scenario: Scenario, *, trace: str | Path | None = None,
                 validate: bool = True,
                 progress: Callable[[int, int], None] | None = None,
                 target: Target | None = None, reach: ReachTracker | None = None) -> Outcome:
    """Run ``scenario`` on ``target`` (default: the target that offers the scenario's
    runtime, ``squall.targets.target_for``: the reference scheduler for "sim" and "real");
    return its Outcome (violations included, never raised).

    ``trace``: write the run's trace there. ``validate``: strict mode. ``progress(done,
    total)``: called as wanted keys finish. ``Outcome.faults`` counts the faults applied,
    by kind. ``reach``: a ``ReachTracker`` that sees the run's stimuli and, at its end,
    the scheduler's state (the simulator only: elsewhere it is left as it is).
    """
    target = _default_target(scenario) if target is None else target
    check_runnable(scenario, target)
    if scenario.runtime == REAL:
        return _run_real(scenario, target, trace=trace, validate=validate, progress=progress)
    if scenario.runtime != SIM:  # a target's own runtime
        from squall.scenarios.target_run import run_on_target

        return run_on_target(scenario, target, trace=trace, validate=validate,
                             progress=progress)
    graph = scenario.graph()
    started = wallclock.perf_counter()
    cluster = target.start(SIM, scenario.cluster, seed=scenario.seed, validate=validate)
    view = target.view(cluster)
    if not isinstance(cluster, SimCluster) or view is None:
        raise RuntimeUnavailable(f"target {target.name!r}: its {SIM!r} runtime is not "
                                 "squall's simulator")
    recorder = SimRecorder(cluster, TraceWriter(trace, scenario)) if trace is not None else None
    counter = _Counter()
    target.log_stimuli(cluster, counter)
    if reach is not None:
        target.log_stimuli(cluster, reach)
    driver = ChaosDriver(cluster)
    driver.schedule(cluster.at, scenario.chaos)
    if progress is not None:
        target.log_stimuli(cluster, _Progress(view, len(graph), progress))
    validator = cluster.validator
    violation: Violation | None = None
    try:
        outcome = cluster.run(graph, later=held_back(scenario.chaos),
                              until=last_action(scenario.chaos) or 0.0)
        phase = "done"
        outcome.faults = dict(driver.counts)
        if progress is not None:
            progress(len(view.results), len(graph))
    except TimeBudgetExceeded as e:  # slow, not stuck: no violation, results not judged
        phase = "budget"
        outcome = _over_budget_outcome(view, len(graph), counter.n, str(e).splitlines()[0])
        outcome.invariant_checks = validator.checks if validator is not None else 0
        outcome.faults = dict(driver.counts)
    except Exception as e:
        violation = violation_from(e, view.now)
        if violation is None:
            if recorder is not None:
                recorder.writer.close()
            raise
        phase = _TRACE_PHASE[validator.phase] if validator is not None else "stimulus"
        if isinstance(e, SimulationError) and phase == "stimulus":
            phase = "stuck" if violation.invariant == "liveness.progress" else "stimulus"
        outcome = _interrupted_outcome(view, len(graph), violation, counter.n)
        outcome.invariant_checks = validator.checks if validator is not None else 0
        outcome.faults = dict(driver.counts)
    if recorder is not None:
        recorder.finish(outcome, phase)
        outcome.trace_path = str(trace)
    if reach is not None:
        reach.finish(view.scheduler)
    outcome.wall_time = wallclock.perf_counter() - started
    return outcome


def _over_budget_outcome(view: ClusterView, n_tasks: int, n_stimuli: int,
                         why: str) -> Outcome:
    """A run stopped at its time budget with the work still progressing (not judged)."""
    outcome = _interrupted_outcome(view, n_tasks, None, n_stimuli)
    outcome.budget_exceeded = why
    return outcome


def _interrupted_outcome(view: ClusterView, n_tasks: int, violation: Violation | None,
                         n_stimuli: int) -> Outcome:
    """What can be said of a run a violation stopped (results unchecked: it did not end)."""
    transitions = view.scheduler.transition_counter + sum(
        w.state.transition_counter for w in view.all_workers)
    return Outcome(
        results_ok=False, makespan=view.now, n_tasks=n_tasks, transitions=transitions,
        digest="", n_stimuli=n_stimuli,
        runs={k: n for k, n in view.runs.items() if n > 1},
        violations=[violation] if violation is not None else [],
    )


def check_runnable(scenario: Scenario, target: Target | None = None) -> None:
    """ScenarioError (one line) if ``scenario`` cannot run as it is on ``target`` (default:
    the target that offers its runtime), before anything starts."""
    scenario.check()
    target = _default_target(scenario) if target is None else target
    if scenario.runtime not in target.runtimes:
        raise RuntimeUnavailable(f"target {target.name!r} has no runtime "
                                 f"{scenario.runtime!r}; it offers: {', '.join(target.runtimes)}")
    if scenario.runtime == SIM:
        return
    if scenario.runtime != REAL:
        from squall.scenarios.target_run import unsupported_on_target

        why = unsupported_on_target(scenario)
        if why is not None:
            raise RuntimeUnavailable(f"runtime {scenario.runtime!r}: {why}; use --runtime sim")
        return
    from squall.scenarios.real import unsupported_in_real_mode

    why = unsupported_in_real_mode(scenario)
    if why is not None:
        raise RuntimeUnavailable(f"runtime 'real': {why}; use --runtime sim")


def _default_target(scenario: Scenario) -> Target:
    """The target that offers the scenario's runtime (ScenarioError if none does)."""
    try:
        return target_for(scenario.runtime)
    except ValueError as e:
        raise ScenarioError(f"runtime: {e}") from None


def _run_real(scenario: Scenario, target: Target, *, trace: str | Path | None, validate: bool,
              progress: Callable[[int, int], None] | None = None) -> Outcome:
    from squall.core.runtime.cluster import ClusterError
    from squall.scenarios.real import run_real

    try:
        return run_real(scenario, trace=trace, validate=validate, progress=progress,
                        target=target)
    except ClusterError as e:
        raise RuntimeUnavailable(f"runtime 'real': {str(e).splitlines()[0]}") from None
