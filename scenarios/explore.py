"""Exploration: Hypothesis over whole scenarios in the simulator, strict mode on.

Scenarios come from a scenario space (``squall.scenarios.strategies``): by default
"all", where each example draws one of the named spaces (swarm testing). A run that
stops at its time budget with its work still progressing (``Outcome.budget_exceeded``)
is slow, not stuck: it is counted (``ExploreStats.over_budget``), not a failure.

Each job runs one *stream*: Hypothesis in batches of examples, batch ``b`` of stream ``g``
seeded by ``_batch_seed(seed, g, b)``, until the time budget is spent (a time budget
explores a prefix of each stream) or ``max_batches`` batches have run (an exact part of
the search: ``explore_batch`` runs any one batch alone, so the same batches give the same
scenarios in a job, a shard (``streams``) or on a dask worker,
``squall.scenarios.explore_dask``). A scenario that ends with a
violation, wrong results or a crash is shrunk by Hypothesis, then (not a crash of squall's
own code: a state machine's handler that raises is a violation, ``scheduler.`` or
``worker.handles-every-stimulus``, kept to the same exception at the same line) minimized
further by trace length (``squall.scenarios.minimize``, to a budget of candidate runs: the
same result on any machine); the minimal one is run once more with a trace written, and
the exploration stops. ``jobs > 1`` runs that many jobs
in forked processes, which report their counts to the parent as they go, and die with it
(``squall.core.lifeline``): a parent stopped by SIGTERM or SIGKILL leaves none behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import queue as queue_mod
import random
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import HypothesisDeprecationWarning

from squall.core.lifeline import die_with_parent
from squall.core.outcome import Outcome, Violation
from squall.scenarios.minimize import MAX_CANDIDATES
from squall.scenarios.model import Scenario, scenario_to_json
from squall.scenarios.reach import ReachTracker, count_reached
from squall.scenarios.runner import CRASH_INVARIANTS, run_scenario
from squall.scenarios.strategies import SWARM, check_space, scenarios

BATCH = 25  # examples per Hypothesis run; the budget is checked between runs
REPORT_EVERY = 0.2  # seconds between progress reports of a job
# a failure that runs for less than this has its minimizing candidates judged where it
# was found, not on a cluster (a dask round trip is ~10 ms on loopback, more across hosts)
REMOTE_FROM = 0.05


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
    batches: int = 0  # whole batches run (a batch cut short by a failure: not counted)
    # scenarios generated per scenario space (with the swarm, the space each one drew);
    # shrinking candidates are not counted
    per_space: dict[str, int] = field(default_factory=dict)
    rescheduled: int = 0  # dask: batches run again after the worker running them was lost
    # reach goals (``squall.scenarios.reach.GOALS``) -> generated scenarios that reached them
    reached: dict[str, int] = field(default_factory=dict)

    def add(self, other: ExploreStats) -> None:
        self.batches += other.batches
        self.rescheduled += other.rescheduled
        count_reached(self.reached, other.reached)
        for name, n in other.per_space.items():
            self.per_space[name] = self.per_space.get(name, 0) + n
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
    streams: list[int] = field(default_factory=list)  # the stream of each per_job entry
    # digests=True: each stream's scenario digests (``scenario_digest``), in the order they
    # were generated, up to and including a failing one (its shrinking candidates left out)
    digests: dict[int, list[str]] = field(default_factory=dict)
    minimized: int = 0  # candidate runs ``minimize`` spent on the shrunk failure
    startup: float = 0.0  # seconds to start or reach a cluster (dask), before ``elapsed``

    @property
    def rate(self) -> float:
        return self.stats.scenarios / self.elapsed if self.elapsed > 0 else 0.0


class ScenarioFailed(AssertionError):
    """Raised inside the Hypothesis test so that it shrinks the scenario."""


class _Abandoned(BaseException):
    """Raised inside the Hypothesis test to end a batch at once (``explore_batch(stop=)``)."""


ProgressFn = Callable[[int, ExploreStats], None]
# Called with no argument, it gives the context every exploration job (and the run that
# records the failure's trace) runs in: mutants switch a planted bug on this way
# (``functools.partial(switched_on, name)``). Picklable, for jobs in other processes.
JobContext = Callable[[], AbstractContextManager[Any]]


def _batch_seed(seed: int, job: int, batch: int) -> int:
    return random.Random(f"squall-explore:{seed}:{job}:{batch}").getrandbits(64)


def scenario_digest(scenario: Scenario) -> str:
    """A short digest of a scenario's content (its compact JSON)."""
    return hashlib.blake2b(scenario_to_json(scenario, indent=False), digest_size=8).hexdigest()


