"""Replay a trace into fresh state machines: no processes, no network, no simulator.

The recorded stimuli are fed, in order, into a new ``SchedulerState`` and one new
``WorkerState`` per worker incarnation. Replay checks, as it goes:

- that each receiver's transition count before a stimulus equals the recorded one (so
  the first differing stimulus is named exactly);
- that every recorded digest matches: the state digest, and (format 2) the stream digest
  of every stimulus, fault and worker line before it, times included, so a line edited
  in the file is found at the next digest, which names the lines it covers;
- in a simulated run's trace, the times against the replayed clock: a stimulus that
  arrives as it is made (a task's or a fetch's end, a tick, a graph, a fault) is never
  earlier than one before it, and a message one state machine sent another carries the
  time its sender had when it handled the stimulus that made it send it; so a time moved
  forward or back is named at its line (or, where neither applies, found by the next
  digest).

With strict mode on, the same validator as the recording runs, so a violation recurs at
the same stimulus. At the end of the trace, nothing recorded in the outcome is taken on
trust: the checks the run made at its end (the full checks, agreement and liveness when
nothing was in flight, end to end against the oracle; or those made when it stalled)
run on the replayed state, and the results are checked against the oracle from what the
replayed scheduler reported and what its workers hold; the recorded violation or wrong
results must be found again there. A trace recorded in real mode replays the same way
(its digests were computed in the parent process as it wrote the trace); its state at
the end is that after the cluster's shutdown, so only what the scheduler reported is
re-derived there.

Verdicts: ``match`` (same states, no violation, right results; exit 0), ``reproduced``
(same states, and the recorded violation or wrong results re-derived; exit 1),
``diverged`` (exit 3): the states differ, the file is not what the run wrote, or a
recorded violation or wrong result could not be re-derived (the message says why; so
does ``ReplayResult.not_rederived``).
"""

from __future__ import annotations

import gc
import time as wallclock
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from squall.chaos.injectors import ENDS_PROCESS
from squall.core import protocol as p
from squall.core.driver import StimulusDriver
from squall.core.graph import TaskGraph
from squall.core.oracle import error_problem, expected_results
from squall.core.outcome import Violation
from squall.core.scheduler import SchedulerState
from squall.core.view import REAL, SIM, ReplayableTarget
from squall.core.worker import WorkerState, WorkerTaskState
from squall.invariants import InvariantViolation, Validator
from squall.scenarios.model import Scenario, ScenarioError
from squall.scenarios.runner import violation_from
from squall.scenarios.trace import (
    CHAOS,
    SCHEDULER,
    Digest,
    End,
    Header,
    Stim,
    TargetStim,
    TraceError,
    WorkerStart,
    read_trace,
    state_digest,
    stream_hasher,
    stream_hex,
)
from squall.targets import target_for

MATCH = "match"
REPRODUCED = "reproduced"
DIVERGED = "diverged"
EXIT_CODES = {MATCH: 0, REPRODUCED: 1, DIVERGED: 3}

# In the simulator these stimuli are made at the moment they are handled (a task's or a
# fetch's end, a tick, a client's graph or release) and a fault is recorded as it strikes: their time is the clock's,
# and no stimulus before them can be later (one sent is handled when it arrives, never
# before it was sent). Every other stimulus carries the time it was sent.
_ARRIVES_AS_SENT: frozenset[type] = frozenset({
    p.ExecuteSuccess, p.ExecuteFailure, p.GatherDepSuccess, p.GatherDepFailure, p.Tick,
    p.UpdateGraph, p.ClientReleasesKeys, p.SkewEstimates})
# Messages a state machine sends another while it handles a stimulus: they carry that
# stimulus' id, and (in the simulator, which hands them over as they were made) the time
# the sender had then. By receiver: made by the scheduler for a worker, or by a worker
# (``msg.worker``) for the scheduler.
_FROM_SCHEDULER: frozenset[type] = frozenset({p.ComputeTask, p.FreeKeys, p.StealRequest})
_FROM_WORKER: frozenset[type] = frozenset({p.TaskFinished, p.TaskErred, p.MissingData,
                                           p.StealResponse})
_PROGRESS = "liveness.progress"
_PROGRESS_TEXT = "every wanted key is eventually computed or erred"
_HASH_CHUNK = 1 << 20


@dataclass
class ReplayResult:
    verdict: str  # MATCH, REPRODUCED or DIVERGED
    message: str  # one line: what matched, what recurred, or where it diverged
    header: Header
    recorded: End | None = None
    violation: Violation | None = None  # the violation the replay raised, if any
    stimuli: int = 0
    digests_checked: int = 0  # digest lines, and the outcome line's digests, found equal
    wall_time: float = 0.0
    tail: list[tuple[str, Any]] = field(default_factory=list)  # last stimuli before the end
    # DIVERGED only because what the outcome records could not be re-derived: why ("" if
    # the states themselves differ, or nothing was left unchecked)
    not_rederived: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


