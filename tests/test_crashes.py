"""A state machine's handler that raises is a violation like any other: traced, replayed and
minimized as the same crash; an exception in squall's own code is not the scheduler's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from squall.core import protocol as p
from squall.core.scheduler import SchedulerState
from squall.core.sim import SimCluster
from squall.scenarios.explore import SameFailure
from squall.scenarios.minimize import minimize
from squall.scenarios.model import ClusterShape, ExplicitGraph, Scenario, TaskDef
from squall.scenarios.replay import REPRODUCED, replay_trace
from squall.scenarios.runner import run_scenario


def errs_badly(self: SchedulerState, msg: p.TaskErred) -> None:
    """BUG: the handler of a task's error raises (as a mistyped operator would)."""
    raise TypeError("unsupported operand type(s) for |: 'float' and 'float'")


def failing_among_others() -> Scenario:
    tasks = tuple(TaskDef(f"a-{i}", sim_duration=0.1) for i in range(6))
    return Scenario(workload=ExplicitGraph(tasks=(*tasks, TaskDef("b-6", fails=True))),
                    cluster=ClusterShape(workers=3))


def test_a_handler_that_raises_is_a_violation_that_replays(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(SchedulerState, "_handle_task_erred", errs_badly)
    out = run_scenario(failing_among_others(), trace=tmp_path / "t.jsonl")
    assert [v.invariant for v in out.violations] == ["scheduler.handles-every-stimulus"]
    violation = out.violations[0]
    assert violation.entity.startswith("TypeError at scheduler.py:")
    assert violation.detail == ("TypeError: unsupported operand type(s) for |: 'float' and "
                                "'float'")
    assert replay_trace(tmp_path / "t.jsonl").verdict == REPRODUCED


def test_a_crash_is_minimized_to_the_same_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SchedulerState, "_handle_task_erred", errs_badly)
    scenario = failing_among_others()
    first = run_scenario(scenario)
    smallest, out, _ = minimize(scenario, first, SameFailure(first))
    assert isinstance(smallest.workload, ExplicitGraph)
    assert [t.key for t in smallest.workload.tasks] == ["b-6"]
    assert smallest.cluster.workers == 1
    assert out.violations[0].entity == first.violations[0].entity


def test_a_different_crash_is_not_the_same_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SchedulerState, "_handle_task_erred", errs_badly)
    first = run_scenario(failing_among_others())

    def finishes_badly(self: SchedulerState, msg: Any) -> None:
        raise KeyError(msg.key)

    monkeypatch.setattr(SchedulerState, "_handle_task_finished", finishes_badly)
    assert SameFailure(first)(failing_among_others()) is None  # a KeyError elsewhere now


def test_an_exception_in_squall_itself_is_raised_not_blamed_on_the_scheduler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: SimCluster, *args: Any) -> Any:
        raise RuntimeError("the simulator's own bug")

    monkeypatch.setattr(SimCluster, "_outcome", broken)
    with pytest.raises(RuntimeError, match="the simulator's own bug"):
        run_scenario(failing_among_others())
