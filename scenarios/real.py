"""Running a scenario on real processes (``runtime="real"``): ``LocalCluster`` over ZeroMQ.

Each task of the scenario's graph gets a real body (``simulated_body``) that sleeps its
simulated duration and returns the same value the simulator computes (or raises), so
the results are checked exactly as in the simulator. Faults strike at their ``at``
(wall-clock seconds after the graph is submitted) through the cluster's fault surface:
kill, pause, skew estimates and join. Network faults (slow link, partition, heal) need
the chaos network proxy and are refused in one line for now.

With a trace, every stimulus the scheduler and the workers received is streamed here
and written as in the simulator (receiver, incarnation, transition count before it), so
``squall replay`` treats a real trace like a simulated one. A real trace has no state
digests: the state lives in other processes; the per-stimulus transition counts are
what replay compares.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from squall.core import protocol as p
from squall.core.graph import TaskGraph, TaskSpec
from squall.core.outcome import Outcome, Violation
from squall.core.sim import expected_results, task_value
from squall.scenarios.faults import ChaosDriver, Heal, JoinWorker, Partition, SlowLink
from squall.scenarios.model import Scenario
from squall.scenarios.trace import CHAOS, End, Stim, TraceWriter, WorkerStart

POLL = 0.01  # seconds between looks at the futures and the fault schedule


class SimulatedTaskError(RuntimeError):
    """What a task marked ``fails`` raises in real mode."""


def simulated_body(key: str, seconds: float, fails: bool, *inputs: int) -> int:
    """A task body for real mode: takes ``seconds``, then the simulator's value or error."""
    if seconds > 0:
        time.sleep(seconds)
    if fails:
        raise SimulatedTaskError(f"task {key!r} failed (error:{key})")
    return task_value(key, list(inputs))


def real_graph(graph: TaskGraph) -> TaskGraph:
    """The same graph with real bodies in place of the simulated ones."""
    return TaskGraph(TaskSpec(spec.key, deps=spec.deps, duration=spec.duration,
                              nbytes=spec.nbytes, prefix=spec.prefix, priority=spec.priority,
                              restrictions=spec.restrictions, func=simulated_body,
                              args=(spec.key, spec.actual_duration, spec.fails))
                     for spec in graph)


def unsupported_in_real_mode(scenario: Scenario) -> str | None:
    """Why this scenario cannot run on real processes yet, or None."""
    for i, f in enumerate(scenario.chaos):
        if isinstance(f, SlowLink | Partition | Heal):
            return (f"chaos[{i}] ({f.kind_name()}): network faults in real mode need the "
                    "chaos network proxy, which run_scenario does not drive yet")
        if isinstance(f, JoinWorker) and f.threads not in (None, scenario.cluster.threads):
            return f"chaos[{i}] (join): a joining worker has the cluster's threads in real mode"
    if scenario.cluster.links:
        return "cluster.links: per-worker links in real mode need the chaos network proxy"
    return None


class _RealSurface:
    """The fault surface of a LocalCluster, recording each fault in the trace first."""

    def __init__(self, cluster: Any, writer: TraceWriter | None, started: float) -> None:
        self.cluster = cluster
        self.writer = writer
        self.started = started
        self.faults: dict[str, int] = {}
        self._n = 0

    def _record(self, kind: str, target: str, params: dict[str, Any], count_as: str) -> None:
        self.faults[count_as] = self.faults.get(count_as, 0) + 1
        if self.writer is not None:
            self._n += 1
            self.writer.write(Stim(t=CHAOS, c=0, m=p.FaultInjected(
                stimulus_id=f"fault-{self._n}", time=time.monotonic() - self.started,
                kind=kind, target=target, params=params)))

    def kill_worker(self, name: str) -> None:
        if name in self.cluster.workers:
            self._record("kill_worker", name, {}, "kill")
            self.cluster.kill_worker(name)

    def pause_worker(self, name: str, seconds: float) -> None:
        if name in self.cluster.workers:
            self._record("pause_worker", name, {"seconds": seconds}, "pause")
            self.cluster.pause_worker(name, seconds)

    def set_link(self, src: str, dst: str, **kwargs: Any) -> None:  # refused up front
        raise NotImplementedError("network faults in real mode")

    def skew_estimates(self, factor: float, prefix: str | None = None) -> None:
        self._record("skew_estimates", "", {"factor": factor, **(
            {"prefix": prefix} if prefix is not None else {})}, "skew")
        self.cluster.skew_estimates(factor, prefix)

    def add_worker(self, name: str | None = None, threads: int | None = None) -> str:
        if name is not None and name in self.cluster.workers:
            raise ValueError(f"worker {name!r} is alive")
        self._record("add_worker", name or "", {}, "join")
        return str(self.cluster.add_worker(name))


