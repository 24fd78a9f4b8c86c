"""The reference scheduler and worker, driven by the simulator and directly."""

from __future__ import annotations

import msgspec
import pytest

from squall.cli.main import main
from squall.core import protocol as p
from squall.core.graph import GraphError, TaskGraph, TaskSpec
from squall.core.scheduler import SchedulerState, SchedulerTaskState, heartbeat_interval
from squall.core.sim import SimCluster
from squall.core.worker import WORKER_TRANSITIONS, WorkerState, WorkerTaskState
from squall.scenarios.workloads import WORKLOADS, independent, make_workload, tree_reduction


def _record_transitions(cluster: SimCluster, seen: set[tuple[str, str]]) -> None:
    cluster.scheduler.observers.append(lambda s, ts, a, b, sid: seen.add((a, b)))


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_workload_gives_right_results(name: str) -> None:
    outcome = SimCluster(workers=3, seed=1).run(make_workload(name, 60, seed=1))
    assert outcome.results_ok, outcome.wrong
    assert outcome.n_tasks >= 60


def test_every_transition_in_the_table_is_exercised() -> None:
    seen: set[tuple[str, str]] = set()

    # no workers at first: waiting -> no-worker -> processing when one joins
    c = SimCluster(workers=0, seed=0)
    _record_transitions(c, seen)
    c.at(1.0, c.add_worker)
    assert c.run(make_workload("chain", 5)).results_ok

    # a task that raises: processing -> erred, its dependents waiting -> erred
    g = TaskGraph([TaskSpec("a-0", duration=0.1), TaskSpec("bad-0", deps=("a-0",), fails=True),
                   TaskSpec("c-0", deps=("bad-0",))])
    c = SimCluster(workers=2, seed=0)
    _record_transitions(c, seen)
    out = c.run(g)
    assert out.results_ok and out.n_erred == 2
    # the client releases everything: memory/erred -> released -> forgotten
    c.scheduler.handle(p.ClientReleasesKeys(stimulus_id="rel", time=c.now, client="client",
                                            keys=("a-0", "bad-0", "c-0")))
    assert c.scheduler.tasks == {}

    # a worker dies: processing -> released, memory -> released (recomputed)
    c = SimCluster(workers=2, seed=0)
    _record_transitions(c, seen)
    c.at(0.35, c.kill_worker, "w0")
    assert c.run(make_workload("tree", 16)).results_ok

    # the client releases keys still waiting, no-worker and processing
    s = SchedulerState()
    s.observers.append(lambda st, ts, a, b, sid: seen.add((a, b)))
    s.handle(p.UpdateGraph(stimulus_id="g", time=0, client="c", wanted=("x-0", "y-0"),
                           tasks=(p.TaskSpecMsg("x-0"), p.TaskSpecMsg("y-0", deps=("x-0",)))))
    s.handle(p.ClientReleasesKeys(stimulus_id="r", time=0, client="c", keys=("x-0", "y-0")))
    s.handle(p.AddWorker(stimulus_id="w", time=0, worker="w0"))
    s.handle(p.UpdateGraph(stimulus_id="g2", time=0, client="c", wanted=("z-0",),
                           tasks=(p.TaskSpecMsg("z-0"),)))
    s.handle(p.ClientReleasesKeys(stimulus_id="r2", time=0, client="c", keys=("z-0",)))

    missing = set(SchedulerState.TRANSITIONS) - seen
    assert not missing, f"never exercised: {sorted(missing)}"
    assert seen <= set(SchedulerState.TRANSITIONS) | {(a, "forgotten") for a in ("released",)}


def test_the_worker_dispatches_exactly_its_transitions_through_its_table() -> None:
    ws = WorkerState("w0")
    moves = {(start, finish) for start, row in ws._table.items() for finish in row}
    assert moves == WORKER_TRANSITIONS
    # States are StrEnum members: their values are the names traces and messages carry.
    assert [str(s) for s in WorkerTaskState] == [
        "waiting", "ready", "executing", "cancelled", "memory", "error", "fetch", "flight",
        "missing", "released"]
    assert msgspec.json.encode([WorkerTaskState.MEMORY, SchedulerTaskState.NO_WORKER]) \
        == b'["memory","no-worker"]'


@pytest.mark.parametrize("kill_at", [0.0, 0.05, 0.5, 1.2, 2.0])
def test_worker_killed_mid_run_still_yields_every_key(kill_at: float) -> None:
    graph = tree_reduction(64, duration=0.1)  # makespan about 2.5 virtual seconds
    c = SimCluster(workers=3, seed=2)
    c.at(kill_at, c.kill_worker, "w1")
    out = c.run(graph)
    assert out.results_ok, out.wrong
    assert out.faults == {"kill": 1}


