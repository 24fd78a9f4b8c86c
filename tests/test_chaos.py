"""Chaos in the simulator, where it is exact: injectors, schedules, and the guarantees.

For each injector alone and in combination, with strict mode on: every key ends with the
right result or its task's error, no invariant is violated, no task body runs twice
unless a worker died (or was removed), and once the faults stop the cluster drains. A
worker cut from the scheduler past the heartbeat timeout is declared dead, its work moves,
and when the link heals it rejoins as a new incarnation with nothing stale applied. Skewed
estimates move tasks, never results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from squall.chaos.injectors import (
    ChaosDriver,
    Fault,
    Heal,
    JoinWorker,
    KillWorker,
    Partition,
    PauseWorker,
    SkewEstimates,
    SlowNetwork,
    links_between,
    timeline,
)
from squall.chaos.kinds import rate_kinds
from squall.chaos.schedule import ChaosSchedule
from squall.core import protocol as p
from squall.core.sim import SimCluster
from squall.scenarios.library import named_scenario
from squall.scenarios.model import (
    ClusterShape,
    Generated,
    Scenario,
    scenario_from_json,
    scenario_to_json,
)
from squall.scenarios.runner import run_scenario
from squall.scenarios.workloads import make_workload

TIMEOUT = 2.0  # heartbeat timeout of the scenarios here (virtual seconds)


def _scenario(chaos: tuple[Fault, ...], *, workload: str = "random-dag", tasks: int = 300,
              workers: int = 4, seed: int = 0, stealing: bool = False,
              threads: int = 1) -> Scenario:
    return Scenario(workload=Generated(name=workload, tasks=tasks),
                    cluster=ClusterShape(workers=workers, threads=threads, stealing=stealing,
                                         heartbeat_timeout=TIMEOUT, jitter=0.0005,
                                         max_time=600.0),
                    chaos=chaos, seed=seed)


# ------------------------------------------------------------------ injectors are data


ALL_KINDS: list[Fault] = [
    KillWorker(at=0.1, worker="w1"),
    PauseWorker(at=0.2, worker="w0", seconds=0.5),
    SlowNetwork(at=0.3, worker="w2", peer="scheduler", latency=0.05, jitter=0.02,
                bandwidth=1e6),
    Partition(at=0.4, worker="w3", peer="w0", seconds=1.5),
    Heal(at=2.0, worker="w3"),
    SkewEstimates(at=0.5, factor=10.0, prefix="t1"),
    JoinWorker(at=0.6, worker="w1", threads=2),
]


def test_every_injector_round_trips_through_json() -> None:
    sc = _scenario(tuple(ALL_KINDS))
    again = scenario_from_json(scenario_to_json(sc))
    assert again == sc
    kinds = [json.loads(msgspec.json.encode(f))["kind"] for f in ALL_KINDS]
    assert kinds == ["kill", "pause", "slow-link", "partition", "heal", "skew", "join"]



@pytest.mark.parametrize("fault, fragment", [
    (PauseWorker(worker="w0", seconds=0), "pause fault: 'seconds' must be > 0"),
    (SlowNetwork(worker="w0", latency=-1), "slow-link fault: 'latency' must be >= 0"),
    (SlowNetwork(worker="w0", bandwidth=0), "slow-link fault: 'bandwidth' must be > 0"),
    (Partition(worker="w0", peer="w0"), "partition fault: 'peer' must differ"),
    (Partition(worker="w0", seconds=0), "partition fault: 'seconds' must be > 0"),
    (SkewEstimates(factor=0), "skew fault: 'factor' must be > 0"),
    (JoinWorker(threads=0), "join fault: 'threads' must be >= 1"),
    (KillWorker(at=-1, worker="w0"), "kill fault: 'at' must be >= 0"),
])
def test_a_bad_fault_is_named_in_one_line(fault: Fault, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        fault.check()


def test_links_between_both_ways_and_everyone() -> None:
    assert links_between("w1") == [("w1", "*"), ("*", "w1")]
    assert links_between("w1", "scheduler") == [("w1", "scheduler"), ("scheduler", "w1")]
    assert links_between("*", "*") == [("*", "*")]


def test_a_timed_partition_heals_itself_in_the_timeline() -> None:
    faults = (Partition(at=1.0, worker="w1", peer="scheduler", seconds=2.5),
              KillWorker(at=2.0, worker="w0"))
    assert timeline(faults) == [faults[0], faults[1],
                                Heal(at=3.5, worker="w1", peer="scheduler")]


class _Surface:
    """A fault surface that writes down what it is asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def kill_worker(self, name: str) -> None:
        self.calls.append(("kill", name))

    def pause_worker(self, name: str, seconds: float) -> None:
        self.calls.append(("pause", name, seconds))

    def set_link(self, src: str, dst: str, **kw: Any) -> None:
        self.calls.append(("link", src, dst, {k: v for k, v in kw.items() if v is not None}))

    def skew_estimates(self, factor: float, prefix: str | None = None) -> None:
        self.calls.append(("skew", factor, prefix))

    def add_worker(self, name: str | None = None, threads: int | None = None) -> str:
        if name == "alive":
            raise ValueError("alive")
        self.calls.append(("add", name, threads))
        return name or "new"


