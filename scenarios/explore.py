"""Exploration: Hypothesis over whole scenarios in the simulator, strict mode on.

Scenarios come from a scenario space (``squall.scenarios.strategies``): by default
"all", where each example draws one of the named spaces (swarm testing). A run that
stops at its time budget with its work still progressing (``Outcome.budget_exceeded``)
is slow, not stuck: it is counted (``ExploreStats.over_budget``), not a failure.

Each job runs Hypothesis in batches of examples (each batch with its own seed derived
from the exploration seed) until the time budget is spent. A scenario that ends with a
violation, wrong results or a crash is shrunk by Hypothesis; the minimal one is run once
more with a trace written, and the exploration stops. ``jobs > 1`` runs that many jobs
in forked processes, which report their counts to the parent as they go, and die with it
(``squall.core.lifeline``): a parent stopped by SIGTERM or SIGKILL leaves none behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import queue as queue_mod
import random
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from squall.core.lifeline import die_with_parent
from squall.core.outcome import Outcome, Violation
from squall.scenarios.model import Scenario, scenario_to_json
from squall.scenarios.runner import run_scenario
from squall.scenarios.strategies import SWARM, check_space, scenarios

BATCH = 25  # examples per Hypothesis run; the budget is checked between runs
REPORT_EVERY = 0.2  # seconds between progress reports of a job


@dataclass
class ExploreStats:
    scenarios: int = 0
    transitions: int = 0
    checks: int = 0  # invariant checks
    stimuli: int = 0
    failures: int = 0  # counted, not shrunk (keep_going)
    over_budget: int = 0  # runs stopped at their time budget, work still progressing
    # keep_going: what the first failure counted was (its invariant, or wrong results), and
    # its scenario (JSON), to look at it again
    first_failure: str = ""
    first_failure_scenario: str = ""
    shrinking: bool = False
    failed_at: float = 0.0  # time.monotonic() when the first failing scenario ended (0: none)

    def add(self, other: ExploreStats) -> None:
        self.failures += other.failures
        self.over_budget += other.over_budget
        if other.first_failure and not self.first_failure:
            self.first_failure = other.first_failure
            self.first_failure_scenario = other.first_failure_scenario
        self.scenarios += other.scenarios
        self.transitions += other.transitions
        self.checks += other.checks
        self.stimuli += other.stimuli
        if other.failed_at and (not self.failed_at or other.failed_at < self.failed_at):
            self.failed_at = other.failed_at


@dataclass
class Failure:
    scenario: Scenario  # the shrunk scenario
    outcome: Outcome | None  # its outcome when run again with a trace (None: it crashed)
    error: str = ""  # a crash (an exception that is not a violation), with its traceback
    trace_path: str = ""

    @property
    def violation(self) -> Violation | None:
        if self.outcome is not None and self.outcome.violations:
            return self.outcome.violations[0]
        return None


@dataclass
class ExploreResult:
    stats: ExploreStats
    elapsed: float
    jobs: int
    failure: Failure | None = None
    per_job: list[ExploreStats] = field(default_factory=list)
    clusters: int = 0  # clusters started (a target's own runtime; the simulator: 0)
    reused: int = 0  # scenarios run on a cluster kept from the one before

    @property
    def rate(self) -> float:
        return self.stats.scenarios / self.elapsed if self.elapsed > 0 else 0.0


class ScenarioFailed(AssertionError):
    """Raised inside the Hypothesis test so that it shrinks the scenario."""


ProgressFn = Callable[[int, ExploreStats], None]
# Called with no argument, it gives the context every exploration job (and the run that
# records the failure's trace) runs in: mutants switch a planted bug on this way
# (``functools.partial(switched_on, name)``). Picklable, for jobs in other processes.
JobContext = Callable[[], AbstractContextManager[Any]]


def _batch_seed(seed: int, job: int, batch: int) -> int:
    return random.Random(f"squall-explore:{seed}:{job}:{batch}").getrandbits(64)


def explore_job(job: int, seed: int, space: str, deadline: float,
                progress: ProgressFn | None = None, max_scenarios: int | None = None,
                keep_going: bool = False, job_context: JobContext | None = None,
                ) -> tuple[ExploreStats, tuple[Scenario, str] | None]:
    """Explore until ``deadline`` (time.monotonic) or the first failure.

    Returns the counts and, on a failure, the shrunk scenario with the error text of a
    crash ("" for a violation or wrong results). ``keep_going``: count failures and go
    on, shrinking nothing (to measure the exploration rate). ``job_context``: the whole
    job runs inside ``job_context()`` (see JobContext).
    """
    with _context(job_context):
        return _explore_job(job, seed, space, deadline, progress, max_scenarios, keep_going)


def _context(job_context: JobContext | None) -> AbstractContextManager[Any]:
    return contextlib.nullcontext() if job_context is None else job_context()


def _explore_job(job: int, seed: int, space: str, deadline: float,
                 progress: ProgressFn | None, max_scenarios: int | None,
                 keep_going: bool) -> tuple[ExploreStats, tuple[Scenario, str] | None]:
    check_space(space)
    stats = ExploreStats()
    last: dict[str, Any] = {}
    last_report = [0.0]

    def report(force: bool = False) -> None:
        now = time.monotonic()
        if progress is not None and (force or now - last_report[0] > REPORT_EVERY):
            last_report[0] = now
            progress(job, stats)

    def check(scenario: Scenario) -> None:
        try:
            outcome = run_scenario(scenario, validate=True)
        except Exception:
            stats.scenarios += 1
            stats.failed_at = stats.failed_at or time.monotonic()
            last["failure"] = (scenario, traceback.format_exc())
            stats.shrinking = True
            report()
            raise
        stats.scenarios += 1
        stats.transitions += outcome.transitions
        stats.checks += outcome.invariant_checks
        stats.stimuli += outcome.n_stimuli
        if outcome.budget_exceeded:  # slow, not stuck: neither a failure nor a pass
            stats.over_budget += 1
        report()
        if not outcome.failed:
            return
        what = (outcome.violations[0].invariant if outcome.violations
                else f"wrong results {outcome.wrong[:3]}")
        if keep_going:
            stats.failures += 1
            if not stats.first_failure:
                stats.first_failure = what
                stats.first_failure_scenario = scenario_to_json(scenario, indent=False).decode()
        else:
            stats.failed_at = stats.failed_at or time.monotonic()
            last["failure"] = (scenario, "")
            stats.shrinking = True
            raise ScenarioFailed(what)

    quiet = list(HealthCheck)
    batch = 0
    while time.monotonic() < deadline:
        if max_scenarios is not None and stats.scenarios >= max_scenarios:
            break
        test = given(scenario=scenarios(space))(check)
        test = settings(max_examples=BATCH, deadline=None, database=None,
                        phases=(Phase.generate, Phase.shrink), verbosity=Verbosity.quiet,
                        suppress_health_check=quiet, report_multiple_bugs=False)(test)
        test = hypothesis_seed(_batch_seed(seed, job, batch))(test)
        try:
            test()
        except Exception:
            if "failure" not in last:
                raise
            report(force=True)
            return stats, last["failure"]
        batch += 1
    report(force=True)
    return stats, None


def failure_trace_path(out_dir: str | Path, scenario: Scenario) -> Path:
    """Where the trace of a failing scenario goes: named by the scenario's content."""
    h = hashlib.blake2b(scenario_to_json(scenario, indent=False), digest_size=5).hexdigest()
    return Path(out_dir) / f"explore-{h}.jsonl"


