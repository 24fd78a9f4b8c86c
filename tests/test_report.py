"""``squall report``: what the page and the timeline PNG say and draw.

Through the report's data model (``collect``: rows, bars, the end of the figures), its
figures (legends, the occupancy scale) and the page's text, for simulated traces, a dask
trace built in-process, and one small real run (killed and rejoined worker).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from squall.chaos.injectors import JoinWorker, KillWorker
from squall.core.outcome import Outcome
from squall.scenarios.library import named_scenario
from squall.scenarios.model import ClusterShape, Generated, Scenario
from squall.scenarios.report import (
    Timeline,
    collect,
    occupancy_figure,
    timeline_figure,
    write_report,
)
from squall.scenarios.runner import run_scenario
from squall.scenarios.trace import End, TargetStim, TraceWriter


def _sim_trace(tmp_path: Path, scenario: Scenario, name: str = "t.jsonl") -> Path:
    trace = tmp_path / name
    out = run_scenario(scenario, trace=trace)
    assert out.ok, (out.violations, out.wrong)
    return trace


def _kill_and_join(runtime: str, *, kill: float, join: float) -> Scenario:
    return Scenario(workload=Generated(name="tree", tasks=64, params={"duration": 0.03}),
                    cluster=ClusterShape(workers=2),
                    chaos=(KillWorker(at=kill, worker="w1"), JoinWorker(at=join, worker="w1")),
                    runtime=runtime)


def _table(page: str) -> dict[str, str]:
    """The page's first table: row name -> text."""
    table = page.split("<table>")[1].split("</table>")[0]
    rows = [r.split("</td><td>") for r in table.split("<tr><td><b>")[1:]]
    return {k.removesuffix("</b>"): v.split("</td>")[0] for k, v in rows}


def _legends(fig: Figure) -> list[Legend]:
    ax = fig.axes[0]
    return [*fig.legends, *(a for a in ax.get_children() if isinstance(a, Legend))]


def _assert_legends_outside_the_plot(fig: Figure) -> None:
    FigureCanvasAgg(fig).draw()
    plot = fig.axes[0].get_window_extent()
    legends = _legends(fig)
    assert legends
    for legend in legends:
        box = legend.get_window_extent()
        assert not box.overlaps(plot), (box, plot)


# ------------------------------------------------------------------ simulated traces


def test_a_simulated_run_is_labelled_in_virtual_seconds_and_its_replay_row_reads_once(
        tmp_path: Path) -> None:
    trace = _sim_trace(tmp_path, _kill_and_join("sim", kill=0.2, join=0.4))
    page = tmp_path / "r.html"
    write_report(trace, page)
    text = page.read_text()
    rows = _table(text)
    assert "makespan (virtual s)" in rows and "virtual time (s)" in text
    assert "real time" not in text and "makespan (real s)" not in rows
    assert rows["replay"].startswith("matches: ") and "replay matches" not in text


def test_worker_rows_are_in_natural_order_the_joined_after_the_first(tmp_path: Path) -> None:
    # w10 joins before w2: rows by first appearance would put w10 before w2
    scenario = Scenario(workload=Generated(name="tree", tasks=64, params={"duration": 0.05}),
                        cluster=ClusterShape(workers=2),
                        chaos=(JoinWorker(at=0.1, worker="w10"), JoinWorker(at=0.2, worker="w2")))
    trace = _sim_trace(tmp_path, scenario)
    tl, _ = collect(trace)
    assert tl.workers == ["w0", "w1", "w2", "w10"]
    assert {bar[0] for bar in tl.bars} == {"w0", "w1", "w2", "w10"}  # every one worked


def test_a_killed_task_ends_with_its_worker_and_nothing_is_drawn_past_the_makespan(
        tmp_path: Path) -> None:
    trace = _sim_trace(tmp_path, _kill_and_join("sim", kill=0.2, join=0.4))
    tl, result = collect(trace)
    assert result.recorded is not None
    assert tl.end == result.recorded.outcome.makespan > 0
    assert all(0 <= start <= end <= tl.end for _, start, end, _, _ in tl.bars)
    killed = [bar for bar in tl.bars if bar[4] == "killed"]
    assert killed and all(name == "w1" and end == 0.2 for name, _, end, _, _ in killed)
    # w1 runs nothing between its death and its new incarnation
    assert not [bar for bar in tl.bars if bar[0] == "w1" and 0.2 < bar[1] < 0.4]


def test_the_legends_stand_outside_the_plots(tmp_path: Path) -> None:
    storm = msgspec.structs.replace(named_scenario("storm"), runtime="sim",
                                    workload=Generated(name="mixed", tasks=120))
    tl, result = collect(_sim_trace(tmp_path, storm))
    assert tl.faults and len(tl.workers) == 4
    _assert_legends_outside_the_plot(timeline_figure(tl, result))
    _assert_legends_outside_the_plot(occupancy_figure(tl))


# ------------------------------------------------------------------ the occupancy scale


