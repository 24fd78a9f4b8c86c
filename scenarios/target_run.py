"""Running a scenario in a target's own runtime (``runtime="dask"``, say): ``run_on_target``.

The target starts a ``GraphCluster`` (``squall.core.view``) of the scenario's shape; the
runner gives every task of the scenario's graph the real-mode body (``real_graph``: it
sleeps its simulated duration, then returns the simulator's value or raises), submits the
graph through the cluster, applies the chaos schedule at its times (wall-clock seconds
after the submission) through the cluster's fault surface, waits for every key with a
deadline (``max_time``, at most 600 s: a key unfinished then is a ``liveness.progress``
violation), checks every key against the oracle and asks the cluster's own strict mode
(the target's validator) for its full checks at the end and for what it found. A
violation does not stop the run: the results are checked all the same
(``Outcome.results_ok``), and the violations listed beside them.

The trace has the same header, fault lines and outcome line as any other; the stimuli
are the target's own records (``ts`` lines, ``squall.scenarios.trace.TargetStim``), as
its stimulus log gives them. Such a trace has no state digests and cannot be replayed
into squall's state machines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from squall.chaos.clients import CLIENT_METHODS
from squall.chaos.injectors import ChaosDriver, effects, timeline
from squall.core import protocol as p
from squall.core.oracle import expected_results
from squall.core.outcome import Outcome, Violation
from squall.core.view import GraphCluster, ReusableCluster, Target, TaskFuture
from squall.scenarios.model import DEFAULT_TICK, Scenario
from squall.scenarios.real import (
    CLIENTS_SIM_ONLY,
    _RealSurface,
    judge_results,
    needs_network,
    plain_value,
    real_graph,
)
from squall.scenarios.runner import RuntimeUnavailable
from squall.scenarios.trace import CHAOS, End, Stim, TargetStim, TraceWriter

PROGRESS_EVERY = 0.2  # seconds between progress reports
MAX_VIOLATIONS = 20  # violations an outcome lists, at most


def unsupported_on_target(scenario: Scenario) -> str | None:
    """Why this scenario cannot run in a target's own runtime, or None."""
    if scenario.cluster.tick_interval != DEFAULT_TICK:
        return "cluster.tick_interval is the simulator's: the target's scheduler sets its own"
    for i, f in enumerate(scenario.chaos):
        if effects(f) & CLIENT_METHODS:
            return f"chaos[{i}] ({f.kind_name()}): {CLIENTS_SIM_ONLY}"
    return None


class _Funnel(TraceWriter):
    """A trace writer that other threads may hand stimuli to (``feed``): they wait in a
    queue until this thread writes a line, or ``drain``s them, so lines stay whole and
    a fault is written after the stimuli that came before it."""

    def __init__(self, path: str | Path, scenario: Scenario) -> None:
        self.queue: deque[tuple[str, Any]] = deque()
        super().__init__(path, scenario)  # (writes the header)

    def feed(self, receiver: str, stimulus: Any) -> None:
        self.queue.append((receiver, stimulus))  # (deque.append is thread-safe)

    def drain(self) -> None:
        queue = self.queue
        while queue:
            receiver, stimulus = queue.popleft()
            self.n += 1
            super().write(TargetStim(t=receiver, m=stimulus))

    def write(self, line: Any) -> None:
        self.drain()
        super().write(line)


class _Surface(_RealSurface):
    """The real runtime's recording fault surface, with a joining worker's threads."""

    def add_worker(self, name: str | None = None, threads: int | None = None) -> str:
        if name is not None and name in self.cluster.workers:
            raise ValueError(f"worker {name!r} is alive")
        self._record("add_worker", name or "", {} if threads is None else {"threads": threads})
        return str(self.cluster.add_worker(name, threads))


STALL_MIN = 5.0  # seconds nothing may move before a run is called stuck, at least
STALL_POLL = 0.5  # seconds between looks for stillness


def _stall_window(shape: Any) -> float:
    """How long nothing may move before the run is stuck: long enough for the cluster's
    failure detector (its heartbeat timeout) to notice a silent worker, several times over."""
    return max(STALL_MIN, 3.0 * float(shape.heartbeat_timeout or 0.0))


