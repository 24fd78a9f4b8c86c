"""A Hypothesis ``RuleBasedStateMachine`` that drives a simulated cluster rule by rule.

Rules: submit a graph, kill, pause, slow a link, partition, heal, skew estimates, add a
worker, a client (the first or a second one) releasing or wanting keys submitted so far
(``squall.chaos.clients``), advance virtual time. Strict mode is on throughout (the validator checks every
transition), the ``@invariant`` runs the validator's full state check between rules,
and teardown heals everything, drains, and checks liveness and every result.

Use it in a test module with ``TestCluster = ClusterMachine.TestCase``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from squall.chaos.clients import CLIENT, ReleaseKeys, WantKeys
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
)
from squall.core.graph import TaskGraph, TaskSpec
from squall.core.sim import SimCluster
from squall.scenarios.model import ExplicitGraph
from squall.scenarios.strategies import PREFIXES, SECOND_CLIENT, graphs

HEARTBEAT_TIMEOUT = 2.0  # partitions are noticed: a cut-off worker is removed in time
MAX_WORKER_INDEX = 6
MAX_TIME = 300.0  # virtual seconds: far beyond what 15 small steps need; a livelock stops


def full_check(cluster: Any) -> None:
    """The validator's check of the whole state (not only what the last transition touched)."""
    validator = cluster.validator
    if validator is not None:
        validator.check_full()


