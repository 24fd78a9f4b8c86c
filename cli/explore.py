"""``squall explore`` beyond one machine: ``--shard K/N``, ``--dask ADDRESS``, summaries,
and ``squall explore merge``.

``merge`` exit codes: 0 no shard found a failure, 1 one did, 2 a summary that cannot be
read or summaries that do not belong together (one line naming the file).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from squall.cli.errors import SquallError
from squall.scenarios.limits import MAX_PROCESSES, limit


def parse_shard(text: str | None) -> tuple[int, int]:
    """``K/N`` -> (K, N), with 0 <= K < N; SquallError (one line) otherwise. None: 0/1."""
    if text is None:
        return 0, 1
    k, slash, n = text.partition("/")
    if not slash or not k.strip().isdigit() or not n.strip().isdigit():
        raise SquallError(f"--shard must be K/N (shard K of N, 0 <= K < N), got {text[:40]!r}")
    shard, shards = int(k), int(n)
    if shards < 1 or shard >= shards:
        raise SquallError(f"--shard {shard}/{shards}: need 0 <= K < N (shards are numbered "
                          f"from 0)")
    return shard, shards


def parse_minimize(text: str | None) -> int:
    """``--minimize N``: candidate runs, a whole number >= 0 (0: off); None: the default
    (``squall.scenarios.minimize.MAX_CANDIDATES``). SquallError (one line) otherwise. Once
    it was seconds: a number of seconds with a fraction is refused, saying so."""
    from squall.scenarios.minimize import MAX_CANDIDATES

    if text is None:
        return MAX_CANDIDATES
    t = text.strip()
    if not (t.isdigit() or (t[:1] in "+-" and t[1:].isdigit())):
        raise SquallError(f"--minimize must be a whole number of candidate runs >= 0 "
                          f"(0: off; it is no longer seconds), got {text[:40]!r}")
    n = int(t)
    if n < 0:
        raise SquallError(f"--minimize must be >= 0 candidate runs (0: off), got {n}")
    return n


def parse_dask(text: str | None) -> tuple[str, int] | None:
    """The ``--dask`` address: ("local", N) or (scheduler address, 0); None without it."""
    if text is None:
        return None
    from squall.scenarios.explore_dask import DaskAddressError, parse_address

    try:
        return parse_address(text, limit(MAX_PROCESSES))
    except DaskAddressError as e:
        why = str(e)
        if "over" in why:
            why += f" (set {MAX_PROCESSES} to raise the limit)"
        raise SquallError(f"--dask: {why}") from None


def streams_problem(jobs: int) -> str | None:
    """Why ``--jobs`` streams on a dask cluster are too many, or None: as many as
    ``SQUALL_MAX_PROCESSES`` allows (one stream keeps a whole cluster busy already)."""
    from squall.scenarios.limits import over

    return over("streams", jobs, MAX_PROCESSES)


def run_on_dask(dask: tuple[str, int], **kwargs: Any) -> Any:
    """``explore_on_dask``, its user-facing failures (dask missing, a scheduler out of
    reach, workers of other versions) as one-line SquallErrors."""
    from squall.scenarios.explore_dask import explore_on_dask
    from squall.targets.dask import DaskUnavailable

    try:
        return explore_on_dask(address=dask[0], workers=dask[1], **kwargs)
    except DaskUnavailable as e:
        raise SquallError(str(e).splitlines()[0]) from None
    except ConnectionError as e:
        raise SquallError(str(e).splitlines()[0]) from None
    except RuntimeError as e:
        if "the dask workers run" in str(e):
            raise SquallError(str(e).splitlines()[0]) from None
        raise


def backend_name(dask_text: str | None) -> str:
    return "jobs" if dask_text is None else f"dask {dask_text}"


def write_run_summary(result: Any, path: str, **fields: Any) -> None:
    from squall.scenarios.explore_summary import summarize, write_summary

    summary = summarize(result, summary_dir=Path(path).parent, **fields)
    write_summary(summary, path)


def describe_coverage(result: Any, shard: int, shards: int) -> str:
    """Which streams, and how many batches of each, a run covered (one line)."""
    runs = sorted(zip(result.streams, result.per_job, strict=True))
    parts = [f"{g}:{st.batches}" for g, st in runs[:8]]
    if len(runs) > 8:
        parts.append(f"... ({len(runs)} streams)")
    where = f"shard {shard}/{shards}, " if shards > 1 else ""
    return f"{where}streams:batches {' '.join(parts)}"


@click.command("merge")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print the merged summary as JSON")
def merge_cmd(paths: tuple[str, ...], as_json: bool) -> None:
    """Merge the summaries of shards (folders holding summary.json, or the files) into
    one report. Exit 1 if any shard found a failure, 0 otherwise."""
    import msgspec

    from squall.scenarios.explore_summary import ExploreSummaryError, merge_summaries

    try:
        merged = merge_summaries(paths)
    except ExploreSummaryError as e:
        raise SquallError(str(e)) from None
    if merged.missing:
        shown = ", ".join(str(k) for k in merged.missing[:20])
        more = f" and {len(merged.missing) - 20} more" if len(merged.missing) > 20 else ""
        click.echo(f"squall explore merge: warning: shards missing: {shown}{more} (of "
                   f"{merged.shards}); merging the {len(merged.found)} found", err=True)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(merged), indent=2).decode())
        sys.exit(1 if merged.failures else 0)
    found = f"{len(merged.found)} of {merged.shards} shard{'s' if merged.shards > 1 else ''}"
    click.echo(f"squall explore merge: {found}, seed {merged.seed}, space {merged.space}: "
               f"{merged.scenarios} scenarios in {merged.batches} batches of "
               f"{len(merged.streams)} streams; {merged.transitions} transitions, "
               f"{merged.checks} invariant checks, {merged.stimuli} stimuli "
               f"(the longest shard {merged.elapsed:.1f} s)")
    if merged.per_space:
        click.echo("per space: " + ", ".join(f"{k} {v}" for k, v in merged.per_space.items()))
    echo_reach(merged.reached, merged.scenarios)
    if merged.over_budget:
        click.echo(f"{merged.over_budget} runs stopped at their time budget (max_time), "
                   "work still progressing: slow, not stuck, not a failure")
    if merged.rescheduled:
        click.echo(f"{merged.rescheduled} batches run again after their worker was lost")
    if not merged.failures:
        click.echo("no failure")
        sys.exit(0)
    click.echo(f"{len(merged.failures)} failure{'s' if len(merged.failures) > 1 else ''}:")
    for f in merged.failures:
        click.echo(f"  shard {f.shard}: {f.what}" + (f": {f.error}" if f.error else ""))
        if f.trace:
            click.echo(f"    trace: {f.trace}")
            click.echo(f"    replay: squall replay {f.trace}")
        click.echo(f"    scenario: {f.scenario}")
    sys.exit(1)


__all__ = ["backend_name", "describe_coverage", "merge_cmd", "parse_dask", "parse_shard",
           "run_on_dask", "streams_problem", "write_run_summary"]


def echo_reach(reached: dict[str, int], scenarios: int) -> None:
    """Which reach goals the search got to, and in how many of its scenarios
    (``squall.scenarios.reach``): a goal never reached is a part of the scheduler it did
    not test."""
    from squall.scenarios.reach import GOALS, format_goals

    if not scenarios:
        return
    got = sum(1 for g in GOALS if reached.get(g))
    click.echo(f"reach goals: {got} of {len(GOALS)} reached")
    for line in format_goals(reached, scenarios):
        click.echo("  " + line)
