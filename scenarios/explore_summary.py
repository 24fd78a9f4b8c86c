"""What one exploration run covered and found, as a file; and summaries merged.

A run of ``squall explore`` (one shard of a CI matrix, a dask cluster, a plain ``--jobs``)
can write an ``ExploreSummary`` (JSON): its seed, space and shard, the streams it explored
and how many batches of each (``squall.scenarios.explore``: batch ``b`` of stream ``g`` is
the same scenarios wherever it runs), its counts, the scenarios per space, and its failure
with the trace's path. ``merge_summaries`` checks that summaries belong to one search (the
same seed, space and number of shards) and do not overlap (no shard or stream twice), says
which shards are missing, and adds them up (``ExploreMerge``).

``load_summary`` reads one with a typed decode: anything else is an ``ExploreSummaryError``,
one line naming the file and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from squall.scenarios.explore import ExploreResult
from squall.scenarios.limits import MAX_LINE_BYTES, cannot_write, limit

SUMMARY_FORMAT = "squall-explore-summary/1"
SUMMARY_NAME = "summary.json"  # in --out, when a shard writes its summary by default


class ExploreSummaryError(ValueError):
    """A summary that cannot be read, or summaries that do not merge: one line."""


class StreamRun(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One stream: batches ``0 .. batches-1`` ran whole (a failure's batch: not counted)."""

    stream: int
    batches: int
    scenarios: int
    digests: list[str] | None = None  # --digests: each generated scenario's, in order


