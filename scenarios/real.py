"""Running a scenario on real processes (``runtime="real"``): ``LocalCluster`` over ZeroMQ.

Each task of the scenario's graph gets a real body (``simulated_body``) that sleeps its
simulated duration and returns the same value the simulator computes (or raises), so
the results are checked exactly as in the simulator; a task with a large output returns
that many real bytes beside its value, so large outputs really travel. Faults strike at
their ``at`` (wall-clock seconds after the graph is submitted) through the cluster's
fault surface: kill (SIGKILL), pause (SIGSTOP, SIGCONT), skew estimates, join, and --
when the scenario has network faults or per-worker links -- slow, cut and healed links,
through a proxy on every connection a worker opens (``LocalCluster(proxy=True)``).

With a trace, every stimulus the scheduler and the workers received is streamed here
and written as in the simulator (receiver, incarnation, transition count before it), so
``squall replay`` treats a real trace like a simulated one. The state lives in other
processes, so the trace's digests are computed here as it is written: fresh state
machines (``squall.scenarios.replay.DigestShadow``) are fed every line in the order it
is written -- the order replay reads them -- and a digest of their state, with the
stream digest of the bytes written so far, goes in every ``DIGEST_EVERY`` stimuli and in
the outcome line (so the digests depend only on the recorded stimuli and their order,
not on timing). After the run the trace is replayed with strict mode on, without
processes: that counts the transitions and invariant checks, and adds the cluster-wide
checks (no task body run twice unless its worker died) that no single process can make.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from squall.chaos.injectors import ChaosDriver, SurfaceProbe, describe_call, effects, timeline
from squall.core import protocol as p
from squall.core.graph import TaskGraph, TaskSpec
from squall.core.oracle import error_problem, expected_results, task_value
from squall.core.outcome import Outcome, Violation
from squall.core.view import REAL, Target
from squall.scenarios.limits import cannot_write
from squall.scenarios.model import DEFAULT_TICK, Scenario
from squall.scenarios.trace import CHAOS, Digest, End, Stim, TraceWriter, WorkerStart

POLL = 0.01  # seconds between looks at the futures and the fault schedule
PROGRESS_EVERY = 0.2  # seconds between progress reports
LARGE = 64 * 1024  # outputs at least this large carry real bytes
# Stimuli between two digests of a real-mode trace: its digests cost little beside the
# run, and an edit is placed within this many stimuli.
REAL_DIGEST_EVERY = 100


class SimulatedTaskError(RuntimeError):
    """What a task marked ``fails`` raises in real mode."""


class Sized(NamedTuple):
    """A task's value with ``nbytes`` of padding: a large output that really travels."""

    value: int
    padding: bytes


def simulated_body(key: str, seconds: float, fails: bool, nbytes: int, *inputs: Any) -> Any:
    """A task body for real mode: takes ``seconds``, then the simulator's value or error
    (with ``nbytes`` of padding when that is large)."""
    if seconds > 0:
        time.sleep(seconds)
    if fails:
        raise SimulatedTaskError(f"task {key!r} failed (error:{key})")
    value = task_value(key, [x.value if type(x) is Sized else x for x in inputs])
    return Sized(value, bytes(nbytes)) if nbytes >= LARGE else value


def plain_value(result: Any) -> Any:
    """The value a real-mode result stands for (its padding dropped)."""
    return result.value if type(result) is Sized else result


def real_graph(graph: TaskGraph) -> TaskGraph:
    """The same graph with real bodies in place of the simulated ones."""
    return TaskGraph(TaskSpec(spec.key, deps=spec.deps, duration=spec.duration,
                              nbytes=spec.nbytes, prefix=spec.prefix, priority=spec.priority,
                              restrictions=spec.restrictions, func=simulated_body,
                              args=(spec.key, spec.actual_duration, spec.fails,
                                    spec.nbytes or 0))
                     for spec in graph)


# Why a runtime of real processes refuses a client action (``squall.chaos.clients``).
CLIENTS_SIM_ONLY = "client actions (release, want, submit) are performed by the simulator only"


class _RealLimits(SurfaceProbe):
    """The real runtime's fault surface, as far as a fault can be checked before the run:
    a surface call it cannot make raises ValueError."""

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.threads = threads

    def add_worker(self, name: str | None = None, threads: int | None = None) -> str:
        if threads not in (None, self.threads):
            raise ValueError("a joining worker has the cluster's threads in real mode")
        return ""

    def release_keys(self, client: str, keys: Any) -> None:
        raise ValueError(CLIENTS_SIM_ONLY)

    def want_keys(self, client: str, keys: Any) -> None:
        raise ValueError(CLIENTS_SIM_ONLY)


