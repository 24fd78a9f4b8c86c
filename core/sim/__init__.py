"""squall.core.sim: the deterministic simulator that drives the pure state machines.

- ``cluster``: ``SimCluster``, the virtual-time event loop, the simulated network and the
  fault surface (``kill_worker``, ``pause_worker``, ``set_link``, ``skew_estimates``,
  ``add_worker``), with the stream digest of every stimulus delivered. ``run(graph)``
  runs one graph to the end; ``submit``, ``advance`` and ``drain`` step through a run.
"""

from squall.core.sim.cluster import (
    CLIENT,
    SCHEDULER,
    SimCluster,
    SimulationError,
    SimWorker,
    TimeBudgetExceeded,
)

__all__ = ["CLIENT", "SCHEDULER", "SimCluster", "SimWorker", "SimulationError",
           "TimeBudgetExceeded"]
