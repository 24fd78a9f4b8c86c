"""Mutants: the catalog of planted bugs, switching them on and off, catching them."""

from __future__ import annotations

import inspect
import json
import textwrap
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

from squall.chaos.injectors import JoinWorker, KillWorker, Partition, SkewEstimates
from squall.core.scheduler import SchedulerState, SchedulerTaskState
from squall.core.worker import WorkerState, WorkerTaskState
from squall.invariants import BY_ID
from squall.mutants import scheduler_bugs, worker_bugs
from squall.mutants.catalog import CATALOG, MUTANTS, Mutant, MutantError, mutant, switched_on
from squall.mutants.copies import copied_from, copy_drift, globals_drift, source_drift
from squall.mutants.examples import missing_data_with_fillers
from squall.mutants.measure import measure_mutant, same_failure
from squall.scenarios.explore import explore
from squall.scenarios.minimize import minimize, size
from squall.scenarios.model import ClusterShape, ExplicitGraph, Scenario, TaskDef
from squall.scenarios.replay import REPRODUCED, replay_trace
from squall.scenarios.runner import run_scenario
from squall.scenarios.strategies import SCENARIO_SPACES

# Checks that are not catalog invariants but the runner reports as violations.
RUNNER_CHECKS = {"sim.consistent", "liveness.progress", "scheduler.transition-table",
                 "worker.transition-table", "scheduler.no-livelock"}

# A worker dies while a task runs on it; a fresh one joins later.
KILL = Scenario(
    workload=ExplicitGraph(tasks=(TaskDef("a-0", sim_duration=0.5),
                                  TaskDef("b-1", deps=("a-0",), sim_duration=0.01))),
    cluster=ClusterShape(workers=1),
    chaos=(KillWorker(at=0.1, worker="w0"), JoinWorker(at=0.6)),
)


# ------------------------------------------------------------------ the catalog


def test_the_catalog_has_at_least_twelve_named_documented_mutants() -> None:
    assert len(CATALOG) >= 12
    assert len(MUTANTS) == len(CATALOG)
    for m in CATALOG:
        assert m.name == m.name.lower() and " " not in m.name, m.name
        assert m.title and "\n" not in m.title, m.name
        assert len(m.models) > 30, f"{m.name}: say which real failure mode it models"
        assert m.attr in m.owner.__dict__ and callable(m.owner.__dict__[m.attr]), m.target
        assert m.space in SCENARIO_SPACES, m.name
        assert m.caught_by and all(i in BY_ID or i in RUNNER_CHECKS for i in m.caught_by)
    # Bugs in each of the three places a scheduler keeps its logic.
    owners = {m.owner.__name__ for m in CATALOG}
    assert owners == {"SchedulerState", "WorkStealing", "WorkerState"}


def test_an_unknown_mutant_is_refused_naming_the_choices() -> None:
    with pytest.raises(MutantError, match=r"unknown mutant 'nope'; choose one of: .*occupancy"):
        mutant("nope")


@pytest.mark.parametrize("m", CATALOG, ids=lambda m: m.name)
def test_a_mutant_replaces_one_method_only_inside_its_block(m: object) -> None:
    owner, attr = m.owner, m.attr  # type: ignore[attr-defined]
    before = dict(vars(owner))
    with m.active():  # type: ignore[attr-defined]
        assert vars(owner)[attr] is not before[attr]
        changed = [k for k in vars(owner) if vars(owner)[k] is not before.get(k)]
        assert changed == [attr]
    assert dict(vars(owner)) == before


def test_switching_a_mutant_on_and_off_changes_behaviour_and_restores_it() -> None:
    # A dead worker's task stays assigned to it: caught as soon as the death is handled.
    assert run_scenario(KILL).ok
    with switched_on("dead-worker-tasks-stranded"):
        out = run_scenario(KILL)
        assert not out.ok
        assert out.violations[0].invariant in MUTANTS["dead-worker-tasks-stranded"].caught_by
    assert run_scenario(KILL).ok
    # Also after the block ends with an exception.
    with pytest.raises(RuntimeError), switched_on("dead-worker-tasks-stranded"):
        raise RuntimeError("boom")
    assert run_scenario(KILL).ok
    assert "_remove_worker" in SchedulerState.__dict__
    assert "_drop_inputs" in WorkerState.__dict__
    with switched_on(None) as nothing:
        assert nothing is None and run_scenario(KILL).ok