def test_the_driver_acts_only_through_the_surface_and_counts_by_kind() -> None:
    surface = _Surface()
    driver = ChaosDriver(surface)
    for f in ALL_KINDS:
        driver.apply(f)
    assert driver.apply(JoinWorker(worker="alive")) is False  # refused: not counted
    assert surface.calls == [
        ("kill", "w1"), ("pause", "w0", 0.5),
        ("link", "w2", "scheduler", {"latency": 0.05, "jitter": 0.02, "bandwidth": 1e6}),
        ("link", "scheduler", "w2", {"latency": 0.05, "jitter": 0.02, "bandwidth": 1e6}),
        ("link", "w3", "w0", {"down": True}), ("link", "w0", "w3", {"down": True}),
        # the heal of w3 heals its cut from w0 on those very links, then all of w3's
        ("link", "w3", "w0", {"down": False}), ("link", "w0", "w3", {"down": False}),
        ("link", "w3", "*", {"down": False}), ("link", "*", "w3", {"down": False}),
        ("skew", 10.0, "t1"), ("add", "w1", 2)]
    assert driver.counts == {"kill": 1, "pause": 1, "slow-link": 1, "partition": 1, "heal": 1,
                             "skew": 1, "join": 1}
    assert driver.cut == {}  # the heal of w3 covers its partition from w0


def test_heal_star_reconnects_exactly_what_was_cut() -> None:
    surface = _Surface()
    driver = ChaosDriver(surface)
    driver.apply(Partition(worker="w0", peer="scheduler"))
    driver.apply(Partition(worker="w2"))
    surface.calls.clear()
    driver.apply(Heal())
    assert surface.calls == [("link", "w0", "scheduler", {"down": False}),
                             ("link", "scheduler", "w0", {"down": False}),
                             ("link", "w2", "*", {"down": False}),
                             ("link", "*", "w2", {"down": False})]


# ------------------------------------------------------------------ schedules


def test_a_rate_schedule_is_drawn_from_its_seed() -> None:
    rates = {"kill": 0.5, "pause": 0.5, "slow-link": 0.5, "partition": 0.5, "skew": 0.5}
    a = ChaosSchedule.from_rates(3, rates, workers=4, duration=20.0, prefixes=("t0", "t1"))
    b = ChaosSchedule.from_rates(3, rates, workers=4, duration=20.0, prefixes=("t0", "t1"))
    c = ChaosSchedule.from_rates(4, rates, workers=4, duration=20.0, prefixes=("t0", "t1"))
    assert a == b and a != c
    assert len(a) > 10 and set(a.kinds()) <= {"kill", "join", "pause", "slow-link",
                                               "partition", "skew"}
    assert all(0 <= f.at < 20.0 + 1.0 for f in a)  # a join may follow a late kill
    assert [f.at for f in a] == sorted(f.at for f in a)
    # Every kill is followed by its name joining again.
    for f in a:
        if isinstance(f, KillWorker):
            assert any(isinstance(g, JoinWorker) and g.worker == f.worker and g.at > f.at
                       for g in a)
    again = msgspec.json.decode(msgspec.json.encode(a), type=ChaosSchedule)
    assert again == a