class Replayed(StimulusDriver[Any]):
    """A state machine fed recorded stimuli through the one driver loop: recorded (to no
    one), handled and validated, but nothing is dispatched: every instruction is unrouted,
    and ignored (what the instructions led to is in the trace, as the stimuli that
    follow), but for what the end-of-run checks read (see the subclasses)."""

    __slots__ = ()

    def unrouted(self, instruction: Any) -> None:
        pass


class ReplayScheduler(Replayed):
    """The scheduler during replay: what it reports to clients is kept, as a runtime keeps
    it (``results``: as the simulator's client sees them, a lost key dropped until it is
    reported again; ``reports``: every key's last report, lost or not)."""

    __slots__ = ("results", "reports", "wanted_by")

    DISPATCH: ClassVar[dict[type, str]] = {
        p.KeyInMemory: "report_in_memory",
        p.KeyErred: "report_erred",
        p.KeyLost: "report_lost",
    }

    def __init__(self, state: SchedulerState, results: dict[str, tuple[str, Any]],
                 reports: dict[str, tuple[str, Any]],
                 wanted_by: dict[str, set[str]] | None = None) -> None:
        super().__init__(SCHEDULER, state)
        self.results = results
        self.reports = reports
        # key -> the clients that want it (a report to a client that released it is
        # dropped, as the simulator's client drops it); None: every report counts
        self.wanted_by = wanted_by

    def _wants(self, client: str, key: str) -> bool:
        return self.wanted_by is None or client in self.wanted_by.get(key, ())

    def report_in_memory(self, ins: p.KeyInMemory) -> None:
        if self._wants(ins.client, ins.key):
            self.results[ins.key] = self.reports[ins.key] = ("memory", ins.holders)

    def report_erred(self, ins: p.KeyErred) -> None:
        if self._wants(ins.client, ins.key):
            self.results[ins.key] = self.reports[ins.key] = ("erred", f"error:{ins.blame}")

    def report_lost(self, ins: p.KeyLost) -> None:
        if self._wants(ins.client, ins.key):
            self.results.pop(ins.key, None)


class ReplayWorker(Replayed):
    """A worker incarnation during replay: what a validator may look at besides its state
    (and the task bodies it starts, counted in ``runs``)."""

    __slots__ = ("incarnation", "alive", "runs")

    DISPATCH: ClassVar[dict[type, str]] = {p.Execute: "execute"}

    def __init__(self, name: str, state: WorkerState, incarnation: int,
                 runs: dict[str, int] | None = None) -> None:
        super().__init__(name, state)
        self.incarnation = incarnation
        self.alive = True
        self.runs: dict[str, int] = {} if runs is None else runs

    def execute(self, ins: p.Execute) -> None:
        runs = self.runs
        runs[ins.key] = runs.get(ins.key, 0) + 1