def unsupported_in_real_mode(scenario: Scenario) -> str | None:
    """Why this scenario cannot run on real processes, or None."""
    limits = _RealLimits(scenario.cluster.threads)
    for i, f in enumerate(scenario.chaos):
        try:
            f.apply(limits)
        except ValueError as e:
            return f"chaos[{i}] ({f.kind_name()}): {e}"
    if scenario.cluster.tick_interval != DEFAULT_TICK:
        return "cluster.tick_interval is the simulator's: the real scheduler sets its own"
    return None


def needs_network(scenario: Scenario) -> bool:
    """Whether the scenario slows or cuts links: then every connection goes through a proxy."""
    return bool(scenario.cluster.links) or any(
        "set_link" in effects(f) for f in scenario.chaos)


class _DigestingWriter(TraceWriter):
    """A TraceWriter that computes the digests of a run whose state machines run in other
    processes, from fresh ones fed every line as it is written (see the module doc)."""

    def __init__(self, path: str | Path, scenario: Scenario) -> None:
        from squall.scenarios.replay import DigestShadow

        self.shadow = DigestShadow(scenario)
        super().__init__(path, scenario, digest_every=REAL_DIGEST_EVERY)

    def write(self, line: Any) -> None:
        super().write(line)
        if type(line) is WorkerStart or type(line) is Stim:  # a worker starts, a fault
            self.shadow.line(line)

    def stimulus(self, target: str, incarnation: int, counter: int, msg: Any) -> None:
        if self.n and self.n % self.digest_every == 0 and not self.shadow.broken:
            self.write(Digest(n=self.n, d=self.shadow.digest(), s=self.stream_digest()))
        super().stimulus(target, incarnation, counter, msg)
        self.shadow.stimulus(target, incarnation, msg)


class _RealSurface:
    """The fault surface of a LocalCluster, recording each fault in the trace first. A
    fault at a worker that is not alive is left out; any surface method not named here is
    recorded and passed on as it is."""

    def __init__(self, cluster: Any, writer: TraceWriter | None, started: float) -> None:
        self.cluster = cluster
        self.writer = writer
        self.started = started
        self._n = 0

    def _record(self, kind: str, target: str, params: dict[str, Any]) -> None:
        if self.writer is not None:
            self._n += 1
            self.writer.write(Stim(t=CHAOS, c=0, m=p.FaultInjected(
                stimulus_id=f"fault-{self._n}", time=time.monotonic() - self.started,
                kind=kind, target=target, params=params)))

    def kill_worker(self, name: str) -> None:
        if name in self.cluster.workers:
            self._record("kill_worker", name, {})
            self.cluster.kill_worker(name)

    def pause_worker(self, name: str, seconds: float) -> None:
        if name in self.cluster.workers:
            self._record("pause_worker", name, {"seconds": seconds})
            self.cluster.pause_worker(name, seconds)

    def set_link(self, src: str, dst: str, *, latency: float | None = None,
                 jitter: float | None = None, bandwidth: float | None = None,
                 down: bool | None = None) -> None:
        params = {k: v for k, v in (("latency", latency), ("jitter", jitter),
                                    ("bandwidth", bandwidth), ("down", down)) if v is not None}
        self._record("set_link", f"{src}->{dst}", params)
        self.cluster.set_link(src, dst, latency=latency, jitter=jitter, bandwidth=bandwidth,
                              down=down)

    def skew_estimates(self, factor: float, prefix: str | None = None) -> None:
        self._record("skew_estimates", "", {"factor": factor, **(
            {"prefix": prefix} if prefix is not None else {})})
        self.cluster.skew_estimates(factor, prefix)

    def add_worker(self, name: str | None = None, threads: int | None = None) -> str:
        if name is not None and name in self.cluster.workers:
            raise ValueError(f"worker {name!r} is alive")
        self._record("add_worker", name or "", {})
        return str(self.cluster.add_worker(name))

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        forward = getattr(self.cluster, method)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self._record(method, *describe_call(method, args, kwargs))
            return forward(*args, **kwargs)

        return recorded


# A message one state machine receives because another one handled a stimulus carries
# that stimulus' id: its cause, recorded by the other process.
_FROM_SCHEDULER = (p.ComputeTask, p.FreeKeys, p.StealRequest)
_FROM_WORKER = (p.TaskFinished, p.TaskErred, p.MissingData, p.StealResponse)
HOLD_LIMIT = 5000  # records held back waiting for their cause, at most


