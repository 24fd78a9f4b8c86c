"""``squall scenarios``, ``run``, ``replay``, ``explore`` and ``report``.

Exit codes: ``run`` 0 success, 1 violation or wrong result, 2 bad input; ``replay`` 0 the
replay matches, 1 it reproduces the recorded violation (or failure), 3 it diverges, 2 an
unreadable trace; ``explore`` 0 nothing found, 1 a failure found (and its trace written);
every one 2 for an output it cannot write (a trace, a log, a report, ``--out``), naming it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table

from squall.cli.errors import SquallError
from squall.core.outcome import Outcome, format_violation
from squall.scenarios.limits import cannot_write, jobs_problem, make_output_dir, slug
from squall.scenarios.model import (
    Scenario,
    ScenarioError,
    load_scenarios,
    scenario_to_json,
    scenarios_to_json,
)
from squall.targets import runtime_names


def resolve_scenarios(spec: str) -> list[Scenario]:
    """A standard scenario's name, or the path of a scenario JSON file (one scenario, or a
    list of them)."""
    from squall.scenarios.library import named_scenario, scenario_names

    if spec in scenario_names():
        return [named_scenario(spec)]
    if spec.endswith(".json") or Path(spec).exists():
        return load_scenarios(spec)
    return [named_scenario(spec)]  # raises, listing the names


@click.command("scenarios")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--json", "as_json", is_flag=True,
              help="print them as one JSON document that `squall run FILE` runs: one NAME, "
                   "its scenario; otherwise a list of scenarios, run one after another")
def scenarios_cmd(names: tuple[str, ...], as_json: bool) -> None:
    """List the standard scenarios (all, or the NAMEs given)."""
    from squall.scenarios.library import all_scenarios, named_scenario

    lib = all_scenarios()
    if names:
        try:
            lib = {name: named_scenario(name) for name in names}
        except ScenarioError as e:
            raise SquallError(str(e)) from None
    if as_json:
        chosen = list(lib.values())
        click.echo(scenario_to_json(chosen[0]) if len(names) == 1
                   else scenarios_to_json(chosen))
        return
    table = Table(title="standard scenarios (squall run NAME)")
    table.add_column("name")
    table.add_column("what runs")
    table.add_column("why", overflow="fold")
    for name, sc in lib.items():
        table.add_row(name, sc.describe(), sc.description)
    Console().print(table)


@click.command("run")
@click.argument("scenario")
@click.option("--runtime", type=click.Choice(runtime_names()), default=None,
              help="override the scenario's runtime (dask: dask.distributed's own processes)")
@click.option("--seed", type=int, default=None, help="override the scenario's seed")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="write the run's trace (JSON Lines) here [default: "
                   "squall-traces/NAME-RUNTIME.trace.jsonl]")
@click.option("--no-trace", is_flag=True, help="write no trace (real mode then counts no "
                                               "transitions or checks)")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="strict mode: check invariants after every transition")
def run_cmd(scenario: str, runtime: str | None, seed: int | None, trace_path: str | None,
            no_trace: bool, validate: bool) -> None:
    """Run a standard scenario (by NAME) or a scenario file (FILE.json).

    A file holds one scenario, or a list of them (`squall scenarios --json`), run one
    after another: exit 0 when every one passed. Shows a progress bar while it runs and a
    summary at the end; writes a trace that `squall replay` and `squall report` read.
    Real mode logs to the trace's .log file.
    """
    from squall.scenarios.runner import check_runnable

    try:
        scs = resolve_scenarios(scenario)
        changes: dict[str, Any] = {}
        if runtime is not None:
            changes["runtime"] = runtime
        if seed is not None:
            changes["seed"] = seed
        if changes:
            scs = [msgspec.structs.replace(sc, **changes) for sc in scs]
        for i, sc in enumerate(scs):  # every one runnable before any runs
            try:
                check_runnable(sc)
            except ScenarioError as e:
                raise ScenarioError(f"{scenario}: [{i}]: {e}" if len(scs) > 1 else str(e)) \
                    from None
        if trace_path is not None and len(scs) > 1:
            raise SquallError(f"--trace: {scenario} holds {len(scs)} scenarios, each written "
                              "to its own trace under squall-traces/ (or give --no-trace)")
        stems: set[str] = set()
        failed: list[str] = []
        for i, sc in enumerate(scs):
            path = trace_path
            if path is None and not no_trace:
                # a file name made of the scenario's name: never a path, never too long
                stem = f"{slug(sc.name or Path(scenario).stem)}-{slug(sc.runtime)}"
                if stem in stems:  # two scenarios of one name in a list: both traces kept
                    stem = f"{stem}-{i}"
                stems.add(stem)
                path = str(Path("squall-traces") / f"{stem}.trace.jsonl")
            if not _run_one(sc, path, validate):
                failed.append(sc.name or f"[{i}]")
    except ScenarioError as e:
        raise SquallError(str(e)) from None
    if len(scs) > 1:
        click.echo(f"squall run: {len(scs) - len(failed)} of {len(scs)} scenarios passed"
                   + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


def _run_one(sc: Scenario, trace_path: str | None, validate: bool) -> bool:
    """Run one scenario and print its summary; whether it passed."""
    from squall.scenarios.runner import run_scenario

    log_path = str(Path(trace_path).with_suffix(".log")) if trace_path else None
    with _logs_to(log_path if sc.runtime != "sim" else None), _progress_bar(sc) as progress:
        outcome = run_scenario(sc, trace=trace_path, validate=validate, progress=progress)
    _print_outcome(sc, outcome, log_path if sc.runtime != "sim" else None)
    return outcome.ok


@contextlib.contextmanager
def _logs_to(path: str | None) -> Iterator[None]:
    """Log records (of every process of a real cluster) go to ``path``, not the terminal."""
    if path is None:
        yield
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="w")
    except OSError as e:
        raise cannot_write(path, e, "log") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(name)s "
                                           "%(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


@contextlib.contextmanager
def _progress_bar(sc: Scenario) -> Iterator[Any]:
    """A progress bar of keys done, on stderr (redrawn by the callback: no thread runs
    beside the processes a real cluster forks)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(TextColumn(f"[bold]{sc.name or 'scenario'}[/] ({sc.runtime})"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("keys"), TimeElapsedColumn(),
                  console=console, transient=True, auto_refresh=False) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            bar.refresh()

        yield progress


def _print_outcome(sc: Scenario, outcome: Outcome, log_path: str | None = None) -> None:
    console = Console()
    table = Table(title=f"squall run {sc.name or 'scenario'} ({sc.runtime}): {sc.describe()}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    ok = "all correct" if outcome.results_ok else (
        f"WRONG: {outcome.wrong}" if outcome.wrong else
        "not all computed: time budget exceeded" if outcome.budget_exceeded else
        "not all computed")
    table.add_row("results", ok)
    n = outcome.n_tasks
    if outcome.results_ok:
        erred = f" ({outcome.n_erred} with the error their task raised)" \
            if outcome.n_erred else ""
        done = f"{n} of {n}{erred}"
    elif outcome.wrong:
        more = "+" if len(outcome.wrong) >= 20 else ""
        done = f"{len(outcome.wrong)}{more} of {n} wrong or missing"
    elif outcome.budget_exceeded:
        done = f"unchecked: the time budget (cluster.max_time) stopped the run ({n} tasks)"
    else:
        done = f"unchecked: a violation stopped the run ({n} tasks)"
    table.add_row("tasks done and checked", done)
    table.add_row("faults injected",
                  ", ".join(f"{k} {n}" for k, n in outcome.faults.items()) or "none")
    table.add_row("transitions", str(outcome.transitions))
    table.add_row("invariant checks", str(outcome.invariant_checks))
    table.add_row("violations", str(len(outcome.violations)))
    clock = "virtual s" if sc.runtime == "sim" else "s"
    table.add_row(f"makespan ({clock})", f"{outcome.makespan:.3f}")
    table.add_row("stimuli", str(outcome.n_stimuli))
    table.add_row("steals", str(outcome.steals))
    table.add_row("wall time (s)", f"{outcome.wall_time:.2f}")
    if outcome.trace_path:
        table.add_row("trace", outcome.trace_path)
    if log_path:
        table.add_row("logs", log_path)
    console.print(table)
    for v in outcome.violations:
        click.echo(format_violation(v))
    if outcome.budget_exceeded:
        click.echo(f"slow, not stuck: {outcome.budget_exceeded} (raise cluster.max_time)")
    if outcome.trace_path and not outcome.ok:
        click.echo(f"replay: squall replay {outcome.trace_path}")


@click.command("replay")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="re-run strict mode on the replayed state machines")
@click.option("--mutant", default=None, metavar="NAME",
              help="replay with this planted bug on (a trace `squall mutants` wrote)")