def record_failure(scenario: Scenario, error: str, out_dir: str | Path,
                   job_context: JobContext | None = None) -> Failure:
    """Run the shrunk scenario once more (inside ``job_context()``), writing its trace."""
    path = failure_trace_path(out_dir, scenario)
    if error:
        return Failure(scenario, None, error=error)
    with _context(job_context):
        outcome = run_scenario(scenario, trace=path, validate=True)
    return Failure(scenario, outcome, trace_path=str(path))


def explore(*, budget: float, seed: int = 0, jobs: int = 1, space: str = SWARM,
            out_dir: str | Path = "squall-traces", progress: ProgressFn | None = None,
            max_scenarios: int | None = None, keep_going: bool = False,
            job_context: JobContext | None = None) -> ExploreResult:
    """Explore scenarios for ``budget`` seconds in ``jobs`` processes (see module doc).

    ``space``: a named scenario space (``SCENARIO_SPACES``: to focus), or SWARM ("all",
    the default): every example draws its space, so no space has to be guessed.

    ``keep_going``: do not stop at a failure; count it (``stats.failures``) and go on.
    ``job_context``: every job runs inside ``job_context()`` (it switches a planted bug on
    for ``squall mutants``), and so does the run that records the failure's trace.
    """
    check_space(space)
    started = time.monotonic()
    deadline = started + budget
    if jobs <= 1:
        stats, found = explore_job(0, seed, space, deadline, progress, max_scenarios,
                                   keep_going, job_context)
        failure = record_failure(found[0], found[1], out_dir, job_context) if found else None
        return ExploreResult(stats, time.monotonic() - started, 1, failure, [stats])
    return _explore_parallel(jobs, seed, space, deadline, started, out_dir, progress,
                             max_scenarios, keep_going, job_context)


