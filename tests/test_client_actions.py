"""Client actions in scenarios (squall.chaos.clients): releases, re-requests, a second
client, cancels, resubmissions and late submissions, in the simulator (exact), with the
end-to-end checks, traces and replay, bad input, and the strategies that draw them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, settings

from squall.chaos.clients import CLIENT, ReleaseKeys, SubmitKeys, WantKeys
from squall.chaos.injectors import Heal, Partition
from squall.core import protocol as p
from squall.core.graph import TaskGraph, TaskSpec
from squall.core.oracle import expected_results
from squall.core.scheduler import SchedulerState
from squall.core.sim import SimCluster
from squall.scenarios.model import (
    ClusterShape,
    ExplicitGraph,
    Generated,
    Scenario,
    ScenarioError,
    TaskDef,
    scenario_from_json,
)
from squall.scenarios.replay import MATCH, REPRODUCED, replay_trace
from squall.scenarios.runner import check_runnable, run_scenario
from squall.scenarios.strategies import scenarios

# a -> b -> c (c is long), a -> d
CHAIN = ExplicitGraph(tasks=(
    TaskDef("a", sim_duration=0.1), TaskDef("b", deps=("a",), sim_duration=0.1),
    TaskDef("c", deps=("b",), sim_duration=1.0), TaskDef("d", deps=("a",), sim_duration=0.1)))
SECOND = "c2"


def chain() -> TaskGraph:
    return TaskGraph(TaskSpec(t.key, deps=t.deps, sim_duration=t.sim_duration)
                     for t in CHAIN.tasks)


def holds_right_value(cluster: SimCluster, key: str) -> bool:
    """The scheduler says ``key`` is in memory, and a live holder has its right value."""
    want = expected_results(cluster.graph)[key]
    ts = cluster.scheduler.tasks.get(key)
    return ts is not None and ts.state == "memory" and any(
        cluster.workers[ws.name].data.get(key) == want for ws in ts.who_has)


def run(chaos: tuple[Any, ...], tmp_path: Path | None = None, **shape: Any) -> Any:
    sc = Scenario(workload=CHAIN, cluster=ClusterShape(workers=2, **shape), chaos=chaos)
    sc.check()
    return run_scenario(sc, trace=None if tmp_path is None else tmp_path / "t.jsonl")


# ------------------------------------------------------------------ in the simulator


def test_a_key_released_mid_run_needs_no_result_and_is_forgotten() -> None:
    c = SimCluster(workers=2, validate=True)
    c.at(0.15, c.release_keys, CLIENT, ("c",))  # while c waits on b
    out = c.run(chain(), until=0.15)
    assert out.ok, (out.violations, out.wrong)
    assert "c" not in c.wanted and "c" not in c.results
    assert "c" not in c.scheduler.tasks  # forgotten: nobody wants it, nothing needs it
    assert c.runs.get("c", 0) == 0
    assert holds_right_value(c, "d")


def test_a_released_key_wanted_again_ends_with_the_right_result() -> None:
    c = SimCluster(workers=2, validate=True)
    c.at(2.0, c.release_keys, CLIENT, ("a", "b", "c", "d"))  # all done: all forgotten
    c.at(3.0, c.want_keys, CLIENT, ("c",))  # its tasks must be sent again
    out = c.run(chain(), until=3.0)
    assert out.ok, (out.violations, out.wrong)
    assert set(c.wanted) == {"c"} and c.results["c"][0] == "memory"
    assert holds_right_value(c, "c")
    assert c.runs == {"a": 2, "b": 2, "c": 2, "d": 1}  # computed again, not a duplicate


def test_a_second_client_keeps_its_result_when_the_first_releases_the_key() -> None:
    c = SimCluster(workers=2, validate=True)
    c.at(0.05, c.want_keys, SECOND, ("c",))
    c.at(0.5, c.release_keys, CLIENT, ("c",))
    out = c.run(chain(), until=0.5)
    assert out.ok, (out.violations, out.wrong)
    assert c.wanted_by["c"] == {SECOND} and "c" in c.results
    assert list(c.scheduler.tasks["c"].who_wants) == [SECOND]
    assert holds_right_value(c, "c")


def test_a_processing_task_released_is_cancelled_and_forgotten() -> None:
    c = SimCluster(workers=1, validate=True)
    c.submit(chain())
    c.advance(0.5)  # a, b done: c runs until 1.2
    assert c.scheduler.tasks["c"].state == "processing"
    c.release_keys(CLIENT, ["c"])
    assert "c" not in c.scheduler.tasks
    c.advance(0.01)  # the scheduler's "free" reaches the worker
    assert c.workers["w0"].state.tasks["c"].state == "cancelled"  # its body runs on
    out = c.drain()
    assert out.ok, (out.violations, out.wrong)
    assert "c" not in c.results
    c.advance(1.0)  # the cancelled body ends: its result is dropped
    assert "c" not in c.workers["w0"].state.tasks and "c" not in c.workers["w0"].data


def test_a_key_asked_for_again_while_it_runs_runs_once() -> None:
    c = SimCluster(workers=2, validate=True)
    c.submit(chain())
    c.advance(0.5)
    assert c.scheduler.tasks["c"].state == "processing"
    c.want_keys(CLIENT, ["c"])  # an UpdateGraph naming keys known and in flight
    c.want_keys(SECOND, ["c", "b"])
    out = c.drain()
    assert out.ok, (out.violations, out.wrong)
    assert c.runs == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert holds_right_value(c, "c")


def test_a_graph_submitted_during_a_partition_completes(tmp_path: Path) -> None:
    chaos = (Partition(at=0.05, worker="w0", seconds=3.0), SubmitKeys(at=0.5, keys=("c",)))
    out = run(chaos, tmp_path, heartbeat_timeout=1.0)
    assert out.ok, (out.violations, out.wrong)
    assert out.faults.get("submit") == 1 and out.faults.get("partition") == 1
    assert replay_trace(tmp_path / "t.jsonl").verdict == MATCH


def test_the_first_submission_leaves_out_what_is_submitted_late() -> None:
    c = SimCluster(workers=2, validate=True)
    c.submit(chain(), later=["c"])
    c.advance(1.0)
    assert "c" not in c.scheduler.tasks and "c" not in c.graph
    c.want_keys(CLIENT, ["c"])
    out = c.drain()
    assert out.ok and holds_right_value(c, "c")


def test_a_release_before_the_first_graph_arrives_follows_it() -> None:
    """A client's messages arrive in order: a release at time 0 is not overtaken."""
    c = SimCluster(workers=2, validate=True)
    c.at(0.0, c.release_keys, CLIENT, ("c",))
    out = c.run(chain())
    assert out.ok and "c" not in c.scheduler.tasks and c.runs.get("c", 0) == 0


