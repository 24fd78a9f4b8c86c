"""Tasks restricted to some workers: in scenarios, in the simulator, under balancing and
faults, and in what exploration draws."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.chaos.injectors import JoinWorker, KillWorker, PauseWorker
from squall.core import stealing
from squall.core.protocol import TaskFinished
from squall.scenarios.model import (
    ClusterShape,
    ExplicitGraph,
    Scenario,
    ScenarioError,
    TaskDef,
    load_scenario,
    scenario_to_json,
)
from squall.scenarios.runner import run_scenario
from squall.scenarios.strategies import unstranded
from squall.scenarios.trace import Stim, read_trace


def finished_on(trace: Path) -> dict[str, str]:
    """key -> the worker whose completion the scheduler heard last."""
    where: dict[str, str] = {}
    for _, line in read_trace(trace):
        if isinstance(line, Stim) and isinstance(line.m, TaskFinished):
            where[line.m.key] = line.m.worker
    return where


def queue_for_a_newcomer(tasks: int = 8, joining: tuple[str, ...] = ("w1",)) -> Scenario:
    """w0 alone at first, with independent half-second tasks that may run on w0 or w1;
    ``joining`` join at 0.2 s, idle, while w0 still has most of them queued."""
    graph = ExplicitGraph(tasks=tuple(
        TaskDef(f"a-{i}", duration=0.5, sim_duration=0.5, nbytes=100, restrictions=("w0", "w1"))
        for i in range(tasks)))
    return Scenario(workload=graph, cluster=ClusterShape(workers=1, stealing=True),
                    chaos=tuple(JoinWorker(at=0.2, worker=name) for name in joining))


def test_a_restricted_task_runs_only_where_it_may(tmp_path: Path) -> None:
    graph = ExplicitGraph(tasks=(
        TaskDef("a-0", restrictions=("w2",)),
        TaskDef("b-1", deps=("a-0",), restrictions=("w0", "w3")),
        TaskDef("c-2", deps=("b-1",)),
    ))
    out = run_scenario(Scenario(workload=graph), trace=tmp_path / "t.jsonl")
    assert out.results_ok and not out.violations
    where = finished_on(tmp_path / "t.jsonl")
    assert where["a-0"] == "w2" and where["b-1"] in ("w0", "w3")


def test_a_restricted_task_waits_for_its_worker_to_come_back(tmp_path: Path) -> None:
    graph = ExplicitGraph(tasks=(TaskDef("a-0", sim_duration=0.5, restrictions=("w1",)),))
    restart = (KillWorker(at=0.1, worker="w1"), JoinWorker(at=1.0, worker="w1"))
    out = run_scenario(Scenario(workload=graph, chaos=restart), trace=tmp_path / "t.jsonl")
    assert out.results_ok and not out.violations
    assert out.makespan >= 1.5  # started again only once w1 was back
    assert finished_on(tmp_path / "t.jsonl") == {"a-0": "w1"}


def test_balancing_moves_restricted_tasks_only_among_their_workers(tmp_path: Path) -> None:
    sc = queue_for_a_newcomer(joining=("w1", "w2"))  # w2 is idle too, and not allowed
    out = run_scenario(sc, trace=tmp_path / "t.jsonl")
    assert out.results_ok and not out.violations and out.steals > 0
    assert set(finished_on(tmp_path / "t.jsonl").values()) == {"w0", "w1"}


def test_an_allowed_worker_left_idle_beside_restricted_work_is_a_violation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = stealing.WorkStealing._choose_thief

    def never_for_restricted(self, ts, thieves, proj):  # type: ignore[no-untyped-def]
        return None if ts.restrictions else original(self, ts, thieves, proj)

    monkeypatch.setattr(stealing.WorkStealing, "_choose_thief", never_for_restricted)
    out = run_scenario(queue_for_a_newcomer())
    assert [v.invariant for v in out.violations] == ["steal.idle-worker-fed"]
    assert "'w1' has had nothing to do" in out.violations[0].detail


def test_restrictions_round_trip_and_bad_ones_name_the_task(tmp_path: Path) -> None:
    sc = queue_for_a_newcomer(2)
    path = tmp_path / "sc.json"
    path.write_bytes(scenario_to_json(sc))
    assert load_scenario(path) == sc
    never = Scenario(workload=ExplicitGraph(tasks=(TaskDef("a-0", restrictions=("w9",)),)))
    with pytest.raises(ScenarioError, match=r"^workload\.tasks\[0\]\.restrictions: task 'a-0' "
                       r"may run only on 'w9', a worker the cluster never has"):
        never.check()
    joins_later = Scenario(workload=never.workload, chaos=(JoinWorker(at=1.0, worker="w9"),))
    joins_later.check()


def test_exploration_keeps_restrictions_to_workers_that_stay_or_come_back() -> None:
    graph = ExplicitGraph(tasks=(
        TaskDef("a-0", restrictions=("w1",)),
        TaskDef("a-1", restrictions=("w1", "w2")),
        TaskDef("a-2", restrictions=("w3",)),
        TaskDef("a-3", restrictions=("w0",)),
    ))
    chaos = (KillWorker(at=0.5, worker="w1"),  # for good
             PauseWorker(at=0.5, worker="w3", seconds=3.0),  # may be declared dead
             KillWorker(at=0.5, worker="w0"), JoinWorker(at=0.5, worker="w0"))  # a restart
    kept = unstranded(graph, chaos)
    assert isinstance(kept, ExplicitGraph)
    assert [t.restrictions for t in kept.tasks] == [(), ("w2",), (), ("w0",)]
    # restarted, then killed again at the same time: gone for good (found by the 60 s
    # false-alarm search: fragile, seed 1)
    again = (*chaos, KillWorker(at=0.5, worker="w0"))
    kept = unstranded(graph, again)
    assert isinstance(kept, ExplicitGraph)
    assert [t.restrictions for t in kept.tasks] == [(), ("w2",), (), ()]