def _occupancy(spike: float | None) -> Timeline:
    """Two workers' occupancy samples around 20-90 s, w1's with one ``spike``."""
    tl = Timeline(workers=["w0", "w1"], end=40.0)
    for w, base in (("w0", 20.0), ("w1", 30.0)):
        tl.occupancy[w] = [(i * 0.1, base + (i * 7) % 60) for i in range(400)]
    if spike is not None:
        tl.occupancy["w1"][200] = (20.0, spike)
    tl.occupancy["w0"].append((40.0, math.nan))  # w0 gone: its line breaks
    return tl


def test_one_spike_does_not_flatten_the_occupancy_chart_and_is_marked() -> None:
    ax = occupancy_figure(_occupancy(3_700.0)).axes[0]
    bottom, top = ax.get_ylim()
    assert 89 < top < 200 and bottom == 0  # the normal values fill the chart
    assert "clipped" in ax.get_title() and "3,700 s (w1 at 20.00 s)" in ax.get_title()
    marks = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [20.0]
    assert list(marks[0].get_ydata()) == [top]  # at the top edge


def test_without_a_spike_the_occupancy_chart_shows_every_sample() -> None:
    ax = occupancy_figure(_occupancy(None)).axes[0]
    assert ax.get_ylim()[1] >= 89 and "clipped" not in ax.get_title()
    assert not [line for line in ax.get_lines() if line.get_marker() == "^"]
    ax = occupancy_figure(_occupancy(150.0)).axes[0]  # high, but not 3x the rest
    assert ax.get_ylim()[1] >= 150 and "clipped" not in ax.get_title()


def test_a_removed_worker_has_no_occupancy_until_it_comes_back(tmp_path: Path) -> None:
    tl, _ = collect(_sim_trace(tmp_path, _kill_and_join("sim", kill=0.2, join=0.4)))
    samples = tl.occupancy["w1"]
    gone = [t for t, o in samples if math.isnan(o)]
    assert len(gone) == 1 and 0.2 <= gone[0] < 0.4
    assert not [t for t, o in samples if gone[0] < t < 0.4]  # no line across the gap
    assert [t for t, o in samples if t >= 0.4 and not math.isnan(o)]


# ------------------------------------------------------------------ a dask trace


def test_a_dask_trace_is_labelled_in_real_seconds_and_not_drawn_empty(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from distributed.worker_state_machine import ComputeTaskEvent, WorkerState

    address = "tcp://127.0.0.1:40001"
    ws = WorkerState(address=address, nthreads=1, threads={}, validate=True)
    base = {"target": "dask-worker", "worker": "w0", "address": address,
            "incarnation": "Worker-1"}
    records: list[dict[str, Any]] = [{**base, "op": "start", "event": {"nthreads": 1}}]
    event = ComputeTaskEvent.dummy("x", stimulus_id="s1")
    c = ws.transition_counter
    ws.handle_stimulus(event)
    records.append({**base, "op": "ComputeTaskEvent", "stimulus_id": "s1", "c": c,
                    "event": json.loads(json.dumps(
                        event.to_loggable(handled=0.0)._to_dict(), default=str))})
    trace = tmp_path / "dask.jsonl"
    writer = TraceWriter(trace, msgspec.structs.replace(named_scenario("many-tiny"),
                                                        runtime="dask"))
    for r in records:
        writer.write(TargetStim(t="w0", m=r))
    writer.write(End(outcome=Outcome(results_ok=True, makespan=1.5, n_tasks=1, transitions=0,
                                     digest=""), n=len(records)))
    writer.close()
    page, png = tmp_path / "dask.html", tmp_path / "dask.png"
    write_report(trace, page, png=png)
    text = page.read_text()
    assert _table(text)["makespan (real s)"] == "1.500" and "virtual" not in text
    assert "<svg" not in text and "no timeline or occupancy is drawn" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ a real run


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_a_real_run_is_drawn_in_real_seconds_on_one_clock(tmp_path: Path) -> None:
    kill, join = 0.5, 2.0
    trace = tmp_path / "real.trace.jsonl"
    out = run_scenario(_kill_and_join("real", kill=kill, join=join), trace=trace)
    assert out.ok, (out.violations, out.wrong)
    page, png = tmp_path / "real.html", tmp_path / "real.png"
    write_report(trace, page, png=png)
    text = page.read_text()
    assert _table(text)["makespan (real s)"] == f"{out.makespan:.3f}"
    assert "real time since the graph was submitted (s)" in text and "virtual" not in text
    tl, _ = collect(trace)
    assert tl.real and tl.workers == ["w0", "w1"]
    # the trace goes on through the shutdown: nothing is drawn past the makespan
    assert tl.end == out.makespan
    assert all(0 <= start <= end <= tl.end for _, start, end, _, _ in tl.bars)
    killed_at = next(f.time for f in tl.faults if f.kind == "kill_worker")
    assert kill <= killed_at < kill + 0.1
    assert all(end <= killed_at for name, start, end, _, how in tl.bars
               if how == "killed" and start <= killed_at)
    # w1's second incarnation counts its time on the cluster's clock, as the first did: its
    # tasks are drawn after it joined, none in the time w1 was dead (a process that counted
    # from its own start would draw them from 0)
    w1 = [start for name, start, _, _, _ in tl.bars if name == "w1"]
    assert [t for t in w1 if t >= join]
    assert not [t for t in w1 if kill + 0.1 < t < join]