# ------------------------------------------------------------------ the checks still bite


def _drops_every_client(self: SchedulerState, msg: p.ClientReleasesKeys) -> None:
    """BUG: a client's release drops every client's interest in the keys."""
    for key in msg.keys:
        ts = self.tasks.get(key)
        if ts is not None and msg.client in ts.who_wants:
            ts.who_wants.clear()
            if not ts.waiters and ts.state == "memory":
                self.transitions({ts: "released"})


def test_a_result_truly_lost_after_a_release_is_caught(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setattr(SchedulerState, "_handle_client_releases_keys", _drops_every_client)
    chaos = (WantKeys(at=0.05, client=SECOND, keys=("d",)),
             ReleaseKeys(at=1.5, keys=("d",)))
    out = run(chaos, tmp_path)
    assert [v.invariant for v in out.violations] == ["e2e.no-result-lost"], out.violations
    assert "'d'" in out.violations[0].entity
    assert replay_trace(tmp_path / "t.jsonl").verdict == REPRODUCED


def test_without_the_release_the_same_run_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SchedulerState, "_handle_client_releases_keys", _drops_every_client)
    out = run((WantKeys(at=0.05, client=SECOND, keys=("d",)),))
    assert out.ok, out.violations


def test_a_release_the_scheduler_ignores_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def ignores(self: SchedulerState, msg: p.ClientReleasesKeys) -> None:
        """BUG: the release is never applied (the key stays wanted, held for no one)."""

    monkeypatch.setattr(SchedulerState, "_handle_client_releases_keys", ignores)
    out = run((ReleaseKeys(at=0.15, keys=("d",)),))  # d ends long before c
    assert [v.invariant for v in out.violations] == ["cluster.wants-agree"], out.violations
    assert out.violations[0].entity == "task 'd'"


