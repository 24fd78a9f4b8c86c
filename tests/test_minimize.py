"""The minimizer: deterministic (a budget of candidate runs, never the clock), 1-minimal,
and what ``squall explore`` runs by default after Hypothesis' shrink."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from msgspec.structs import replace

import squall.scenarios.minimize as mz
from squall.chaos.injectors import JoinWorker, KillWorker, Partition
from squall.core.outcome import Outcome
from squall.mutants.catalog import MUTANTS, switched_on
from squall.mutants.examples import missing_data_with_fillers
from squall.mutants.measure import same_failure
from squall.scenarios.explore import SameFailure, explore
from squall.scenarios.minimize import MAX_CANDIDATES, minimize, redundant_parts
from squall.scenarios.model import ClusterShape, ExplicitGraph, Scenario, TaskDef
from squall.scenarios.runner import run_scenario

BUG = "missing-data-ignored"


class _Clock:
    """A stand-in for ``time`` in the minimizer: an hour passes at every judging."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_the_result_depends_on_the_candidates_counted_not_the_window_or_the_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    big = missing_data_with_fillers()
    m = MUTANTS[BUG]
    with m.active():
        first = run_scenario(big, validate=True)
    judge = same_failure(m, first)
    alone, out, tried = minimize(big, first, judge)
    assert 0 < tried < MAX_CANDIDATES and out.n_stimuli < first.n_stimuli

    judged: list[int] = []

    def many(candidates: list[Scenario]) -> list[Outcome | None]:
        judged.append(len(candidates))
        return [judge(c) for c in candidates]

    spread, spread_out, spread_tried = minimize(big, first, judge, window=4, judge_many=many)
    assert (spread, spread_out.n_stimuli, spread_tried) == (alone, out.n_stimuli, tried)
    assert max(judged) == 4 and sum(judged) >= tried  # windows judged past a kept one

    # A machine so slow (or loaded) that an hour passes at every run: the same result.
    clock = _Clock()
    monkeypatch.setattr(mz, "time", clock)

    def slow(candidate: Scenario) -> Outcome | None:
        clock.now += 3600.0
        return judge(candidate)

    assert minimize(big, first, slow)[0] == alone
    assert clock.now >= 3600.0 * tried

    # Cut short by the budget: the same cut whatever the window.
    budget = tried // 3
    cut, cut_out, cut_tried = minimize(big, first, judge, max_candidates=budget)
    assert cut_tried == budget and cut != alone
    assert minimize(big, first, judge, max_candidates=budget, window=4,
                    judge_many=many)[0] == cut


def test_a_minimized_mutant_failure_is_1_minimal() -> None:
    big = missing_data_with_fillers()
    m = MUTANTS[BUG]
    with m.active():
        first = run_scenario(big, validate=True)
    judge = same_failure(m, first)
    assert redundant_parts(big, judge)  # Hypothesis' shrink left tasks it does not need
    small, _, _ = minimize(big, first, judge)
    assert redundant_parts(small, judge) == []


def test_a_cluster_stuck_until_the_time_cap_shrinks_by_its_cycle_not_its_virtual_time() -> None:
    # w0 and w1 cannot reach each other, for good: b-2 waits for an input across the cut,
    # retried every second while heartbeats go on, until max_time -- thousands of stimuli.
    tasks = (TaskDef("a-0", sim_duration=0.01), TaskDef("a-1", sim_duration=0.3),
             TaskDef("b-2", deps=("a-0", "a-1"), sim_duration=0.01),
             TaskDef("c-3", sim_duration=0.2))
    big = Scenario(workload=ExplicitGraph(tasks=tasks),
                   cluster=ClusterShape(workers=3, max_time=600.0),
                   chaos=(Partition(at=0.0, worker="w0", peer="w1"),))
    first = run_scenario(big, validate=True)
    [v] = first.violations
    assert v.invariant == "liveness.progress" and v.time >= 600.0 and first.n_stimuli > 1000
    small, out, _ = minimize(big, first, SameFailure(first))
    assert out.violations[0].invariant == "liveness.progress"
    assert small.cluster.max_time < 10.0 and out.n_stimuli <= 30