class ReplayCluster:
    """The state machines being replayed, as a ``ClusterView`` (``squall.core.view``) for
    the validator: ``scheduler``, ``workers``, ``all_workers``, ``now``, and for the
    end-of-run checks ``graph`` (the scenario's, once ``load_graph`` found it is the one
    the trace submitted), ``wanted``, ``results`` (what the replayed scheduler reported),
    ``runs`` (task bodies the replayed workers started) and ``pending`` (nothing is in
    flight in a replay: the outcome line says what was in the run)."""

    def __init__(self, header: Header | Scenario) -> None:
        scenario = header.scenario if isinstance(header, Header) else header
        c = scenario.cluster
        self.scenario = scenario
        self.scheduler = SchedulerState(allowed_failures=c.allowed_failures,
                                        bandwidth=c.bandwidth,
                                        heartbeat_timeout=c.heartbeat_timeout)
        self.stealing: Any = None
        if c.stealing:
            from squall.core.stealing import WorkStealing

            self.stealing = WorkStealing(self.scheduler)
        self.workers: dict[str, ReplayWorker] = {}  # live incarnations by name
        self.all_workers: list[ReplayWorker] = []
        self.by_incarnation: dict[tuple[str, int], ReplayWorker] = {}
        self.now = 0.0
        self.graph = TaskGraph()
        self.wanted: set[str] = set()
        self.wanted_by: dict[str, set[str]] = {}  # key -> the clients that want it
        self.submitted: set[str] = set()  # every key an UpdateGraph carried
        self.results: dict[str, tuple[str, Any]] = {}
        self.reports: dict[str, tuple[str, Any]] = {}
        self.runs: dict[str, int] = {}
        self.pending = 0
        self.validator: Any = None
        self.recorders: list[Callable[[str, Any], None]] = []
        self._graph_problem: str | None = None  # load_graph's answer, once asked
        self.scheduler_driver = ReplayScheduler(self.scheduler, self.results, self.reports,
                                                self.wanted_by)

    def validate(self) -> Validator:
        """Strict mode, as in the recording, for every stimulus from now on."""
        self.validator = validator = Validator(self)
        self.scheduler_driver.validator = validator.scheduler
        for rw in self.workers.values():
            validator.watch_worker(rw.state)
            rw.validator = validator.workers.get(rw.state)
        return validator

    def digest(self) -> str:
        return state_digest(self.scheduler, [w.state for w in self.workers.values()])

    def submit(self, msg: p.UpdateGraph) -> None:
        """The scheduler receives a graph: its keys, and those the client wants."""
        self.wanted.update(msg.wanted)
        for key in msg.wanted:
            self.wanted_by.setdefault(key, set()).add(msg.client)
        self.submitted.update([t.key for t in msg.tasks])

    def release(self, msg: p.ClientReleasesKeys) -> None:
        """A client releases keys: one no client wants any more needs no result."""
        for key in msg.keys:
            clients = self.wanted_by.get(key)
            if clients is not None and msg.client in clients:
                clients.discard(msg.client)
                if not clients:
                    del self.wanted_by[key]
                    self.wanted.discard(key)
                    self.results.pop(key, None)
                    self.reports.pop(key, None)

    def start_worker(self, name: str, incarnation: int, threads: int) -> ReplayWorker:
        """A worker incarnation starts (a ``worker`` line)."""
        old = self.workers.pop(name, None)
        validator = self.validator
        if old is not None:
            # A new incarnation under a live name: the old one restarted (it was cut
            # off or declared dead), so its process is gone, as in the recording.
            old.alive = False
            if validator is not None:
                validator.worker_gone(old.state)
                old.validator = None
        ws = WorkerState(name, threads)
        rw = ReplayWorker(name, ws, incarnation, self.runs)
        self.workers[name] = rw
        self.all_workers.append(rw)
        self.by_incarnation[(name, incarnation)] = rw
        if validator is not None:
            validator.watch_worker(ws)
            rw.validator = validator.workers.get(ws)
        return rw

    def apply_fault(self, msg: p.FaultInjected) -> None:
        """Faults change the runtime, not the state machines; only a kill matters here:
        the validator forgets that worker's state from that moment, as in the recording."""
        if msg.kind in ENDS_PROCESS:
            rw = self.workers.pop(msg.target, None)
            if rw is not None:
                rw.alive = False
                if self.validator is not None:
                    self.validator.worker_gone(rw.state)
                    rw.validator = None

    def load_graph(self) -> str:
        """Take the scenario's graph as the one the end-to-end checks and the oracle read;
        why it cannot be ("" if it is the graph the trace submitted)."""
        if self._graph_problem is None:
            try:
                graph = self.scenario.graph()
            except ScenarioError as e:
                self._graph_problem = f"its scenario's graph cannot be built ({e})"
            else:
                if set(graph.tasks) != self.submitted:
                    self._graph_problem = "the graph the trace submitted is not its scenario's"
                else:
                    self.graph = graph
                    self._graph_problem = ""
        return self._graph_problem

    def busy(self) -> str:
        """What a live worker is still doing at the end ("" if nothing): a task body
        running, or data being fetched, each an event in flight in a simulated run."""
        for rw in self.workers.values():
            ws = rw.state
            if ws.executing:
                return f"{rw.name!r} is running {next(iter(ws.executing)).key!r}"
            for holder, tasks in ws.in_flight.items():
                if tasks:
                    return f"{rw.name!r} is fetching {tasks[0].key!r} from {holder!r}"
        return ""


class DigestShadow:
    """Fresh state machines fed a trace's lines in the order they are written, for the
    digests of a trace whose state machines run elsewhere (real mode, in the parent
    process, which receives every stimulus): replay, fed the same lines by the same code,
    reaches the same states. It validates nothing; if a stimulus makes a state machine
    raise, or names a worker that never started, it stops (``digest()`` is then ""): a
    replay stops there too."""

    def __init__(self, scenario: Scenario) -> None:
        self.cluster = ReplayCluster(scenario)
        self.broken = False

    def line(self, line: Any) -> None:
        """A line other than a stimulus: a worker start, or a fault."""
        if self.broken:
            return
        try:
            if type(line) is WorkerStart:
                self.cluster.start_worker(line.name, line.i, line.threads)
            elif type(line) is Stim and line.t == CHAOS and type(line.m) is p.FaultInjected:
                self.cluster.apply_fault(line.m)
        except Exception:
            self.broken = True

    def stimulus(self, target: str, incarnation: int, msg: Any) -> None:
        if self.broken:
            return
        c = self.cluster
        driver: Replayed | None
        if target == SCHEDULER:
            driver = c.scheduler_driver
        else:
            driver = c.by_incarnation.get((target, incarnation))
        if driver is None:
            self.broken = True
            return
        try:
            driver.stimulate(msg)
        except Exception:
            self.broken = True

    def digest(self) -> str:
        return "" if self.broken else self.cluster.digest()