class _RealRecorder:
    """Raw records of the real cluster -> trace lines (a worker line at each new
    incarnation's first stimulus)."""

    def __init__(self, writer: TraceWriter, threads: int) -> None:
        self.writer = writer
        self.threads = threads
        self.seen: set[tuple[str, int]] = set()

    def __call__(self, target: str, incarnation: int, count: int, msg: Any) -> None:
        if target != "scheduler" and (target, incarnation) not in self.seen:
            self.seen.add((target, incarnation))
            self.writer.write(WorkerStart(name=target, i=incarnation, threads=self.threads))
        self.writer.stimulus(target, incarnation if target != "scheduler" else 0, count, msg)


def run_real(scenario: Scenario, *, trace: str | Path | None = None,
             validate: bool = True, timeout: float | None = None) -> Outcome:
    """Run ``scenario`` on a LocalCluster; see the module docstring."""
    from squall.core.client import Client
    from squall.core.cluster import LocalCluster
    from squall.scenarios.runner import violation_from

    c = scenario.cluster
    graph = scenario.graph()
    expected = expected_results(graph)
    limit = min(c.max_time, 600.0) if timeout is None else timeout
    writer = TraceWriter(trace, scenario) if trace is not None else None
    started_wall = time.perf_counter()
    results: dict[str, tuple[str, Any]] = {}
    violation: Violation | None = None
    surface: _RealSurface | None = None
    n_stimuli = 0
    makespan = 0.0
    counter = [0]
    kwargs: dict[str, Any] = {}
    if c.heartbeat_interval is not None:
        kwargs["heartbeat_interval"] = c.heartbeat_interval
    if True:  # the cluster's and the client's lifetimes
        with LocalCluster(workers=c.workers, threads=c.threads, validate=validate,
                          heartbeat_timeout=c.heartbeat_timeout, stealing=c.stealing,
                          allowed_failures=c.allowed_failures, restart=False,
                          record=writer is not None, **kwargs) as cluster:
            cluster.raw_recorders.append(lambda *a: counter.__setitem__(0, counter[0] + 1))
            if writer is not None:
                cluster.raw_recorders.append(_RealRecorder(writer, c.threads))
            with Client(cluster) as client:
                futures = client.compute(real_graph(graph))
                t0 = time.monotonic()
                surface = _RealSurface(cluster, writer, t0)
                driver = ChaosDriver(surface)
                schedule = sorted(scenario.chaos, key=lambda f: f.at)
                try:
                    while True:
                        now = time.monotonic() - t0
                        while schedule and schedule[0].at <= now:
                            driver.apply(schedule.pop(0))
                        if all(f.done() for f in futures.values()):
                            makespan = now
                            break
                        if now > limit:
                            violation = Violation(
                                invariant="liveness.progress",
                                text="every wanted key is eventually computed or erred",
                                entity="cluster", time=now, detail=(
                                    f"{sum(not f.done() for f in futures.values())} keys "
                                    f"unfinished after {limit:g} s"))
                            break
                        cluster.sync_records(0)
                        time.sleep(POLL)
                    if violation is None:
                        for key, fut in futures.items():
                            try:
                                results[key] = ("memory", fut.result(limit))
                            except Exception as e:  # the task's error, or a violation
                                v = violation_from(e, time.monotonic() - t0)
                                if v is not None:
                                    violation = v
                                    break
                                results[key] = ("erred", str(e))
                except Exception as e:
                    v = violation_from(e, time.monotonic() - t0)
                    if v is None:
                        raise
                    violation = v
    n_stimuli = counter[0]  # after close(): the last records have arrived
    wrong = []
    n_erred = 0
    for key, want in expected.items():
        got = results.get(key)
        if got is None:
            wrong.append(key)
        elif got[0] == "erred":
            n_erred += 1
            if not isinstance(want, str) or f"({want})" not in str(got[1]):
                wrong.append(key)
        elif got[1] != want:
            wrong.append(key)
    outcome = Outcome(
        results_ok=violation is None and not wrong, makespan=makespan, n_tasks=len(graph),
        transitions=0, digest="", n_stimuli=n_stimuli, n_erred=n_erred,
        wrong=sorted(wrong)[:20], faults=dict(surface.faults) if surface else {},
        violations=[violation] if violation is not None else [],
        wall_time=time.perf_counter() - started_wall)
    if writer is not None:
        phase = "done" if violation is None else (
            "stimulus" if violation.stimulus_id else "stuck")
        recorded = msgspec.structs.replace(outcome, wall_time=0.0)  # no clock in a trace
        writer.write(End(outcome=recorded, phase=phase, n=writer.n))
        writer.close()
        outcome.trace_path = str(trace)
    return outcome