# ------------------------------------------------------------------ traces and replay


def test_a_trace_with_client_actions_replays_to_a_match(tmp_path: Path) -> None:
    chaos = (WantKeys(at=0.05, client=SECOND, keys=("c", "d")),
             ReleaseKeys(at=0.15, keys=("c",)), ReleaseKeys(at=0.3, keys=("b",)),
             WantKeys(at=2.0, keys=("c",)), SubmitKeys(at=0.2, keys=("d",)),
             ReleaseKeys(at=2.5, client=SECOND, keys=("c", "d")))
    out = run(chaos, tmp_path)
    assert out.ok, (out.violations, out.wrong)
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    ops = [x["m"]["op"] for x in lines if x["k"] == "s" and x["t"] == "scheduler"]
    assert ops.count("client-releases-keys") == 3 and ops.count("update-graph") == 4
    noted = [(x["m"]["kind"], x["m"]["target"]) for x in lines
             if x["k"] == "s" and x["t"] == "chaos"]
    assert noted == [("want_keys", SECOND), ("release_keys", CLIENT), ("want_keys", CLIENT),
                     ("release_keys", CLIENT), ("want_keys", CLIENT),
                     ("release_keys", SECOND)]
    result = replay_trace(tmp_path / "t.jsonl")
    assert result.verdict == MATCH, result.message


# ------------------------------------------------------------------ bad input


def _scenario(chaos: list[dict[str, Any]]) -> str:
    return json.dumps({"workload": {"type": "graph", "tasks": [["a"], ["b", ["a"]]]},
                       "chaos": chaos})


@pytest.mark.parametrize(("action", "names"), [
    ({"kind": "release", "keys": []}, ["chaos[0]", "'keys'"]),
    ({"kind": "want", "keys": ["zz"]}, ["chaos[0].keys", "'zz'"]),
    ({"kind": "want", "keys": "a"}, ["$.chaos[0].keys"]),
    ({"kind": "release", "keys": ["a"], "client": ""}, ["chaos[0]", "'client'"]),
    ({"kind": "want", "keys": ["a", "a"]}, ["chaos[0]", "'keys'", "'a'"]),
    ({"kind": "submit", "keys": ["a"]}, ["chaos[0].keys", "'a'", "'b'"]),
    ({"kind": "submit", "keys": ["b"], "at": -1}, ["chaos[0]", "'at'"]),
    ({"kind": "release", "keys": ["a"], "who": "x"}, ["$.chaos[0]", "`who`"]),
])
def test_bad_client_action_fields_are_one_line_errors(action: dict[str, Any],
                                                      names: list[str]) -> None:
    with pytest.raises(ScenarioError) as e:
        scenario_from_json(_scenario([action]), "s.json")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("s.json: ")
    for name in names:
        assert name in msg, (name, msg)


def test_a_bad_client_action_is_exit_2_from_the_cli(tmp_path: Path, run_cli: Any) -> None:
    path = tmp_path / "s.json"
    path.write_text(_scenario([{"kind": "release", "at": 0.1, "keys": ["nope"]}]))
    code, _, err = run_cli(["run", str(path), "--no-trace"])
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "chaos[0].keys" in err and "'nope'" in err


