"""Reach goals: a run reports the rare situations it drove the scheduler into (exact, in
the simulator), and only those."""

from __future__ import annotations

from pathlib import Path

from squall.chaos.injectors import JoinWorker, KillWorker
from squall.scenarios.explore_summary import load_summary
from squall.scenarios.model import ClusterShape, ExplicitGraph, Scenario, TaskDef
from squall.scenarios.reach import GOALS, ReachTracker, count_reached, format_goals
from squall.scenarios.runner import run_scenario


def _goals(scenario: Scenario) -> set[str]:
    reach = ReachTracker()
    outcome = run_scenario(scenario, validate=True, reach=reach)
    assert outcome.ok, outcome
    return reach.reached


def _chain(n: int = 6, duration: float = 0.5, fails: str = "") -> ExplicitGraph:
    tasks = [TaskDef(key=f"t-{i}", deps=(f"t-{i - 1}",) if i else (), sim_duration=duration,
                     duration=duration, nbytes=1000, fails=f"t-{i}" == fails)
             for i in range(n)]
    return ExplicitGraph(tasks=tuple(tasks))


def test_a_calm_run_reaches_no_goal() -> None:
    assert _goals(Scenario(workload=_chain(), cluster=ClusterShape(workers=2))) == set()


def test_a_kill_and_a_rejoin_are_reached_and_named() -> None:
    # w0 dies while t-0 runs on it (the only task at first), and its name joins again
    scenario = Scenario(workload=_chain(), cluster=ClusterShape(workers=1),
                        chaos=(KillWorker(at=0.2, worker="w0"), JoinWorker(at=0.4, worker="w0")))
    reached = _goals(scenario)
    assert {"worker-rejoined", "retried-after-death"} <= reached
    assert "task-erred" not in reached and "steal-moved" not in reached


def test_an_error_is_reached() -> None:
    # (an erred key is the right result here: the end-to-end checks expect the error)
    reach = ReachTracker()
    run_scenario(Scenario(workload=_chain(fails="t-2"), cluster=ClusterShape(workers=1)),
                 validate=True, reach=reach)
    assert "task-erred" in reach.reached


def test_counts_and_report_name_every_goal_and_mark_the_unreached() -> None:
    counts: dict[str, int] = {}
    count_reached(counts, {"worker-rejoined"})
    count_reached(counts, {"worker-rejoined", "task-erred"})
    lines = format_goals(counts, 2)
    assert len(lines) == len(GOALS)
    by_goal = {line.split()[0]: line for line in lines}
    assert "2 of 2" in by_goal["worker-rejoined"] and "1 of 2" in by_goal["task-erred"]
    assert "NOT REACHED" in by_goal["steal-moved"]


def test_explore_prints_its_goals_and_shards_merge_them(tmp_path: Path, run_cli) -> None:
    # two shards of one search, each one batch of its one stream: exact, whatever the load
    totals: dict[str, int] = {}
    for k in (0, 1):
        code, out, _ = run_cli(["explore", "--shard", f"{k}/2", "--batches", "1", "--seed", "3",
                                "--out", str(tmp_path / f"shard-{k}")])
        assert code == 0, out
        assert "reach goals: " in out
        summary = load_summary(tmp_path / f"shard-{k}" / "summary.json")
        assert set(summary.reached) <= set(GOALS)
        assert all(0 < n <= summary.scenarios for n in summary.reached.values())
        count_reached(totals, summary.reached)
    assert totals, "50 scenarios of the default space reached no goal at all"
    code, out, _ = run_cli(["explore", "merge", str(tmp_path)])
    assert code == 0, out
    for goal, n in totals.items():
        line = next(x for x in out.splitlines() if x.split()[:1] == [goal])
        assert f"{n} of 50" in line, line
