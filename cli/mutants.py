"""``squall mutants``: explore with each planted bug on and report what was caught (see
``squall.mutants.measure``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from squall.cli.errors import SquallError
from squall.mutants.catalog import CATALOG, MUTANTS, MutantError, mutant
from squall.scenarios.limits import jobs_problem, make_output_dir


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
@click.option("--max-stimuli", type=int, default=None, metavar="N",
              help="also fail (exit 1) if a shrunk trace is longer than N stimuli")
@click.option("--list", "list_only", is_flag=True, help="list the catalog and exit")
@click.option("--target", type=click.Choice(["reference", "dask"]), default="reference",
              show_default=True,
              help="reference: squall's own scheduler; dask: historical dask.distributed "
                   "bugs planted into the installed dask, each run on its small scenario")
def mutants_command(budget: float, jobs: int, json_path: str | None, names: tuple[str, ...],
                    seed: int, replays: int, out_dir: str, baseline: bool,
                    max_stimuli: int | None, list_only: bool, target: str) -> None:
    """Explore with each planted bug on: is it caught, how fast, by what, how small?

    Exit 0 when every bug is caught by one of its own invariants and the baseline found
    nothing; 1 otherwise (or, with --max-stimuli N, when a shrunk trace is longer than
    N); 2 on bad input."""
    if target == "dask":
        _dask_mutants(names, json_path, baseline, list_only,
                      out_dir if out_dir != "squall-mutants" else "squall-mutants/dask")
        return
    # (imported here: exploring needs Hypothesis, which the rest of the CLI does not load)
    from squall.mutants.measure import format_seconds, run_mutants

    if not budget > 0:
        raise SquallError(f"--budget must be > 0 seconds, got {budget}")
    if jobs < 1:
        raise SquallError(f"--jobs must be >= 1, got {jobs}")
    if (why := jobs_problem(jobs)) is not None:
        raise SquallError(f"--jobs: {why}")
    if replays < 1:
        raise SquallError(f"--replays must be >= 1, got {replays}")
    if max_stimuli is not None and max_stimuli < 1:
        raise SquallError(f"--max-stimuli must be >= 1, got {max_stimuli}")
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
    make_output_dir(out_dir, "--out directory")  # now, not after the budget is spent
    err = Console(stderr=True)
    with err.status(f"exploring with each of {len(chosen)} mutant(s) on, {budget:g} s each"):
        results, base, summary = run_mutants(chosen, budget=budget, jobs=jobs, seed=seed,
                                             out_dir=out_dir, replays=replays,
                                             baseline=baseline, say=err.print,
                                             require_stimuli=max_stimuli)

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
        table.add_row(r.mutant, r.space, detected, format_seconds(r.first_failure),
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


def _dask_mutants(names: tuple[str, ...], json_path: str | None, baseline: bool,
                  list_only: bool, out_dir: str) -> None:
    """``squall mutants --target dask``: each planted dask bug on its scenario, then the
    scenarios with no bug (see ``squall.mutants.dask_bugs``)."""
    from squall.targets.dask import DaskUnavailable, require_dask

    try:
        require_dask()
    except DaskUnavailable as e:
        raise SquallError(str(e)) from None
    from squall.mutants.dask_bugs import (
        DASK_CATALOG,
        DaskBugError,
        dask_bug,
        run_baseline,
        run_bug,
    )

    try:
        chosen = [dask_bug(n) for n in names] if names else list(DASK_CATALOG)
    except DaskBugError as e:
        raise SquallError(str(e)) from None
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    if list_only:
        table = Table(title=f"{len(chosen)} dask bugs (squall mutants --target dask "
                            "--mutant NAME)")
        table.add_column("name", no_wrap=True)
        for col in ("dask issue", "replaces", "the bug", "scenario"):
            table.add_column(col, overflow="fold")
        for b in chosen:
            table.add_row(b.name, b.issue, b.target, b.title, b.scenario.__name__)
        console.print(table)
        return
    make_output_dir(out_dir, "--out directory")  # now, not after the runs
    err = Console(stderr=True)
    results = []
    for b in chosen:
        with err.status(f"{b.name}: planted, running its scenario on a dask cluster"):
            results.append(run_bug(b, trace=Path(out_dir) / f"{b.name}.trace.jsonl"))
    base = []
    if baseline:
        with err.status("baseline: the scenarios with no bug planted"):
            base = run_baseline(chosen)
    table = Table(title="squall mutants --target dask: historical dask bugs planted "
                        "into the installed dask")
    for col in ("bug", "dask issue", "caught", "caught by", "time to catch (s)",
                "violations", "scenario (tasks, faults)", "trace (stimuli)"):
        table.add_column(col, no_wrap=col in ("bug", "caught by"))
    for b, r in zip(chosen, results, strict=True):
        verdict = ("[green]yes[/]" if r.expected else
                   "[red]no[/]" if not r.caught else "[red]not its own[/]")
        table.add_row(b.name, b.issue, verdict, r.caught_by or "-",
                      "-" if r.seconds is None else f"{r.seconds:.2f}", str(r.violations),
                      f"{r.scenario} ({r.tasks}, {r.faults})", str(r.stimuli))
    console.print(table)
    if base:
        bt = Table(title="baseline: the same scenarios with no bug planted "
                         "(must find nothing)")
        for col in ("scenario", "violations", "found"):
            bt.add_column(col)
        for r in base:
            bt.add_row(r.scenario, str(r.violations), r.caught_by or r.error or "-")
        console.print(bt)
    for r in results:
        if r.error:
            console.print(f"{r.bug}: the scenario stopped: {r.error}", highlight=False)
    caught = sum(r.expected for r in results)
    false_alarms = sum(not r.expected for r in base)
    console.print(f"caught {caught}/{len(results)} by their own invariants; false alarms: "
                  f"{false_alarms}; traces in {out_dir}/ (squall replay BUG.trace.jsonl: the "
                  "workers' side)", highlight=False, soft_wrap=True)
    if json_path is not None:
        doc = {"target": "dask",
               "bugs": [dict(vars(r), issue=b.issue, title=b.title, replaces=b.target)
                        for b, r in zip(chosen, results, strict=True)],
               "baseline": [vars(r) for r in base],
               "summary": {"bugs": len(results), "caught": caught,
                           "false_alarms": false_alarms}}
        try:
            with open(json_path, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2)
        except OSError as e:
            raise SquallError(f"cannot write {json_path!r}: {e.strerror}") from None
    sys.exit(0 if caught == len(results) and not false_alarms else 1)
