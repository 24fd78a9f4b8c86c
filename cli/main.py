"""The ``squall`` command line.

Every command reports bad input as one line, ``squall: error: ...``, and exits 2.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from squall.cli.balance import balance_command
from squall.cli.cluster import keys_command, scheduler_command, worker_command
from squall.cli.errors import SquallError
from squall.cli.invariants import invariants_command
from squall.cli.mutants import mutants_command
from squall.cli.scenarios import explore_cmd, replay_cmd, report_cmd, run_cmd, scenarios_cmd
from squall.cli.toxiproxy import toxiproxy_command
from squall.core.graph import GraphError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="squall")
def cli() -> None:
    """squall: strict validation and chaos testing for distributed task schedulers."""


def positive(name: str, value: int) -> int:
    if value < 1:
        raise SquallError(f"--{name} must be >= 1, got {value}")
    return value


@cli.command()
@click.option("--workload", default="random-dag", show_default=True,
              help="graph generator (see scenarios/workloads.py)")
@click.option("--tasks", default=1000, show_default=True, help="number of tasks")
@click.option("--workers", default=4, show_default=True)
@click.option("--threads", default=1, show_default=True, help="threads per worker")
@click.option("--seed", default=0, show_default=True)
@click.option("--stealing/--no-stealing", default=False, show_default=True)
@click.option("--validate/--no-validate", default=None,
              help="strict mode: check invariants after every transition "
                   "[default: on if SQUALL_VALIDATE=1]")
def sim(workload: str, tasks: int, workers: int, threads: int, seed: int, stealing: bool,
        validate: bool | None) -> None:
    """Run a workload in the deterministic simulator and print a summary."""
    from squall.core.sim import SimCluster
    from squall.scenarios.workloads import make_workload

    positive("tasks", tasks)
    positive("workers", workers)
    positive("threads", threads)
    try:
        graph = make_workload(workload, tasks, seed)
    except ValueError as e:
        raise SquallError(str(e)) from None
    cluster = SimCluster(workers=workers, threads=threads, seed=seed, stealing=stealing,
                         validate=validate)
    outcome = cluster.run(graph)
    console = Console()
    table = Table(title=f"squall sim: {workload}, {tasks} tasks, {workers}x{threads} threads, "
                        f"seed {seed}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tasks", str(outcome.n_tasks))
    table.add_row("results checked", "all correct" if outcome.results_ok
                  else f"WRONG: {outcome.wrong}")
    table.add_row("makespan (virtual s)", f"{outcome.makespan:.3f}")
    table.add_row("transitions", str(outcome.transitions))
    table.add_row("stimuli", str(outcome.n_stimuli))
    if cluster.validator is not None:
        table.add_row("invariant checks", str(outcome.invariant_checks))
    if stealing:
        table.add_row("steals", str(outcome.steals))
    table.add_row("wall time (s)", f"{outcome.wall_time:.2f}")
    table.add_row("digest", outcome.digest)
    console.print(table)
    busy = Table(title="busy fraction per worker")
    busy.add_column("worker")
    busy.add_column("busy", justify="right")
    span = outcome.makespan * threads or 1.0
    for name, seconds in sorted(outcome.busy.items()):
        busy.add_row(name, f"{seconds / span:.1%}")
    console.print(busy)
    if not outcome.results_ok:
        sys.exit(1)


for command in (scenarios_cmd, run_cmd, replay_cmd, explore_cmd, report_cmd, balance_command,
                toxiproxy_command, scheduler_command, worker_command, keys_command,
                invariants_command, mutants_command):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: click, with usage errors and user mistakes folded to one line."""
    try:
        return cli.main(args=argv, prog_name="squall", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("squall: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        msg = e.format_message().splitlines()[0]
        cmd = f" {e.ctx.command_path.split(' ', 1)[1]}" if e.ctx and " " in e.ctx.command_path \
            else ""
        click.echo(f"squall{cmd}: error: {msg}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"squall: error: {e.format_message().splitlines()[0]}", err=True)
        sys.exit(e.exit_code)
    except GraphError as e:
        click.echo(f"squall: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