def test_a_rate_schedule_names_a_bad_kind_or_rate() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'explode'"):
        ChaosSchedule.from_rates(0, {"explode": 1.0}, workers=2, duration=1.0)
    with pytest.raises(ValueError, match="rate of 'kill' must be >= 0"):
        ChaosSchedule.from_rates(0, {"kill": -1.0}, workers=2, duration=1.0)


def test_swarm_mode_draws_the_rates_themselves_from_the_seed() -> None:
    drawn = [ChaosSchedule.swarm(seed, workers=4, duration=10.0) for seed in range(12)]
    assert drawn[0] == ChaosSchedule.swarm(0, workers=4, duration=10.0)
    mixes = {tuple(sorted(s.rates)) for s in drawn}
    assert len(mixes) > 4  # different seeds stress different mixes of kinds
    assert all(set(s.rates) <= set(rate_kinds()) and s.rates for s in drawn)
    assert any(len(s.rates) < len(rate_kinds()) for s in drawn)


# ------------------------------------------------------------------ the trace


def test_every_fault_is_recorded_in_the_trace_with_its_time(tmp_path: Path) -> None:
    chaos = (SkewEstimates(at=0.2, factor=3.0), KillWorker(at=0.3, worker="w1"),
             Partition(at=0.5, worker="w2", peer="scheduler", seconds=1.0),
             JoinWorker(at=0.7, worker="w1"))
    trace = tmp_path / "t.jsonl"
    out = run_scenario(_scenario(chaos, tasks=200), trace=trace)
    assert out.ok, (out.violations, out.wrong)
    lines = [json.loads(x) for x in trace.read_bytes().splitlines()]
    faults = [(ln["m"]["time"], ln["m"]["kind"], ln["m"].get("target", ""))
              for ln in lines if ln["k"] == "s" and ln["t"] == "chaos"]
    assert faults == [(0.2, "skew_estimates", ""), (0.3, "kill_worker", "w1"),
                      (0.5, "set_link", "w2->scheduler"), (0.5, "set_link", "scheduler->w2"),
                      (0.7, "add_worker", "w1"),
                      (1.5, "set_link", "w2->scheduler"), (1.5, "set_link", "scheduler->w2")]
    assert out.faults == {"skew": 1, "kill": 1, "partition": 1, "join": 1, "heal": 1}


# ------------------------------------------------------------------ guarantees, one by one

LETHAL = {"kill", "partition", "pause"}  # may legitimately make a body run again

ALONE: dict[str, tuple[Fault, ...]] = {
    "kill": (KillWorker(at=0.5, worker="w1"),),
    "kill+join": (KillWorker(at=0.5, worker="w1"), JoinWorker(at=1.0, worker="w1")),
    "pause-short": (PauseWorker(at=0.4, worker="w0", seconds=0.5),),
    "pause-past-timeout": (PauseWorker(at=0.4, worker="w0", seconds=3.0),),
    "slow-all-links": (SlowNetwork(at=0.2, worker="w2", latency=0.05, jitter=0.02),),
    "slow-bandwidth": (SlowNetwork(at=0.2, worker="*", bandwidth=1e6),),
    "cut-peer-link": (Partition(at=0.3, worker="w0", peer="w1", seconds=2.0),),
    "cut-from-scheduler-briefly": (Partition(at=0.3, worker="w2", peer="scheduler",
                                             seconds=0.5),),
    "cut-from-scheduler-past-timeout": (Partition(at=0.3, worker="w2", peer="scheduler",
                                                  seconds=3.0),),
    "cut-from-everyone": (Partition(at=0.3, worker="w3", seconds=3.0),),
    "skew-all": (SkewEstimates(at=0.1, factor=10.0),),
    "skew-prefix-down": (SkewEstimates(at=0.1, factor=0.1, prefix="t2"),),
    "join": (JoinWorker(at=0.5), JoinWorker(at=0.6, threads=2)),
}


