"""``squall scenarios``, ``run``, ``replay``, ``explore`` and ``report``.

Exit codes: ``run`` 0 success, 1 violation or wrong result, 2 bad input; ``replay`` 0 the
replay matches, 1 it reproduces the recorded violation (or failure), 3 it diverges, 2 an
unreadable trace; ``explore`` 0 nothing found, 1 a failure found (and its trace written);
every one 2 for an output it cannot write (a trace, a log, a report, ``--out``), naming it.
"""

from __future__ import annotations

import contextlib
import logging
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
from squall.scenarios.limits import MAX_PROCESSES, cannot_write, make_output_dir, over, slug
from squall.scenarios.model import Scenario, ScenarioError, load_scenario, scenario_to_json
from squall.targets import runtime_names


def resolve_scenario(spec: str) -> Scenario:
    """A standard scenario's name, or the path of a scenario JSON file."""
    from squall.scenarios.library import named_scenario, scenario_names

    if spec in scenario_names():
        return named_scenario(spec)
    if spec.endswith(".json") or Path(spec).exists():
        return load_scenario(spec)
    return named_scenario(spec)  # raises, listing the names


@click.command("scenarios")
@click.option("--json", "as_json", is_flag=True, help="print each scenario as JSON")
def scenarios_cmd(as_json: bool) -> None:
    """List the standard scenarios."""
    from squall.scenarios.library import all_scenarios

    lib = all_scenarios()
    if as_json:
        for sc in lib.values():
            click.echo(scenario_to_json(sc, indent=False))
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

    Shows a progress bar while it runs and a summary at the end; writes a trace that
    `squall replay` and `squall report` read. Real mode logs to the trace's .log file.
    """
    from squall.scenarios.runner import check_runnable, run_scenario

    try:
        sc = resolve_scenario(scenario)
        changes: dict[str, Any] = {}
        if runtime is not None:
            changes["runtime"] = runtime
        if seed is not None:
            changes["seed"] = seed
        if changes:
            sc = msgspec.structs.replace(sc, **changes)
        check_runnable(sc)
        if trace_path is None and not no_trace:
            # a file name made of the scenario's name: never a path, never too long
            stem = slug(sc.name or Path(scenario).stem)
            trace_path = str(Path("squall-traces") / f"{stem}-{slug(sc.runtime)}.trace.jsonl")
        log_path = str(Path(trace_path).with_suffix(".log")) if trace_path else None
        with _logs_to(log_path if sc.runtime != "sim" else None), \
                _progress_bar(sc) as progress:
            outcome = run_scenario(sc, trace=trace_path, validate=validate,
                                   progress=progress)
    except ScenarioError as e:
        raise SquallError(str(e)) from None
    _print_outcome(sc, outcome, log_path if sc.runtime != "sim" else None)
    sys.exit(0 if outcome.ok else 1)


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
def replay_cmd(trace: str, validate: bool, mutant: str | None) -> None:
    """Feed a trace's stimuli into fresh state machines and compare."""
    from squall.mutants.catalog import MUTANTS, switched_on
    from squall.scenarios.replay import replay_trace
    from squall.scenarios.trace import TraceError

    if mutant is not None and mutant not in MUTANTS:
        raise SquallError(f"--mutant: unknown mutant {mutant!r}; choose one of: "
                     f"{', '.join(MUTANTS)}")
    try:
        with switched_on(mutant):
            result = replay_trace(trace, validate=validate)
    except TraceError as e:
        raise SquallError(str(e)) from None
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
    sys.exit(result.exit_code)


@click.command("explore")
@click.option("--budget", type=float, default=60.0, show_default=True,
              help="seconds to explore (shrinking a failure may take longer)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=int, default=1, show_default=True, help="processes")
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
def explore_cmd(budget: float, seed: int, jobs: int, space: str | None, out_dir: str,
                runtime: str, shrink_budget: float | None) -> None:
    """Explore generated scenarios, strict mode on; shrink a failure. In the simulator by
    default; ``--runtime dask`` runs them on dask.distributed's own processes."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from squall.scenarios.explore import ExploreStats, explore
    from squall.scenarios.strategies import SCENARIO_SPACES, SWARM, space_names

    if jobs < 1:
        raise SquallError(f"--jobs must be >= 1, got {jobs}")
    if (why := over("jobs (processes)", jobs, MAX_PROCESSES)) is not None:
        raise SquallError(f"--jobs: {why}")
    if not budget > 0:
        raise SquallError(f"--budget must be > 0 seconds, got {budget}")
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
    make_output_dir(out_dir, "--out directory")  # now, not after the budget is spent
    console = Console(stderr=True)
    started = time.monotonic()
    with Progress(TextColumn(f"[bold]exploring ({runtime})"), BarColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console,
                  transient=True) as bar:
        task = bar.add_task("", total=budget)

        def progress(job: int, stats: ExploreStats) -> None:
            elapsed = time.monotonic() - started
            state = "shrinking a failure... " if stats.shrinking else ""
            bar.update(task, completed=min(elapsed, budget), description=(
                f"{state}{stats.scenarios} scenarios, {stats.transitions} transitions, "
                f"{stats.checks} checks"))

        if runtime == "sim":
            result = explore(budget=budget, seed=seed, jobs=jobs, space=space,
                             out_dir=out_dir, progress=progress)
        else:
            from squall.scenarios.runner import RuntimeUnavailable
            from squall.scenarios.target_explore import explore_on_target

            try:
                result = explore_on_target(runtime=runtime, budget=budget, seed=seed,
                                           space=space, out_dir=out_dir, progress=progress,
                                           shrink_budget=shrink_budget)
            except (RuntimeUnavailable, ImportError) as e:
                raise SquallError(str(e).splitlines()[0]) from None
    s = result.stats
    f = result.failure
    if f is None:
        where = (f"{jobs} job{'s' if jobs > 1 else ''}" if runtime == "sim" else
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
        sys.exit(0)
    click.echo(f"squall explore: failure found after {s.scenarios} scenarios; "
               f"shrunk to: {f.scenario.describe()}")
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