def test_a_faster_clock_lets_go_the_work_that_only_waited_for_a_tick() -> None:
    # steal-to-stale-record as the benchmark's exploration left it after minimizing (46
    # stimuli): w1 restarted at 0, so w0 gets all 14 short tasks; w1 restarted again at
    # 0.1, the first tick, as the balancer steals for its old record. w0 must still have
    # a task queued at that tick, so none of the 14 can go, and no fault can move off the
    # tick. With the clock twice as fast and the faults twice as soon, the kill is still
    # on the first tick, which now comes while fewer tasks are queued.
    tasks = tuple(TaskDef(f"a-{i}", duration=0.01, sim_duration=0.01, nbytes=100)
                  for i in range(14))
    big = Scenario(workload=ExplicitGraph(tasks=tasks),
                   cluster=ClusterShape(workers=2, stealing=True, max_time=600.0),
                   chaos=(KillWorker(at=0.1, worker="w1"), JoinWorker(at=0.1, worker="w1"),
                          KillWorker(at=0.0, worker="w1"), JoinWorker(at=0.0, worker="w1")))
    m = MUTANTS["steal-to-stale-record"]
    assert run_scenario(big).ok
    with m.active():
        first = run_scenario(big, validate=True)
    assert first.violations[0].invariant == "task.processing-worker-running"
    assert first.n_stimuli > 40
    judge = same_failure(m, first)
    faster = replace(big, cluster=replace(big.cluster, tick_interval=0.05),
                     chaos=tuple(replace(f, at=f.at / 2) for f in big.chaos))
    assert faster in mz._simpler(big)
    assert judge(faster) is not None  # the same failure, on the same (first) tick
    small, out, _ = minimize(big, first, judge)
    assert small.cluster.tick_interval == 0.025
    assert sorted(f.at for f in small.chaos) == [0.0, 0.0, 0.025, 0.025]
    assert len(small.workload.tasks) < 14  # type: ignore[union-attr]
    assert out.n_stimuli <= 30 and redundant_parts(small, judge) == []


def test_explore_minimizes_its_shrunk_failure_by_default(tmp_path: Path) -> None:
    # unknown-duration-never-stolen, the default space, seed 2: Hypothesis leaves a
    # failure of some 30 stimuli in the first batches; minimize takes it further. (Seed
    # 0 found it in batch 23 once the client actions drew a second release.)
    bug = partial(switched_on, "unknown-duration-never-stolen")
    kept = explore(budget=600, seed=2, max_batches=20, job_context=bug,
                   out_dir=tmp_path / "kept", minimize_candidates=0)
    shrunk = kept.failure
    assert shrunk is not None and shrunk.outcome is not None and kept.minimized == 0
    result = explore(budget=600, seed=2, max_batches=20, job_context=bug,
                     out_dir=tmp_path / "default")
    f = result.failure
    assert f is not None and f.outcome is not None and f.violation is not None
    # what minimize makes of Hypothesis' shrunk failure, with the judge explore uses
    small, out, tried = minimize(shrunk.scenario, shrunk.outcome,
                                 SameFailure(shrunk.outcome, bug))
    assert result.minimized == tried > 0
    assert f.scenario == small and f.outcome.n_stimuli == out.n_stimuli
    assert f.outcome.n_stimuli < shrunk.outcome.n_stimuli


@pytest.mark.parametrize("value, fragment", [
    ("-1", "--minimize must be >= 0 candidate runs"),
    ("2.5", "--minimize must be a whole number of candidate runs"),
    ("lots", "--minimize must be a whole number of candidate runs"),
])
def test_a_bad_minimize_budget_gets_a_one_line_error(value: str, fragment: str,
                                                     tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli(["explore", "--minimize", value, "--out", str(tmp_path)])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