class _RealRecorder:
    """Raw records of the real cluster -> trace lines (a worker line at each new
    incarnation's first stimulus), in an order that respects cause and effect.

    Records reach this process from every process on their own connections, so a worker's
    record of a ComputeTask may arrive before the scheduler's record of the stimulus that
    made the scheduler send it. Each receiver's records keep their order; a record whose
    cause (the stimulus named by its stimulus id, received by the scheduler or by the
    worker it names) has not been written yet waits for it -- unless the cause never comes
    (a process killed before its last records left), up to ``HOLD_LIMIT`` and ``close()``.
    """

    def __init__(self, writer: TraceWriter, threads: int) -> None:
        self.writer = writer
        self.threads = threads
        self.seen: set[tuple[str, int]] = set()
        self.written: set[tuple[str, str]] = set()  # (receiver name, stimulus id)
        # receiver -> its records not written yet: (arrival number, count, message)
        self.queues: dict[tuple[str, int], deque[tuple[int, int, Any]]] = {}
        self.held = 0
        self.arrivals = 0

    def __call__(self, target: str, incarnation: int, count: int, msg: Any) -> None:
        key = (target, incarnation if target != "scheduler" else 0)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = deque()
        self.arrivals += 1
        queue.append((self.arrivals, count, msg))
        self.held += 1
        if len(queue) == 1:  # behind a waiting record, it waits too
            self._release()
        while self.held > HOLD_LIMIT:
            self._force_oldest()

    def _cause(self, target: str, msg: Any) -> tuple[str, str] | None:
        t = type(msg)
        if target != "scheduler" and t in _FROM_SCHEDULER:
            return ("scheduler", msg.stimulus_id)
        if target == "scheduler" and t in _FROM_WORKER:
            return (msg.worker, msg.stimulus_id)
        return None

    def _release(self) -> None:
        """Write every record whose cause is written, until none is left to write."""
        progress = True
        while progress:
            progress = False
            for key, queue in self.queues.items():
                while queue:
                    _, count, msg = queue[0]
                    cause = self._cause(key[0], msg)
                    if cause is not None and cause not in self.written:
                        break
                    queue.popleft()
                    self._write(key, count, msg)
                    progress = True

    def _force_oldest(self) -> None:
        """Write the record that arrived first among those waiting (its cause never came)."""
        key = min((k for k, q in self.queues.items() if q), key=lambda k: self.queues[k][0][0])
        _, count, msg = self.queues[key].popleft()
        self._write(key, count, msg)
        self._release()

    def _write(self, key: tuple[str, int], count: int, msg: Any) -> None:
        target, incarnation = key
        self.held -= 1
        if target != "scheduler" and key not in self.seen:
            self.seen.add(key)
            self.writer.write(WorkerStart(name=target, i=incarnation, threads=self.threads))
        self.written.add((target, msg.stimulus_id))
        self.writer.stimulus(target, incarnation, count, msg)

    def close(self) -> None:
        """Write what is still held (causes that never came), in the order it arrived."""
        while self.held:
            self._force_oldest()


def run_real(scenario: Scenario, *, trace: str | Path | None = None,
             validate: bool = True, timeout: float | None = None,
             progress: Callable[[int, int], None] | None = None,
             target: Target | None = None) -> Outcome:
    """Run ``scenario`` on a LocalCluster that ``target`` (default: the reference
    scheduler) starts; see the module docstring. ``progress(done, total)`` is called as
    keys finish."""
    from squall.core.runtime.client import Client
    from squall.core.runtime.cluster import LocalCluster
    from squall.scenarios.runner import violation_from
    from squall.targets import ReferenceTarget

    c = scenario.cluster
    graph = scenario.graph()
    expected = expected_results(graph)
    limit = min(c.max_time, 600.0) if timeout is None else timeout
    writer = _DigestingWriter(trace, scenario) if trace is not None else None
    started_wall = time.perf_counter()
    results: dict[str, tuple[str, Any]] = {}
    violation: Violation | None = None
    driver: ChaosDriver | None = None
    makespan = 0.0
    counter = [0]
    target = ReferenceTarget() if target is None else target
    # (the links the cluster starts with are its shape, not faults: not recorded)
    started = target.start(REAL, c, seed=scenario.seed, validate=validate,
                           record=writer is not None, network=needs_network(scenario))
    if not isinstance(started, LocalCluster):  # what squall's Client drives
        raise TypeError(f"target {target.name!r}: its {REAL!r} runtime is not squall's "
                        "LocalCluster")
    with started as cluster:
        recorder = _RealRecorder(writer, c.threads) if writer is not None else None
        if recorder is not None:
            target.log_stimuli(cluster, lambda *a: counter.__setitem__(0, counter[0] + 1))
            cluster.raw_recorders.append(recorder)
        with Client(cluster) as client:
            futures = client.compute(real_graph(graph))
            t0 = time.monotonic()
            surface = _RealSurface(cluster, writer, t0)
            driver = ChaosDriver(surface)
            schedule = timeline(scenario.chaos)
            next_report = 0.0
            try:
                while True:
                    now = time.monotonic() - t0
                    while schedule and schedule[0].at <= now:
                        driver.apply(schedule.pop(0))
                    if progress is not None and now >= next_report:
                        next_report = now + PROGRESS_EVERY
                        progress(sum(f.done() for f in futures.values()), len(futures))
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
                            results[key] = ("memory", plain_value(fut.result(limit)))
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
    if recorder is not None:
        recorder.close()  # after the cluster's: the last records have arrived
    if progress is not None:
        progress(len(results), len(expected))
    n_stimuli = counter[0]
    wrong, n_erred = judge_results(graph, expected, results)
    outcome = Outcome(
        results_ok=violation is None and not wrong, makespan=makespan, n_tasks=len(graph),
        transitions=0, digest="", n_stimuli=n_stimuli, n_erred=n_erred,
        wrong=sorted(wrong)[:20], faults=dict(driver.counts) if driver else {},
        violations=[violation] if violation is not None else [],
        wall_time=time.perf_counter() - started_wall)
    if writer is not None:
        _finish_trace(writer, outcome, validate)
        outcome.trace_path = str(trace)
    outcome.wall_time = time.perf_counter() - started_wall
    return outcome