Observer = Callable[[int, Stim, ReplayCluster], None]


class _Prefix:
    """The stream digest of a trace file's first lines: every byte before a given line,
    read and hashed in large pieces as the replay moves on (never a line at a time)."""

    def __init__(self, path: str | Path) -> None:
        try:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise TraceError(f"cannot read trace {str(path)!r}: {e.strerror}") from None
        self._hasher = stream_hasher()
        self._line = 1  # the line the hashed bytes end before
        self._rest = b""  # read, not hashed yet: it starts at line ``_line``

    def before(self, lineno: int) -> str:
        """The stream digest of every byte before line ``lineno`` (at or past the last
        line asked for)."""
        hasher = self._hasher
        while self._line < lineno:
            chunk = self._rest or self._raw.read(_HASH_CHUNK)
            if not chunk:
                break
            self._rest = b""
            need = lineno - self._line
            newlines = chunk.count(b"\n")
            if newlines < need:
                hasher.update(chunk)
                self._line += newlines
                continue
            at = -1
            for _ in range(need):
                at = chunk.find(b"\n", at + 1)
            hasher.update(chunk[:at + 1])
            self._rest = chunk[at + 1:]
            self._line = lineno
        return stream_hex(hasher)

    def close(self) -> None:
        self._raw.close()


def replay_trace(path: str | Path, *, validate: bool = True, tail: int = 20,
                 before: Observer | None = None, after: Observer | None = None) -> ReplayResult:
    """Replay the trace at ``path``. TraceError (one line, with the line number) if it
    cannot be read. ``before``/``after`` see every stimulus line around its handling."""
    started = wallclock.perf_counter()
    lines = read_trace(path)
    _, header = next(lines)
    runtime = header.scenario.runtime
    if runtime not in (SIM, REAL):
        return _replay_on_target(path, header, lines, validate, started)
    prefix = _Prefix(path)
    # As in a simulated run (SimCluster.run): a replay allocates many short-lived acyclic
    # objects beside a large live heap, which the cyclic GC would scan again and again.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Replay(path, header, lines, prefix, validate, tail, started).run(before, after)
    finally:
        prefix.close()
        if gc_was_enabled:
            gc.enable()


