"""``squall report TRACE``: a self-contained HTML page about one run.

The trace is replayed (no validation: the recorded outcome is what is reported) with
observers that collect, per worker, when each task executed, the scheduler's occupancy
of each worker over time, the faults, and the steals. The page embeds matplotlib
figures as SVG: a Gantt chart with faults shaded and steals drawn as arrows, occupancy
over time, and the violation, if any, marked with its invariant, followed by the tail
of the stimuli before it.

A fault's trace lines name the fault-surface calls it made; the report finds the fault that
made each (the scenario's faults, applied to a probe surface) and marks it with the shape
of the call (X: a process killed, +: a worker joining, v: a slower link, a shaded span: a
worker paused or cut off, a dashed line: estimates skewed) in the colour its kind
registered, named in a legend by the kind's label.

Time: the simulator's virtual seconds, or, for a trace of real processes, real seconds
since the graph was submitted (the processes of a cluster stamp their stimuli on one clock,
which the report moves to start where the graph reached the scheduler; a fault's time and
the makespan are the runner's, counted from the submission already). Nothing is drawn past
the makespan: a real trace goes on through the cluster's shutdown. A trace of a target's
own runtime (dask) holds the target's records, not squall's state machines: its page has
the run's figures but no timeline or occupancy.
"""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from squall.chaos.injectors import ENDS_PROCESS, Fault, surface_calls
from squall.chaos.kinds import FaultKind, kind
from squall.core import protocol as p
from squall.core.view import REAL, SIM
from squall.scenarios.limits import cannot_write
from squall.scenarios.replay import ReplayCluster, ReplayResult, replay_trace
from squall.scenarios.trace import CHAOS, SCHEDULER, Stim

MAX_SAMPLES = 800  # occupancy samples kept (halved by dropping every other one)
LABEL_CHARS = 60  # a name drawn in a figure (a row, a legend entry) is cut to this
_RUNNING = ("executing", "cancelled")  # a thread is busy in either
# The occupancy chart's scale ends at this percentile of its samples (with headroom) when
# the largest sample is more than CLIP_FACTOR times it; the samples above are marked.
CLIP_PERCENTILE = 99.0
CLIP_FACTOR = 3.0


def _short(text: str) -> str:
    """``text`` as a figure draws it: cut short if long (a trace's names are untrusted, and
    laying out a long text costs far more than the text)."""
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 3] + "..."