@pytest.mark.parametrize("runtime", ["real", "dask"])
def test_runtimes_of_real_processes_refuse_client_actions(runtime: str) -> None:
    sc = Scenario(workload=CHAIN, runtime=runtime, chaos=(ReleaseKeys(at=0.1, keys=("c",)),))
    with pytest.raises(ScenarioError, match=r"chaos\[0\] \(release\): client actions"):
        check_runnable(sc)


# ------------------------------------------------------------------ strategies

# the first example that fits (not shrunk: drawing scenarios is what takes time here)
FIRST_FOUND = settings(max_examples=3000, database=None, phases=(Phase.generate,), derandomize=True,
                       suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("kind", [ReleaseKeys, WantKeys, SubmitKeys])
def test_the_default_space_draws_each_client_action(kind: type) -> None:
    found = find(scenarios("all"), lambda sc: any(isinstance(f, kind) for f in sc.chaos),
                 settings=FIRST_FOUND)
    found.check()  # what is drawn is valid (keys of its graph, late ones closed)


def test_drawn_client_actions_name_keys_of_a_generated_graph() -> None:
    found = find(scenarios("medium"), lambda sc: isinstance(sc.workload, Generated) and any(
        isinstance(f, WantKeys) for f in sc.chaos),
        settings=FIRST_FOUND)
    found.check()
    out = run_scenario(found)
    assert out.ok or out.budget_exceeded, out.violations


def test_dropping_a_client_action_leaves_a_valid_scenario() -> None:
    sc = Scenario(workload=CHAIN, chaos=(Partition(at=0.1, worker="w0"), Heal(at=3.0),
                                         SubmitKeys(at=0.2, keys=("c",)),
                                         WantKeys(at=0.5, keys=("c",))))
    sc.check()
    for i in range(len(sc.chaos)):
        Scenario(workload=sc.workload, chaos=sc.chaos[:i] + sc.chaos[i + 1:]).check()


def test_an_erred_input_released_while_its_dependents_are_wanted_does_not_run_again() -> None:
    """Its error stands for its (erred, still wanted) dependents; it goes with them."""
    c = SimCluster(workers=2, validate=True)
    g = TaskGraph([TaskSpec("x", sim_duration=0.1, fails=True),
                   TaskSpec("y", deps=("x",), sim_duration=0.1)])
    c.at(1.0, c.release_keys, CLIENT, ("x",))
    c.at(2.0, c.release_keys, CLIENT, ("y",))
    out = c.run(g, until=2.0)
    assert out.ok and c.runs == {"x": 1}
    assert not c.scheduler.tasks  # both forgotten once nobody wants either


def test_a_waiting_input_nobody_wants_is_let_go_clean_when_its_dependent_errs() -> None:
    """x fails; y (an input of z, wanted by no client: sent along with z) and z wait on x.
    z errs first and lets y go: y is released, blamed on no one (task.blame-iff-erred),
    and erred once a client wants it."""
    c = SimCluster(workers=1, validate=True)
    g = TaskGraph([TaskSpec("x", sim_duration=0.1, fails=True),
                   TaskSpec("y", deps=("x",), sim_duration=0.1),
                   TaskSpec("z", deps=("x", "y"), sim_duration=0.1)])
    c.submit(g, later=["y", "z"])
    c.want_keys(CLIENT, ["z"])  # y goes along with z, wanted by nobody
    c.advance(1.0)
    y = c.scheduler.tasks["y"]
    assert y.state == "released" and y.exception_blame is None
    assert c.results["z"] == ("erred", "error:x")
    c.want_keys(CLIENT, ["y"])
    out = c.drain()
    assert out.ok and c.results["y"] == ("erred", "error:x") and c.runs == {"x": 1}