def _job_main(job: int, seed: int, space: str, deadline: float, q: Any,
              max_scenarios: int | None, keep_going: bool,
              job_context: JobContext | None) -> None:
    die_with_parent()  # a parent gone (SIGTERM, SIGKILL) takes its jobs with it

    def progress(j: int, stats: ExploreStats) -> None:
        q.put(("progress", j, msgspec.to_builtins(stats.__dict__)))

    try:
        stats, found = explore_job(job, seed, space, deadline, progress, max_scenarios,
                                   keep_going, job_context)
    except BaseException:
        q.put(("crash", job, traceback.format_exc()))
        return
    state = msgspec.to_builtins(stats.__dict__)
    if found is None:
        q.put(("done", job, state))
    else:
        q.put(("failure", job, state, scenario_to_json(found[0], indent=False), found[1]))


def _explore_parallel(jobs: int, seed: int, space: str, deadline: float, started: float,
                      out_dir: str | Path, progress: ProgressFn | None,
                      max_scenarios: int | None, keep_going: bool,
                      job_context: JobContext | None = None) -> ExploreResult:
    from squall.scenarios.model import scenario_from_json

    # fork: children inherit the parent's modules as they are (a test's monkeypatch too)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    per_job = [ExploreStats() for _ in range(jobs)]
    procs = [ctx.Process(target=_job_main, args=(j, seed, space, deadline, q, max_scenarios,
                                                       keep_going, job_context),
                         daemon=True) for j in range(jobs)]
    for proc in procs:
        proc.start()
    running = set(range(jobs))
    found: tuple[Scenario, str] | None = None
    crash = ""
    try:
        while running:
            try:
                msg = q.get(timeout=0.5)
            except queue_mod.Empty:
                running = {j for j in running if procs[j].is_alive()} or set()
                if not running:
                    break
                continue
            kind, job = msg[0], msg[1]
            if kind == "crash":
                crash = msg[2]
                running.discard(job)
                break
            per_job[job] = ExploreStats(**msg[2])
            if progress is not None:
                total = ExploreStats(shrinking=any(s.shrinking for s in per_job))
                for s in per_job:
                    total.add(s)
                progress(-1, total)
            if kind == "done":
                running.discard(job)
            elif kind == "failure":
                running.discard(job)
                found = (scenario_from_json(msg[3]), msg[4])
                break
        while not found and not crash:  # counts sent just before a job ended
            try:
                msg = q.get(timeout=0.2)
            except queue_mod.Empty:
                break
            if msg[0] in ("progress", "done"):
                per_job[msg[1]] = ExploreStats(**msg[2])
    finally:
        for proc in procs:  # the first failure wins: the other jobs stop now
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=5)
    if crash:
        raise RuntimeError(f"an exploration job crashed:\n{crash}")
    total = ExploreStats()
    for s in per_job:
        total.add(s)
    failure = record_failure(found[0], found[1], out_dir, job_context) if found else None
    return ExploreResult(total, time.monotonic() - started, jobs, failure, per_job)