@dataclass
class Timeline:
    """What the report draws, collected during replay. Times are the report's: virtual
    seconds (simulator), or real seconds since the graph was submitted (``real``)."""

    bars: list[tuple[str, float, float, str, str]] = field(default_factory=list)
    # (worker, start, end, key, how it ended), none past ``end``
    # worker -> (time, expected seconds queued) samples; NaN: the worker is not in the
    # scheduler's view (removed, until a new incarnation registers)
    occupancy: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    faults: list[p.FaultInjected] = field(default_factory=list)
    fault_kinds: list[FaultKind | None] = field(default_factory=list)  # whose each fault is
    steals: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, key, from, to
    workers: list[str] = field(default_factory=list)  # rows: see ``worker_rows``
    end: float = 0.0  # where the figures end: the makespan (else the last time seen)
    real: bool = False  # real seconds (a trace of processes), not the simulator's
    drawn: bool = True  # False: a target's trace, whose state machines replay cannot watch
    # a stimulus' time (real: on the cluster's clock) minus this is the report's time
    offset: float = 0.0
    _open: dict[tuple[int, str], tuple[str, float]] = field(default_factory=dict)
    _dt: float = 0.01
    _last_sample: float = -1.0


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a name with numbers in it: w2 before w10."""
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in re.split(r"(\d+)", name) if part)


def worker_rows(names: list[str] | set[str], started: int) -> list[str]:
    """The timeline's rows, one per worker name (every incarnation of a name on its row):
    the ``started`` workers the cluster starts with (w0, w1, ...), then those that joined
    under other names, each group in natural order (w9 before w10)."""
    first = {f"w{i}" for i in range(started)}
    return sorted(names, key=lambda name: (name not in first, natural_key(name)))


class _Lives:
    """When each worker incarnation ended, as far as the trace tells (report times): killed
    (a fault that ends its process), removed by the scheduler, or replaced by a new
    incarnation under its name."""

    def __init__(self) -> None:
        self.latest: dict[str, int] = {}  # name -> its newest incarnation
        self.killed: dict[int, float] = {}
        self.removed: dict[int, float] = {}
        self.replaced: dict[int, float] = {}

    def end_of(self, incarnation: int, start: float) -> tuple[float, bool] | None:
        """When a task started at ``start`` on ``incarnation`` stopped running at the
        latest, and whether its worker was killed (None: its worker outlived the trace).
        A kill ends it; a task that started after the kill was made (a real process
        takes a moment to die) ends when the scheduler removed the worker, or when a new
        incarnation replaced it."""
        killed = self.killed.get(incarnation)
        if killed is not None and killed >= start:
            return killed, True
        later = [t for t in (self.removed.get(incarnation), self.replaced.get(incarnation))
                 if t is not None and t >= start]
        return (min(later), killed is not None) if later else None


def collect(trace: str | Path) -> tuple[Timeline, ReplayResult]:
    tl = Timeline()
    watched: set[int] = set()
    pending_steals: dict[str, str] = {}
    lives = _Lives()
    wrapped: list[ReplayCluster] = []
    submitted: list[float] = []  # the first graph's time, on the trace's clock

    def watch_new_workers(cluster: ReplayCluster) -> None:
        if len(watched) == len(cluster.all_workers):
            return
        for rw in cluster.all_workers:
            if rw.incarnation in watched:
                continue
            watched.add(rw.incarnation)
            old = lives.latest.get(rw.name)
            if old is not None:
                lives.replaced.setdefault(old, max(0.0, cluster.now - tl.offset))
            lives.latest[rw.name] = rw.incarnation
            if rw.name not in tl.workers:
                tl.workers.append(rw.name)
            rw.state.observers.append(_worker_observer(tl, rw.name, rw.incarnation))

    def note_kills(cluster: ReplayCluster) -> None:
        """The incarnation each fault that ends a process kills: the live one under its
        target's name when the fault is applied (the fault's time is the runner's)."""
        apply_fault = cluster.apply_fault

        def applied(msg: p.FaultInjected) -> None:
            rw = cluster.workers.get(msg.target) if msg.kind in ENDS_PROCESS else None
            if rw is not None:
                lives.killed.setdefault(rw.incarnation, msg.time)
            apply_fault(msg)

        cluster.apply_fault = applied  # type: ignore[method-assign]
        wrapped.append(cluster)

    def before(lineno: int, line: Stim, cluster: ReplayCluster) -> None:
        if not wrapped:
            note_kills(cluster)
        watch_new_workers(cluster)
        msg = line.m
        if line.t != SCHEDULER:
            return
        if type(msg) is p.StealResponse:
            ts = cluster.scheduler.tasks.get(msg.key)
            if ts is not None and ts.processing_on is not None:
                pending_steals[msg.key] = ts.processing_on.name
        elif type(msg) is p.RemoveWorker:
            inc = lives.latest.get(msg.worker)
            if inc is not None:
                lives.removed.setdefault(inc, max(0.0, msg.time - tl.offset))
        elif type(msg) is p.UpdateGraph and not submitted:
            submitted.append(msg.time)
            if tl.real:  # the runner counts its times from here: so does the report
                tl.offset = msg.time

    def after(lineno: int, line: Stim, cluster: ReplayCluster) -> None:
        msg = line.m
        now = max(0.0, cluster.now - tl.offset)
        tl.end = max(tl.end, now)
        if line.t != SCHEDULER:
            return
        sched = cluster.scheduler
        if type(msg) is p.StealResponse:
            victim = pending_steals.pop(msg.key, None)
            ts = sched.tasks.get(msg.key)
            thief = ts.processing_on.name if ts is not None and ts.processing_on else None
            if victim is not None and thief is not None and thief != victim:
                tl.steals.append((now, msg.key, victim, thief))
        if now - tl._last_sample >= tl._dt:
            tl._last_sample = now
            for ws in sched.workers.values():
                tl.occupancy.setdefault(ws.name, []).append((now, sched.occupancy(ws)))
            for name, samples in tl.occupancy.items():
                if name not in sched.workers and not math.isnan(samples[-1][1]):
                    samples.append((now, math.nan))  # gone: the line breaks here
            if max((len(v) for v in tl.occupancy.values()), default=0) > MAX_SAMPLES:
                tl._dt *= 2
                for name, samples in tl.occupancy.items():  # (the breaks are kept)
                    tl.occupancy[name] = [s for i, s in enumerate(samples)
                                          if not i % 2 or math.isnan(s[1])]

    from squall.scenarios.trace import read_header

    runtime = read_header(trace).scenario.runtime
    tl.real = runtime != SIM
    tl.drawn = runtime in (SIM, REAL)
    result = replay_trace(trace, validate=False, before=before, after=after)
    scenario = result.header.scenario
    _collect_faults(trace, tl, scenario.chaos)
    out = result.recorded.outcome if result.recorded is not None else None
    if out is not None and out.makespan > 0:
        tl.end = out.makespan  # a real trace goes on through the shutdown: not drawn
    for (inc, key), (name, start) in tl._open.items():  # killed, or running at the end
        ended = lives.end_of(inc, start)
        stop, killed = (tl.end, False) if ended is None else ended
        tl.bars.append((name, start, stop, key, "killed" if killed else "unfinished"))
    tl._open.clear()
    tl.bars = [(name, start, min(stop, tl.end), key, how)
               for name, start, stop, key, how in tl.bars if start < tl.end]
    tl.steals = [s for s in tl.steals if s[0] <= tl.end]
    tl.workers = worker_rows(tl.workers, scenario.cluster.workers)
    return tl, result