# ------------------------------------------------------------------ copies cannot drift


def _copies() -> dict[str, Callable[..., Any]]:
    """Every buggy copy: those the mutants plant (made as they are made), and the helpers
    that are copies too."""
    found: dict[str, Callable[..., Any]] = {}
    for m in CATALOG:
        production = m.owner.__dict__[m.attr]
        fn = m.make(production)
        if copied_from(fn) is not None:
            assert copied_from(fn) is production, f"{m.name} copies another method"
            found[m.name] = fn
    for module in (scheduler_bugs, worker_bugs):
        for name, fn in vars(module).items():
            if callable(fn) and copied_from(fn) is not None and fn not in found.values():
                found[f"{module.__name__}.{name}"] = fn
    return found


COPIES = _copies()


def test_most_mutants_are_copies_of_the_method_they_replace() -> None:
    assert len([name for name in COPIES if name in MUTANTS]) >= 12
    assert "squall.mutants.scheduler_bugs.force_move" in COPIES


@pytest.mark.parametrize("name", sorted(COPIES))
def test_a_copy_is_its_production_method_but_for_its_bug_lines(name: str) -> None:
    assert copy_drift(COPIES[name]) == []


def _sources(fn: Callable[..., Any]) -> tuple[str, list[str]]:
    copy = textwrap.dedent(inspect.getsource(fn))
    production = textwrap.dedent(inspect.getsource(copied_from(fn)))  # type: ignore[arg-type]
    return copy, production.splitlines(keepends=True)


def _changed(lines: list[str], at: str, new: list[str]) -> str:
    """``lines`` with the one line equal to ``at`` (stripped) replaced by ``new``."""
    [i] = [i for i, line in enumerate(lines) if line.strip() == at]
    return "".join(lines[:i] + new + lines[i + 1:])


def test_a_production_change_off_the_bug_lines_breaks_its_copy() -> None:
    # WorkerState._drop_inputs, whose copy changes its last line.
    copy, prod = _sources(worker_bugs.drop_inputs_eagerly)
    assert source_drift(copy, "".join(prod)) == []
    last = "self._release_if_unneeded(dts)"
    pad = "        "
    broken = {
        "a line changed": _changed(prod, "ts.dependencies.clear()",
                                   [pad + "ts.dependencies = {}\n"]),
        "a line added": _changed(prod, "ts.dependencies.clear()",
                                 [pad + "ts.dependencies.clear()\n", pad + "ts.nbytes = 0\n"]),
        "a line removed": _changed(prod, "ts.dependencies.clear()", []),
        "a line added beside the bug's": _changed(
            prod, last, [pad + pad[:4] + last + "\n", pad + pad[:4] + "self.nbytes -= 1\n"]),
        "the signature": "".join(prod).replace("(self, ts: WTask)", "(self, ts: WTask, x=0)"),
    }
    for what, production in broken.items():
        assert source_drift(copy, production), f"{what}: not noticed"
    # The bug's own line may say anything in production: that is the line it replaces.
    assert source_drift(copy, _changed(prod, last, [pad + pad[:4] + "self.drop(dts)\n"])) == []


def test_a_stale_or_misplaced_bug_marker_is_reported() -> None:
    copy, prod = _sources(worker_bugs.drop_inputs_eagerly)
    unmarked = copy.replace("_release_if_in_memory(self, dts)  # BUG",
                            "self._release_if_unneeded(dts)  # BUG")
    assert any("marked # BUG but its code is production's" in p
               for p in source_drift(unmarked, "".join(prod)))
    loose = copy.replace("        _release_if_in_memory(self, dts)  # BUG\n",
                         "        _release_if_in_memory(self, dts)\n")
    assert any("not right above a line marked" in p for p in source_drift(loose, "".join(prod)))


