"""Bug-finding power without false alarms: liveness that knows slow from stuck, a worker
the scheduler declared dead that need not settle, no violation in any scenario space with
no bug planted, and the default exploration space that searches every space."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.chaos.injectors import ChaosDriver, Heal, JoinWorker, Partition
from squall.core import protocol as p
from squall.core.sim import SimCluster, SimulationError, TimeBudgetExceeded
from squall.core.worker import WorkerTaskState
from squall.invariants.cluster_checks import worker_tasks_settled
from squall.mutants import measure
from squall.mutants.catalog import CATALOG, mutant
from squall.scenarios import explore as explore_mod
from squall.scenarios.explore import ExploreResult, ExploreStats, explore
from squall.scenarios.model import ClusterShape, ExplicitGraph, Generated, Scenario, TaskDef
from squall.scenarios.replay import MATCH, replay_trace
from squall.scenarios.runner import run_scenario, violation_from
from squall.scenarios.strategies import (
    SCENARIO_SPACES,
    SWARM,
    check_space,
    scenarios,
    time_budget,
)
from squall.scenarios.workloads import WORKLOADS, make_workload

# The false alarm of the issue: 34 long tasks (5-30 s each) on one thread take longer than
# 600 virtual seconds; nothing is stuck.
SLOW = Scenario(workload=Generated(name="few-long", tasks=34, seed=1),
                cluster=ClusterShape(workers=1, max_time=600.0))


# ------------------------------------------------------------------ slow is not stuck


def test_a_run_still_executing_at_max_time_is_over_budget_not_stuck() -> None:
    cluster = SimCluster(workers=1, threads=1, seed=0, validate=True, max_time=100.0)
    with pytest.raises(TimeBudgetExceeded, match=r"still progressing \(1 task\(s\) executing"):
        cluster.run(make_workload("few-long", 34, seed=1))


def test_a_cluster_that_keeps_busy_but_does_nothing_is_still_stuck_at_max_time() -> None:
    # events keep coming (the stall detector never fires), but nobody can run the task
    cluster = SimCluster(workers=0, seed=0, validate=False, max_time=20.0)

    def noise() -> None:
        cluster.at(cluster.now + 1.0, noise)

    cluster.at(0.0, noise)
    with pytest.raises(SimulationError, match="cluster stuck at t=2.*max_time=20;") as e:
        cluster.run(make_workload("independent", 1))
    assert not isinstance(e.value, TimeBudgetExceeded)


def test_a_rerun_beyond_what_deaths_explain_is_no_progress() -> None:
    cluster = SimCluster(workers=1, threads=1, seed=0, validate=False, max_time=100.0)
    cluster.submit(make_workload("few-long", 1, seed=1))
    cluster.advance(1.0)  # long-0 is executing, for the first time
    assert "long-0" in cluster._progressing()
    cluster.runs["long-0"] = 3  # as if its body had started twice before, nobody dying
    assert cluster._progressing() == ""


def test_an_over_budget_run_is_no_violation_and_its_trace_replays(tmp_path: Path,
                                                                  run_cli: Any) -> None:
    trace = tmp_path / "slow.jsonl"
    outcome = run_scenario(SLOW, trace=trace)
    assert outcome.violations == [] and not outcome.failed and not outcome.ok
    assert "max_time=600" in outcome.budget_exceeded
    assert "'long-33'" in outcome.budget_exceeded  # what was still running
    result = replay_trace(trace)
    assert result.verdict == MATCH, result.message
    assert "time budget" in result.message
    assert violation_from(TimeBudgetExceeded("slow")) is None
    code, out, _ = run_cli(["run", str(_scenario_file(tmp_path, SLOW)), "--no-trace"])
    assert code == 1 and "time budget exceeded" in out and "slow, not stuck" in out


def test_exploration_counts_an_over_budget_run_and_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(explore_mod, "scenarios", lambda space, **_: st.just(SLOW))
    result = explore(budget=300, seed=0, out_dir=tmp_path, max_scenarios=1)
    assert result.failure is None
    assert result.stats.over_budget >= 1 and result.stats.failures == 0


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_the_drawn_time_budget_scales_with_the_work(name: str) -> None:
    # the largest generated workload of the medium space, on the smallest, slowest cluster
    scenario = Scenario(
        workload=Generated(name=name, tasks=SCENARIO_SPACES["medium"]["tasks"], seed=1),
        cluster=ClusterShape(workers=1, threads=1, latency=0.01, bandwidth=10e6))
    capped = Scenario(workload=scenario.workload, cluster=ClusterShape(
        workers=1, threads=1, latency=0.01, bandwidth=10e6, max_time=time_budget(scenario)))
    outcome = run_scenario(capped)
    assert outcome.ok, (outcome.budget_exceeded, outcome.violations, outcome.wrong)
    assert outcome.makespan * 2 < capped.cluster.max_time


@settings(max_examples=20, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(scenarios("medium"))
def test_drawn_scenarios_carry_the_time_budget_of_their_work(scenario: Scenario) -> None:
    assert scenario.cluster.max_time == time_budget(scenario) >= 600.0


# ------------------------------------------------------------------ a worker declared dead


# (found by `squall explore --scenario-space fragile --seed 1`): w2 is cut off and declared
# dead while waiting for an input; the run ends (on the workers that joined and stayed)
# before the heal lets its next heartbeat be refused and a "close" reach it.
ZOMBIE = Scenario(
    workload=ExplicitGraph(tasks=(
        TaskDef("a-0"), TaskDef("a-1"), TaskDef("a-2"), TaskDef("a-3", deps=("a-2",)),
        TaskDef("a-4", deps=("a-3",)), TaskDef("a-5"),
        TaskDef("a-6", deps=("a-3", "a-4", "a-5")), TaskDef("a-7"))),
    cluster=ClusterShape(workers=3, heartbeat_timeout=2.0, max_time=600.0),
    chaos=(Partition(at=0.03, worker="w0"), Partition(at=1.01, worker="w2"),
           Heal(at=4.01), JoinWorker(at=4.01)))


def test_a_worker_declared_dead_that_cannot_hear_it_need_not_settle(tmp_path: Path) -> None:
    trace = tmp_path / "zombie.jsonl"
    outcome = run_scenario(ZOMBIE, trace=trace)
    assert outcome.ok, outcome.violations
    assert replay_trace(trace).verdict == MATCH


def test_a_worker_declared_dead_is_left_out_of_the_settled_check_a_member_is_not() -> None:
    cluster = SimCluster(workers=3, seed=0, validate=True, heartbeat_timeout=2.0)
    ChaosDriver(cluster).schedule(cluster.at, ZOMBIE.chaos)
    cluster.run(ZOMBIE.graph())
    zombie = cluster.workers["w2"]
    assert zombie.alive and zombie.forgotten and "w2" not in cluster.scheduler.workers
    assert any(wt.state != WorkerTaskState.MEMORY for wt in zombie.state.tasks.values())
    assert cluster.validator is not None
    assert worker_tasks_settled(cluster.validator) is None
    # an unsettled task on a member: stuck work, named
    cluster.workers["w1"].state.handle(p.ComputeTask(
        stimulus_id="stray", time=cluster.now, worker="w1", key="stray-0", prefix="stray",
        priority=(0, 0), duration=1.0))
    found = worker_tasks_settled(cluster.validator)
    assert found is not None and found[0].startswith("worker 'w1'"), found


# ------------------------------------------------------------------ no false alarm anywhere


@pytest.mark.squall_property
@pytest.mark.parametrize("space", [*SCENARIO_SPACES, SWARM])
def test_no_false_alarm_in_any_space(space: str, tmp_path: Path) -> None:
    """No bug planted: every space, seeds 0-4, 50 scenarios each (two Hypothesis batches:
    the same scenarios on every run), and no violation, no wrong result."""
    for seed in range(5):
        result = explore(budget=600, seed=seed, space=space, out_dir=tmp_path,
                         max_scenarios=50, keep_going=True)
        s = result.stats
        assert s.scenarios == 50
        assert s.failures == 0, (f"space {space}, seed {seed}: {s.failures} failing "
                                 f"scenarios; first: {s.first_failure}: "
                                 f"{s.first_failure_scenario}")


# ------------------------------------------------------------------ the swarm, by default


def test_explore_and_the_cli_search_every_space_by_default(run_cli: Any,
                                                           tmp_path: Path) -> None:
    assert inspect.signature(explore).parameters["space"].default == SWARM == "all"
    code, out, _ = run_cli(["explore", "--budget", "0.5", "--seed", "1", "--out",
                            str(tmp_path)])
    assert code == 0 and "space all" in out, out
    code, _, err = run_cli(["explore", "--scenario-space", "huge"])
    assert code == 2 and "choose one of: all, small" in err
    with pytest.raises(ValueError, match="choose one of: all, small"):
        check_space("huge")


def test_the_swarm_draws_from_every_space() -> None:
    seen: list[Scenario] = []

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(scenarios(SWARM))
    def draw(scenario: Scenario) -> None:
        seen.append(scenario)

    draw()
    generated = [s for s in seen if isinstance(s.workload, Generated)]  # medium only
    fragile = [s for s in seen if s.cluster.allowed_failures != 3]  # fragile only
    stealing = [s for s in seen if s.cluster.stealing]
    calm = [s for s in seen if not s.chaos]
    many_faults = [s for s in seen if len(s.chaos) >= 5]  # storm (or medium)
    for what, found in (("generated", generated), ("fragile", fragile),
                        ("stealing", stealing), ("calm", calm), ("many faults", many_faults)):
        assert found, f"no {what} scenario among {len(seen)} drawn"
    assert len(stealing) < len(seen) and len(calm) < len(seen)


def test_the_swarm_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    def counts(seed: int) -> tuple[int, int, int]:
        s = explore(budget=600, seed=seed, out_dir=tmp_path, max_scenarios=25,
                    keep_going=True).stats
        return s.scenarios, s.transitions, s.stimuli

    assert counts(7) == counts(7) != counts(8)


def test_mutants_explore_their_own_space_unless_told_otherwise(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spaces: list[str] = []

    def fake_explore(**kwargs: Any) -> ExploreResult:
        spaces.append(kwargs["space"])
        return ExploreResult(ExploreStats(scenarios=1), 0.1, 1)

    monkeypatch.setattr(measure, "explore", fake_explore)
    m = mutant("retry-limit-ignored")
    assert m.space == "fragile"
    measure.run_mutants([m], budget=1, out_dir=str(tmp_path))
    assert spaces == ["fragile", "fragile"]  # the mutant, then the baseline
    spaces.clear()
    measure.run_mutants([m, CATALOG[0]], budget=1, out_dir=str(tmp_path), space=SWARM)
    assert spaces == [SWARM, SWARM, SWARM]


def _scenario_file(tmp_path: Path, scenario: Scenario) -> Path:
    from squall.scenarios.model import scenario_to_json

    path = tmp_path / "scenario.json"
    path.write_bytes(scenario_to_json(scenario))
    return path