class _Replay:
    """One replay of a simulated or real-mode trace, and its verdict."""

    def __init__(self, path: str | Path, header: Header, lines: Iterator[tuple[int, Any]],
                 prefix: _Prefix, validate: bool, tail: int, started: float) -> None:
        self.path = path
        self.header = header
        self.lines = lines
        self.prefix = prefix
        self.tail = tail
        self.started = started
        self.cluster = ReplayCluster(header)
        if validate:
            self.cluster.validate()
        self.real = header.scenario.runtime == REAL
        self.streamed = header.format >= 2  # its digests cover the stream
        self.recent: list[tuple[str, Any]] = []
        self.last_sid: dict[tuple[str, int], tuple[int, str]] = {}  # receiver -> last stimulus
        self.n = 0
        self.digests = 0

    def result(self, verdict: str, message: str, recorded: End | None = None,
               violation: Violation | None = None, not_rederived: str = "") -> ReplayResult:
        return ReplayResult(verdict, message, self.header, recorded, violation, self.n,
                            self.digests, wallclock.perf_counter() - self.started,
                            self.recent[-self.tail:], not_rederived)

    def run(self, before: Observer | None, after: Observer | None) -> ReplayResult:
        path = self.path
        cluster = self.cluster
        sched = cluster.scheduler_driver
        recent = self.recent
        last_sid = self.last_sid
        tail = self.tail
        lines = self.lines
        clocked = not self.real  # a simulated run's clock only moves forward
        clock = float("-inf")  # the latest time seen so far ...
        clock_at = (0, "")  # ... on this line, in this stimulus
        as_sent = _ARRIVES_AS_SENT
        from_scheduler = _FROM_SCHEDULER
        from_worker = _FROM_WORKER
        # stimulus id -> (its receiver, the receiver's time once it handled it, its line)
        handled: dict[str, tuple[str, float, int]] = {}
        digested = 0  # the line of the last digest (0: none yet; the header is hashed too)
        n = 0
        for lineno, line in lines:
            if type(line) is Stim:
                target = line.t
                msg: Any = line.m
                if target == CHAOS:
                    if type(msg) is not p.FaultInjected:
                        raise TraceError(f"{path}: line {lineno}: a chaos line must carry a "
                                         "fault")
                    if clocked:
                        if msg.time < clock:
                            self.n = n
                            return self._clock_ran_back(lineno, target, msg, clock, clock_at)
                        clock = msg.time
                        clock_at = (lineno, msg.stimulus_id)
                    cluster.apply_fault(msg)
                    recent.append((target, msg))
                    continue
                driver: Replayed
                if target == SCHEDULER:
                    driver = sched
                    receiver = (SCHEDULER, 0)
                    if type(msg) is p.UpdateGraph:
                        cluster.submit(msg)
                    elif type(msg) is p.ClientReleasesKeys:
                        cluster.release(msg)
                else:
                    rw = cluster.by_incarnation.get((target, line.i))
                    if rw is None:
                        raise TraceError(f"{path}: line {lineno}: stimulus for worker "
                                         f"{target!r} incarnation {line.i}, which never "
                                         "started")
                    driver = rw
                    receiver = (target, line.i)
                machine = driver.state
                if machine.transition_counter != line.c:
                    prev = last_sid.get(receiver)
                    where = (f"stimulus {prev[1]!r} (line {prev[0]})" if prev is not None
                             else f"stimulus {msg.stimulus_id!r} (line {lineno})")
                    self.n = n
                    return self.result(DIVERGED, f"diverged at {where} to {target}: "
                                                 f"{machine.transition_counter} transitions "
                                                 f"after it in replay, {line.c} recorded")
                n += 1
                t = getattr(msg, "time", None)
                if t is not None:
                    if t > cluster.now:
                        cluster.now = t
                    if clocked:
                        kind = type(msg)
                        if t >= clock:
                            clock = t
                            clock_at = (lineno, msg.stimulus_id)
                        elif kind in as_sent:
                            self.n = n
                            return self._clock_ran_back(lineno, target, msg, clock, clock_at)
                        if kind in from_scheduler or kind in from_worker:
                            cause = handled.get(msg.stimulus_id)
                            if cause is not None and cause[1] != t and cause[0] == (
                                    SCHEDULER if kind in from_scheduler else msg.worker):
                                self.n = n
                                return self._not_as_sent(lineno, target, msg, cause)
                recent.append((target, msg))
                if len(recent) > 4 * tail:
                    del recent[:-tail]
                last_sid[receiver] = (lineno, msg.stimulus_id)
                if before is not None:
                    before(lineno, line, cluster)
                try:
                    driver.stimulate(msg)
                except Exception as e:
                    v = violation_from(e, cluster.now)
                    if v is None:
                        raise
                    self.n = n
                    return self._judge_violation(lineno, msg, v, digested)
                if clocked:
                    handled[msg.stimulus_id] = (target, machine.time, lineno)
                if after is not None:
                    after(lineno, line, cluster)
            elif type(line) is Digest:
                self.n = n
                why = self._check_digest(lineno, line, digested)
                if why:
                    return self.result(DIVERGED, why)
                digested = lineno
            elif type(line) is WorkerStart:
                cluster.start_worker(line.name, line.i, line.threads)
            elif type(line) is End:
                for _ in lines:  # nothing may follow the outcome (read_trace raises if so)
                    pass
                self.n = n
                return self._judge_end(lineno, line, digested)
        raise TraceError(f"{path}: trace ends without an outcome line")  # read_trace prevents it

    # ------------------------------------------------------------------ digests and clock

    def _edited(self, lineno: int, digested: int, where: str) -> str:
        first, last = digested + 1, lineno - 1
        if first > last:
            return (f"diverged: the stream digest {where} (line {lineno}) is not the one the "
                    "run wrote")
        lines = f"line {first} is" if first == last else f"lines {first}-{last} are"
        return (f"diverged: {lines} not what the run wrote: the stream digest {where} "
                f"(line {lineno}) differs; a stimulus, a fault or a time among them was "
                "edited")

    def _check_digest(self, lineno: int, line: Digest, digested: int) -> str:
        """Why the digest at ``lineno`` does not match ("" if it does)."""
        if line.n != self.n:
            return (f"diverged: the digest at line {lineno} follows {line.n} stimuli, the "
                    f"replay has read {self.n} (a stimulus line was added or removed)")
        if self.streamed:
            if not line.s:
                return (f"diverged: the digest at line {lineno} has no stream digest, which "
                        f"a format-{self.header.format} trace's always has")
            if line.s != self.prefix.before(lineno):
                return self._edited(lineno, digested, f"after {line.n} stimuli")
        if self.cluster.digest() != line.d:
            prev_line, prev_sid = max(self.last_sid.values(), default=(lineno, "?"))
            return (f"diverged: state digest after {line.n} stimuli (line {lineno}) "
                    f"differs; last stimulus {prev_sid!r} (line {prev_line})")
        self.digests += 1
        return ""

    def _clock_ran_back(self, lineno: int, target: str, msg: Any, clock: float,
                        clock_at: tuple[int, str]) -> ReplayResult:
        return self.result(DIVERGED, (
            f"diverged at line {lineno}: {_what(msg, target)} is at t={msg.time}, earlier "
            f"than t={clock} on line {clock_at[0]} ({clock_at[1]!r}) before it, though it "
            "was handled as it was made: the simulated clock does not run backwards (the "
            "time on one of these two lines was edited)"))

    def _not_as_sent(self, lineno: int, target: str, msg: Any,
                     cause: tuple[str, float, int]) -> ReplayResult:
        sender, t, cause_line = cause
        return self.result(DIVERGED, (
            f"diverged at line {lineno}: {_what(msg, target)} says it was sent at "
            f"t={msg.time}, but {sender} sent it handling stimulus {msg.stimulus_id!r} "
            f"(line {cause_line}) at t={t}: the time on one of these two lines was edited"))

    # ------------------------------------------------------------------ verdicts

    def _judge_violation(self, lineno: int, msg: Any, v: Violation,
                         digested: int) -> ReplayResult:
        """A violation struck at ``lineno``: reproduced if the recording ended with it.

        In the simulator nothing follows the violating stimulus but the outcome; a real
        run streams other processes' stimuli until it halts, so the rest is read up to the
        end (and, format 2, checked against the outcome's stream digest).
        """
        end = None
        end_line = lineno
        for n, line in self.lines:
            if type(line) is End:
                end, end_line = line, n
        rec = end.outcome.violations[0] if end is not None and end.outcome.violations else None
        if end is not None and self.streamed and end.stream != self.prefix.before(end_line):
            return self.result(DIVERGED, self._edited(end_line, digested, "at the end") + (
                f" ({v.invariant} was raised at stimulus {msg.stimulus_id!r}, line {lineno})"),
                end, v)
        same = rec is not None and rec.invariant == v.invariant and (
            not rec.stimulus_id or not v.stimulus_id or rec.stimulus_id == v.stimulus_id)
        if same and end is not None and end.phase == "stimulus":
            return self.result(REPRODUCED, f"reproduced {v.invariant} at stimulus "
                                           f"{msg.stimulus_id!r} (line {lineno})", end, v)
        recorded = (f"the recording had {rec.invariant}" if rec is not None
                    else "the recording went on without one")
        return self.result(DIVERGED, f"diverged at stimulus {msg.stimulus_id!r} (line "
                                     f"{lineno}): replay raised {v.invariant} where "
                                     f"{recorded}", end, v)

    def _judge_end(self, lineno: int, end: End, digested: int) -> ReplayResult:
        cluster = self.cluster
        if self.streamed:
            if not end.stream or not end.digest:
                return self.result(DIVERGED, f"diverged: the outcome line (line {lineno}) has "
                                             "no state and stream digest, which a format-"
                                             f"{self.header.format} trace's always has", end)
            if end.stream != self.prefix.before(lineno):
                return self.result(DIVERGED, self._edited(lineno, digested, "at the end"), end)
        if end.n and end.n != self.n:
            return self.result(DIVERGED, f"diverged: the outcome line (line {lineno}) counts "
                                         f"{end.n} stimuli, the trace holds {self.n}", end)
        if end.digest:
            if cluster.digest() != end.digest:
                return self.result(DIVERGED, "diverged: the final state digest differs", end)
            self.digests += 1
        out = end.outcome
        rec = out.violations[0] if out.violations else None
        if rec is not None and end.phase == "stimulus":
            return self.result(DIVERGED, f"diverged: {rec.invariant} was recorded at stimulus "
                                         f"{rec.stimulus_id!r} but did not recur", end)
        if not self.real and end.quiet:
            busy = cluster.busy()
            if busy:
                return self.result(DIVERGED, "diverged: the outcome line says nothing was in "
                                             f"flight at the end of the run, but {busy}", end)
        if rec is None and out.budget_exceeded:  # slow, not stuck: no end checks ran
            cap = self.header.scenario.cluster.max_time
            if end.phase != "budget" or not out.makespan > cap or self.real or not (
                    cluster.wanted - cluster.results.keys()):
                return self.result(DIVERGED, f"diverged: the outcome line (line {lineno}) "
                                             "says the run stopped at its time budget "
                                             f"(max_time={cap:g}), which the replayed run "
                                             "did not reach with keys unfinished", end)
            return self.result(MATCH, self._matches(
                "; the run stopped at its time budget with its work still progressing: "
                "results not judged"), end)
        found, why = self._end_checks(end, rec)
        checks = "checks made when the run stalled" if end.phase == "stuck" else (
            "end-of-run checks")
        if rec is not None:
            if found is not None and found.invariant == rec.invariant and (
                    found.entity == rec.entity):
                return self.result(REPRODUCED, f"reproduced {rec.invariant} ({rec.entity}): the "
                                               f"{checks} find it again in the replayed state",
                                   end, found)
            if found is not None:
                return self.result(DIVERGED, f"diverged: the {checks} find {found.invariant} "
                                             f"({found.entity}) in the replayed state, where the "
                                             f"recording had {rec.invariant} ({rec.entity})",
                                   end, found)
            why = why or f"the {checks} do not find it in the replayed state"
            return self.result(DIVERGED, f"diverged: {rec.invariant} ({rec.entity}) was "
                                         f"recorded ({end.phase} check) but not re-derived: "
                                         f"{why}", end, not_rederived=why)
        if found is not None:
            return self.result(DIVERGED, f"diverged: the {checks} find {found.invariant} "
                                         f"({found.entity}) in the replayed state, which the "
                                         "recording did not report", end, found)
        return self._judge_results(end)

    def _end_checks(self, end: End, rec: Violation | None) -> tuple[Violation | None, str]:
        """Run on the replayed state the checks the run made at its end (or when it
        stalled): (the violation they find, or None; why they could not run, or why they
        did not find ``rec``, or "")."""
        cluster = self.cluster
        validator = cluster.validator
        stuck = end.phase == "stuck"
        if self.real:
            # The trace runs on past the moment the run was judged, through the cluster's
            # shutdown: only what the scheduler reported, or never did, is re-derived.
            if stuck:
                found = _unfinished(cluster.wanted.difference(cluster.reports), "reported")
                return found, "" if found else "the replayed scheduler reported every wanted key"
            return None, ("a real run's trace goes on through the cluster's shutdown, so its "
                          "state at the end of the run is not replayed")
        if validator is None:
            if stuck and rec is not None and rec.invariant == _PROGRESS:  # no strict mode
                found = _unfinished(cluster.wanted.difference(cluster.results), "computed")
                return found, "" if found else "every wanted key has a result in the replay"
            return None, "strict mode is off in this replay"
        why = cluster.load_graph()
        if why:
            return None, why
        # Agreement and liveness ran only if nothing was in flight (a format-1 trace does
        # not say: only a stalled run was known to be quiet).
        quiet = end.quiet if end.quiet is not None else stuck
        cluster.pending = 0 if quiet else 1
        try:
            if stuck:
                validator.check_stuck(cluster, "replayed")
            else:
                validator.check_end(cluster)
        except InvariantViolation as e:
            return e.to_violation(), ""
        finally:
            cluster.pending = 0
        if stuck:  # the runtime gave up waiting: for what?
            return _unfinished(cluster.wanted.difference(cluster.results), "computed"), ""
        return None, ""

    def _judge_results(self, end: End) -> ReplayResult:
        """No violation recorded, none found: the results, by the oracle, from what the
        replayed scheduler reported and its workers hold."""
        out = end.outcome
        cluster = self.cluster
        why = cluster.load_graph()
        if why:
            if out.results_ok:
                return self.result(MATCH, self._matches(f"; results not re-checked: {why}"),
                                   end)
            why = f"the recorded wrong results ({', '.join(out.wrong[:5])}) cannot be " \
                  f"re-derived: {why}"
            return self.result(DIVERGED, f"diverged: {why}", end, not_rederived=why)
        wrong, unseen = _wrong_results(cluster, self.real)
        recorded = sorted(out.wrong)
        if not out.results_ok:
            derived = [k for k in recorded if k in wrong]
            missing = [k for k in recorded if k not in wrong]
            if not missing:
                return self.result(REPRODUCED, "reproduced the wrong results: "
                                               f"{', '.join(derived[:5])} re-derived from what "
                                               "the replayed scheduler reported", end)
            what = ("its workers hold the right keys: a wrong value is not visible to replay, "
                    "which has the state machines, not the task values") if not self.real \
                else "a real run's values are not in its trace"
            why = (f"the recording had wrong results for {', '.join(missing[:5])}, which the "
                   f"replayed state does not show ({what})")
            return self.result(DIVERGED, f"diverged: {why}", end, not_rederived=why)
        if wrong and not self.real:
            return self.result(DIVERGED, "diverged: the recording's results were right, but "
                                         "the replayed scheduler's reports give wrong results "
                                         f"for {', '.join(wrong[:5])}", end)
        note = ""
        if unseen:
            note = f"; {unseen} values not re-checked (a real run's values are not in its trace)"
        return self.result(MATCH, self._matches(note), end)

    def _matches(self, note: str = "") -> str:
        if self.digests:
            digests = (f"{self.digests} digest{'s' if self.digests != 1 else ''} equal"
                       + (" (state and stream)" if self.streamed else " (state)"))
        else:
            digests = "no digest in the trace to check"
        return (f"replay matches: {self.n} stimuli, every transition count equal, {digests}"
                f"{note}")