def test_a_copy_must_read_its_own_side_s_states() -> None:
    # WorkerState.in_memory copied among the scheduler's bugs: its MEMORY would be the
    # scheduler's, equal as a string but not the worker's state.
    source = textwrap.dedent(inspect.getsource(WorkerState.in_memory))
    scope: dict[str, Any] = {"MEMORY": SchedulerTaskState.MEMORY}
    exec(compile(source, "<copy>", "exec"), scope)
    assert globals_drift(scope["in_memory"], WorkerState.in_memory) == [
        "the global 'MEMORY' is not production's"]
    scope["MEMORY"] = WorkerTaskState.MEMORY
    assert globals_drift(scope["in_memory"], WorkerState.in_memory) == []


# ------------------------------------------------------------------ catching them


@pytest.mark.parametrize("name", ["occupancy-drift", "retry-limit-ignored",
                                  "steal-refusal-ignored", "newcomers-never-fed"])
def test_a_short_exploration_catches_the_mutant_and_its_trace_replays(
        name: str, tmp_path: Path) -> None:
    m = MUTANTS[name]
    r = measure_mutant(m, budget=20, out_dir=str(tmp_path), replays=2)
    assert r.detected, r
    assert r.caught_by in m.caught_by
    assert r.specific is True  # the shrunk scenario passes with the mutant off
    assert r.replays_same == r.replays == 2
    assert r.stimuli is not None and 0 < r.stimuli <= 40  # shrunk: a handful of tasks
    assert r.first_failure is not None and r.first_failure <= r.elapsed


def test_forked_exploration_jobs_switch_the_mutant_on_themselves(tmp_path: Path) -> None:
    # The parent never switches it on: only the jobs, by name, can have caught it.
    result = explore(budget=20, jobs=2, space="small", out_dir=tmp_path,
                     job_context=partial(switched_on, "occupancy-drift"))
    assert result.failure is not None and result.failure.violation is not None
    assert result.failure.violation.invariant == "worker.occupancy-fresh"
    trace = result.failure.trace_path
    with switched_on("occupancy-drift"):
        assert replay_trace(trace).verdict == REPRODUCED
    # Without the bug, the recorded stimuli do not lead to the recorded violation.
    assert replay_trace(trace).verdict != REPRODUCED


def test_a_fixed_scenario_catches_a_worker_mutant(tmp_path: Path) -> None:
    # a-0 is read by three tasks; the worker that fetched it for two of them drops it
    # after the first has run (the shrunk scenario exploration found).
    t = [TaskDef(f"a-{i}", sim_duration=0.01, duration=0.01, nbytes=100) for i in range(6)]
    tasks = (t[0], t[1], msgspec.structs.replace(t[2], deps=("a-0", "a-1")), t[3],
             msgspec.structs.replace(t[4], deps=("a-0",)),
             msgspec.structs.replace(t[5], deps=("a-0",)))
    scenario = Scenario(workload=ExplicitGraph(tasks=tasks), cluster=ClusterShape(workers=2))
    assert run_scenario(scenario).ok
    trace = tmp_path / "freed.jsonl"
    with switched_on("freed-while-needed"):
        out = run_scenario(scenario, trace=trace)
        assert not out.ok, "the second reader ran although its input was dropped"
        assert out.violations[0].invariant in MUTANTS["freed-while-needed"].caught_by
        assert replay_trace(trace).verdict == REPRODUCED


