"""Failing scenarios of the catalog's mutants, kept as values: what tests and benchmarks of
shrinking and minimizing start from."""

from __future__ import annotations

from msgspec.structs import replace

from squall.chaos.injectors import Heal, JoinWorker, Partition
from squall.scenarios.model import ClusterShape, ExplicitGraph, Scenario, TaskDef


def missing_data_with_fillers() -> Scenario:
    """``missing-data-ignored`` as Hypothesis left it with seed 1: a-8 reads a-3 and a-5;
    the nine other tasks only make a-3's holder, w2, look busy, so that a-8 goes to w1 and
    fetches a-3 from w2 once w2 is cut off. No drop of one or two tasks keeps that
    placement at the moment the partition was tuned to, so minimizing it takes many
    rounds (and drops many tasks at once)."""
    t = {i: TaskDef(f"a-{i}", sim_duration=0.01, duration=0.01, nbytes=100) for i in range(12)}
    t[2] = replace(t[2], deps=("a-1",))
    t[3] = replace(t[3], sim_duration=0.001, duration=0.001)
    t[8] = replace(t[8], deps=("a-2", "a-3", "a-5"))
    return Scenario(workload=ExplicitGraph(tasks=tuple(t.values())),
                    cluster=ClusterShape(workers=3, heartbeat_timeout=2.0, max_time=600.0),
                    chaos=(Partition(at=0.01, worker="w2"), Heal(at=3.01), JoinWorker(at=3.01)))
