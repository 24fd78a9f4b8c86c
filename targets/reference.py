"""The reference scheduler as a ``Target``: squall's own state machines, in the simulator
(``SimCluster``) and in real processes on this machine (``LocalCluster``).

``ReferenceTarget().start("sim", shape, seed=0)`` gives a ``SimCluster``: a fault surface
and a ``ClusterView`` both. ``start("real", shape)`` gives a ``LocalCluster`` (close it,
or use it as a context manager): a fault surface over processes whose state this process
cannot see, so ``view`` gives None there. Either way the cluster starts with the shape's
per-worker links set; those are its shape, not faults, and are not counted as faults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from squall.chaos.injectors import SlowNetwork, links_between
from squall.core.sim import SimCluster
from squall.core.view import REAL, SIM, ClusterShape, ClusterView, FaultSurface, Recorder

if TYPE_CHECKING:
    from squall.core.runtime.cluster import LocalCluster


class ReferenceTarget:
    """squall's reference scheduler; see the module docstring."""

    name = "reference"
    runtimes: tuple[str, ...] = (SIM, REAL)

    def start(self, runtime: str, shape: ClusterShape, *, seed: int = 0,
              validate: bool = True, record: bool = False,
              network: bool = False) -> FaultSurface:
        """A cluster of ``shape`` in ``runtime`` (see ``squall.core.view.Target``). The
        simulator is seeded with ``seed`` and always records and models the network; real
        processes are not seeded, and their workers stay dead when killed (a worker joins
        only when asked to)."""
        if runtime == SIM:
            return self._start_sim(shape, seed, validate)
        if runtime == REAL:
            return self._start_real(shape, validate, record, network)
        raise ValueError(f"target {self.name!r} has no runtime {runtime!r}; "
                         f"it offers: {', '.join(self.runtimes)}")

    def view(self, cluster: FaultSurface) -> ClusterView | None:
        """The simulated cluster itself; None for real processes."""
        return cluster if isinstance(cluster, SimCluster) else None

    def log_stimuli(self, cluster: FaultSurface, recorder: Recorder) -> None:
        """Both runtimes call their ``recorders`` with ``(receiver, stimulus)``: the
        simulator as it delivers each stimulus, a real cluster as the records of its
        processes arrive (it must have been started with ``record=True``)."""
        if isinstance(cluster, SimCluster):
            cluster.recorders.append(recorder)
            return
        real = _local_cluster(cluster)
        if not real.record:
            raise ValueError("this real cluster records no stimuli: start it with record=True")
        real.recorders.append(recorder)

    # ------------------------------------------------------------------ the runtimes

    def _start_sim(self, shape: ClusterShape, seed: int, validate: bool) -> SimCluster:
        cluster = SimCluster(
            workers=shape.workers, threads=shape.threads, seed=seed, latency=shape.latency,
            bandwidth=shape.bandwidth, jitter=shape.jitter, validate=validate,
            stealing=shape.stealing, allowed_failures=shape.allowed_failures,
            heartbeat_interval=shape.heartbeat_interval,
            heartbeat_timeout=shape.heartbeat_timeout, tick_interval=shape.tick_interval,
            max_time=shape.max_time)
        for link in shape.links:
            SlowNetwork(worker=link.worker, latency=link.latency, bandwidth=link.bandwidth,
                        jitter=link.jitter).apply(cluster)
        cluster.faults.clear()  # the starting links are the cluster's shape, not faults
        return cluster

    def _start_real(self, shape: ClusterShape, validate: bool, record: bool,
                    network: bool) -> LocalCluster:
        from squall.core.runtime.cluster import LocalCluster

        options: dict[str, Any] = {}
        if shape.heartbeat_interval is not None:
            options["heartbeat_interval"] = shape.heartbeat_interval
        cluster = LocalCluster(
            workers=shape.workers, threads=shape.threads, validate=validate,
            heartbeat_timeout=shape.heartbeat_timeout, stealing=shape.stealing,
            allowed_failures=shape.allowed_failures, restart=False, record=record,
            proxy=network or bool(shape.links), **options)
        try:
            for link in shape.links:
                for src, dst in links_between(link.worker):
                    cluster.set_link(src, dst, latency=link.latency, jitter=link.jitter,
                                     bandwidth=link.bandwidth)
        except BaseException:
            cluster.close()
            raise
        return cluster


def _local_cluster(cluster: FaultSurface) -> LocalCluster:
    from squall.core.runtime.cluster import LocalCluster

    if not isinstance(cluster, LocalCluster):
        raise TypeError(f"not a cluster of the reference target: {cluster!r}")
    return cluster