def _worker_observer(tl: Timeline, name: str, incarnation: int) -> Any:
    def observe(wstate: Any, wtask: Any, start: str, finish: str, sid: str) -> None:
        key = wtask.key
        if finish == "executing" and start != "cancelled":
            tl._open[(incarnation, key)] = (name, max(0.0, wstate.time - tl.offset))
        elif start in _RUNNING and finish not in _RUNNING:
            began = tl._open.pop((incarnation, key), None)
            if began is not None:
                tl.bars.append((name, began[1], max(began[1], wstate.time - tl.offset), key,
                                finish))

    return observe


def _collect_faults(trace: str | Path, tl: Timeline, chaos: tuple[Fault, ...]) -> None:
    """The trace's fault lines, each with the kind of the scenario's fault that made it.

    A run makes the calls a probe surface sees, in order, but for those its runtime left
    out (a kill of a worker that was not alive, in real mode): each line is the next call
    of the probe's naming the same method and target."""
    from squall.scenarios.trace import read_trace

    calls = surface_calls(chaos)
    i = 0
    for _, line in read_trace(trace):
        if type(line) is Stim and line.t == CHAOS and type(line.m) is p.FaultInjected:
            msg = line.m
            tl.faults.append(msg)
            j = next((j for j in range(i, len(calls))
                      if calls[j][:2] == (msg.kind, msg.target)), None)
            tl.fault_kinds.append(None if j is None else kind(calls[j][2].kind_name()))
            if j is not None:
                i = j + 1


# ------------------------------------------------------------------ figures


def _prefix(key: str) -> str:
    from squall.core.graph import key_prefix

    return key_prefix(key)


def time_label(tl: Timeline) -> str:
    """The time axis' label: virtual or real seconds."""
    if tl.real:
        return "real time since the graph was submitted (s)"
    return "virtual time (s)"


def _not_drawn(tl: Timeline, result: ReplayResult) -> str:
    """Why a trace has no timeline ("" if it has one)."""
    if tl.drawn:
        return ""
    return (f"a trace of the {result.header.scenario.runtime} runtime holds that target's "
            "own records, not squall's state machines: no timeline or occupancy is drawn")


