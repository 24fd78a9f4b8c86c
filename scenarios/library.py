"""The standard scenarios: the atypical workloads users really have, by name.

``squall scenarios`` lists them; ``squall run NAME`` runs one. Each is sized to finish in
seconds in the simulator with strict mode on.
"""

from __future__ import annotations

from squall.chaos.injectors import (
    JoinWorker,
    KillWorker,
    Partition,
    PauseWorker,
    SkewEstimates,
    SlowNetwork,
)
from squall.scenarios.model import ClusterShape, Generated, Scenario, ScenarioError


def _library() -> dict[str, Scenario]:
    four = ClusterShape(workers=4)
    scenarios = [
        Scenario(name="many-tiny", workload=Generated(name="many-tiny", tasks=5000),
                 cluster=four, description="5,000 one-millisecond tasks: scheduler overhead "
                                           "dominates"),
        Scenario(name="few-long", workload=Generated(name="few-long", tasks=6),
                 cluster=ClusterShape(workers=4, stealing=True),
                 description="six 5-30 s tasks of unknown duration on four workers"),
        Scenario(name="skewed-durations", workload=Generated(name="skewed-durations", tasks=600),
                 cluster=ClusterShape(workers=4, stealing=True),
                 description="hints wrong by 10x either way; stealing must even it out"),
        Scenario(name="large-data", workload=Generated(name="large-outputs", tasks=90),
                 cluster=ClusterShape(workers=4, bandwidth=200e6),
                 description="10-100 MiB outputs read by other tasks: locality matters"),
        Scenario(name="deep-chain", workload=Generated(name="chain", tasks=2000),
                 cluster=four, description="a 2,000-task linear chain"),
        Scenario(name="wide-fan-in", workload=Generated(name="fan-out-fan-in", tasks=2000),
                 cluster=four, description="one source, 2,000 maps, one sink reading them all"),
        Scenario(name="tree", workload=Generated(name="tree", tasks=1024),
                 cluster=four, description="a binary tree reduction of 1,024 leaves"),
        Scenario(name="mixed", workload=Generated(name="mixed", tasks=1000),
                 cluster=ClusterShape(workers=4, stealing=True),
                 description="tiny and long tasks, large outputs, a chain and a fan-in"),
        Scenario(name="late-joiner", workload=Generated(name="random-dag", tasks=800),
                 cluster=ClusterShape(workers=1, stealing=True),
                 chaos=(JoinWorker(at=1.0), JoinWorker(at=2.0, threads=2)),
                 description="one worker at first; two more join while it is busy"),
        Scenario(name="kill-mid-run", workload=Generated(name="tree", tasks=256,
                                                         params={"duration": 0.05}),
                 cluster=ClusterShape(workers=3),
                 chaos=(KillWorker(at=0.5, worker="w1"), JoinWorker(at=1.5, worker="w1")),
                 description="a worker dies mid-reduction (its data is recomputed) and "
                             "comes back"),
        Scenario(name="storm", runtime="real",
                 workload=Generated(name="mixed", tasks=2000, params={
                     "long_tasks": 8, "long_max": 3.0, "big_tasks": 20, "big_mib": 2.0}),
                 cluster=ClusterShape(workers=4, threads=2, stealing=True,
                                      heartbeat_timeout=3.0, max_time=600.0),
                 chaos=(
                     SkewEstimates(at=0.5, factor=10.0, prefix="part"),
                     SkewEstimates(at=0.5, factor=0.1, prefix="tiny"),
                     SlowNetwork(at=1.0, worker="w1", peer="scheduler", latency=0.05,
                                 jitter=0.02),
                     SlowNetwork(at=1.0, worker="w2", peer="w3", latency=0.05, jitter=0.02),
                     KillWorker(at=1.5, worker="w2"),
                     JoinWorker(at=2.5, worker="w2"),
                     PauseWorker(at=3.0, worker="w0", seconds=1.5),
                     Partition(at=3.5, worker="w3", peer="scheduler", seconds=4.0),
                     KillWorker(at=5.0, worker="w1"),
                     JoinWorker(at=6.0, worker="w1"),
                 ),
                 description="2,000 mixed tasks on 4 real workers in strict mode while two "
                             "die and are replaced, one pauses, links slow down (50 +- 20 "
                             "ms), one is cut past the heartbeat timeout and healed, and "
                             "estimates are skewed x10 and x0.1"),
    ]
    return {s.name: s for s in scenarios}


def scenario_names() -> list[str]:
    return list(_library())


def named_scenario(name: str) -> Scenario:
    """The standard scenario ``name``; ScenarioError lists the names when it is unknown."""
    lib = _library()
    try:
        return lib[name]
    except KeyError:
        raise ScenarioError(f"unknown scenario {name!r}; choose one of: "
                            f"{', '.join(lib)}") from None


def all_scenarios() -> dict[str, Scenario]:
    return _library()