@pytest.mark.parametrize("stealing", [False, True], ids=["no-stealing", "stealing"])
@pytest.mark.parametrize("name", list(ALONE))
def test_each_injector_alone_keeps_every_guarantee(name: str, stealing: bool) -> None:
    chaos = ALONE[name]
    out = run_scenario(_scenario(chaos, stealing=stealing, threads=2))
    assert out.ok, (out.violations, out.wrong)  # right results, strict mode silent, drained
    assert out.invariant_checks > 0
    if not {f.kind_name() for f in chaos} & LETHAL and "cut" not in name:
        assert out.runs == {}, "a body ran twice though no worker died"


def test_a_cut_peer_link_alone_never_makes_a_body_run_twice() -> None:
    # Every fetch between w0 and w1 waits for the link: data is never taken as lost.
    for seed in range(5):
        out = run_scenario(_scenario((Partition(at=0.1, worker="w0", peer="w1", seconds=3.0),),
                                     workload="tree", tasks=128, workers=2, seed=seed))
        assert out.ok, (out.violations, out.wrong)
        assert out.runs == {}
        assert out.makespan > 3.1  # the reduction needed that link: it waited for the heal


@pytest.mark.parametrize("seed", range(16))
def test_swarm_schedules_keep_every_guarantee(seed: int) -> None:
    chaos = ChaosSchedule.swarm(seed, workers=4, duration=4.0, max_rate=2.0,
                                prefixes=("t0", "t1", "t2"), outage=2 * TIMEOUT)
    out = run_scenario(_scenario(chaos.faults, tasks=250, seed=seed, stealing=seed % 2 == 0,
                                 threads=1 + seed % 2))
    assert out.ok, (seed, chaos.rates, out.violations, out.wrong)


def test_the_storm_scenario_passes_in_the_simulator() -> None:
    storm = named_scenario("storm")
    out = run_scenario(msgspec.structs.replace(storm, runtime="sim"))
    assert out.ok, (out.violations, out.wrong)
    assert out.n_tasks >= 2000
    assert out.faults == {"skew": 2, "slow-link": 2, "kill": 2, "join": 2, "pause": 1,
                          "partition": 1, "heal": 1}


# ------------------------------------------------------------------ partition and heal


REPORTS = (p.TaskFinished, p.TaskErred, p.MissingData, p.Heartbeat, p.StealResponse)