class ClusterMachine(RuleBasedStateMachine):
    """Faults and submissions in any order against one simulated cluster."""

    def __init__(self) -> None:
        super().__init__()
        self.cluster: SimCluster | None = None
        self.driver: ChaosDriver | None = None
        self.submitted = 0  # graphs submitted so far
        self.faults: list[Fault] = []
        self.cut_at: dict[str, float] = {}  # partitioned workers -> since when

    @initialize(workers=st.integers(1, 4), threads=st.integers(1, 2),
                stealing=st.booleans(),
                seed=st.integers(0, 1000))
    def start(self, workers: int, threads: int, stealing: bool, seed: int) -> None:
        self.cluster = SimCluster(workers=workers, threads=threads, seed=seed, validate=True,
                                  stealing=stealing, heartbeat_timeout=HEARTBEAT_TIMEOUT,
                                  max_time=MAX_TIME)
        self.driver = ChaosDriver(self.cluster)

    def _fault(self, fault: Fault) -> None:
        assert self.driver is not None and self.cluster is not None
        self.faults.append(fault)
        self.driver.apply(fault)

    @property
    def _c(self) -> SimCluster:
        assert self.cluster is not None
        return self.cluster

    # ------------------------------------------------------------------ rules

    @rule(graph=graphs(max_tasks=15))
    def submit(self, graph: ExplicitGraph) -> None:
        c = self._c
        tag = f"g{self.submitted}"
        rename = {t.key: f"{tag}{t.key}" for t in graph.tasks}
        c.submit(TaskGraph(
            TaskSpec(rename[t.key], deps=tuple(rename[d] for d in t.deps), duration=t.duration,
                     sim_duration=t.sim_duration, nbytes=t.nbytes, fails=t.fails)
            for t in graph.tasks))
        self.submitted += 1

    @rule(i=st.integers(0, MAX_WORKER_INDEX))
    def kill(self, i: int) -> None:
        self._fault(KillWorker(at=self._c.now, worker=f"w{i}"))

    @rule(i=st.integers(0, MAX_WORKER_INDEX), seconds=st.sampled_from((0.5, 0.1, 3.0)))
    def pause(self, i: int, seconds: float) -> None:
        self._fault(PauseWorker(at=self._c.now, worker=f"w{i}", seconds=seconds))

    @rule(i=st.integers(0, MAX_WORKER_INDEX), latency=st.sampled_from((0.05, 0.5)),
          bandwidth=st.sampled_from((None, 1e6)))
    def slow_link(self, i: int, latency: float, bandwidth: float | None) -> None:
        self._fault(SlowNetwork(at=self._c.now, worker=f"w{i}", latency=latency,
                             bandwidth=bandwidth))

    @rule(i=st.integers(0, MAX_WORKER_INDEX))
    def partition(self, i: int) -> None:
        self.cut_at.setdefault(f"w{i}", self._c.now)
        self._fault(Partition(at=self._c.now, worker=f"w{i}"))

    @rule(i=st.one_of(st.none(), st.integers(0, MAX_WORKER_INDEX)))
    def heal(self, i: int | None) -> None:
        # A cut link drops messages for good (as a reset connection would): only the
        # heartbeat timeout recovers from it, so a partition lasts until it can act.
        names = list(self.cut_at) if i is None else [f"w{i}"]
        since = [self.cut_at.pop(n) for n in names if n in self.cut_at]
        c = self._c
        if since:
            c.advance(max(0.0, min(since) + HEARTBEAT_TIMEOUT + 0.5 - c.now))
        self._fault(Heal(at=c.now, worker="*" if i is None else f"w{i}"))

    @rule(factor=st.sampled_from((10.0, 0.1, 100.0, 0.01)),
          prefix=st.sampled_from((None, *PREFIXES)))
    def skew(self, factor: float, prefix: str | None) -> None:
        # Prefixes carry their submission tag ("g0a"): skew one of those seen so far.
        c = self._c
        if prefix is not None and self.submitted:
            prefix = f"g{self.submitted - 1}{prefix}"
        self._fault(SkewEstimates(at=c.now, factor=factor, prefix=prefix))

    @precondition(lambda self: self.cluster is not None
                  and len(self.cluster.workers) < MAX_WORKER_INDEX)
    @rule(i=st.one_of(st.none(), st.integers(0, MAX_WORKER_INDEX)),
          threads=st.sampled_from((None, 2)))
    def add_worker(self, i: int | None, threads: int | None) -> None:
        self._fault(JoinWorker(at=self._c.now, worker=None if i is None else f"w{i}",
                               threads=threads))

    def _keys(self, data: st.DataObject) -> tuple[str, ...]:
        keys = list(self._c.graph.tasks)
        return tuple(data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3,
                                        unique=True)))

    @precondition(lambda self: self.cluster is not None and len(self.cluster.graph) > 0)
    @rule(data=st.data(), client=st.sampled_from((CLIENT, SECOND_CLIENT)))
    def release(self, data: st.DataObject, client: str) -> None:
        self._fault(ReleaseKeys(at=self._c.now, client=client, keys=self._keys(data)))

    @precondition(lambda self: self.cluster is not None and len(self.cluster.graph) > 0)
    @rule(data=st.data(), client=st.sampled_from((CLIENT, SECOND_CLIENT)))
    def want(self, data: st.DataObject, client: str) -> None:
        self._fault(WantKeys(at=self._c.now, client=client, keys=self._keys(data)))

    @rule(seconds=st.sampled_from((0.1, 0.01, 0.5, 2.0)))
    def advance(self, seconds: float) -> None:
        self._c.advance(seconds)

    # ------------------------------------------------------------------ checks

    @invariant()
    def state_is_valid(self) -> None:
        if self.cluster is not None:
            full_check(self.cluster)

    def teardown(self) -> None:
        c = self.cluster
        if c is None or self.driver is None:
            return
        if self.cut_at:
            c.advance(max(0.0, min(self.cut_at.values()) + HEARTBEAT_TIMEOUT + 0.5 - c.now))
        self.driver.heal_all()
        if not c.scheduler.running:
            c.add_worker()  # every worker died, or was dropped while cut off or paused
        outcome = c.drain()  # SimulationError if stuck, InvariantViolation if invalid
        full_check(c)
        assert outcome.results_ok, f"wrong results for {outcome.wrong} after {self.faults}"