def timeline_figure(tl: Timeline, result: ReplayResult) -> Figure:
    rows = tl.workers or ["(no workers)"]
    row_of = {name: i for i, name in enumerate(rows)}
    fig = Figure(figsize=(12, 1.6 + 0.5 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    why = _not_drawn(tl, result)
    if why:
        ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=9, wrap=True,
                transform=ax.transAxes)
    prefixes: dict[str, Any] = {}
    cmap = matplotlib.colormaps["tab20"]
    # (colours in the order prefixes first start: runs of one scenario look alike)
    for name, start, end, key, how in sorted(tl.bars, key=lambda bar: bar[1]):
        pre = _prefix(key)
        color = prefixes.setdefault(pre, cmap(len(prefixes) % 20))
        y = row_of.get(name, 0)
        hatch = "//" if how in ("released", "unfinished", "killed") else None
        ax.broken_barh([(start, max(end - start, 1e-6))], (y - 0.35, 0.7), facecolors=color,
                       edgecolor="black" if how == "error" else "none", linewidth=0.6,
                       hatch=hatch)
    end = tl.end or 1.0
    legend = _draw_faults(ax, tl, row_of, end)
    for t, _key, victim, thief in tl.steals:
        if victim in row_of and thief in row_of:
            ax.annotate("", xy=(t, row_of[thief]), xytext=(t, row_of[victim]),
                        arrowprops={"arrowstyle": "->", "color": "purple", "lw": 1.0})
    violation = result.recorded.outcome.violations[0] if (
        result.recorded is not None and result.recorded.outcome.violations) else None
    if violation is not None:
        t = violation.time or end
        ax.axvline(t, color="red", linewidth=2)
        late = t > 0.6 * end  # (then the name ends at the line: it stays in the plot)
        name = _short(violation.invariant)
        ax.text(t, len(rows) - 0.4, f"{name} " if late else f" {name}", color="red",
                fontsize=9, va="bottom", ha="right" if late else "left")
    if why:
        ax.set_yticks([])
    else:
        ax.set_yticks(range(len(rows)), [_short(row) for row in rows])
    ax.set_ylim(-0.6, len(rows) - 0.2)
    ax.set_xlim(0, end * 1.02)
    ax.invert_yaxis()
    ax.set_xlabel(time_label(tl))
    ax.set_title("tasks executing per worker (colour: task prefix; hatched: cancelled, "
                 "killed or unfinished; purple arrows: steals; faults: marks and shading)",
                 fontsize=9)
    # The legends stand right of the plot (constrained layout makes room): never over a row.
    if prefixes and len(prefixes) <= 12:
        from matplotlib.patches import Patch

        handles = [Patch(color=c, label=_short(pre)) for pre, c in prefixes.items()]
        fig.legend(handles=handles, loc="outside right upper", fontsize=7,
                   title="task prefix", title_fontsize=7, frameon=False)
    if legend:
        fig.legend(handles=list(legend.values()), loc="outside right lower", fontsize=7,
                   title="faults", title_fontsize=7, frameon=False)
    return fig


def _draw_faults(ax: Any, tl: Timeline, row_of: dict[str, int], end: float) -> dict[str, Any]:
    """Mark every fault; the legend's entries, by kind label."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    legend: dict[str, Any] = {}
    cut: dict[str, tuple[float, str]] = {}  # worker -> since when, in what colour

    def mark(t: float, row: int | None, shape: str, size: int, colour: str,
             label: str) -> None:
        if row is not None:
            ax.plot([t], [row], marker=shape, color=colour, markersize=size)
            legend.setdefault(label, Line2D([], [], marker=shape, color=colour, markersize=size,
                                            linestyle="None", label=label))

    for f, fk in zip(tl.faults, tl.fault_kinds, strict=True):
        colour, label = (fk.colour, fk.label) if fk is not None else ("black", _short(f.kind))
        row = row_of.get(f.target)
        if f.kind in ENDS_PROCESS:
            mark(f.time, row, "X", 10, colour, label)
        elif f.kind == "pause_worker":
            if row is not None:
                ax.axvspan(f.time, f.time + float(f.params.get("seconds", 0)),
                           ymin=_frac(row, len(row_of), 0), ymax=_frac(row, len(row_of), 1),
                           color=colour, alpha=0.25)
                legend.setdefault(label, Patch(color=colour, alpha=0.25, label=label))
        elif f.kind == "set_link":
            # the worker end of the link ("w1->scheduler", "*->w1", "w2->w3": w2)
            src, _, dst = f.target.partition("->")
            worker = src if src not in ("*", "scheduler") else dst
            if f.params.get("down") is True:
                cut.setdefault(worker, (f.time, colour))
                legend.setdefault(label, Patch(color=colour, alpha=0.15, label=label))
            elif f.params.get("down") is False and worker in cut:
                _shade_cut(ax, *cut.pop(worker), f.time, worker, row_of)
            elif "latency" in f.params or "bandwidth" in f.params:
                mark(f.time, row_of.get(worker), "v", 7, colour, label)
        elif f.kind == "skew_estimates":
            ax.axvline(f.time, color=colour, linestyle="--", linewidth=1)
            legend.setdefault(label, Line2D([], [], color=colour, linestyle="--", linewidth=1,
                                            label=label))
        elif f.kind == "add_worker":
            mark(f.time, row, "P", 8, colour, label)
        else:  # a surface call this report has no shape for
            mark(f.time, row, "o", 6, colour, label)
    for worker, (start, colour) in cut.items():
        _shade_cut(ax, start, colour, end, worker, row_of)
    return legend


def _shade_cut(ax: Any, start: float, colour: str, stop: float, worker: str,
               row_of: dict[str, int]) -> None:
    if worker == "*":
        ax.axvspan(start, stop, color=colour, alpha=0.08)
        return
    row = row_of.get(worker)
    if row is not None:
        ax.axvspan(start, stop, ymin=_frac(row, len(row_of), 0), ymax=_frac(row, len(row_of), 1),
                   color=colour, alpha=0.15)


def _frac(row: int, n: int, edge: int) -> float:
    """Axes fraction of a row's edge (rows are drawn top-down from -0.6 to n-0.2)."""
    lo, hi = -0.6, n - 0.2
    y = row - 0.45 if edge == 0 else row + 0.45
    return 1 - (y - lo) / (hi - lo)


def occupancy_top(tl: Timeline) -> float | None:
    """Where the occupancy chart's scale ends if a few samples would flatten the rest
    (None: it shows every sample).

    Occupancy is the scheduler's estimate of the work queued on a worker: the queued tasks
    times their prefix's expected duration, in seconds in either runtime. A spike is a
    real value of that view, not a unit slip: a task that runs far longer than its
    prefix's estimate resets the estimate to what was measured (``DurationEstimator``). In
    a real run a worker paused (SIGSTOP) for 1.5 s while running a 30 ms task reports that
    it ran 1.5 s; with the prefix's estimates skewed x10, the few hundred tasks of that
    prefix queued on each worker are then worth some 3,000 s until the next measurements
    bring the estimate back (the simulator's task reports its own duration, pause or not).
    So the scale stays linear, clipped just above a high percentile of the samples, and
    the samples above are marked at the top edge with the largest named: a log scale
    would keep the spike on the chart but squash the differences between workers that
    the chart is for.
    """
    values = sorted(o for samples in tl.occupancy.values() for _, o in samples
                    if not math.isnan(o))
    if not values:
        return None
    high = values[min(len(values) - 1, int(len(values) * CLIP_PERCENTILE / 100))]
    if not high > 0 or values[-1] <= CLIP_FACTOR * high:
        return None
    return high * 1.25


def occupancy_figure(tl: Timeline) -> Figure:
    fig = Figure(figsize=(12, 3), layout="constrained")
    ax = fig.add_subplot()
    top = occupancy_top(tl)
    clipped: list[tuple[float, float, str]] = []  # value, time, worker
    names = [w for w in tl.workers if w in tl.occupancy]
    for name in names + sorted(tl.occupancy.keys() - set(names), key=natural_key):
        samples = tl.occupancy[name]
        if not samples:
            continue
        (line,) = ax.step([t for t, _ in samples], [o for _, o in samples], where="post",
                          label=_short(name), linewidth=1)
        over = [(t, o) for t, o in samples if top is not None and o > top]
        if over and top is not None:
            ax.plot([t for t, _ in over], [top] * len(over), linestyle="none", marker="^",
                    markersize=6, color=line.get_color(), clip_on=False)
            clipped += [(o, t, name) for t, o in over]
    title = "occupancy per worker (the scheduler's view)"
    if top is not None:
        ax.set_ylim(0, top)
        most, when, who = max(clipped)
        title += (f"; the scale is clipped: {len(clipped)} sample"
                  f"{'s' if len(clipped) != 1 else ''} above it (\u25b2), up to "
                  f"{most:,.0f} s ({_short(who)} at {when:.2f} s)")
    ax.set_xlabel(time_label(tl))
    ax.set_ylabel("expected seconds queued")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, (tl.end or 1.0) * 1.02)
    if 0 < len(tl.occupancy) <= 12:
        fig.legend(fontsize=7, loc="outside right upper", frameon=False)
    return fig