class _Stall:
    """Watches a running cluster for stillness: no future done, and the cluster's pulse
    (``pulse()``, where it has one) unchanged for ``window`` seconds, with no fault left
    to come. Where the cluster has no pulse, only the run's deadline ends a stuck run."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.since = 0.0  # when the current stillness began (run time)
        self.done = -1
        self.pulse: Any = None

    def still(self, cluster: Any, done: int, now: float, *, pending: bool) -> bool:
        if done != self.done or pending:
            self.done, self.since, self.pulse = done, now, None
            return False
        if now - self.since < 1.0:
            return False
        probe = getattr(cluster, "pulse", None)
        if probe is None:
            return False
        pulse = probe()
        if pulse is None or pulse != self.pulse:  # it works, or it moved
            self.pulse = pulse
            self.since = now
            return False
        return now - self.since >= self.window


class _Done:
    """Counts the futures done, and wakes whoever waits for one."""

    def __init__(self, futures: Mapping[str, TaskFuture]) -> None:
        self.total = len(futures)
        self.n = 0
        self.changed = threading.Condition()
        for fut in futures.values():
            fut.add_done_callback(self._one)

    def _one(self, _: Any) -> None:
        with self.changed:
            self.n += 1
            self.changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Until a future is done (or all are), at most ``timeout`` seconds."""
        with self.changed:
            if self.n < self.total:
                self.changed.wait(max(timeout, 0.0))


