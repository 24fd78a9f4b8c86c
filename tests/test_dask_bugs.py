"""Historical dask.distributed bugs planted into the installed dask
(``squall.mutants.dask_bugs``): each is caught by its own invariant, and the same
scenarios with no bug planted find nothing. Real processes (marked ``real``), about a
second a run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from squall.mutants.dask_bugs import (  # noqa: E402
    DASK_CATALOG,
    DaskBugError,
    dask_bug,
    run_baseline,
    run_bug,
)

pytestmark = [pytest.mark.squall_real, pytest.mark.xdist_group("dask-bugs")]


@pytest.mark.parametrize("bug", DASK_CATALOG, ids=lambda b: b.name)
def test_planted_bug_is_caught_by_its_invariant(bug) -> None:
    result = run_bug(bug)
    assert result.caught, result
    assert result.expected, f"{bug.name}: caught by {result.invariants}, expected one of " \
                            f"{bug.caught_by}"
    assert result.seconds is not None


def test_baseline_with_no_bug_planted_is_clean() -> None:
    results = run_baseline()
    assert len(results) == len({b.scenario for b in DASK_CATALOG})
    for r in results:
        assert r.error is None, r
        assert r.violations == 0, r


def test_the_bug_is_gone_after_the_block() -> None:
    def planted(bug) -> object:
        place = bug.owner.__dict__[bug.attr]
        return place[bug.entry] if bug.entry is not None else place

    for bug in DASK_CATALOG:
        before = planted(bug)
        with bug.active():
            assert planted(bug) is not before
        assert planted(bug) is before


def test_unknown_bug_names_the_catalog() -> None:
    with pytest.raises(DaskBugError, match="dask-occupancy-drift"):
        dask_bug("no-such-bug")


def test_cli_lists_and_runs_one(tmp_path) -> None:
    from squall.cli.mutants import mutants_command

    runner = CliRunner()
    listed = runner.invoke(mutants_command, ["--target", "dask", "--list"])
    assert listed.exit_code == 0, listed.output
    assert "#1544" in listed.output
    out = tmp_path / "bugs.json"
    ran = runner.invoke(mutants_command, ["--target", "dask", "--mutant",
                                          "dask-occupancy-drift", "--json", str(out),
                                          "--out", str(tmp_path / "traces")])
    assert ran.exit_code == 0, ran.output
    doc = json.loads(out.read_text())
    assert doc["summary"] == {**doc["summary"], "bugs": 1, "caught": 1, "false_alarms": 0}
    bug = doc["bugs"][0]
    assert bug["caught_by"] in dask_bug("dask-occupancy-drift").caught_by
    # the run's trace: its stimuli (scheduler's and workers'), and the violation at the end
    lines = [json.loads(x) for x in open(bug["trace"], encoding="utf-8")]
    assert lines[0]["k"] == "header" and lines[-1]["k"] == "outcome"
    assert len([x for x in lines if x["k"] == "ts"]) == bug["stimuli"] > 0
    assert lines[-1]["outcome"]["violations"][0]["invariant"] == bug["caught_by"]


def test_exploration_on_dask_finds_a_planted_bug_and_shrinks_it(tmp_path) -> None:
    from squall.scenarios.replay import replay_trace
    from squall.scenarios.target_explore import explore_on_target

    bug = dask_bug("dask-occupancy-drift")
    result = explore_on_target(runtime="dask", budget=120, space="small", out_dir=tmp_path,
                               job_context=bug.active, shrink_budget=30)
    f = result.failure
    assert f is not None and f.violation is not None, result.stats
    assert f.violation.invariant in bug.caught_by
    assert len(f.scenario.graph()) <= 3 and f.scenario.runtime == "dask", f.scenario
    # the trace of the failing run itself; its workers' side replays
    assert replay_trace(f.trace_path).stimuli > 0


def test_one_cluster_serves_scenarios_of_its_shape_and_is_reset_between_them(
        tmp_path) -> None:
    import msgspec

    from squall.chaos.injectors import KillWorker
    from squall.scenarios.model import ClusterShape, ExplicitGraph, Scenario, TaskDef
    from squall.scenarios.target_run import ClusterPool, run_on_target
    from squall.targets import target_for

    graph = ExplicitGraph(tasks=(TaskDef(key="a-0", sim_duration=0.01),
                                 TaskDef(key="b-1", deps=("a-0",), sim_duration=0.01)))
    two = Scenario(workload=graph, cluster=ClusterShape(workers=2, threads=1),
                   runtime="dask")
    three = msgspec.structs.replace(two, cluster=ClusterShape(workers=3, threads=1))
    killed = msgspec.structs.replace(three, chaos=(KillWorker(at=0.0, worker="w1"),))
    other = msgspec.structs.replace(two, cluster=ClusterShape(workers=2, threads=2))
    target = target_for("dask")
    with ClusterPool(target) as pool:
        # scaled up, down, a killed worker started again; new threads: a new cluster
        runs = (two, two, three, killed, two, three, other)
        outcomes = [run_on_target(s, target, pool=pool, trace=tmp_path / f"{i}.jsonl")
                    for i, s in enumerate(runs)]
        assert (pool.started, pool.reused) == (2, 5), pool.refusals
        assert sorted(pool.kept.workers) == ["w0", "w1"]
    for o in outcomes:  # each run counted from zero, and recorded from its start
        assert o.ok and o.transitions >= outcomes[0].transitions, o
    assert outcomes[1].transitions == outcomes[0].transitions
    from squall.scenarios.replay import replay_trace

    assert replay_trace(tmp_path / "1.jsonl").verdict == "match"