@click.option("--snapshot", "snapshot_path", type=click.Path(dir_okay=False), default=None,
              help="also write the scheduler's state at --at as a balance snapshot (JSON "
                   "that `squall balance` reads)")
@click.option("--at", "at", type=float, default=None, metavar="SECONDS",
              help="the moment of --snapshot on the trace's clock: the state after every "
                   "stimulus the scheduler received up to then")
def replay_cmd(trace: str, validate: bool, mutant: str | None, snapshot_path: str | None,
               at: float | None) -> None:
    """Feed a trace's stimuli into fresh state machines and compare."""
    from squall.mutants.catalog import MUTANTS, switched_on
    from squall.scenarios.replay import replay_trace
    from squall.scenarios.trace import TraceError

    if mutant is not None and mutant not in MUTANTS:
        raise SquallError(f"--mutant: unknown mutant {mutant!r}; choose one of: "
                     f"{', '.join(MUTANTS)}")
    if (snapshot_path is None) != (at is None):
        raise SquallError("--snapshot FILE and --at SECONDS go together")
    if at is not None and not 0 <= at < math.inf:
        raise SquallError(f"--at must be a number of seconds >= 0, got {at}")
    taker = _SnapshotAt(at) if at is not None else None
    try:
        if taker is not None:
            _check_snapshot_runtime(trace)
        with switched_on(mutant):
            result = replay_trace(trace, validate=validate, before=taker)
    except TraceError as e:
        raise SquallError(str(e)) from None
    written = taker.write(snapshot_path) if taker is not None and snapshot_path else None
    click.echo(f"squall replay: {result.message}")
    click.echo(f"  {result.stimuli} stimuli, {result.digests_checked} digests checked, "
               f"{result.wall_time:.2f} s")
    v = result.violation
    if v is None and result.recorded is not None and result.recorded.outcome.violations \
            and result.verdict != "match":
        v = result.recorded.outcome.violations[0]
    if v is not None:
        click.echo(format_violation(v))
        if result.tail:
            from squall.invariants.violation import describe

            tail = result.tail[-10:]
            click.echo(f"  last {len(tail)} stimuli (receiver: message):")
            for target, msg in tail:
                line = f"    {target}: {describe(msg)}"
                click.echo(line if len(line) <= 120 else line[:117] + "...")
    if written is not None:
        click.echo(f"snapshot: {written}")
    sys.exit(result.exit_code)