class ClusterPool:
    """Keeps the last cluster between scenarios (exploration): the next scenario gets it
    back if the cluster's ``reset`` (``ReusableCluster``) says it fits the scenario's shape
    and modes; else it is closed and a new one started. ``close()`` when done (or use it as
    a context manager)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.kept: Any = None
        self.started = 0  # clusters started
        self.reused = 0  # scenarios run on a kept cluster
        self.refusals: dict[str, int] = {}  # why a kept cluster was not reused: how often

    def get(self, scenario: Scenario, *, validate: bool, network: bool) -> Any:
        c = scenario.cluster
        cluster, self.kept = self.kept, None
        if cluster is not None:
            if isinstance(cluster, ReusableCluster) and cluster.reset(
                    c, validate=validate, network=network):
                self.reused += 1
                return cluster
            why = str(getattr(cluster, "refused", "") or "it cannot be reset")
            self.refusals[why] = self.refusals.get(why, 0) + 1
            _close(cluster)
        cluster = self.target.start(scenario.runtime, c, seed=scenario.seed, validate=validate,
                                    record=True, network=network)
        self.started += 1
        return cluster

    def put(self, cluster: Any) -> None:
        """The run is over: keep ``cluster`` for the next scenario."""
        self.kept = cluster

    def close(self) -> None:
        if self.kept is not None:
            _close(self.kept)
            self.kept = None

    def __enter__(self) -> ClusterPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_on_target(scenario: Scenario, target: Target, *, trace: str | Path | None = None,
                  validate: bool = True, progress: Callable[[int, int], None] | None = None,
                  timeout: float | None = None, pool: ClusterPool | None = None) -> Outcome:
    """Run ``scenario`` in ``target``'s runtime ``scenario.runtime``; see the module
    docstring. ``pool``: take the cluster from it and give it back after (exploration).
    RuntimeUnavailable (one line) if the cluster cannot start or a fault cannot be
    applied."""
    c = scenario.cluster
    graph = scenario.graph()
    expected = expected_results(graph)
    limit = min(c.max_time, 600.0) if timeout is None else timeout
    runtime = scenario.runtime
    started_wall = time.perf_counter()
    try:
        if pool is not None:
            cluster = pool.get(scenario, validate=validate, network=needs_network(scenario))
        else:
            cluster = target.start(runtime, c, seed=scenario.seed, validate=validate,
                                   record=trace is not None, network=needs_network(scenario))
    except (OSError, RuntimeError, ImportError) as e:
        raise RuntimeUnavailable(f"runtime {runtime!r}: {_line(e)}") from None
    if not isinstance(cluster, GraphCluster):
        _close(cluster)
        raise RuntimeUnavailable(f"target {target.name!r}: its {runtime!r} runtime gives no "
                                 "GraphCluster (squall.core.view) to run a scenario on")
    writer = _Funnel(trace, scenario) if trace is not None else None
    counter = [0]

    def record(receiver: str, stimulus: Any) -> None:
        counter[0] += 1
        if writer is not None:
            writer.feed(receiver, stimulus)

    results: dict[str, tuple[str, Any]] = {}
    violations: list[Violation] = []
    driver: ChaosDriver | None = None
    makespan = 0.0
    try:
        target.log_stimuli(cluster, record)  # one recorder: it sees the first records too
        futures = cluster.compute(real_graph(graph))
        t0 = time.monotonic()
        driver = ChaosDriver(_Surface(cluster, writer, t0))
        schedule = timeline(scenario.chaos)
        done = _Done(futures)
        stall = _Stall(_stall_window(c))
        stuck = False
        next_report = 0.0
        while True:
            now = time.monotonic() - t0
            while schedule and schedule[0].at <= now:
                fault = schedule.pop(0)
                try:
                    driver.apply(fault)
                except (OSError, RuntimeError) as e:
                    raise RuntimeUnavailable(f"runtime {runtime!r}: {fault.kind_name()} fault "
                                             f"at {fault.at:g} s: {_line(e)}") from None
            if progress is not None and now >= next_report:
                next_report = now + PROGRESS_EVERY
                progress(done.n, done.total)
            if done.n >= done.total:
                makespan = now
                break
            if now > limit:
                violations.append(Violation(
                    invariant="liveness.progress",
                    text="every wanted key is eventually computed or erred",
                    entity="cluster", time=now,
                    detail=f"{done.total - done.n} keys unfinished after {limit:g} s"))
                break
            if stall.still(cluster, done.n, now, pending=bool(schedule)):
                cluster.check(final=True)  # names what is stuck (liveness)
                if not cluster.violations:
                    unfinished = sorted(k for k, f in futures.items() if not f.done())
                    violations.append(Violation(
                        invariant="liveness.progress",
                        text="every wanted key is eventually computed or erred",
                        entity="cluster", time=now,
                        detail=f"nothing moved for {now - stall.since:.1f} s with "
                               f"{len(unfinished)} keys unfinished, e.g. {unfinished[:3]}"))
                stuck = True
                break
            if writer is not None:
                writer.drain()
            wake = [limit - now + 0.001]
            if schedule:
                wake.append(schedule[0].at - now)
            if progress is not None:
                wake.append(next_report - now)
            wake.append(STALL_POLL)  # (to look for stillness)
            done.wait(min(wake))
        if not violations and not stuck:
            for key, fut in futures.items():
                results[key] = _result(fut, limit)
            cluster.check(final=True)
        violations += cluster.violations
    finally:
        if pool is not None:
            pool.put(cluster)
        else:
            _close(cluster)
    if progress is not None:
        progress(len(results), len(expected))
    wrong, n_erred = judge_results(graph, expected, results)
    outcome = Outcome(
        results_ok=not wrong, makespan=makespan, n_tasks=len(graph),
        transitions=cluster.transitions, digest="", n_stimuli=counter[0], n_erred=n_erred,
        wrong=sorted(wrong)[:20], faults=dict(driver.counts) if driver else {},
        invariant_checks=cluster.invariant_checks, violations=violations[:MAX_VIOLATIONS],
        steals=int(getattr(cluster, "steals", 0)))
    if writer is not None:
        writer.drain()
        v = outcome.violations[0] if outcome.violations else None
        phase = "done" if v is None else ("stimulus" if v.stimulus_id else "end")
        writer.write(End(outcome=msgspec.structs.replace(outcome, wall_time=0.0, trace_path=""),
                         phase=phase, n=writer.n))
        writer.close()
        outcome.trace_path = str(trace)
    outcome.wall_time = time.perf_counter() - started_wall
    return outcome


def write_trace(path: str | Path, scenario: Scenario, stimuli: Iterable[tuple[str, Any]],
                faults: Iterable[Any], outcome: Outcome, phase: str = "done") -> None:
    """A trace of a run recorded after the fact: ``stimuli`` as (receiver, the target's
    record), ``faults`` as records with ``time``, ``kind``, ``target`` and ``params`` (a
    ``DaskCluster``'s ``faults``), merged in the order of their times, then the outcome."""
    lines: list[tuple[float, int, Any]] = []
    for i, fault in enumerate(faults):
        lines.append((fault.time, len(lines), Stim(t=CHAOS, c=0, m=p.FaultInjected(
            stimulus_id=f"fault-{i + 1}", time=fault.time, kind=fault.kind,
            target=fault.target, params=dict(fault.params)))))
    n = 0
    for receiver, stimulus in stimuli:
        n += 1
        lines.append((float(getattr(stimulus, "time", 0.0)), len(lines),
                      TargetStim(t=receiver, m=stimulus)))
    writer = TraceWriter(path, scenario)
    for _, _, line in sorted(lines, key=lambda x: (x[0], x[1])):
        writer.write(line)
    writer.write(End(outcome=msgspec.structs.replace(outcome, wall_time=0.0, trace_path=""),
                     phase=phase, n=n))
    writer.close()


def _result(fut: TaskFuture, timeout: float) -> tuple[str, Any]:
    """("memory", value) or ("erred", "ErrorType: message")."""
    try:
        return ("memory", plain_value(fut.result(timeout)))
    except (Exception, asyncio.CancelledError) as e:  # the task's error (or its cancelling)
        return ("erred", f"{type(e).__name__}: {e}")


def _close(cluster: Any) -> None:
    close = getattr(cluster, "close", None)
    if close is not None:
        close()


def _line(e: BaseException) -> str:
    text = str(e).splitlines()
    return text[0] if text else type(e).__name__
