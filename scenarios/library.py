"""The standard scenarios: the atypical workloads users really have, by name.

``squall scenarios`` lists them; ``squall run NAME`` runs one. Each is sized to finish in
seconds in the simulator with strict mode on.
"""

from __future__ import annotations

from squall.scenarios.faults import (
    Heal,
    JoinWorker,
    KillWorker,
    Partition,
    PauseWorker,
    Skew,
    SlowLink,
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
        Scenario(name="storm", workload=Generated(name="mixed", tasks=400),
                 cluster=ClusterShape(workers=5, threads=2, stealing=True,
                                      heartbeat_timeout=3.0, jitter=0.0005),
                 chaos=(
                     Skew(at=0.2, factor=8.0),
                     PauseWorker(at=0.3, worker="w0", seconds=1.5),
                     SlowLink(at=0.4, worker="w1", latency=0.05, bandwidth=5e6),
                     KillWorker(at=0.6, worker="w2"),
                     Partition(at=0.8, worker="w3"),
                     JoinWorker(at=1.0),
                     Skew(at=1.2, factor=0.2, prefix="tiny"),
                     KillWorker(at=1.5, worker="w4"),
                     JoinWorker(at=2.0, worker="w2"),
                     Heal(at=6.0),
                 ),
                 description="kills, a pause, a slow link, a partition, skewed estimates and "
                             "joins, all at once"),
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
