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
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from squall.chaos.injectors import ENDS_PROCESS, Fault, surface_calls
from squall.chaos.kinds import FaultKind, kind
from squall.core import protocol as p
from squall.scenarios.limits import cannot_write
from squall.scenarios.replay import ReplayCluster, ReplayResult, replay_trace
from squall.scenarios.trace import CHAOS, SCHEDULER, Stim

MAX_SAMPLES = 800  # occupancy samples kept (halved by dropping every other one)
LABEL_CHARS = 60  # a name drawn in a figure (a row, a legend entry) is cut to this
_RUNNING = ("executing", "cancelled")  # a thread is busy in either


def _short(text: str) -> str:
    """``text`` as a figure draws it: cut short if long (a trace's names are untrusted, and
    laying out a long text costs far more than the text)."""
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 3] + "..."


@dataclass
class Timeline:
    """What the report draws, collected during replay."""

    bars: list[tuple[str, float, float, str, str]] = field(default_factory=list)
    # (worker, start, end, key, how it ended)
    occupancy: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    faults: list[p.FaultInjected] = field(default_factory=list)
    fault_kinds: list[FaultKind | None] = field(default_factory=list)  # whose each fault is
    steals: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, key, from, to
    workers: list[str] = field(default_factory=list)  # rows, in order of first appearance
    end: float = 0.0
    _open: dict[tuple[int, str], tuple[str, float]] = field(default_factory=dict)
    _dt: float = 0.01
    _last_sample: float = -1.0


def collect(trace: str | Path) -> tuple[Timeline, ReplayResult]:
    tl = Timeline()
    watched: set[int] = set()
    pending_steals: dict[str, str] = {}

    def watch_new_workers(cluster: ReplayCluster) -> None:
        for rw in cluster.all_workers:
            if rw.incarnation in watched:
                continue
            watched.add(rw.incarnation)
            if rw.name not in tl.workers:
                tl.workers.append(rw.name)
            rw.state.observers.append(_worker_observer(tl, rw.name, rw.incarnation))

    def before(lineno: int, line: Stim, cluster: ReplayCluster) -> None:
        watch_new_workers(cluster)
        msg = line.m
        if line.t == SCHEDULER and type(msg) is p.StealResponse:
            ts = cluster.scheduler.tasks.get(msg.key)
            if ts is not None and ts.processing_on is not None:
                pending_steals[msg.key] = ts.processing_on.name

    def after(lineno: int, line: Stim, cluster: ReplayCluster) -> None:
        msg = line.m
        now = cluster.now
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
            if max((len(v) for v in tl.occupancy.values()), default=0) > MAX_SAMPLES:
                tl._dt *= 2
                for name, samples in tl.occupancy.items():
                    tl.occupancy[name] = samples[::2]

    result = replay_trace(trace, validate=False, before=before, after=after)
    _collect_faults(trace, tl, result.header.scenario.chaos)
    kills = [(f.time, f.target) for f in tl.faults if f.kind in ENDS_PROCESS]
    for (_, key), (name, start) in tl._open.items():  # killed, or running at the end
        died = next((t for t, w in kills if w == name and t >= start), None)
        tl.bars.append((name, start, tl.end if died is None else died, key,
                        "unfinished" if died is None else "killed"))
    tl._open.clear()
    if result.recorded is not None:
        tl.end = max(tl.end, result.recorded.outcome.makespan)
    return tl, result


def _worker_observer(tl: Timeline, name: str, incarnation: int) -> Any:
    def observe(wstate: Any, wtask: Any, start: str, finish: str, sid: str) -> None:
        key = wtask.key
        if finish == "executing" and start != "cancelled":
            tl._open[(incarnation, key)] = (name, wstate.time)
        elif start in _RUNNING and finish not in _RUNNING:
            began = tl._open.pop((incarnation, key), None)
            if began is not None:
                tl.bars.append((name, began[1], wstate.time, key, finish))

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


def timeline_figure(tl: Timeline, result: ReplayResult) -> Figure:
    rows = tl.workers or ["(no workers)"]
    row_of = {name: i for i, name in enumerate(rows)}
    fig = Figure(figsize=(12, 1.2 + 0.5 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    prefixes: dict[str, Any] = {}
    cmap = matplotlib.colormaps["tab20"]
    for name, start, end, key, how in tl.bars:
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
        ax.text(t, len(rows) - 0.4, f" {_short(violation.invariant)}", color="red",
                fontsize=9, va="bottom")
    ax.set_yticks(range(len(rows)), [_short(row) for row in rows])
    ax.set_ylim(-0.6, len(rows) - 0.2)
    ax.set_xlim(0, end * 1.02)
    ax.invert_yaxis()
    ax.set_xlabel("virtual time (s)")
    ax.set_title("tasks executing per worker (colour: prefix; hatched: cancelled or killed; "
                 "faults: lower legend; purple arrows: steals)", fontsize=9)
    if prefixes and len(prefixes) <= 12:
        from matplotlib.patches import Patch

        handles = [Patch(color=c, label=_short(pre)) for pre, c in prefixes.items()]
        ax.add_artist(ax.legend(handles=handles, loc="upper right", fontsize=7,
                                ncols=min(6, len(prefixes))))
    if legend:
        ax.legend(handles=list(legend.values()), loc="lower right", fontsize=7,
                  ncols=min(7, len(legend)))
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


def occupancy_figure(tl: Timeline) -> Figure:
    fig = Figure(figsize=(12, 3), layout="constrained")
    ax = fig.add_subplot()
    for name, samples in tl.occupancy.items():
        if samples:
            ax.step([t for t, _ in samples], [o for _, o in samples], where="post",
                    label=_short(name), linewidth=1)
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("expected seconds queued")
    ax.set_title("occupancy per worker (the scheduler's view)", fontsize=10)
    ax.set_xlim(0, (tl.end or 1.0) * 1.02)
    if 0 < len(tl.occupancy) <= 12:
        ax.legend(fontsize=7, ncols=6, loc="upper right")
    return fig


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
                 ("makespan (virtual s)", f"{out.makespan:.3f}"),
                 ("stimuli", str(out.n_stimuli)), ("transitions", str(out.transitions)),
                 ("invariant checks", str(out.invariant_checks)),
                 ("faults", ", ".join(f"{k} {n}" for k, n in out.faults.items()) or "none"),
                 ("steals", str(len(tl.steals)))]
    rows.append(("replay", f"{result.verdict}: {result.message}"))
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>squall report: {e(Path(trace).name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
        "td{padding:2px 12px 2px 0;vertical-align:top}pre{background:#f6f6f6;padding:1em;"
        "overflow-x:auto}.bad{color:#b00}</style></head><body>",
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
    parts += ["<h2>timeline</h2>", _svg(timeline), "<h2>occupancy</h2>", _svg(occupancy),
              "<h2>scenario</h2>", f"<pre>{e(scenario_to_json(header.scenario).decode())}</pre>",
              "</body></html>"]
    try:
        Path(output).write_text("".join(parts), encoding="utf-8")
    except OSError as err:
        raise cannot_write(output, err, "report") from None
