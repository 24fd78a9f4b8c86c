"""The ``squall`` command line.

Every command reports bad input (a value over a limit of ``squall.scenarios.limits``
among it) and an output it cannot write (naming the path) as one line,
``squall: error: ...``, and exits 2.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from squall.cli.balance import balance_command
from squall.cli.cluster import keys_command, scheduler_command, worker_command
from squall.cli.errors import SquallError
from squall.cli.explore import merge_cmd
from squall.cli.invariants import invariants_command
from squall.cli.mutants import mutants_command
from squall.cli.scenarios import explore_cmd, replay_cmd, report_cmd, run_cmd, scenarios_cmd
from squall.cli.signals import Terminated, run_terminable
from squall.cli.toxiproxy import toxiproxy_command
from squall.core.graph import GraphError
from squall.scenarios.limits import (
    MAX_TASKS,
    MAX_THREADS,
    MAX_WORKERS,
    LimitError,
    OutputError,
    over,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="squall")
def cli() -> None:
    """squall: strict validation and chaos testing for distributed task schedulers."""


def positive(name: str, value: int, var: str | None = None) -> int:
    """``value`` of ``--name``, if >= 1 and (``var``: the limit's variable) within its limit
    (``squall.scenarios.limits``)."""
    if value < 1:
        raise SquallError(f"--{name} must be >= 1, got {value}")
    if var is not None and (why := over(name, value, var)) is not None:
        raise SquallError(f"--{name}: {why}")
    return value


@cli.command()
@click.option("--workload", default="random-dag", show_default=True,
              help="graph generator (see scenarios/workloads.py)")
@click.option("--tasks", default=1000, show_default=True,
              help="the workload's size: its number of tasks, but for tree the number of "
                   "leaves (256 leaves: 511 tasks), for fan-out-fan-in of maps (N+2 tasks), "
                   "for mixed at least 20; the summary gives the total")
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

    positive("tasks", tasks, MAX_TASKS)
    positive("workers", workers, MAX_WORKERS)
    positive("threads", threads, MAX_THREADS)
    try:
        graph = make_workload(workload, tasks, seed)
    except ValueError as e:
        raise SquallError(str(e)) from None
    cluster = SimCluster(workers=workers, threads=threads, seed=seed, stealing=stealing,
                         validate=validate)
    outcome = cluster.run(graph)
    console = Console()
    size = f"{tasks} tasks" if len(graph) == tasks else f"--tasks {tasks}: {len(graph)} tasks"
    table = Table(title=f"squall sim: {workload} ({size}), {workers}x{threads} threads, "
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
explore_cmd.add_command(merge_cmd)  # squall explore merge DIR...


class _PipeGuard:
    """stdout or stderr as the commands write to it. When its reader goes away
    (``squall replay X | head -1``), the stream's file descriptor is pointed at /dev/null
    and the rest of the output is dropped, quietly: the command finishes and exits with its
    own code (not click's 1 for a broken pipe, which ``replay`` uses for "reproduced").
    Any other failure to write (a full disk) is dropped the same way and kept in
    ``error``: ``main`` then exits 2 naming the stream (it is not raised where it happens:
    click's probing of a stream would swallow it)."""

    def __init__(self, stream: Any, owner: _PipeGuard | None = None) -> None:
        self._stream = stream
        self._owner = owner  # the text stream whose binary buffer this is
        self._failed = False
        self._buffer: _PipeGuard | None = None
        self.error: OSError | None = None  # the first failure but a broken pipe

    def write(self, data: Any) -> int:
        if not self._failed:
            try:
                return int(self._stream.write(data))
            except OSError as e:
                self._fail(e)
        return len(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._failed:
            try:
                self._stream.flush()
            except OSError as e:
                self._fail(e)

    @property
    def buffer(self) -> Any:  # what click writes bytes to
        if self._buffer is None:
            self._buffer = _PipeGuard(self._stream.buffer, owner=self)
        return self._buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _fail(self, error: OSError) -> None:
        """What is still buffered, and everything after it, goes to /dev/null."""
        for guard in (self, self._owner):
            if guard is not None:
                guard._failed = True
                if guard.error is None and not isinstance(error, BrokenPipeError):
                    guard.error = error
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not a file (a test's capture): what follows is dropped here
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: click, with usage errors and user mistakes folded to one line, and
    output to a reader that went away (``| head``) dropped quietly."""
    streams = sys.stdout, sys.stderr
    out = None if streams[0] is None else _PipeGuard(streams[0])
    sys.stdout = out or streams[0]  # type: ignore[assignment]
    sys.stderr = streams[1] and _PipeGuard(streams[1])  # type: ignore[assignment]
    try:
        return run_terminable(_main, argv)  # SIGTERM: as Ctrl-C, then exit 143
    finally:
        try:
            if out is not None:
                out.flush()  # what is still buffered: it may not get through either
                if out.error is not None:  # not a broken pipe: the output is lost
                    why = out.error.strerror or type(out.error).__name__
                    click.echo(f"squall: error: cannot write standard output: {why}",
                               err=True)
                    sys.exit(2)
        finally:
            sys.stdout, sys.stderr = streams


def _main(argv: list[str] | None) -> Any:
    try:
        return cli.main(args=argv, prog_name="squall", standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, Terminated):
            raise e.__cause__ from None  # SIGTERM: run_terminable says so
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
    except (GraphError, LimitError, OutputError) as e:  # bad input; an output not written
        click.echo(f"squall: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
