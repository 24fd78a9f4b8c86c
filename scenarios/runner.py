"""``run_scenario(scenario) -> Outcome``: one scenario, one run, optionally one trace.

In the simulator, strict mode is on by default. A violation (an ``InvariantViolation``,
or the core refusing an impossible transition, a livelock, a stuck cluster) ends the run
and is returned in ``Outcome.violations``, never raised; the trace, if asked for, ends
with the outcome line either way.
"""

from __future__ import annotations

import time as wallclock
from collections.abc import Callable
from pathlib import Path
from typing import Any

from squall.chaos.injectors import ChaosDriver, SlowNetwork
from squall.core.outcome import Outcome, Violation
from squall.core.scheduler import InvalidTransition, LivelockError
from squall.core.sim import SimCluster, SimulationError
from squall.core.worker import InvalidWorkerTransition
from squall.scenarios.model import Scenario, ScenarioError
from squall.scenarios.trace import SimRecorder, TraceWriter


class RuntimeUnavailable(ScenarioError):
    """The requested runtime cannot run here (one line saying why)."""


def invariant_violation_type() -> type[BaseException] | None:
    """``squall.invariants.InvariantViolation`` once the invariants package provides it."""
    try:
        from squall.invariants import InvariantViolation
    except ImportError:
        return None
    return InvariantViolation  # type: ignore[no-any-return]


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


def violation_from(exc: BaseException, time: float = 0.0) -> Violation | None:
    """The serialisable Violation an exception stands for, or None if it is not one."""
    iv = invariant_violation_type()
    if iv is not None and isinstance(exc, iv):
        for attr in ("to_violation", "violation"):
            v = getattr(exc, attr, None)
            if callable(v):
                v = v()
            if isinstance(v, Violation):
                return v
        return Violation(invariant=str(getattr(exc, "invariant", type(exc).__name__)),
                         text=str(getattr(exc, "text", exc)), entity=str(getattr(exc, "entity", "")),
                         stimulus_id=str(getattr(exc, "stimulus_id", "")), time=time)
    for cls, invariant, text in _CORE_ERRORS:
        if isinstance(exc, cls):
            return Violation(invariant=invariant, text=text, entity="",
                             detail=str(exc).splitlines()[0], time=time,
                             stimulus_id=_sid_in(str(exc)))
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


def build_sim(scenario: Scenario, *, validate: bool = True) -> SimCluster:
    c = scenario.cluster
    cluster = SimCluster(
        workers=c.workers, threads=c.threads, seed=scenario.seed, latency=c.latency,
        bandwidth=c.bandwidth, jitter=c.jitter, validate=validate, stealing=c.stealing,
        allowed_failures=c.allowed_failures, heartbeat_interval=c.heartbeat_interval,
        heartbeat_timeout=c.heartbeat_timeout, tick_interval=c.tick_interval,
        max_time=c.max_time,
    )
    for link in c.links:
        SlowNetwork(worker=link.worker, latency=link.latency, bandwidth=link.bandwidth,
                 jitter=link.jitter).apply(cluster)
    cluster.faults.clear()  # the starting links are the cluster's shape, not faults
    return cluster


class _Counter:
    """Counts the stimuli delivered (for the outcome of a run a violation interrupted)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, target: str, msg: Any) -> None:
        self.n += 1


class _Progress:
    """Reports how many wanted keys have a result, every few thousand stimuli."""

    __slots__ = ("cluster", "total", "report", "n")

    def __init__(self, cluster: SimCluster, total: int,
                 report: Callable[[int, int], None]) -> None:
        self.cluster = cluster
        self.total = total
        self.report = report
        self.n = 0

    def __call__(self, target: str, msg: Any) -> None:
        self.n += 1
        if self.n % 2000 == 0:
            self.report(len(self.cluster.results), self.total)


class _Phase:
    """Where the run was when it stopped: set by wrappers around the validator's end checks."""

    def __init__(self) -> None:
        self.value = "stimulus"


