"""The seams: the simulator's stepping API, the validator's phase, the reference Target."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from squall.chaos.injectors import ChaosDriver, KillWorker
from squall.core.graph import GraphError, TaskGraph, TaskSpec
from squall.core.sim import SimCluster
from squall.core.view import REAL, SIM
from squall.invariants import InvariantViolation
from squall.invariants.cluster_validator import END, QUIESCENT, RUNNING, STUCK
from squall.scenarios.model import ClusterShape, Generated, LinkSpec, Scenario
from squall.scenarios.runner import RuntimeUnavailable, run_scenario
from squall.scenarios.workloads import independent, make_workload
from squall.targets import ReferenceTarget

# ---------------------------------------------------------------- submit, advance, drain


def test_run_is_submit_then_drain_with_the_same_stream() -> None:
    ran = SimCluster(workers=3, seed=3, stealing=True).run(make_workload("random-dag", 200, 3))
    c = SimCluster(workers=3, seed=3, stealing=True)
    c.submit(make_workload("random-dag", 200, 3))
    drained = c.drain()
    assert drained.results_ok and ran.results_ok
    assert (drained.digest, drained.n_stimuli, drained.makespan) == \
        (ran.digest, ran.n_stimuli, ran.makespan)


def test_advance_runs_what_is_due_and_moves_the_clock() -> None:
    c = SimCluster(workers=2, seed=0, heartbeat_interval=None)
    c.submit(TaskGraph([TaskSpec("a-0", sim_duration=1.0),
                        TaskSpec("b-0", deps=("a-0",), sim_duration=1.0)]))
    c.advance(0.5)
    assert c.now == 0.5 and c.results == {} and c.pending > 0  # a-0 is running
    c.advance(1.0)
    assert c.now == 1.5 and set(c.results) == {"a-0"}  # b-0 is running
    outcome = c.drain()
    assert outcome.results_ok and set(c.results) == {"a-0", "b-0"}
    assert 2.0 < outcome.makespan < 2.1 and c.pending == 0


def test_later_graphs_build_on_earlier_keys_and_the_wanted_keys_are_public() -> None:
    c = SimCluster(workers=2, seed=0, validate=True)
    first = TaskGraph([TaskSpec("x-0", sim_duration=0.1)])
    c.submit(first)
    c.advance(1.0)
    assert c.wanted == {"x-0"} and set(c.results) == {"x-0"}
    c.submit(TaskGraph([TaskSpec("y-0", deps=("x-0",)), TaskSpec("z-0", deps=("y-0",))]),
             wanted=["z-0"])
    assert c.wanted == {"x-0", "z-0"}
    assert set(c.graph.tasks) == {"x-0", "y-0", "z-0"}
    assert set(first.tasks) == {"x-0"}  # the caller's graph is never extended
    outcome = c.drain()
    assert outcome.results_ok and outcome.n_tasks == 3
    assert set(c.results) == {"x-0", "z-0"}  # y-0 nobody wants: computed, not reported


def test_submit_refuses_a_key_twice_a_missing_input_and_a_wanted_key_it_never_got() -> None:
    c = SimCluster(workers=1, seed=0)
    c.submit(TaskGraph([TaskSpec("x-0")]))
    with pytest.raises(GraphError, match="submitted before"):
        c.submit(TaskGraph([TaskSpec("x-0")]))
    with pytest.raises(GraphError, match="missing key"):
        c.submit(TaskGraph([TaskSpec("y-0", deps=("nope-0",))]))
    with pytest.raises(GraphError, match="never submitted"):
        c.submit(TaskGraph([TaskSpec("y-0")]), wanted=["q-0"])
    with pytest.raises(ValueError, match="seconds >= 0"):
        c.advance(-1.0)
    assert c.drain().results_ok and set(c.graph.tasks) == {"x-0"}  # nothing refused stuck


# ---------------------------------------------------------------- the validator's phase


def _finished() -> tuple[SimCluster, Any]:
    c = SimCluster(workers=2, seed=0, validate=True)
    assert c.validator is not None and c.validator.phase == RUNNING
    assert c.run(independent(4)).results_ok and c.pending == 0
    return c, c.validator


def test_checks_that_find_nothing_leave_the_validator_running() -> None:
    c, v = _finished()
    assert v.phase == RUNNING  # the end checks ran and passed
    v.check_stuck(c, "asked")
    assert v.phase == RUNNING


@pytest.mark.parametrize("check, phase", [
    (lambda c, v: v.check_end(c), END),
    (lambda c, v: v.quiescent(c), QUIESCENT),
    (lambda c, v: v.check_stuck(c, "asked"), STUCK),
])
def test_the_validator_says_which_checks_found_a_violation(check: Any, phase: str) -> None:
    c, v = _finished()
    del c.results["task-1"]  # the client never heard of a key it wants
    with pytest.raises(InvariantViolation, match="liveness.wanted-key-reported"):
        check(c, v)
    assert v.phase == phase


# ---------------------------------------------------------------- the reference Target

SCENARIO = Scenario(workload=Generated(name="tree", tasks=30), seed=4,
                    cluster=ClusterShape(workers=3, links=(LinkSpec(worker="w1", latency=0.01),)),
                    chaos=(KillWorker(at=0.05, worker="w0"),))


def test_the_reference_target_runs_a_scenario_in_the_simulator() -> None:
    target = ReferenceTarget()
    assert target.name == "reference" and target.runtimes == (SIM, REAL)
    outcome = run_scenario(SCENARIO, target=target)
    assert outcome.ok and outcome.faults == {"kill": 1}  # the starting link is no fault

    # By hand, the same: a fault surface that is its own view, with a stimulus log.
    cluster = target.start(SIM, SCENARIO.cluster, seed=SCENARIO.seed)
    assert isinstance(cluster, SimCluster)
    view = target.view(cluster)
    assert view is cluster and set(view.workers) == {"w0", "w1", "w2"}
    receivers: list[str] = []
    target.log_stimuli(cluster, lambda receiver, stimulus: receivers.append(receiver))
    ChaosDriver(cluster).schedule(cluster.at, SCENARIO.chaos)
    by_hand = cluster.run(SCENARIO.graph())
    assert by_hand.digest == outcome.digest and len(receivers) == by_hand.n_stimuli
    assert {"scheduler", "w1", "w2"} <= set(receivers)
    assert "w0" not in view.workers and view.runs and view.wanted == set(view.graph.tasks)


def test_a_runtime_the_target_does_not_offer_is_one_line() -> None:
    class SimOnly(ReferenceTarget):
        name = "sim-only"
        runtimes = (SIM,)

    real = msgspec.structs.replace(SCENARIO, runtime="real")
    with pytest.raises(RuntimeUnavailable, match="target 'sim-only' has no runtime 'real'; "
                                                 "it offers: sim"):
        run_scenario(real, target=SimOnly())
    with pytest.raises(ValueError, match="target 'reference' has no runtime 'quantum'"):
        ReferenceTarget().start("quantum", SCENARIO.cluster)
