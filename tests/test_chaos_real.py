"""Chaos on real processes: few tests, each waiting on conditions with deadlines.

The fault surface of ``LocalCluster``: links through Toxiproxy proxies (the built-in
server, driven by the toxiproxy-python client), a partition past the heartbeat timeout
and the clean rejoin after it heals, and scenarios with each kind of fault whose traces
replay, with strict mode on, to the same transitions and no violation (that replay is
also where the cluster-wide check "no body runs twice unless its worker died" runs).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from squall.chaos.injectors import (
    Fault,
    JoinWorker,
    KillWorker,
    Partition,
    PauseWorker,
    SkewEstimates,
    SlowNetwork,
)
from squall.chaos.schedule import ChaosSchedule
from squall.chaos.toxiproxy import connect_client
from squall.core.runtime.client import Client
from squall.core.runtime.cluster import ClusterError, LocalCluster
from squall.core.runtime.launcher import REJOIN_EXIT
from squall.scenarios.model import ClusterShape, Generated, Scenario
from squall.scenarios.replay import replay_trace
from squall.scenarios.runner import run_scenario

TIMEOUT = 30.0

pytestmark = [pytest.mark.squall_real, pytest.mark.xdist_group("squall_real")]


def slow_inc(x: int) -> int:
    import time

    time.sleep(0.02)  # the task body's own work (not a wait), so faults land mid-run
    return x + 1


def _proxies(cluster: LocalCluster) -> dict[str, Any]:
    prefix = cluster.network.prefix
    return {name[len(prefix):]: p for name, p in
            connect_client(cluster.network.api_url).proxies().items()
            if name.startswith(prefix)}


def _toxics(proxy: Any) -> dict[str, dict[str, int]]:
    return {name: t.attributes for name, t in proxy.toxics().items()}


def test_set_link_configures_the_proxy_of_each_connection() -> None:
    with LocalCluster(workers=2, threads=1, proxy=True) as cluster, Client(cluster) as client:
        assert set(_proxies(cluster)) == {"w0~scheduler", "w1~scheduler", "w0~w1", "w1~w0"}
        cluster.set_link("w0", "scheduler", latency=0.05, jitter=0.02)
        cluster.set_link("scheduler", "w0", bandwidth=2e6)
        cluster.set_link("w0", "w1", latency=0.01)  # what w0 sends to w1, on both proxies
        proxies = _proxies(cluster)
        assert _toxics(proxies["w0~scheduler"]) == {
            "latency_upstream": {"latency": 50, "jitter": 20},
            "bandwidth_downstream": {"rate": 2000}}
        assert _toxics(proxies["w0~w1"]) == {"latency_upstream": {"latency": 10, "jitter": 0}}
        assert _toxics(proxies["w1~w0"]) == {
            "latency_downstream": {"latency": 10, "jitter": 0}}
        assert _toxics(proxies["w1~scheduler"]) == {}
        # Work still flows, through the slowed proxies.
        assert client.gather(client.map(slow_inc, range(20)), TIMEOUT) == list(range(1, 21))
        cluster.set_link("w1", "*", down=True)  # every connection of w1 is cut
        assert {n: p.enabled for n, p in _proxies(cluster).items()} == {
            "w0~scheduler": True, "w1~scheduler": False, "w0~w1": False, "w1~w0": False}
        cluster.set_link("w1", "*", down=False)
        cluster.set_link("w0", "scheduler", latency=0.0, jitter=0.0)
        proxies = _proxies(cluster)
        assert all(p.enabled for p in proxies.values())
        assert _toxics(proxies["w0~scheduler"]) == {"bandwidth_downstream": {"rate": 2000}}


def test_set_link_without_the_proxy_is_one_line() -> None:
    with LocalCluster(workers=1, threads=1) as cluster:
        with pytest.raises(ClusterError, match=r"LocalCluster\(proxy=True\)"):
            cluster.set_link("w0", "scheduler", latency=0.1)


def test_a_partition_past_the_timeout_moves_work_and_the_worker_rejoins_clean() -> None:
    with LocalCluster(workers=2, threads=1, proxy=True, heartbeat_interval=0.1,
                      heartbeat_timeout=0.6, restart=False) as cluster, \
            Client(cluster) as client:
        old = cluster.workers["w0"]
        futures = client.map(slow_inc, range(60))
        cluster.set_link("w0", "scheduler", down=True)
        client.wait_until(lambda: "w0" not in client.workers, TIMEOUT,
                          "w0 declared dead after the heartbeat timeout")
        # Its work moved: everything is computed, right, while w0 is still cut off.
        assert client.gather(futures, TIMEOUT) == list(range(1, 61))
        assert cluster.workers["w0"].pid == old.pid  # cut off, not dead: it runs on
        cluster.set_link("w0", "scheduler", down=False)
        # Healed, it hears it is unknown, exits to rejoin, and a new incarnation registers.
        client.wait_until(lambda: "w0" in client.workers, TIMEOUT, "w0 rejoined")
        assert (("w0", old.pid, REJOIN_EXIT) in cluster.exits)
        assert cluster.workers["w0"].incarnation > old.incarnation
        assert client.gather(client.map(slow_inc, range(100, 140)), TIMEOUT) == list(
            range(101, 141))
        assert cluster.info().halted == ""


def _scenario(chaos: tuple[Fault, ...], tasks: int = 150) -> Scenario:
    return Scenario(workload=Generated(name="random-dag", tasks=tasks,
                                       params={"mean_duration": 0.02}),
                    cluster=ClusterShape(workers=3, threads=1, stealing=True,
                                         heartbeat_timeout=1.0, max_time=120.0),
                    chaos=chaos, runtime="real", seed=3)


CASES: dict[str, tuple[Fault, ...]] = {
    "kill-and-replace": (KillWorker(at=0.3, worker="w1"), JoinWorker(at=0.8, worker="w1")),
    "pause-past-timeout": (PauseWorker(at=0.3, worker="w0", seconds=1.8),),
    "cut-from-scheduler-and-heal": (Partition(at=0.3, worker="w2", peer="scheduler",
                                              seconds=1.8),),
    "slow-links-and-skew": (SlowNetwork(at=0.1, worker="w0", latency=0.03, jitter=0.01),
                            SlowNetwork(at=0.1, worker="w1", peer="w2", bandwidth=1e6),
                            SkewEstimates(at=0.2, factor=10.0, prefix="t1"),
                            SkewEstimates(at=0.2, factor=0.1, prefix="t2")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_kind_of_fault_keeps_every_guarantee_in_real_mode(name: str,
                                                               tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    out = run_scenario(_scenario(CASES[name]), trace=trace)
    # Right results (or their tasks' errors), no violation -- in the processes, or in the
    # strict replay of the trace -- and the cluster drained.
    assert out.ok, (out.violations, out.wrong)
    assert out.transitions > 0 and out.invariant_checks > 0
    first = CASES[name][0]
    assert out.faults[first.kind_name()] >= 1  # (a fault due after the end is not applied)
    assert set(out.faults) <= {f.kind_name() for f in CASES[name]} | {"heal"}
    replay = replay_trace(trace)
    assert replay.verdict == "match", replay.message
    if name == "slow-links-and-skew":  # no worker died: every body ran exactly once
        lines = [json.loads(x) for x in trace.read_bytes().splitlines()]
        assert Counter(ln["name"] for ln in lines if ln["k"] == "worker") == {
            "w0": 1, "w1": 1, "w2": 1}
        finished = Counter(ln["m"]["key"] for ln in lines
                           if ln["k"] == "s" and ln["m"]["op"] in ("execute-success",
                                                                   "execute-failure"))
        assert len(finished) == 150 and set(finished.values()) == {1}


def test_a_drawn_combination_of_faults_keeps_every_guarantee_in_real_mode(
        tmp_path: Path) -> None:
    # Seed 29 of swarm mode draws every kind: kills and joins, a pause, a partition that
    # heals, slow links.
    chaos = ChaosSchedule.swarm(29, workers=4, duration=4.0, max_rate=2.0,
                                prefixes=("t0", "t1", "t2"), outage=3.0)
    assert {"kill", "join", "pause", "partition", "slow-link"} <= set(chaos.kinds())
    sc = Scenario(workload=Generated(name="random-dag", tasks=400,
                                     params={"mean_duration": 0.03}),
                  cluster=ClusterShape(workers=4, threads=2, stealing=True,
                                       heartbeat_timeout=1.5, max_time=120.0),
                  chaos=chaos.faults, runtime="real", seed=29)
    trace = tmp_path / "swarm.jsonl"
    out = run_scenario(sc, trace=trace)
    assert out.ok, (out.violations, out.wrong)
    assert replay_trace(trace).verdict == "match"