def test_replay_switches_a_mutant_on_by_name(tmp_path: Path,
                                             run_cli) -> None:
    trace = tmp_path / "drift.jsonl"
    with switched_on("occupancy-drift"):
        assert not run_scenario(KILL, trace=trace).ok
    code, out, _ = run_cli(["replay", str(trace), "--mutant", "occupancy-drift"])
    assert code == 1 and "reproduced" in out  # the recorded violation recurs
    code, out, _ = run_cli(["replay", str(trace)])
    assert code != 1, out  # without the bug, it does not
    code, out, err = run_cli(["replay", str(trace), "--mutant", "nope"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "unknown mutant 'nope'" in err


def test_minimize_drops_what_the_failure_does_not_need() -> None:
    # KILL plus three tasks, a second worker and a skew that have nothing to do with it.
    extra = tuple(TaskDef(f"z-{i}", sim_duration=0.2) for i in range(3))
    big = msgspec.structs.replace(
        KILL, workload=ExplicitGraph(tasks=KILL.workload.tasks + extra),  # type: ignore[union-attr]
        cluster=ClusterShape(workers=2), chaos=(SkewEstimates(at=0.05, factor=10.0), *KILL.chaos))
    m = MUTANTS["dead-worker-tasks-stranded"]
    with m.active():
        first = run_scenario(big)
    assert not first.ok
    small, out, tried = minimize(big, first, same_failure(m, first))
    assert tried > 0
    assert out.violations[0].invariant == first.violations[0].invariant
    assert size(small, out) < size(big, first)
    assert len(small.workload.tasks) < len(big.workload.tasks)  # type: ignore[union-attr]
    assert not any(isinstance(f, SkewEstimates) for f in small.chaos)
    assert run_scenario(small).ok  # still the mutant's doing


def test_minimize_shrinks_the_clock_a_failure_waited_for() -> None:
    # missing-data-ignored as Hypothesis left it: w0, which holds a-5, is cut off while
    # w3 waits to fetch a-5 for a-6, and only the 2 s heartbeat timeout declares w0 dead;
    # 56 of its 87 stimuli were clock ticks and heartbeats.
    t = [TaskDef(f"a-{i}", sim_duration=0.01, duration=0.01, nbytes=100) for i in range(7)]
    tasks = (*t[:3], t[4], t[5], msgspec.structs.replace(t[6], deps=("a-4", "a-5")))
    big = Scenario(workload=ExplicitGraph(tasks=tasks),
                   cluster=ClusterShape(latency=0.01, heartbeat_timeout=2.0, max_time=600.0),
                   chaos=(Partition(at=0.05, worker="w0"),))
    small = _minimized_to_30(MUTANTS["missing-data-ignored"], big, more_than=60)
    # The timeout's verdict without the wait: the cut-off holder dies, no clock is needed.
    assert small.cluster.heartbeat_timeout is None and small.cluster.heartbeat_interval is None
    [cut] = [f for f in small.chaos if isinstance(f, Partition)]
    assert any(isinstance(f, KillWorker) and f.worker == cut.worker and f.at > cut.at
               for f in small.chaos)


def test_minimize_drops_fillers_that_only_placed_the_failing_task() -> None:
    # (see missing_data_with_fillers: the old local minimum was 44 stimuli; without all
    # the fillers, on a slower link, the cut strikes another worker, later)
    big = missing_data_with_fillers()
    small = _minimized_to_30(MUTANTS["missing-data-ignored"], big, more_than=90)
    assert len(small.workload.tasks) <= 3  # type: ignore[union-attr]


def test_minimize_shortens_long_tasks_a_stealing_failure_waited_through() -> None:
    # steal-to-stale-record as exploration seed 3 left it: two 2 s tasks, and w0 killed
    # and replaced at 2.6 s just as the balancer steals for it; of its 39 stimuli most are
    # the clock ticks of the 2 s nothing happens in. Time scaled down moves the kill off
    # its tick and the failure goes; cut by whole ticks, the tasks keep it.
    tasks = (TaskDef("a-2", duration=2.0, sim_duration=2.0, nbytes=100),
             TaskDef("a-3", duration=2.0, sim_duration=2.0, nbytes=100),
             TaskDef("a-4", duration=0.01, sim_duration=0.01, nbytes=100))
    big = Scenario(workload=ExplicitGraph(tasks=tasks),
                   cluster=ClusterShape(workers=2, stealing=True, tick_interval=0.2,
                                        max_time=600.0),
                   chaos=(KillWorker(at=0.5, worker="w0"), JoinWorker(at=2.0, worker="w0"),
                          KillWorker(at=2.6, worker="w0"), JoinWorker(at=2.6, worker="w0")))
    small = _minimized_to_30(MUTANTS["steal-to-stale-record"], big, more_than=35)
    assert max(t.sim_duration or 0 for t in small.workload.tasks) < 2.0  # type: ignore[union-attr]


def _minimized_to_30(m: Mutant, big: Scenario, *, more_than: int) -> Scenario:
    """``big`` (which passes, and fails with ``m`` on after more than ``more_than``
    stimuli) minimized: to 30 stimuli or fewer, failing the same way, passing without ``m``."""
    assert run_scenario(big).ok
    with m.active():
        first = run_scenario(big)
    assert not first.ok and first.n_stimuli > more_than
    small, out, _ = minimize(big, first, same_failure(m, first))
    assert out.violations[0].invariant == first.violations[0].invariant == m.caught_by[0]
    assert out.n_stimuli <= 30
    assert run_scenario(small).ok  # still the mutant's doing
    return small


# ------------------------------------------------------------------ the command


def test_the_command_measures_a_mutant_and_writes_json(
        tmp_path: Path, run_cli) -> None:
    out_json = tmp_path / "m.json"
    code, out, _ = run_cli(["mutants", "--mutant", "occupancy-drift", "--budget", "20",
                         "--replays", "2", "--no-baseline", "--out", str(tmp_path / "t"),
                         "--json", str(out_json)])
    assert code == 0, out
    assert "occupancy-drift" in out
    assert any(i in out for i in MUTANTS["occupancy-drift"].caught_by)
    doc = json.loads(out_json.read_text())
    [row] = doc["mutants"]
    assert row["mutant"] == "occupancy-drift" and row["detected"] is True
    assert row["replays_same"] == row["replays"] == 2
    assert row["replaces"] == "SchedulerState.occupancy"
    assert doc["summary"]["detected"] == doc["summary"]["mutants"] == 1
    assert doc["summary"]["false_alarms"] == 0 and doc["baseline"] == []


@pytest.mark.parametrize("argv, message", [
    (["--mutant", "nope"], "unknown mutant 'nope'; choose one of: dead-worker"),
    (["--budget", "0"], "--budget must be > 0 seconds, got 0.0"),
    (["--budget", "-5"], "--budget must be > 0 seconds, got -5.0"),
    (["--budget", "soon"], "'soon' is not a valid float"),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--replays", "0"], "--replays must be >= 1, got 0"),
])
def test_bad_input_gets_a_one_line_error(argv: list[str], message: str,
                                         run_cli) -> None:
    code, out, err = run_cli(["mutants", *argv])
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_the_catalog_can_be_listed(run_cli) -> None:
    code, out, _ = run_cli(["mutants", "--list"])
    assert code == 0
    for m in CATALOG:
        assert m.name in out


def test_the_exit_status_counts_catches_and_false_alarms_and_size_only_when_asked() -> None:
    from squall.mutants.measure import BaselineResult, MutantResult, summarize

    results = [MutantResult("a", "small", 20.0, detected=True, first_failure=1.0, stimuli=12),
               MutantResult("b", "small", 20.0, detected=True, first_failure=25.0,
                            stimuli=37)]
    clean = [BaselineResult("small", 20.0, scenarios=10)]
    assert summarize(results, clean)["ok"]  # every one caught, nothing false: 0
    assert not summarize(results, clean, require_stimuli=30)["ok"]  # 37 > 30 asked for
    missed = [*results, MutantResult("c", "small", 20.0)]
    assert not summarize(missed, clean)["ok"]
    alarm = [BaselineResult("small", 20.0, scenarios=10, violations=1)]
    assert not summarize(results, alarm)["ok"]