def judge_results(graph: TaskGraph, expected: dict[str, Any],
                  results: dict[str, tuple[str, Any]]) -> tuple[list[str], int]:
    """The keys whose real result (``("memory", value)`` or ``("erred", "Type: text")``)
    the oracle rejects, and how many erred: what a run of real processes reports, whatever
    runs them (squall's runtime or a target's)."""
    wrong = []
    n_erred = 0
    for key, want in expected.items():
        got = results.get(key)
        if got is None:
            wrong.append(key)
        elif got[0] == "erred":
            n_erred += 1
            if not _error_explained(graph, key, str(got[1]), want):
                wrong.append(key)
        elif got[1] != want:
            wrong.append(key)
    return wrong, n_erred


def _error_explained(graph: TaskGraph, key: str, error: str, want: Any) -> bool:
    """The oracle's rule, on a real error's text: it names its blame as "(error:KEY)", and a
    task given up after its workers kept dying says KilledWorker."""
    start = error.rfind("(error:")
    blame = error[start + 7:error.find(")", start)] if start >= 0 else key
    return error_problem(graph, key, blame, want, killed="KilledWorker" in error) is None


def _finish_trace(writer: _DigestingWriter, outcome: Outcome, validate: bool) -> None:
    """Write the outcome line, then replay the trace without processes (strict mode as in
    the run): it counts the transitions and checks, and runs the cluster-wide invariants;
    what it finds goes into the outcome, and the outcome line is written again (with the
    same digests: the lines before it do not change)."""
    from squall.scenarios.replay import DIVERGED, replay_trace

    digest, stream = writer.shadow.digest(), writer.stream_digest()

    def end_line(out: Outcome) -> End:
        v = out.violations[0] if out.violations else None
        phase = "done" if v is None else ("stimulus" if v.stimulus_id else "stuck")
        recorded = msgspec.structs.replace(out, wall_time=0.0, trace_path="")
        return End(outcome=recorded, phase=phase, n=writer.n, digest=digest, stream=stream)

    writer.write(end_line(outcome))
    writer.close()
    seen: list[Any] = []
    result = replay_trace(writer.path, validate=validate,
                          after=lambda n, line, cl: seen.append(cl) if not seen else None)
    if seen:
        cl = seen[0]
        outcome.transitions = cl.scheduler.transition_counter + sum(
            w.state.transition_counter for w in cl.all_workers)
        if cl.validator is not None:
            outcome.invariant_checks = cl.validator.checks
        if cl.stealing is not None:
            outcome.steals = cl.stealing.count
    found = result.violation
    if found is not None and not outcome.violations:
        outcome.violations = [found]
        outcome.results_ok = False
    elif result.verdict == DIVERGED and found is None and not outcome.violations and (
            not result.not_rederived):  # (not: a wrong value, which replay cannot see)
        outcome.violations = [Violation(
            invariant="replay.matches", text="a real run's trace replays to the same "
            "transitions", entity="trace", detail=result.message)]
        outcome.results_ok = False
    try:
        with open(writer.path, "rb+") as f:  # rewrite the outcome line, the last one
            cut = _last_line_start(f)
            f.seek(cut)
            f.truncate()
            f.write(msgspec.json.encode(end_line(outcome)) + b"\n")
    except OSError as e:
        raise cannot_write(writer.path, e, "trace") from None


def _last_line_start(f: Any, chunk: int = 1 << 16) -> int:
    """The offset at which the last line of the open file ``f`` starts (read backwards a
    chunk at a time: a trace may be large)."""
    pos = f.seek(0, 2)
    trailing = True  # still in the newlines that end the file
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        if trailing:
            block = block.rstrip(b"\n")
            if not block:
                continue
            trailing = False
        i = block.rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0