def test_data_lost_with_its_worker_is_recomputed_from_lineage() -> None:
    # Long leaves on all workers; w0 dies after its leaves finished but before the
    # reductions that need them ran: they must be computed again.
    g = TaskGraph()
    for i in range(8):
        g.add_spec(TaskSpec(f"leaf-{i}", duration=1.0))
    g.add_spec(TaskSpec("slow-0", duration=5.0))
    g.add_spec(TaskSpec("sum-0", deps=tuple(f"leaf-{i}" for i in range(8)) + ("slow-0",)))
    c = SimCluster(workers=3, seed=0)
    c.at(3.5, c.kill_worker, "w0")
    out = c.run(g)
    assert out.results_ok, out.wrong
    assert any(k.startswith("leaf-") for k in out.runs), "lost leaves were not recomputed"


def test_same_seed_same_digest_and_different_seed_different_digest() -> None:
    def run(seed: int) -> str:
        c = SimCluster(workers=4, seed=seed, jitter=0.0005)
        c.at(0.3, c.kill_worker, "w2")
        return c.run(make_workload("random-dag", 300, seed=7)).digest

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_independent_tasks_spread_over_all_workers() -> None:
    out = SimCluster(workers=5, seed=0).run(make_workload("independent", 100))
    assert out.results_ok
    assert len(out.busy) == 5
    assert max(out.busy.values()) - min(out.busy.values()) <= 0.1 + 1e-9


def _one_worker_holds(s: SchedulerState, key: str, worker: str, nbytes: int) -> None:
    s.handle(p.UpdateGraph(stimulus_id="g1", time=0, client="c", wanted=(key,),
                           tasks=(p.TaskSpecMsg(key, restrictions=(worker,)),)))
    s.handle(p.TaskFinished(stimulus_id="f1", time=1, worker=worker, key=key, nbytes=nbytes,
                            duration=1.0))


def test_placement_prefers_the_worker_holding_a_large_input() -> None:
    s = SchedulerState()
    for name in ("w0", "w1", "w2"):
        s.handle(p.AddWorker(stimulus_id=f"add-{name}", time=0, worker=name))
    _one_worker_holds(s, "big-0", "w1", 500_000_000)
    out = s.handle(p.UpdateGraph(stimulus_id="g2", time=1, client="c", wanted=("use-0",),
                                 tasks=(p.TaskSpecMsg("use-0", deps=("big-0",)),)))
    compute = [m for m in out if isinstance(m, p.ComputeTask)]
    assert [m.worker for m in compute] == ["w1"]


def test_a_stale_completion_report_is_ignored() -> None:
    s = SchedulerState()
    for name in ("w0", "w1"):
        s.handle(p.AddWorker(stimulus_id=f"add-{name}", time=0, worker=name))
    out = s.handle(p.UpdateGraph(stimulus_id="g", time=0, client="c", wanted=("x-0",),
                                 tasks=(p.TaskSpecMsg("x-0"),)))
    owner = next(m.worker for m in out if isinstance(m, p.ComputeTask))
    other = "w1" if owner == "w0" else "w0"
    out = s.handle(p.TaskFinished(stimulus_id="stale", time=1, worker=other, key="x-0",
                                  nbytes=10, duration=1.0))
    ts = s.tasks["x-0"]
    assert ts.state == "processing" and ts.processing_on is not None
    assert ts.processing_on.name == owner
    assert s.stale_reports == 1
    assert not any(isinstance(m, p.KeyInMemory) for m in out)


def test_a_task_whose_worker_keeps_dying_is_erred_after_allowed_failures() -> None:
    s = SchedulerState(allowed_failures=2)
    s.handle(p.UpdateGraph(stimulus_id="g", time=0, client="c", wanted=("boom-0",),
                           tasks=(p.TaskSpecMsg("boom-0"),)))
    erred: list[p.KeyErred] = []
    for i in range(3):
        s.handle(p.AddWorker(stimulus_id=f"add-{i}", time=i, worker=f"w{i}"))
        assert s.tasks["boom-0"].state == "processing"
        out = s.handle(p.RemoveWorker(stimulus_id=f"die-{i}", time=i, worker=f"w{i}",
                                      reason="died"))
        erred += [m for m in out if isinstance(m, p.KeyErred)]
    assert s.tasks["boom-0"].state == "erred"
    assert len(erred) == 1 and "died 3 times" in erred[0].exception
    assert "allowed_failures=2" in erred[0].exception


def test_a_failing_task_errs_its_dependents_and_the_error_reaches_the_client() -> None:
    g = TaskGraph([TaskSpec("ok-0"), TaskSpec("bad-0", fails=True),
                   TaskSpec("after-0", deps=("ok-0", "bad-0")),
                   TaskSpec("after-1", deps=("after-0",))])
    c = SimCluster(workers=2, seed=0)
    out = c.run(g)
    assert out.results_ok
    assert c.results["after-1"] == ("erred", "error:bad-0")
    assert c.results["ok-0"][0] == "memory"


def test_released_keys_are_freed_on_the_workers() -> None:
    c = SimCluster(workers=2, seed=0)
    assert c.run(make_workload("independent", 10)).results_ok
    assert sum(len(sw.data) for sw in c.workers.values()) == 10
    c.scheduler.handle(p.ClientReleasesKeys(stimulus_id="rel", time=c.now, client="client",
                                            keys=tuple(f"task-{i}" for i in range(10))))
    assert c.scheduler.tasks == {}