class FailureRun(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    what: str  # the invariant violated, "wrong results" or "crash"
    scenario: str  # the shrunk scenario, as one line of JSON
    trace: str = ""  # its trace: relative to the summary's folder, or absolute
    error: str = ""  # a crash: the last line of its traceback
    shard: int = 0


class ExploreSummary(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    format: str = SUMMARY_FORMAT
    seed: int
    space: str
    shard: int = 0
    shards: int = 1
    jobs: int  # streams this run explored (processes with --jobs)
    backend: str  # "jobs", "dask local:2", "dask tcp://host:8786"
    budget: float | None  # seconds; None: no time limit (``max_batches`` bounds the run)
    max_batches: int | None  # per stream; None: the time budget bounds it
    elapsed: float
    scenarios: int
    transitions: int
    checks: int  # invariant checks
    stimuli: int
    over_budget: int  # runs stopped at their virtual-time cap, work still progressing
    batches: int  # whole batches, over every stream
    rescheduled: int = 0  # batches run again after the worker running them was lost
    minimized: int = 0  # candidates tried to minimize the failure further
    per_space: dict[str, int] = msgspec.field(default_factory=dict)
    # reach goals (squall.scenarios.reach.GOALS) -> generated scenarios that reached them
    reached: dict[str, int] = msgspec.field(default_factory=dict)
    streams: list[StreamRun] = msgspec.field(default_factory=list)
    failures: list[FailureRun] = msgspec.field(default_factory=list)


class ExploreMerge(msgspec.Struct, kw_only=True):
    """Summaries of one search, added up."""

    seed: int
    space: str
    shards: int
    found: list[int]  # the shards merged
    missing: list[int]  # the shards of ``shards`` with no summary
    sources: list[str]  # the summary files
    elapsed: float  # the longest shard's
    scenarios: int
    transitions: int
    checks: int
    stimuli: int
    over_budget: int
    batches: int
    rescheduled: int
    per_space: dict[str, int]
    reached: dict[str, int]
    streams: list[StreamRun]
    failures: list[FailureRun]


def summarize(result: ExploreResult, *, seed: int, space: str, shard: int = 0,
              shards: int = 1, backend: str = "jobs", budget: float | None,
              max_batches: int | None, summary_dir: str | Path | None = None,
              ) -> ExploreSummary:
    """The summary of ``result``; a trace path is written relative to ``summary_dir`` (the
    folder the summary goes to) when it lies inside it."""
    s = result.stats
    streams = [StreamRun(stream=g, batches=st.batches, scenarios=st.scenarios,
                         digests=result.digests.get(g))
               for g, st in sorted(zip(result.streams, result.per_job, strict=True))]
    failures = []
    f = result.failure
    if f is not None:
        v = f.violation
        what = ("crash" if f.error else str(v.invariant) if v is not None
                else "wrong results")
        failures.append(FailureRun(
            what=what, scenario=_one_line(f.scenario), shard=shard,
            trace=_relative(f.trace_path, summary_dir) if f.trace_path else "",
            error=f.error.strip().splitlines()[-1] if f.error.strip() else ""))
    return ExploreSummary(
        seed=seed, space=space, shard=shard, shards=shards, jobs=len(result.streams),
        backend=backend, budget=budget, max_batches=max_batches,
        elapsed=round(result.elapsed, 3), scenarios=s.scenarios,
        transitions=s.transitions, checks=s.checks, stimuli=s.stimuli,
        over_budget=s.over_budget, batches=s.batches, rescheduled=s.rescheduled,
        minimized=result.minimized, per_space=dict(sorted(s.per_space.items())),
        reached=_in_goal_order(s.reached), streams=streams, failures=failures)


def _in_goal_order(counts: dict[str, int]) -> dict[str, int]:
    from squall.scenarios.reach import GOALS

    return {g: counts[g] for g in [*GOALS, *sorted(set(counts) - set(GOALS))] if g in counts}


def _one_line(scenario: object) -> str:
    from squall.scenarios.model import Scenario, scenario_to_json

    assert isinstance(scenario, Scenario)
    return scenario_to_json(scenario, indent=False).decode()


def _relative(path: str, folder: str | Path | None) -> str:
    if folder is None:
        return path
    p, d = Path(path).resolve(), Path(folder).resolve()
    return str(p.relative_to(d)) if p.is_relative_to(d) else str(p)


def write_summary(summary: ExploreSummary, path: str | Path) -> None:
    """Write ``summary`` as JSON to ``path`` (OutputError, naming it, if it cannot be)."""
    data = msgspec.json.format(msgspec.json.encode(summary), indent=2) + b"\n"
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a summary
    except OSError as e:
        raise cannot_write(path, e, "summary") from None


_DECODER = msgspec.json.Decoder(ExploreSummary)


def load_summary(path: str | Path) -> ExploreSummary:
    """The summary in ``path``, checked; ExploreSummaryError (one line) if it is not one."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit(MAX_LINE_BYTES) + 1)
    except OSError as e:
        raise ExploreSummaryError(
            f"cannot read summary {str(path)!r}: {e.strerror or type(e).__name__}") from None
    if len(data) > limit(MAX_LINE_BYTES):
        raise ExploreSummaryError(f"summary {str(path)!r} is over {limit(MAX_LINE_BYTES):,} "
                                  f"bytes (set {MAX_LINE_BYTES} to raise the limit)")
    try:
        summary = _DECODER.decode(data)
    except msgspec.DecodeError as e:
        first = str(e).splitlines()[0] if str(e) else "not JSON"
        raise ExploreSummaryError(f"summary {str(path)!r} is not an exploration summary: "
                                  f"{first}") from None
    problem = _problem(summary)
    if problem:
        raise ExploreSummaryError(f"summary {str(path)!r}: {problem}")
    return summary


def _problem(s: ExploreSummary) -> str:
    if s.format != SUMMARY_FORMAT:
        return f"format {s.format[:40]!r}, expected {SUMMARY_FORMAT!r}"
    if s.shards < 1 or not 0 <= s.shard < s.shards:
        return f"shard {s.shard} of {s.shards} is not a shard (need 0 <= K < N)"
    for run in s.streams:
        if run.stream < 0 or run.stream % s.shards != s.shard:
            return f"stream {run.stream} is not one of shard {s.shard}/{s.shards}'s"
    seen = [run.stream for run in s.streams]
    if len(set(seen)) != len(seen):
        return "a stream is listed twice"
    return ""


def summary_files(paths: Sequence[str | Path]) -> list[Path]:
    """The summaries ``paths`` name: files as they are; a folder's ``*.json`` files that
    are summaries found by name (``summary.json``, ``*summary*.json``) at any depth (a CI
    job's downloaded artifacts). ExploreSummaryError when a path holds none."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.json") if "summary" in q.name)
            if not found:
                raise ExploreSummaryError(f"no summary (*summary*.json) in folder {str(p)!r}")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise ExploreSummaryError(f"no such file or folder: {str(p)!r}")
    return out


def merge_summaries(paths: Sequence[str | Path]) -> ExploreMerge:
    """The summaries in ``paths`` (see ``summary_files``) merged: ExploreSummaryError (one
    line) when one cannot be read, when they disagree on seed, space or the number of
    shards, or when two cover the same shard or stream. Missing shards are listed in
    ``missing``, not an error: what was found still merges."""
    files = summary_files(paths)
    loaded = [(f, load_summary(f)) for f in files]
    first_file, first = loaded[0]
    by_shard: dict[int, Path] = {}
    owner: dict[int, Path] = {}
    for f, s in loaded:
        for field in ("seed", "space", "shards"):
            if getattr(s, field) != getattr(first, field):
                raise ExploreSummaryError(
                    f"summaries of different searches: {str(first_file)!r} has {field} "
                    f"{getattr(first, field)!r}, {str(f)!r} has {getattr(s, field)!r}")
        if s.shard in by_shard:
            raise ExploreSummaryError(
                f"shard {s.shard}/{s.shards} twice: {str(by_shard[s.shard])!r} and {str(f)!r}")
        by_shard[s.shard] = f
        for run in s.streams:
            if run.stream in owner:  # pragma: no cover - shards own disjoint streams
                raise ExploreSummaryError(f"stream {run.stream} in both "
                                          f"{str(owner[run.stream])!r} and {str(f)!r}")
            owner[run.stream] = f
    per_space: dict[str, int] = {}
    reached: dict[str, int] = {}
    failures: list[FailureRun] = []
    for f, s in loaded:
        for name, n in s.per_space.items():
            per_space[name] = per_space.get(name, 0) + n
        for goal, n in s.reached.items():
            reached[goal] = reached.get(goal, 0) + n
        for fail in s.failures:
            trace = fail.trace
            if trace and not Path(trace).is_absolute():
                trace = str(f.parent / trace)
            failures.append(msgspec.structs.replace(fail, trace=trace, shard=s.shard))
    streams = sorted((run for _, s in loaded for run in s.streams), key=lambda r: r.stream)
    return ExploreMerge(
        seed=first.seed, space=first.space, shards=first.shards, found=sorted(by_shard),
        missing=[k for k in range(first.shards) if k not in by_shard],
        sources=[str(f) for f, _ in loaded], elapsed=max(s.elapsed for _, s in loaded),
        scenarios=sum(s.scenarios for _, s in loaded),
        transitions=sum(s.transitions for _, s in loaded),
        checks=sum(s.checks for _, s in loaded), stimuli=sum(s.stimuli for _, s in loaded),
        over_budget=sum(s.over_budget for _, s in loaded),
        batches=sum(s.batches for _, s in loaded),
        rescheduled=sum(s.rescheduled for _, s in loaded),
        per_space=dict(sorted(per_space.items())), reached=_in_goal_order(reached),
        streams=streams, failures=sorted(failures, key=lambda x: x.shard))


__all__ = ["SUMMARY_FORMAT", "SUMMARY_NAME", "ExploreMerge", "ExploreSummary",
           "ExploreSummaryError", "FailureRun", "StreamRun", "load_summary",
           "merge_summaries", "summarize", "summary_files", "write_summary"]