class _SchedulerWatch:
    """What reaches the scheduler about ``name``: when it was removed, when it registered
    again, and any report of its while the scheduler did not know it."""

    def __init__(self, cluster: SimCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.known = False
        self.removed_at: float | None = None
        self.rejoined_at: float | None = None
        self.reports_while_removed: list[Any] = []
        cluster.recorders.append(self)

    def __call__(self, target: str, msg: Any) -> None:  # called before the stimulus
        if target != "scheduler":
            return
        known = self.name in self.cluster.scheduler.workers
        if self.known and not known and self.removed_at is None:
            self.removed_at = self.cluster.now
        self.known = known
        if type(msg) is p.AddWorker and msg.worker == self.name and self.removed_at is not None:
            self.rejoined_at = self.cluster.now
        elif not known and type(msg) in REPORTS and msg.worker == self.name:
            self.reports_while_removed.append(msg)


def test_a_worker_cut_past_the_timeout_is_declared_dead_and_rejoins_clean() -> None:
    cluster = SimCluster(workers=3, threads=1, seed=1, heartbeat_timeout=TIMEOUT,
                         validate=True, stealing=True)
    watch = _SchedulerWatch(cluster, "w2")
    driver = ChaosDriver(cluster)
    driver.schedule(cluster.at, (Partition(at=0.3, worker="w2", peer="scheduler",
                                           seconds=4.0),))
    out = cluster.run(make_workload("independent", 300))  # 300 x 0.1 s on 3 workers
    assert out.results_ok and out.makespan > 4.3
    # Declared dead about a timeout after the cut; its work moved to the others.
    assert watch.removed_at is not None and TIMEOUT < watch.removed_at < TIMEOUT + 1.0
    first = [sw for sw in cluster.all_workers if sw.name == "w2"]
    assert len(first) == 2 and not first[0].alive and first[1].alive
    # It rejoined after the heal (at 4.3), as a new incarnation, and worked again.
    assert watch.rejoined_at is not None and watch.rejoined_at > 4.3
    assert cluster.rejoins == 1
    assert cluster.scheduler.workers["w2"].incarnation > 3
    assert first[1].busy > 0
    # Nothing the old incarnation reported reached the scheduler once it was removed:
    # its late results were refused by the runtime.
    assert watch.reports_while_removed == []
    assert cluster.refused > 0
    assert out.runs  # what ran on w2 before the cut was recomputed: its worker "died"


def test_a_brief_cut_from_the_scheduler_also_ends_the_incarnation() -> None:
    # What was sent on a cut connection is lost: the worker starts again clean rather
    # than carry on with a state the scheduler no longer shares.
    cluster = SimCluster(workers=2, threads=1, seed=0, heartbeat_timeout=TIMEOUT,
                         validate=True)
    ChaosDriver(cluster).schedule(cluster.at, (Partition(at=0.2, worker="w0", peer="scheduler",
                                                         seconds=0.3),))
    out = cluster.run(make_workload("independent", 60))
    assert out.results_ok
    assert cluster.rejoins == 1
    assert [sw.name for sw in cluster.all_workers] == ["w0", "w1", "w0"]


def test_a_worker_paused_past_the_timeout_is_told_to_rejoin_when_it_resumes() -> None:
    cluster = SimCluster(workers=2, threads=1, seed=0, heartbeat_timeout=TIMEOUT,
                         validate=True, stealing=True)
    ChaosDriver(cluster).schedule(cluster.at, (PauseWorker(at=0.2, worker="w0", seconds=3.0),))
    out = cluster.run(make_workload("independent", 120))  # 6 s of work on 2 workers
    assert out.results_ok
    assert cluster.rejoins == 1
    rejoined = cluster.all_workers[-1]
    assert rejoined.name == "w0" and rejoined.busy > 0


def test_a_worker_killed_while_cut_off_is_noticed_at_once() -> None:
    # The launcher's notice does not cross the network: no heartbeat timeout is needed.
    cluster = SimCluster(workers=2, threads=1, seed=0, validate=True)
    removed: list[float] = []
    cluster.recorders.append(lambda target, msg: removed.append(cluster.now)
                             if type(msg) is p.RemoveWorker else None)
    ChaosDriver(cluster).schedule(cluster.at, (Partition(at=0.2, worker="w0"),
                                               KillWorker(at=0.3, worker="w0")))
    out = cluster.run(make_workload("independent", 40))
    assert out.results_ok  # w0's tasks were computed by w1
    assert removed == [0.3]


# ------------------------------------------------------------------ skewed estimates


@pytest.mark.parametrize("stealing", [False, True], ids=["no-stealing", "stealing"])
def test_skewed_estimates_change_placement_never_results(stealing: bool) -> None:
    base = _scenario((), workload="random-dag", tasks=300, workers=4, seed=2,
                     stealing=stealing)
    skewed = msgspec.structs.replace(base, chaos=(SkewEstimates(at=0.0, factor=10.0,
                                                                prefix="t1"),
                                                  SkewEstimates(at=0.0, factor=0.1,
                                                                prefix="t3")))
    a, b = run_scenario(base), run_scenario(skewed)
    assert a.ok and b.ok, (a.violations, b.violations)
    assert a.runs == {} and b.runs == {}
    assert a.digest != b.digest  # a different schedule...
    assert a.busy != b.busy  # ...that put work elsewhere
    assert a.n_erred == b.n_erred == 0


# ------------------------------------------------------------------ the command


def test_squall_run_storm_in_the_simulator(tmp_path: Path,
                                           run_cli) -> None:
    trace = tmp_path / "storm.jsonl"
    code, out, _ = run_cli(["run", "storm", "--runtime", "sim", "--trace", str(trace)])
    assert code == 0, out
    for row in ("tasks done and checked", "2000 of 2000", "faults injected", "kill 2",
                "partition 1", "transitions", "invariant checks", "violations", "makespan"):
        assert row in out
    code, out, _ = run_cli(["replay", str(trace)])
    assert code == 0 and "match" in out