def _what(msg: Any, target: str) -> str:
    """A stimulus, for a message: its kind, id and receiver."""
    if target == CHAOS:
        return f"the fault {msg.stimulus_id!r} ({msg.kind})"
    return f"the {type(msg).__struct_config__.tag} {msg.stimulus_id!r} to {target}"


def _unfinished(missing: Any, how: str) -> Violation | None:
    """liveness.progress, re-derived: the wanted keys the replayed run left without a
    result (None if none)."""
    keys = sorted(missing)
    if not keys:
        return None
    return Violation(invariant=_PROGRESS, text=_PROGRESS_TEXT, entity="cluster",
                     detail=f"{len(keys)} wanted keys never {how} in the replay, first: "
                            f"{keys[:5]}")


def _wrong_results(cluster: ReplayCluster, real: bool) -> tuple[list[str], int]:
    """The wanted keys whose results are wrong by the oracle, as far as the replayed
    state shows it (sorted), and how many results it cannot check. A key is wrong if it
    has no result; if it erred blamed on a task that does not explain it; or (simulator)
    if it was reported in memory but the scheduler lists no holder, or one that does not
    hold it (that the value is right is the simulated runtime's check: replay has no
    values). A real run's
    trace ends after shutdown: its keys' last reports are what counts, and the values of
    those in memory cannot be checked."""
    graph = cluster.graph
    tasks = cluster.scheduler.tasks
    results = cluster.reports if real else cluster.results
    wanted = cluster.wanted
    wrong: list[str] = []
    unseen = 0
    memory = WorkerTaskState.MEMORY
    validator = cluster.validator  # (it has computed them already, for the end checks)
    expected = validator.expected() if validator is not None else expected_results(graph)
    for key, want in expected.items():
        if key not in wanted:
            continue
        got = results.get(key)
        if got is None:
            wrong.append(key)
        elif got[0] == "erred":
            blame = str(got[1]).removeprefix("error:")
            blamed = tasks.get(blame)
            killed = blamed is not None and blamed.killed
            if error_problem(graph, key, blame, want, killed=killed) is not None:
                wrong.append(key)
        elif real:
            unseen += 1
        else:
            ts = tasks.get(key)
            holders = [cluster.workers.get(ws.name) for ws in ts.who_has] if ts else []
            if not holders or any(
                    rw is None or (wt := rw.state.tasks.get(key)) is None or wt.state != memory
                    for rw in holders):
                wrong.append(key)
    return sorted(wrong), unseen