def _check_snapshot_runtime(trace: str) -> None:
    """Only a trace of squall's own scheduler replays it (a dask trace: its workers)."""
    from squall.core.view import REAL, SIM
    from squall.scenarios.trace import read_trace

    lines: Any = read_trace(trace)  # a generator: closed (its file too) once read
    try:
        _, header = next(lines)
    finally:
        lines.close()
    runtime = header.scenario.runtime
    if runtime not in (SIM, REAL):
        raise SquallError(f"--snapshot: {trace!r} is a trace of the {runtime} runtime, whose "
                          "scheduler is not replayed (only a sim or real trace's is)")


class _SnapshotAt:
    """A replay observer that takes the scheduler's state as a balance snapshot just
    before the first stimulus it receives later than ``at`` (or where the replay ends)."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.snapshot: dict[str, Any] | None = None
        self.time = 0.0
        self.cluster: Any = None

    def __call__(self, lineno: int, line: Any, cluster: Any) -> None:
        from squall.scenarios.trace import SCHEDULER

        self.cluster = cluster
        if self.snapshot is None and line.t == SCHEDULER \
                and getattr(line.m, "time", 0.0) > self.at:
            self._take(cluster.scheduler)

    def _take(self, state: Any) -> None:
        from squall.core.snapshot import snapshot_of

        self.snapshot = snapshot_of(state)
        self.time = state.time

    def write(self, path: str) -> str:
        """Write the snapshot to ``path``; what was written, in one line."""
        early = ""
        if self.snapshot is None:
            if self.cluster is None:
                raise SquallError("--snapshot: the trace holds no stimulus to take the "
                                  "scheduler's state from")
            self._take(self.cluster.scheduler)
            early = f", where the replay ended (before {self.at:g} s)"
        snap = self.snapshot
        assert snap is not None
        try:
            Path(path).write_text(_snapshot_json(snap))
        except OSError as e:
            raise cannot_write(path, e, "snapshot") from None
        return (f"the scheduler at {self.time:.3f} s{early}: {len(snap['tasks'])} tasks on "
                f"{len(snap['workers'])} workers, written to {path} (squall balance {path})")


def _snapshot_json(snapshot: dict[str, Any]) -> str:
    """A snapshot as JSON, one worker, input or task per line."""
    parts = []
    for field, value in snapshot.items():
        if isinstance(value, list) and value:
            items = ",\n".join(f"    {json.dumps(x)}" for x in value)
            parts.append(f"  {json.dumps(field)}: [\n{items}\n  ]")
        else:
            parts.append(f"  {json.dumps(field)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


@click.group("explore", invoke_without_command=True, subcommand_metavar="[merge DIR...]")
@click.option("--budget", type=float, default=None,
              help="seconds to explore (shrinking a failure may take longer); each stream "
                   "explores a prefix of its batches  [default: 60, none with --batches]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=int, default=1, show_default=True,
              help="processes, each exploring a stream of its own (with --dask: the "
                   "streams, whose batches the whole cluster runs)")
@click.option("--scenario-space", "space", default=None,
              help="which scenarios to draw: all (every space, one drawn per scenario: "
                   "the default in the simulator), or one to focus on: small (the default "
                   "on a target's runtime), calm, stealing, medium, storm, fragile, "
                   "restarts, imbalance")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="squall-traces",
              show_default=True, help="where the minimal failing trace is written")
@click.option("--runtime", type=click.Choice(["sim", *[r for r in runtime_names()
                                                       if r not in ("sim", "real")]]),
              default="sim", show_default=True,
              help="where scenarios run: squall's simulator, or a target's own processes "
                   "(dask: one dask.distributed cluster, reused between scenarios)")
@click.option("--shrink-budget", type=float, default=None,
              help="seconds spent shrinking a failure in a target's runtime "
                   "(default: half the budget)")
@click.option("--shard", "shard_text", default=None, metavar="K/N",
              help="explore shard K of N (0 <= K < N): the streams K + N*j for each job j; "
                   "the N shards of one seed cover one run with N times the jobs; writes "
                   "OUT/summary.json unless --summary says where")
@click.option("--batches", type=int, default=None,
              help="stop each stream after this many batches of 25 scenarios: an exact "
                   "part of the search, the same on every backend")
@click.option("--summary", type=click.Path(dir_okay=False), default=None,
              help="write the run's summary (JSON) here, for squall explore merge")
@click.option("--digests", is_flag=True,
              help="list every generated scenario's digest in the summary")
@click.option("--dask", "dask_text", default=None, metavar="ADDRESS",
              help="run the batches on a dask.distributed cluster: a scheduler's "
                   "tcp://HOST:PORT, or local:N for N worker processes on this machine "
                   "(needs squall[dask]); traces are written here")
@click.option("--minimize", "minimize_text", default=None, metavar="N",
              help="candidate runs to minimize a shrunk failure further with, by trace "
                   "length: a budget of runs, not seconds, so the same failure shrinks to "
                   "the same trace on any machine (0: keep Hypothesis' shrink; with --dask: "
                   "candidates judged in parallel on the cluster)  [default: 5000 in the "
                   "simulator]")
@click.option("--task-batches", "per_task", type=int, default=1, show_default=True,
              help="with --dask: consecutive batches of a stream in one dask task (fewer "
                   "tasks, for a scheduler many workers would saturate)")
def explore_cmd(budget: float | None, seed: int, jobs: int, space: str | None, out_dir: str,
                runtime: str, shrink_budget: float | None, shard_text: str | None,
                batches: int | None, summary: str | None, digests: bool,
                dask_text: str | None, minimize_text: str | None, per_task: int) -> None:
    """Explore generated scenarios, strict mode on; shrink a failure. In the simulator by
    default (in --jobs processes, a --shard of a larger search, or on a --dask cluster);
    ``--runtime dask`` runs them on dask.distributed's own processes.
    ``squall explore merge DIR...`` merges the summaries of shards."""
    if click.get_current_context().invoked_subcommand is not None:
        return  # ``squall explore merge``
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from squall.cli.explore import (
        backend_name,
        describe_coverage,
        echo_reach,
        parse_dask,
        parse_minimize,
        parse_shard,
        run_on_dask,
        streams_problem,
        write_run_summary,
    )
    from squall.scenarios.explore import ExploreStats, explore
    from squall.scenarios.explore_summary import SUMMARY_NAME
    from squall.scenarios.strategies import SCENARIO_SPACES, SWARM, space_names

    shard, shards = parse_shard(shard_text)
    dask = parse_dask(dask_text)
    if jobs < 1:
        raise SquallError(f"--jobs must be >= 1, got {jobs}")
    if dask is None and (why := jobs_problem(jobs)) is not None:
        raise SquallError(f"--jobs: {why}")
    if dask is not None and (why := streams_problem(jobs)) is not None:
        raise SquallError(f"--jobs: {why}")
    if batches is not None and batches < 1:
        raise SquallError(f"--batches must be >= 1, got {batches}")
    if budget is None:
        budget = None if batches is not None else 60.0
    elif not budget > 0:
        raise SquallError(f"--budget must be > 0 seconds, got {budget}")
    minimize_candidates = parse_minimize(minimize_text)
    if per_task < 1:
        raise SquallError(f"--task-batches must be >= 1, got {per_task}")
    if per_task != 1 and dask is None:
        raise SquallError("--task-batches: only with --dask")
    if runtime != "sim":
        given = [name for name, on in (("--shard", shards > 1), ("--dask", dask),
                                       ("--batches", batches), ("--summary", summary),
                                       ("--digests", digests),
                                       ("--minimize", minimize_text is not None))
                 if on]
        if given:
            raise SquallError(f"{given[0]}: explores the simulator only, not the {runtime} "
                              f"runtime")
    if space is None:  # every space in the simulator; real processes: the small one
        space = SWARM if runtime == "sim" else "small"
    if space != SWARM and space not in SCENARIO_SPACES:
        raise SquallError(f"--scenario-space: unknown space {space!r}; choose one of: "
                          f"{', '.join(space_names())}")
    if runtime != "sim" and jobs != 1:
        raise SquallError(f"--jobs: exploration on the {runtime} runtime runs one cluster at "
                          f"a time (got --jobs {jobs})")
    if shrink_budget is not None and not shrink_budget >= 0:
        raise SquallError(f"--shrink-budget must be >= 0 seconds, got {shrink_budget}")
    if summary is None and shards > 1:
        summary = str(Path(out_dir) / SUMMARY_NAME)
    make_output_dir(out_dir, "--out directory")  # now, not after the budget is spent
    if summary is not None:
        make_output_dir(Path(summary).parent, "--summary directory")
    console = Console(stderr=True)
    started = time.monotonic()
    label = runtime if dask is None else f"dask {dask_text}"
    with Progress(TextColumn(f"[bold]exploring ({label})"), BarColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console,
                  transient=True) as bar:
        # a time budget: the bar is time; batches alone: the batches run
        total = budget if budget is not None else jobs * (batches or 1)
        task = bar.add_task("", total=total)

        def progress(job: int, stats: ExploreStats) -> None:
            elapsed = time.monotonic() - started
            state = "shrinking a failure... " if stats.shrinking else ""
            done = elapsed if budget is not None else stats.batches
            bar.update(task, completed=min(done, total), description=(
                f"{state}{stats.scenarios} scenarios, {stats.transitions} transitions, "
                f"{stats.checks} checks"))

        if dask is not None:
            result = run_on_dask(dask, budget=budget, seed=seed, jobs=jobs, shard=shard,
                                 shards=shards, space=space, out_dir=out_dir,
                                 progress=progress, max_batches=batches, digests=digests,
                                 minimize_candidates=minimize_candidates, per_task=per_task)
        elif runtime == "sim":
            result = explore(budget=budget if budget is not None else float("inf"),
                             seed=seed, jobs=jobs, space=space, out_dir=out_dir,
                             progress=progress, shard=shard, shards=shards,
                             max_batches=batches, digests=digests,
                             minimize_candidates=minimize_candidates)
        else:
            from squall.scenarios.runner import RuntimeUnavailable
            from squall.scenarios.target_explore import explore_on_target

            assert budget is not None  # --batches: refused off the simulator, above
            try:
                result = explore_on_target(runtime=runtime, budget=budget, seed=seed,
                                           space=space, out_dir=out_dir, progress=progress,
                                           shrink_budget=shrink_budget)
            except (RuntimeUnavailable, ImportError) as e:
                raise SquallError(str(e).splitlines()[0]) from None
    s = result.stats
    f = result.failure
    if summary is not None:
        write_run_summary(result, summary, seed=seed, space=space, shard=shard, shards=shards,
                          backend=backend_name(dask_text), budget=budget, max_batches=batches)
    if runtime == "sim":
        click.echo(f"squall explore: {describe_coverage(result, shard, shards)}"
                   + (f"; summary: {summary}" if summary is not None else ""), err=True)
    if s.rescheduled:
        click.echo(f"squall explore: {s.rescheduled} batches run again after the dask worker "
                   f"running them was lost", err=True)
    if f is None:
        where = (f"on dask {dask_text}, {jobs} stream{'s' if jobs > 1 else ''}"
                 if dask is not None else
                 f"{jobs} job{'s' if jobs > 1 else ''}" if runtime == "sim" else
                 f"on {runtime}, {result.clusters} cluster{'s' if result.clusters != 1 else ''}"
                 f" started, {result.reused} runs on a reused one")
        click.echo(f"squall explore: no violation in {s.scenarios} scenarios "
                   f"({result.rate:.2f}/s, {where}, "
                   f"space {space}, seed {seed}): {s.transitions} transitions, "
                   f"{s.checks} invariant checks, {s.stimuli} stimuli in "
                   f"{result.elapsed:.1f} s")
        if s.over_budget:
            click.echo(f"{s.over_budget} of them stopped at their time budget (max_time) with "
                       "their work still progressing: slow, not stuck, not a failure")
        if runtime == "sim":
            echo_reach(s.reached, s.scenarios)
        sys.exit(0)
    click.echo(f"squall explore: failure found after {s.scenarios} scenarios; "
               f"shrunk to: {f.scenario.describe()}")
    if result.minimized:
        click.echo(f"(minimized by trace length after Hypothesis' shrink: {result.minimized} "
                   f"candidate runs of --minimize {minimize_candidates})")
    if f.error:
        click.echo("the scenario crashed the runtime:")
        click.echo(f.error.rstrip())
    elif f.outcome is not None:
        for v in f.outcome.violations:
            click.echo(format_violation(v))
        if not f.outcome.violations:
            click.echo(f"wrong results for: {', '.join(f.outcome.wrong)}")
    click.echo("shrunk scenario:")
    click.echo(scenario_to_json(f.scenario).decode())
    if f.trace_path:
        click.echo(f"trace: {f.trace_path}")
        click.echo(f"replay: squall replay {f.trace_path}")
    sys.exit(1)


@click.command("report")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="report.html",
              show_default=True, help="the HTML page to write")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="also write the timeline as a PNG here")
def report_cmd(trace: str, output: str, png: str | None) -> None:
    """Write a self-contained HTML report of a trace (Gantt, occupancy, faults, steals)."""
    from squall.scenarios.report import write_report
    from squall.scenarios.trace import TraceError

    try:
        write_report(trace, output, png=png)
    except TraceError as e:
        raise SquallError(str(e)) from None
    click.echo(f"squall report: wrote {output}" + (f" and {png}" if png else ""))
