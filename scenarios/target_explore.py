"""Exploration in a target's own runtime: ``squall explore --runtime dask``.

The same Hypothesis search as the simulator's (``squall.scenarios.explore``), over the same
scenario spaces, but each scenario runs on the target's real processes
(``run_on_target``), one at a time: one cluster is kept and reused across scenarios of the
same shape (``ClusterPool``: the cluster's ``reset`` releases everything between them;
after a fault that changed its processes or links, a new one starts).

Every run writes its trace to a scratch file; the trace of the last failing run is kept.
A failure is shrunk by Hypothesis, each candidate a real run, until ``shrink_budget``
seconds have passed; then the smallest failing scenario found is the result, with the trace
of the run that failed (nothing is re-run: on real processes a rerun may not fail again).
A candidate that passes where its parent failed is what real processes do (Hypothesis
calls it flaky); the smallest failure seen so far is kept all the same.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from squall.scenarios.explore import (
    BATCH,
    ExploreResult,
    ExploreStats,
    Failure,
    JobContext,
    ProgressFn,
    ScenarioFailed,
    _batch_seed,
    _context,
    failure_trace_path,
)
from squall.scenarios.model import Scenario
from squall.scenarios.strategies import check_space, scenarios
from squall.scenarios.target_run import ClusterPool, run_on_target, unsupported_on_target
from squall.targets import target_for

SHRINK_SHARE = 0.5  # of the budget, at most, spent shrinking a failure (default)


class _ShrinkOver(Exception):
    """The shrink budget is spent: stop Hypothesis with the smallest failure found."""


class _BudgetOver(Exception):
    """The exploration budget is spent, with nothing found."""


def explore_on_target(*, runtime: str, budget: float, seed: int = 0, space: str = "small",
                      out_dir: str | Path = "squall-traces", progress: ProgressFn | None = None,
                      max_scenarios: int | None = None, keep_going: bool = False,
                      job_context: JobContext | None = None,
                      shrink_budget: float | None = None) -> ExploreResult:
    """Explore ``space`` in ``runtime`` for ``budget`` seconds, then shrink a failure for at
    most ``shrink_budget`` seconds (default: half the budget). See the module docstring."""
    check_space(space)
    target = target_for(runtime)
    started = time.monotonic()
    deadline = started + budget
    shrink_for = budget * SHRINK_SHARE if shrink_budget is None else shrink_budget
    scratch = Path(tempfile.mkdtemp(prefix="squall-explore-"))
    stats = ExploreStats()
    best: dict[str, Any] = {}  # the smallest failing scenario so far, and its trace
    shrink_until = [0.0]
    last_report = [0.0]
    runs = [0]

    def report(force: bool = False) -> None:
        now = time.monotonic()
        if progress is not None and (force or now - last_report[0] > 0.2):
            last_report[0] = now
            progress(0, stats)

    def check(scenario: Scenario, pool: ClusterPool) -> None:
        if shrink_until[0] and time.monotonic() > shrink_until[0]:
            raise _ShrinkOver
        if not best and (time.monotonic() > deadline or (
                max_scenarios is not None and stats.scenarios >= max_scenarios)):
            raise _BudgetOver  # (each run takes seconds: the budget is checked before each)
        scenario = msgspec.structs.replace(scenario, runtime=runtime)
        if unsupported_on_target(scenario):
            return  # (the spaces draw none such; a guard, not a filter)
        runs[0] += 1
        path = scratch / f"run-{runs[0]}.jsonl"
        outcome = run_on_target(scenario, target, trace=path, validate=True, pool=pool)
        stats.scenarios += 1
        stats.transitions += outcome.transitions
        stats.checks += outcome.invariant_checks
        stats.stimuli += outcome.n_stimuli
        if outcome.ok:
            path.unlink(missing_ok=True)
            report()
            return
        if keep_going:
            stats.failures += 1
            path.unlink(missing_ok=True)
            report()
            return
        if not best:
            stats.failed_at = time.monotonic()
            shrink_until[0] = time.monotonic() + shrink_for
        elif best.get("path"):
            Path(best["path"]).unlink(missing_ok=True)
        best.update(scenario=scenario, outcome=outcome, path=str(path))
        stats.shrinking = True
        report(force=True)
        what = (outcome.violations[0].invariant if outcome.violations
                else f"wrong results {outcome.wrong[:3]}")
        raise ScenarioFailed(what)

    quiet = list(HealthCheck)
    try:
        with _context(job_context), ClusterPool(target) as pool:
            batch = 0
            while time.monotonic() < deadline and not best:
                if max_scenarios is not None and stats.scenarios >= max_scenarios:
                    break
                test = given(scenario=scenarios(space))(lambda scenario: check(scenario, pool))
                test = settings(max_examples=BATCH, deadline=None, database=None,
                                phases=(Phase.generate, Phase.shrink),
                                verbosity=Verbosity.quiet, suppress_health_check=quiet,
                                report_multiple_bugs=False)(test)
                test = hypothesis_seed(_batch_seed(seed, 0, batch))(test)
                try:
                    test()
                except _BudgetOver:
                    break
                except Exception:  # a failure shrunk (or flaky, or the shrink budget spent)
                    if not best:
                        raise
                batch += 1
        report(force=True)
        failure = None
        if best:
            failure = _keep(best, out_dir)
        stats.shrinking = False
        return ExploreResult(stats, time.monotonic() - started, 1, failure, [stats],
                             clusters=pool.started, reused=pool.reused)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _keep(best: dict[str, Any], out_dir: str | Path) -> Failure:
    """The smallest failure's trace, moved to where traces go."""
    scenario: Scenario = best["scenario"]
    dest = failure_trace_path(out_dir, scenario)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(best["path"], dest)
    outcome = best["outcome"]
    outcome.trace_path = str(dest)
    return Failure(scenario, outcome, trace_path=str(dest))