def _replay_on_target(path: str | Path, header: Header, lines: Any, validate: bool,
                      started: float) -> ReplayResult:
    """A trace of a target's own runtime: the target replays its records
    (``ReplayableTarget``), and its findings are judged against the recorded outcome."""
    runtime = header.scenario.runtime
    try:
        target = target_for(runtime)
    except ValueError as e:
        raise TraceError(f"{path}: {e}") from None
    if not isinstance(target, ReplayableTarget):
        raise TraceError(f"{path}: target {target.name!r} cannot replay a trace of its "
                         f"{runtime!r} runtime")
    end: End | None = None

    def records() -> Any:
        nonlocal end
        for lineno, line in lines:
            if type(line) is TargetStim:
                yield lineno, line.t, line.m
            elif type(line) is End:
                end = line

    found = target.replay(records(), validate=validate)
    for _, line in lines:  # the rest, up to the outcome, if the replay stopped early
        if type(line) is End:
            end = line
    if end is None:
        raise TraceError(f"{path}: trace ends without an outcome line")

    def result(verdict: str, message: str, violation: Violation | None = None) -> ReplayResult:
        if found.not_replayed:
            message += f"; not replayed: {found.not_replayed}"
        return ReplayResult(verdict, message, header, end, violation, found.replayed, 0,
                            wallclock.perf_counter() - started)

    if found.divergence:
        return result(DIVERGED, found.divergence)
    recorded = end.outcome.violations
    v = found.violation
    if v is not None:
        same = any(r.invariant == v.invariant and r.key == v.key for r in recorded)
        if same:
            return result(REPRODUCED, f"reproduced {v.invariant} on {v.entity} at stimulus "
                                      f"{v.stimulus_id!r}", v)
        had = (f"the recording had {recorded[0].invariant}" if recorded
               else "the recording had none")
        return result(DIVERGED, f"diverged at stimulus {v.stimulus_id!r}: replay raised "
                                f"{v.invariant} on {v.entity} where {had}", v)
    if recorded:
        return result(DIVERGED, f"diverged: {recorded[0].invariant} ({recorded[0].entity}) "
                                "was recorded but did not recur in the replay")
    if not end.outcome.results_ok:
        return result(DIVERGED, "diverged: the recorded results were wrong "
                                f"({', '.join(end.outcome.wrong[:5])}), which the replayed "
                                "state machines cannot show")
    return result(MATCH, f"replay matches: {found.replayed} of {found.recorded} worker "
                         "stimuli replayed, every transition count equal, no violation")
