"""Measuring mutants: explore with each planted bug on, shrink and replay what is found.

``run_mutants`` (``squall mutants``) explores with each mutant of the catalog on and
reports whether it was caught, how fast, by which invariant, how small the shrunk trace is
and whether it replays to the same failure (with the mutant on). A failure counts as the
mutant's only if its shrunk scenario passes with the mutant off; it is then minimized
further by trace length (``squall.scenarios.minimize``, to a budget of candidate runs, so
the same failure shrinks to the same scenario on any machine and load), and checked for
1-minimality (``redundant_parts``). Last, it explores as long with no
mutant, in each scenario space the mutants used, where it must find nothing.

Exploration runs in forked processes (``--jobs``): each job runs inside
``switched_on(name)`` (``explore(job_context=...)``), so it switches the mutant on itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from squall.core import protocol as p
from squall.core.outcome import Outcome
from squall.mutants.catalog import Mutant, switched_on
from squall.scenarios.explore import Failure, explore, failure_trace_path
from squall.scenarios.minimize import MAX_CANDIDATES, minimize, redundant_parts
from squall.scenarios.model import Scenario
from squall.scenarios.replay import REPRODUCED, replay_trace
from squall.scenarios.runner import run_scenario
from squall.scenarios.trace import Stim, read_trace


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
    candidates: int = 0  # candidate runs ``minimize`` spent
    # the single faults, tasks and workers the (minimized) failure does not need (empty:
    # 1-minimal; None: not checked)
    redundant: list[str] | None = None
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


def _failure_name(f: Failure) -> str:
    v = f.violation
    if v is not None:
        return str(v.invariant)
    if f.error:
        return "crash"
    return "wrong-results"


def measure_mutant(m: Mutant, *, budget: float, jobs: int = 1, seed: int = 0,
                   out_dir: str = "squall-mutants", replays: int = 5, space: str | None = None,
                   progress: Any = None, minimize_candidates: int = MAX_CANDIDATES,
                   max_batches: int | None = None) -> MutantResult:
    """Explore with ``m`` on for ``budget`` seconds (and at most ``max_batches`` batches
    per job: with one job and no budget to speak of, the same failure on any machine);
    check that the shrunk failure is the mutant's (it passes with the mutant off),
    minimize it further by trace length with up to ``minimize_candidates`` candidate runs
    (0: not), check it for 1-minimality, and replay its trace (see MutantResult)."""
    space = space or m.space
    result = MutantResult(m.name, space, budget)
    started = time.monotonic()
    found = explore(budget=budget, seed=seed, jobs=jobs, space=space,
                    out_dir=f"{out_dir}/{m.name}", progress=progress,
                    job_context=partial(switched_on, m.name), max_batches=max_batches,
                    minimize_candidates=0)  # minimized here, by a judge of the mutant's
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
    judge = same_failure(m, outcome)
    if minimize_candidates > 0:
        smaller, out, result.candidates = minimize(scenario, outcome, judge,
                                                   max_candidates=minimize_candidates)
        if smaller is not scenario:
            path = failure_trace_path(f"{out_dir}/{m.name}", smaller)
            with m.active():
                out = run_scenario(smaller, trace=path, validate=True)
            scenario, outcome, trace = smaller, out, str(path)
            result.scenario = scenario.describe()
    result.redundant = redundant_parts(scenario, judge)
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


def same_failure(m: Mutant, first: Outcome) -> Callable[[Scenario], Outcome | None]:
    """A judge for ``minimize``: the candidate fails as ``first`` did with ``m`` on, and
    passes with it off."""
    want = first.violations[0].invariant if first.violations else None

    def still_fails(candidate: Scenario) -> Outcome | None:
        with m.active():
            out = run_scenario(candidate, validate=True)
        if not out.failed:  # passes, or over its time budget: not the same failure
            return None
        got = out.violations[0].invariant if out.violations else None
        if got != want or not run_scenario(candidate, validate=True).ok:
            return None
        return out

    return still_fails


def _housekeeping(trace: str) -> int:
    """Clock ticks and heartbeats among a trace's stimuli."""
    return sum(1 for _, line in read_trace(trace)
               if type(line) is Stim and type(line.m) in (p.Tick, p.Heartbeat))


def run_mutants(mutants: list[Mutant], *, budget: float, jobs: int = 1, seed: int = 0,
                out_dir: str = "squall-mutants", replays: int = 5, baseline: bool = True,
                say: Callable[[str], Any] | None = None, require_stimuli: int | None = None,
                space: str | None = None,
                ) -> tuple[list[MutantResult], list[BaselineResult], dict[str, Any]]:
    """Measure every mutant, then (``baseline``) explore each of their scenario spaces as
    long with no mutant. ``say`` gets a line as each measurement ends. ``space``: explore
    every mutant (and the baseline) in this space instead of each mutant's own (e.g.
    "all", what ``squall explore`` searches by default)."""
    results: list[MutantResult] = []
    for i, m in enumerate(mutants, 1):
        r = measure_mutant(m, budget=budget, jobs=jobs, seed=seed, out_dir=out_dir,
                           replays=replays, space=space)
        results.append(r)
        if say is not None:
            what = (f"caught by {r.caught_by} after {format_seconds(r.first_failure)} s, "
                    f"shrunk to {r.stimuli} stimuli" if r.detected else "NOT caught"
                    + (f" ({r.caught_by}: the scheduler fails so without it too)"
                       if r.caught_by else ""))
            say(f"[{i}/{len(mutants)}] {m.name}: {what}")
    base: list[BaselineResult] = []
    if baseline:
        spaces = [space] if space else list(dict.fromkeys(m.space for m in mutants))
        for i, space in enumerate(spaces, 1):
            b = measure_baseline(space, budget=budget, jobs=jobs, seed=seed, out_dir=out_dir)
            base.append(b)
            if say is not None:
                say(f"[{i}/{len(spaces)}] baseline {space}: {b.scenarios} scenarios, "
                    f"{b.violations} violation(s)" + (f" ({b.caught_by})" if b.violations else ""))
    return results, base, summarize(results, base, require_stimuli=require_stimuli)


def measure_baseline(space: str, *, budget: float, jobs: int = 1, seed: int = 0,
                     out_dir: str = "squall-mutants", progress: Any = None) -> BaselineResult:
    """Explore ``space`` for ``budget`` seconds with no mutant."""
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
              max_seconds: float = 60.0, max_stimuli: int = 30,
              require_stimuli: int | None = None) -> dict[str, Any]:
    """The figures: how many mutants were caught in time, small, and replayable; how many
    false alarms the unmutated scheduler raised. ``ok`` (what ``squall mutants`` exits
    0 on): every mutant caught by its own invariants, no false alarm, and, if
    ``require_stimuli`` is given, every shrunk trace at most that long."""
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
        "ok": (len(caught) == len(results) and false_alarms == 0 and (
            require_stimuli is None or all(
                r.stimuli is not None and r.stimuli <= require_stimuli for r in caught))),
    }


def format_seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"
