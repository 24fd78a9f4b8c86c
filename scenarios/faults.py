"""Timed faults for scenarios: defined once, in ``squall.chaos.injectors``; re-exported here
so scenario code and scenario files keep their names (``SlowLink`` is ``SlowNetwork``,
``Skew`` is ``SkewEstimates``: the JSON tags ``slow-link`` and ``skew`` are unchanged).
"""

from __future__ import annotations

from squall.chaos.injectors import (
    FAULT_KINDS,
    AnyFault,
    ChaosDriver,
    Fault,
    FaultSurface,
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

SlowLink = SlowNetwork
Skew = SkewEstimates

__all__ = [
    "FAULT_KINDS", "AnyFault", "ChaosDriver", "Fault", "FaultSurface", "Heal", "JoinWorker",
    "KillWorker", "Partition", "PauseWorker", "Skew", "SkewEstimates", "SlowLink",
    "SlowNetwork", "links_between", "timeline",
]