def replay_row(result: ReplayResult) -> str:
    """The replay's verdict in the page's "replay" row: its message, which opens with the
    verdict ("replay matches: ...", "reproduced ...", "diverged ..."), the row's own name
    not said again."""
    text = result.message.removeprefix("replay ")
    verdict = result.verdict
    return text if text.startswith(verdict) else f"{verdict}: {text}"


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "squall", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


# ------------------------------------------------------------------ the page


def write_report(trace: str | Path, output: str | Path, *, png: str | Path | None = None) -> None:
    """Write the HTML report of ``trace`` to ``output`` (and the timeline PNG to ``png``);
    ``squall.scenarios.limits.OutputError`` names an output that cannot be written."""
    from squall.core.outcome import format_violation
    from squall.scenarios.model import scenario_to_json

    tl, result = collect(trace)
    timeline = timeline_figure(tl, result)
    occupancy = occupancy_figure(tl)
    if png is not None:
        try:
            timeline.savefig(png, format="png", dpi=110)
        except OSError as err:
            raise cannot_write(png, err, "PNG") from None
    header = result.header
    rec = result.recorded
    out = rec.outcome if rec is not None else None
    rows = [("scenario", header.scenario.describe()), ("squall", header.squall),
            ("seed", str(header.seed))]
    if out is not None:
        rows += [("results", "all correct" if out.results_ok else "NOT all correct"),
                 (f"makespan ({'real' if tl.real else 'virtual'} s)", f"{out.makespan:.3f}"),
                 ("stimuli", str(out.n_stimuli)), ("transitions", str(out.transitions)),
                 ("invariant checks", str(out.invariant_checks)),
                 ("faults", ", ".join(f"{k} {n}" for k, n in out.faults.items()) or "none"),
                 ("steals", str(len(tl.steals) if tl.drawn else out.steals))]
    rows.append(("replay", replay_row(result)))
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>squall report: {e(Path(trace).name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
        "td{padding:2px 12px 2px 0;vertical-align:top}td:first-child{white-space:nowrap}pre{background:#f6f6f6;padding:1em;"
        "white-space:pre-wrap;overflow-wrap:anywhere}.bad{color:#b00}</style></head><body>",
        f"<h1>squall report: {e(Path(trace).name)}</h1>",
        "<table>" + "".join(f"<tr><td><b>{e(k)}</b></td><td>{e(v)}</td></tr>"
                            for k, v in rows) + "</table>",
    ]
    if out is not None and out.violations:
        v = out.violations[0]
        parts.append(f"<h2 class='bad'>violation: {e(v.invariant)}</h2>")
        parts.append(f"<pre>{e(format_violation(v))}</pre>")
        from squall.invariants.violation import describe

        parts.append(f"<h3>the last {len(result.tail)} stimuli before it</h3><pre>")
        parts += [e(f"{target}: {describe(msg)}") + "\n" for target, msg in result.tail]
        parts.append("</pre>")
    why = _not_drawn(tl, result)
    if why:
        parts += ["<h2>timeline</h2>", f"<p>{e(why[0].upper() + why[1:])}.</p>"]
    else:
        parts += ["<h2>timeline</h2>", _svg(timeline), "<h2>occupancy</h2>", _svg(occupancy)]
    parts += ["<h2>scenario</h2>", f"<pre>{e(scenario_to_json(header.scenario).decode())}</pre>",
              "</body></html>"]
    try:
        Path(output).write_text("".join(parts), encoding="utf-8")
    except OSError as err:
        raise cannot_write(output, err, "report") from None