def run_scenario(scenario: Scenario, *, trace: str | Path | None = None,
                 validate: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> Outcome:
    """Run ``scenario``; return its Outcome (violations included, never raised).

    ``trace``: write the run's trace there. ``validate``: strict mode. ``progress(done,
    total)``: called as wanted keys finish. ``Outcome.faults`` counts the faults applied,
    by kind.
    """
    scenario.check()
    if scenario.runtime == "real":
        return _run_real(scenario, trace=trace, validate=validate, progress=progress)
    graph = scenario.graph()
    started = wallclock.perf_counter()
    cluster = build_sim(scenario, validate=validate)
    recorder = SimRecorder(cluster, TraceWriter(trace, scenario)) if trace is not None else None
    phase = _Phase()
    counter = _Counter()
    cluster.recorders.append(counter)
    if cluster.validator is not None:
        _watch_end_checks(cluster.validator, phase)
    driver = ChaosDriver(cluster)
    driver.schedule(cluster.at, scenario.chaos)
    if progress is not None:
        cluster.recorders.append(_Progress(cluster, len(graph), progress))
    violation: Violation | None = None
    try:
        outcome = cluster.run(graph)
        phase.value = "done"
        outcome.faults = dict(driver.counts)
        if progress is not None:
            progress(len(cluster.results), len(graph))
    except Exception as e:
        violation = violation_from(e, cluster.now)
        if violation is None:
            if recorder is not None:
                recorder.writer.close()
            raise
        if isinstance(e, SimulationError) and phase.value == "stimulus":
            phase.value = "stuck" if violation.invariant == "liveness.progress" else "stimulus"
        outcome = _interrupted_outcome(cluster, graph, violation, counter.n)
        outcome.faults = dict(driver.counts)
    if recorder is not None:
        recorder.finish(outcome, phase.value)
        outcome.trace_path = str(trace)
    outcome.wall_time = wallclock.perf_counter() - started
    return outcome


def _interrupted_outcome(cluster: SimCluster, graph: Any, violation: Violation,
                         n_stimuli: int) -> Outcome:
    """What can be said of a run a violation stopped (results unchecked: it did not end)."""
    transitions = cluster.scheduler.transition_counter + sum(
        sw.state.transition_counter for sw in cluster.all_workers)
    validator = cluster.validator
    return Outcome(
        results_ok=False, makespan=cluster.now, n_tasks=len(graph), transitions=transitions,
        digest="", n_stimuli=n_stimuli,
        faults=dict(cluster.faults),
        invariant_checks=getattr(validator, "checks", 0) if validator is not None else 0,
        runs={k: n for k, n in cluster.runs.items() if n > 1},
        violations=[violation],
    )


def _watch_end_checks(validator: Any, phase: _Phase) -> None:
    """Note when the validator's end-of-run checks start, so the trace says which check
    (per-stimulus, end, or stuck) found a violation."""
    for name, value in (("check_end", "end"), ("check_stuck", "stuck")):
        check = getattr(validator, name, None)
        if check is None:
            continue

        def wrapped(*args: Any, _check: Any = check, _value: str = value) -> Any:
            phase.value = _value
            return _check(*args)

        setattr(validator, name, wrapped)


def check_runnable(scenario: Scenario) -> None:
    """ScenarioError (one line) if ``scenario`` cannot run as it is, before anything starts."""
    scenario.check()
    if scenario.runtime != "real":
        return
    try:
        from squall.core.runtime.cluster import ClusterError  # noqa: F401
    except ImportError:
        raise RuntimeUnavailable(
            "runtime 'real' is not available: squall.core.runtime.cluster (LocalCluster) is not "
            "installed in this build; use --runtime sim") from None
    from squall.scenarios.real import unsupported_in_real_mode

    why = unsupported_in_real_mode(scenario)
    if why is not None:
        raise RuntimeUnavailable(f"runtime 'real': {why}; use --runtime sim")


def _run_real(scenario: Scenario, *, trace: str | Path | None, validate: bool,
              progress: Callable[[int, int], None] | None = None) -> Outcome:
    check_runnable(scenario)
    from squall.core.runtime.cluster import ClusterError
    from squall.scenarios.real import run_real

    try:
        return run_real(scenario, trace=trace, validate=validate, progress=progress)
    except ClusterError as e:
        raise RuntimeUnavailable(f"runtime 'real': {str(e).splitlines()[0]}") from None