def explore_job(job: int, seed: int, space: str, deadline: float,
                progress: ProgressFn | None = None, max_scenarios: int | None = None,
                keep_going: bool = False, job_context: JobContext | None = None,
                max_batches: int | None = None, digests: list[str] | None = None,
                ) -> tuple[ExploreStats, tuple[Scenario, str] | None]:
    """Explore stream ``job`` until ``deadline`` (time.monotonic), ``max_batches`` batches
    or the first failure.

    Returns the counts and, on a failure, the shrunk scenario with the error text of a
    crash ("" for a violation or wrong results). ``keep_going``: count failures and go
    on, shrinking nothing (to measure the exploration rate). ``job_context``: the whole
    job runs inside ``job_context()`` (see JobContext). ``digests``: a list the digest of
    every scenario generated is appended to (see ``ExploreResult.digests``).
    """
    with _context(job_context):
        return _explore_job(job, seed, space, deadline, progress, max_scenarios, keep_going,
                            max_batches, digests)


def _context(job_context: JobContext | None) -> AbstractContextManager[Any]:
    return contextlib.nullcontext() if job_context is None else job_context()


class _NoLocalConstants:
    """While entered, Hypothesis draws no "local constants".

    Hypothesis (6.131 and later) sometimes draws a literal found in the source of the
    modules loaded so far that are not installed in site-packages -- squall's own when it
    is installed editable, a script's. That pool grows as modules are imported, so the
    same seed drew other scenarios in a fresh process than in one that had run a batch
    already, and others again after an unrelated literal was added anywhere. Emptied, a
    batch's scenarios depend on its seed, the strategies and Hypothesis' version alone:
    the same in a job, a shard or on a dask worker. Reentrant and thread-safe (a dask
    worker with threads runs batches side by side); a no-op where Hypothesis has no such
    pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: Any = None

    @staticmethod
    def _providers() -> Any:
        try:
            from hypothesis.internal.conjecture import providers
        except ImportError:  # pragma: no cover - another Hypothesis layout
            return None
        if not hasattr(providers, "_get_local_constants") or not hasattr(
                providers, "CONSTANTS_CACHE"):
            return None  # pragma: no cover - a Hypothesis without local constants
        return providers

    def __enter__(self) -> None:
        providers = self._providers()
        if providers is None:
            return
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                from hypothesis.internal.constants_ast import Constants

                self._saved = providers._get_local_constants
                providers._get_local_constants = Constants  # a new, empty pool each time
                providers.CONSTANTS_CACHE.cache.clear()  # values cached from the old pool

    def __exit__(self, *exc: object) -> None:
        providers = self._providers()
        if providers is None:
            return
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                providers._get_local_constants = self._saved
                providers.CONSTANTS_CACHE.cache.clear()


_NO_LOCAL_CONSTANTS = _NoLocalConstants()  # one per process: it patches Hypothesis' module


class _Batches:
    """Runs batches of scenarios, counting into ``stats`` (see ``explore_batch``)."""

    def __init__(self, space: str, keep_going: bool, progress: ProgressFn | None = None,
                 job: int = 0, digests: list[str] | None = None,
                 stop: Callable[[], bool] | None = None) -> None:
        check_space(space)
        self.space = space
        self.stop = stop
        self.keep_going = keep_going
        self.progress = progress
        self.job = job
        self.digests = digests
        self.stats = ExploreStats()
        self.failure: tuple[Scenario, str] | None = None
        self._drawn = space  # the space of the scenario drawn last
        self._last_report = 0.0

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self._last_report > REPORT_EVERY):
            self._last_report = now
            self.progress(self.job, self.stats)

    def _on_space(self, space: str) -> None:
        self._drawn = space

    def check(self, scenario: Scenario) -> None:
        if self.stop is not None and self.stop():
            raise _Abandoned  # not an Exception: Hypothesis lets it through, unshrunk
        stats = self.stats
        if self.failure is None:  # generated, not a shrinking candidate
            stats.per_space[self._drawn] = stats.per_space.get(self._drawn, 0) + 1
            if self.digests is not None:
                self.digests.append(scenario_digest(scenario))
        reach = ReachTracker() if self.failure is None else None
        try:
            outcome = run_scenario(scenario, validate=True, reach=reach)
        except Exception:
            stats.scenarios += 1
            stats.failed_at = stats.failed_at or time.monotonic()
            self.failure = (scenario, traceback.format_exc())
            stats.shrinking = True
            self.report()
            raise
        stats.scenarios += 1
        if reach is not None:
            count_reached(stats.reached, reach.reached)
        stats.transitions += outcome.transitions
        stats.checks += outcome.invariant_checks
        stats.stimuli += outcome.n_stimuli
        if outcome.budget_exceeded:  # slow, not stuck: neither a failure nor a pass
            stats.over_budget += 1
        self.report()
        if not outcome.failed:
            return
        what = (outcome.violations[0].invariant if outcome.violations
                else f"wrong results {outcome.wrong[:3]}")
        if self.keep_going:
            stats.failures += 1
            if not stats.first_failure:
                stats.first_failure = what
                stats.first_failure_scenario = scenario_to_json(scenario, indent=False).decode()
        else:
            stats.failed_at = stats.failed_at or time.monotonic()
            self.failure = (scenario, "")
            stats.shrinking = True
            raise ScenarioFailed(what)

    def run(self, seed: int, stream: int, batch: int) -> tuple[Scenario, str] | None:
        """Run batch ``batch`` of stream ``stream``: None, or the shrunk failure."""
        test = given(scenario=scenarios(self.space, on_space=self._on_space))(self.check)
        test = settings(max_examples=BATCH, deadline=None, database=None,
                        phases=(Phase.generate, Phase.shrink), verbosity=Verbosity.quiet,
                        suppress_health_check=list(HealthCheck),
                        report_multiple_bugs=False)(test)
        test = hypothesis_seed(_batch_seed(seed, stream, batch))(test)
        try:
            with _NO_LOCAL_CONSTANTS, warnings.catch_warnings():
                # a dask worker's own threads use the random module meanwhile: Hypothesis
                # would blame the strategies (whose draws it does not change)
                warnings.filterwarnings("ignore", "Do not use the `random` module",
                                        HypothesisDeprecationWarning)
                test()
        except _Abandoned:
            return self.failure  # given up: what it found so far, of no use to anyone
        except Exception:
            if self.failure is None:
                raise
            return self.failure
        self.stats.batches += 1
        return None


def explore_batch(seed: int, stream: int, batch: int, space: str, *, keep_going: bool = False,
                  digests: list[str] | None = None, stop: Callable[[], bool] | None = None,
                  ) -> tuple[ExploreStats, tuple[Scenario, str] | None]:
    """Batch ``batch`` of stream ``stream`` alone: BATCH scenarios drawn from ``space``
    with the batch's own seed, run with strict mode on; its counts and, on a failure, the
    scenario Hypothesis shrank it to with a crash's text (see ``explore_job``). A pure
    function of its arguments: it runs the same scenarios wherever it runs. ``stop``:
    asked before each scenario; once true, the batch runs nothing more (its result is
    then of no use: it was cancelled)."""
    runner = _Batches(space, keep_going, digests=digests, stop=stop)
    found = runner.run(seed, stream, batch)
    return runner.stats, found


def _explore_job(job: int, seed: int, space: str, deadline: float,
                 progress: ProgressFn | None, max_scenarios: int | None,
                 keep_going: bool, max_batches: int | None = None,
                 digests: list[str] | None = None,
                 ) -> tuple[ExploreStats, tuple[Scenario, str] | None]:
    def out_of_time() -> bool:
        # Asked before each scenario: a time budget ends within one scenario, not one
        # batch (a batch cut short is not counted). A failure found is still shrunk.
        return runner.failure is None and time.monotonic() >= deadline

    runner = _Batches(space, keep_going, progress, job, digests, stop=out_of_time)
    batch = 0
    while time.monotonic() < deadline:
        if max_scenarios is not None and runner.stats.scenarios >= max_scenarios:
            break
        if max_batches is not None and batch >= max_batches:
            break
        found = runner.run(seed, job, batch)
        if found is not None:
            runner.report(force=True)
            return runner.stats, found
        batch += 1
    runner.report(force=True)
    return runner.stats, None


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


def shard_streams(jobs: int, shard: int = 0, shards: int = 1) -> list[int]:
    """The streams shard ``shard`` of ``shards`` explores with ``jobs`` jobs:
    ``shard + shards * j`` for each job ``j``. Shard 0 of 1 is ``0 .. jobs-1`` (what
    ``--jobs`` alone explores), and the shards of one ``shards`` with the same ``jobs``
    explore, between them, the streams of one run with ``jobs * shards`` jobs."""
    if jobs < 1 or shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"need jobs >= 1 and 0 <= shard < shards, got jobs {jobs}, "
                         f"shard {shard}/{shards}")
    return [shard + shards * j for j in range(jobs)]


class SameFailure:
    """A judge for ``minimize``: the candidate's outcome (run inside ``job_context()``,
    strict mode on) when it fails as the first failure did -- the same invariant, or
    wrong results with no violation -- else None (a candidate that crashes, passes or ends
    over its time budget). Picklable (for dask workers)."""

    def __init__(self, first: Outcome, job_context: JobContext | None = None) -> None:
        self.invariant = first.violations[0].invariant if first.violations else None
        # a crash stays the same crash: the same exception raised at the same place
        self.site = (first.violations[0].entity
                     if self.invariant in CRASH_INVARIANTS else None)
        self.job_context = job_context

    def __call__(self, candidate: Scenario) -> Outcome | None:
        try:
            with _context(self.job_context):
                out = run_scenario(candidate, validate=True)
        except Exception:
            return None
        if not out.failed:
            return None
        if self.invariant is None:
            return out if not out.violations and out.wrong else None
        if not out.violations or out.violations[0].invariant != self.invariant:
            return None
        return out if self.site is None or out.violations[0].entity == self.site else None


JudgeMany = Callable[[list[Scenario]], list[Outcome | None]]


def finish_failure(found: tuple[Scenario, str], out_dir: str | Path,
                   job_context: JobContext | None = None,
                   minimize_candidates: int = MAX_CANDIDATES,
                   judge_many: Callable[[SameFailure], JudgeMany] | None = None,
                   window: int = 1) -> tuple[Failure, int]:
    """The failure ``found`` (Hypothesis' shrunk scenario, a crash's text), minimized
    further by trace length with up to ``minimize_candidates`` candidate runs (0: not;
    ``squall.scenarios.minimize``, a budget of runs, so the same failure gives the same
    result on any machine; a crash of squall's own code is not minimized), then run once
    more here with its trace written (``record_failure``). With ``judge_many`` (given the
    judge, a function judging a list of candidates at once: on a cluster), candidates are
    judged ``window`` at a time: the same result as one by one;
    but a failure that runs in less than REMOTE_FROM seconds has its candidates judged
    here, one by one (a round trip to a cluster costs more than such a run).
    Returns the failure and the candidates tried."""
    scenario, error = found
    tried = 0
    if not error and minimize_candidates > 0:
        from squall.scenarios.minimize import minimize

        t0 = time.perf_counter()
        with _context(job_context):
            first = run_scenario(scenario, validate=True)
        remote = judge_many is not None and time.perf_counter() - t0 >= REMOTE_FROM
        if first.failed:
            judge = SameFailure(first, job_context)
            scenario, _, tried = minimize(
                scenario, first, judge, max_candidates=minimize_candidates,
                window=window if remote else 1,
                judge_many=judge_many(judge) if remote and judge_many is not None else None)
    return record_failure(scenario, error, out_dir, job_context), tried


def explore(*, budget: float, seed: int = 0, jobs: int = 1, space: str = SWARM,
            out_dir: str | Path = "squall-traces", progress: ProgressFn | None = None,
            max_scenarios: int | None = None, keep_going: bool = False,
            job_context: JobContext | None = None, shard: int = 0, shards: int = 1,
            max_batches: int | None = None, digests: bool = False,
            minimize_candidates: int = MAX_CANDIDATES) -> ExploreResult:
    """Explore scenarios for ``budget`` seconds in ``jobs`` processes (see module doc).

    ``space``: a named scenario space (``SCENARIO_SPACES``: to focus), or SWARM ("all",
    the default): every example draws its space, so no space has to be guessed.

    ``keep_going``: do not stop at a failure; count it (``stats.failures``) and go on.
    ``job_context``: every job runs inside ``job_context()`` (it switches a planted bug on
    for ``squall mutants``), and so does the run that records the failure's trace.
    ``shard``/``shards``: the jobs run the streams ``shard_streams(jobs, shard, shards)``.
    ``max_batches``: each stream stops after that many batches (``max_scenarios``: after
    the batch that reached that many scenarios). ``digests``: keep the scenarios' digests
    (``ExploreResult.digests``). ``minimize_candidates``: candidate runs to minimize a
    shrunk failure further with, by the length of its trace (``finish_failure``; 0: keep
    Hypothesis' shrunk scenario).
    """
    check_space(space)
    streams = shard_streams(jobs, shard, shards)
    started = time.monotonic()
    deadline = started + budget
    if jobs <= 1:
        kept: list[str] | None = [] if digests else None
        stats, found = explore_job(streams[0], seed, space, deadline, progress, max_scenarios,
                                   keep_going, job_context, max_batches, kept)
        failure, tried = (finish_failure(found, out_dir, job_context, minimize_candidates)
                          if found else (None, 0))
        return ExploreResult(stats, time.monotonic() - started, 1, failure, [stats],
                             streams=streams, minimized=tried,
                             digests={} if kept is None else {streams[0]: kept})
    return _explore_parallel(streams, seed, space, deadline, started, out_dir, progress,
                             max_scenarios, keep_going, job_context, max_batches, digests,
                             minimize_candidates)


def _job_main(job: int, stream: int, seed: int, space: str, deadline: float, q: Any,
              max_scenarios: int | None, keep_going: bool,
              job_context: JobContext | None, max_batches: int | None,
              digests: bool) -> None:
    die_with_parent()  # a parent gone (SIGTERM, SIGKILL) takes its jobs with it

    def progress(_stream: int, stats: ExploreStats) -> None:
        q.put(("progress", job, msgspec.to_builtins(stats.__dict__)))

    kept: list[str] | None = [] if digests else None
    try:
        stats, found = explore_job(stream, seed, space, deadline, progress, max_scenarios,
                                   keep_going, job_context, max_batches, kept)
    except BaseException:
        q.put(("crash", job, traceback.format_exc()))
        return
    state = msgspec.to_builtins(stats.__dict__)
    if found is None:
        q.put(("done", job, state, kept))
    else:
        q.put(("failure", job, state, kept, scenario_to_json(found[0], indent=False),
               found[1]))


def _explore_parallel(streams: list[int], seed: int, space: str, deadline: float,
                      started: float, out_dir: str | Path, progress: ProgressFn | None,
                      max_scenarios: int | None, keep_going: bool,
                      job_context: JobContext | None = None, max_batches: int | None = None,
                      digests: bool = False,
                      minimize_candidates: int = MAX_CANDIDATES) -> ExploreResult:
    from squall.scenarios.model import scenario_from_json

    jobs = len(streams)
    # fork: children inherit the parent's modules as they are (a test's monkeypatch too)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    per_job = [ExploreStats() for _ in range(jobs)]
    kept: dict[int, list[str]] = {}
    procs = [ctx.Process(target=_job_main, args=(j, streams[j], seed, space, deadline, q,
                                                 max_scenarios, keep_going, job_context,
                                                 max_batches, digests),
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
            if kind in ("done", "failure") and msg[3] is not None:
                kept[streams[job]] = msg[3]
            if kind == "done":
                running.discard(job)
            elif kind == "failure":
                running.discard(job)
                found = (scenario_from_json(msg[4]), msg[5])
                break
        while not found and not crash:  # counts sent just before a job ended
            try:
                msg = q.get(timeout=0.2)
            except queue_mod.Empty:
                break
            if msg[0] in ("progress", "done"):
                per_job[msg[1]] = ExploreStats(**msg[2])
            if msg[0] == "done" and msg[3] is not None:
                kept[streams[msg[1]]] = msg[3]
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
    failure, tried = (finish_failure(found, out_dir, job_context, minimize_candidates)
                      if found else (None, 0))
    return ExploreResult(total, time.monotonic() - started, jobs, failure, per_job,
                         streams=streams, digests=kept, minimized=tried)