def test_intermediate_data_nobody_wants_is_freed() -> None:
    c = SimCluster(workers=2, seed=0)
    out = c.run(make_workload("chain", 20), wanted=["chain-19"])
    assert out.results_ok
    states = c.scheduler.states_count()
    assert states.get("memory") == 1


@pytest.mark.parametrize("build, fragment", [
    (lambda g: (g.add("a-0", deps=["b-0"]), g.add("b-0", deps=["a-0"]), g.validate()), "cycle"),
    (lambda g: (g.add("a-0", deps=["nope"]), g.validate()), "missing key(s): ['nope']"),
    (lambda g: (g.add("a-0"), g.add("a-0")), "duplicate key: 'a-0'"),
])
def test_graph_errors_are_one_line_and_name_the_keys(build, fragment: str) -> None:
    with pytest.raises(GraphError) as info:
        build(TaskGraph())
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert "a-0" in message or "nope" in message


def test_topological_order_keeps_the_order_tasks_were_added_where_it_can() -> None:
    in_order = TaskGraph()
    for key, deps in (("z-0", ()), ("y-0", ("z-0",)), ("x-0", ()), ("w-0", ("x-0", "y-0"))):
        in_order.add(key, deps=list(deps))
    assert in_order.topological_order() == ["z-0", "y-0", "x-0", "w-0"]
    # a dependent added before its dependency moves just behind it, nothing else moves
    g = TaskGraph()
    for key, deps in (("a-0", ()), ("c-0", ("b-0",)), ("d-0", ()), ("b-0", ("a-0",))):
        g.add(key, deps=list(deps))
    assert g.topological_order() == ["a-0", "d-0", "b-0", "c-0"]


def test_the_simulator_prioritises_tasks_in_the_order_they_were_added() -> None:
    g = TaskGraph()
    for key, deps in (("r-0", ()), ("s-0", ("r-0",)), ("r-1", ()), ("s-1", ("r-1",))):
        g.add_spec(TaskSpec(key, deps=deps, sim_duration=0.01))
    c = SimCluster(workers=1, seed=0)
    assert c.run(g).results_ok
    priorities = [c.scheduler.tasks[k].priority for k in ("r-0", "s-0", "r-1", "s-1")]
    assert priorities == sorted(priorities)


@pytest.mark.parametrize("argv, fragment", [
    (["sim", "--workers", "0"], "--workers must be >= 1"),
    (["sim", "--workload", "nope"], "unknown workload 'nope'"),
    (["sim", "--tasks", "many"], "'many' is not a valid integer"),
    (["nope"], "No such command 'nope'"),
])
def test_bad_cli_arguments_give_one_line(argv: list[str], fragment: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err
    assert len(err.splitlines()) == 1


def test_cli_sim_prints_a_summary(capsys) -> None:
    main(["sim", "--tasks", "50", "--workers", "2", "--seed", "3"])
    out = capsys.readouterr().out
    assert "all correct" in out and "digest" in out and "w1" in out


def _heartbeat_period(cluster: SimCluster, graph: TaskGraph) -> float:
    """Virtual seconds between one worker's heartbeats over a run, measured."""
    beats = []
    cluster.recorders.append(lambda target, msg: beats.append(msg)
                             if isinstance(msg, p.Heartbeat) else None)
    out = cluster.run(graph)
    assert out.results_ok
    return out.makespan * len(cluster.workers) / len(beats)


def test_heartbeats_scale_with_cluster_size_unless_set() -> None:
    assert [heartbeat_interval(n) for n in (1, 25, 100, 250, 10_000)] == [0.5, 0.5, 2.0, 5.0, 5.0]
    graph = independent(400, duration=1.0)  # 100 s on 4 workers, 4 s on 100
    assert _heartbeat_period(SimCluster(workers=4, seed=0), graph) == pytest.approx(0.5, rel=0.02)
    assert _heartbeat_period(SimCluster(workers=100, seed=0), graph) == pytest.approx(2.0, rel=0.01)
    fixed = SimCluster(workers=100, seed=0, heartbeat_interval=0.5)
    assert _heartbeat_period(fixed, graph) == pytest.approx(0.5, rel=0.02)
    # A heartbeat timeout caps the interval: four heartbeats fit in it.
    capped = SimCluster(workers=100, seed=0, heartbeat_timeout=1.0)
    assert _heartbeat_period(capped, graph) == pytest.approx(0.25, rel=0.02)


def test_bad_heartbeat_interval_is_one_line() -> None:
    with pytest.raises(ValueError, match="heartbeat_interval must be seconds, None or 'auto', "
                                         "got 'often'"):
        SimCluster(workers=2, heartbeat_interval="often")


@pytest.mark.parametrize("env, flag, checked", [
    ("1", [], True), ("0", [], False), ("1", ["--no-validate"], False), ("0", ["--validate"], True),
])
def test_squall_sim_honours_squall_validate_unless_told(
        env: str, flag: list[str], checked: bool, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("SQUALL_VALIDATE", env)
    code, out, _ = run_cli(["sim", "--tasks", "20", "--workers", "2", *flag])
    assert code == 0
    assert ("invariant checks" in out) is checked
