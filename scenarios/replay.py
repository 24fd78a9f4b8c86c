"""Replay a trace into fresh state machines: no processes, no network, no simulator.

The recorded stimuli are fed, in order, into a new ``SchedulerState`` and one new
``WorkerState`` per worker incarnation. Replay checks, as it goes, that each receiver's
transition count before a stimulus equals the recorded one (so the first differing
stimulus is named exactly) and that every recorded state digest matches. With strict
mode on, the same validator as the recording runs, so a violation recurs at the same
stimulus. A trace recorded in real mode replays the same way.

Verdicts: ``match`` (same states, no violation; exit 0), ``reproduced`` (same states and
the recorded violation or failure recurs; exit 1), ``diverged`` (exit 3).
"""

from __future__ import annotations

import time as wallclock
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squall.chaos.injectors import ENDS_PROCESS
from squall.core import protocol as p
from squall.core.driver import StimulusDriver
from squall.core.graph import TaskGraph
from squall.core.outcome import Violation
from squall.core.scheduler import SchedulerState
from squall.core.view import REAL, SIM, ReplayableTarget
from squall.core.worker import WorkerState
from squall.invariants import Validator
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
)
from squall.targets import target_for

MATCH = "match"
REPRODUCED = "reproduced"
DIVERGED = "diverged"
EXIT_CODES = {MATCH: 0, REPRODUCED: 1, DIVERGED: 3}


@dataclass
class ReplayResult:
    verdict: str  # MATCH, REPRODUCED or DIVERGED
    message: str  # one line: what matched, what recurred, or where it diverged
    header: Header
    recorded: End | None = None
    violation: Violation | None = None  # the violation the replay raised, if any
    stimuli: int = 0
    digests_checked: int = 0
    wall_time: float = 0.0
    tail: list[tuple[str, Any]] = field(default_factory=list)  # last stimuli before the end

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


class Replayed(StimulusDriver[Any]):
    """A state machine fed recorded stimuli through the one driver loop: recorded (to no
    one), handled and validated, but nothing is dispatched: every instruction is unrouted,
    and ignored (what the instructions led to is in the trace, as the stimuli that
    follow)."""

    __slots__ = ()

    def unrouted(self, instruction: Any) -> None:
        pass


class ReplayWorker(Replayed):
    """A worker incarnation during replay: what a validator may look at besides its state."""

    __slots__ = ("incarnation", "alive")

    def __init__(self, name: str, state: WorkerState, incarnation: int) -> None:
        super().__init__(name, state)
        self.incarnation = incarnation
        self.alive = True


class ReplayCluster:
    """The state machines being replayed, as a ``ClusterView`` (``squall.core.view``) for
    the validator: ``scheduler``, ``workers``, ``all_workers``, ``now``. Replay runs no
    end-of-run checks (the trace has the outcome): its graph, wanted keys, results and
    runs stay empty, and nothing is in flight."""

    def __init__(self, header: Header) -> None:
        c = header.scenario.cluster
        self.scenario = header.scenario
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
        self.results: dict[str, tuple[str, Any]] = {}
        self.runs: dict[str, int] = {}
        self.pending = 0
        self.validator: Any = None
        self.recorders: list[Callable[[str, Any], None]] = []
        self.scheduler_driver = Replayed(SCHEDULER, self.scheduler)

    def validate(self) -> Validator:
        """Strict mode, as in the recording, for every stimulus from now on."""
        self.validator = validator = Validator(self)
        self.scheduler_driver.validator = validator.scheduler
        return validator

    def digest(self) -> str:
        return state_digest(self.scheduler, [w.state for w in self.workers.values()])


Observer = Callable[[int, Stim, ReplayCluster], None]


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
    cluster = ReplayCluster(header)
    validator = cluster.validate() if validate else None
    sched = cluster.scheduler_driver
    recent: list[tuple[str, Any]] = []
    last_sid: dict[tuple[str, int], tuple[int, str]] = {}  # receiver -> its last stimulus
    n = 0
    digests = 0

    def result(verdict: str, message: str, recorded: End | None = None,
               violation: Violation | None = None) -> ReplayResult:
        return ReplayResult(verdict, message, header, recorded, violation, n, digests,
                            wallclock.perf_counter() - started, recent[-tail:])

    for lineno, line in lines:
        if type(line) is Stim:
            target = line.t
            msg = line.m
            if target == CHAOS:
                if type(msg) is not p.FaultInjected:
                    raise TraceError(f"{path}: line {lineno}: a chaos line must carry a fault")
                _apply_fault(cluster, msg)
                recent.append((target, msg))
                continue
            driver: Replayed
            if target == SCHEDULER:
                driver = sched
                receiver = (SCHEDULER, 0)
            else:
                rw = cluster.by_incarnation.get((target, line.i))
                if rw is None:
                    raise TraceError(f"{path}: line {lineno}: stimulus for worker {target!r} "
                                     f"incarnation {line.i}, which never started")
                driver = rw
                receiver = (target, line.i)
            machine = driver.state
            if machine.transition_counter != line.c:
                prev = last_sid.get(receiver)
                where = (f"stimulus {prev[1]!r} (line {prev[0]})" if prev is not None
                         else f"stimulus {msg.stimulus_id!r} (line {lineno})")
                return result(DIVERGED, f"diverged at {where} to {target}: "
                                        f"{machine.transition_counter} transitions after it "
                                        f"in replay, {line.c} recorded")
            n += 1
            if hasattr(msg, "time") and msg.time > cluster.now:
                cluster.now = msg.time
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
                return _judge_violation(path, lines, lineno, msg, v, result)
            if after is not None:
                after(lineno, line, cluster)
        elif type(line) is Digest:
            digests += 1
            got = cluster.digest()
            if got != line.d:
                prev_line, prev_sid = max(last_sid.values(), default=(lineno, "?"))
                return result(DIVERGED, f"diverged: state digest after {line.n} stimuli "
                                        f"(line {lineno}) differs; last stimulus "
                                        f"{prev_sid!r} (line {prev_line})")
        elif type(line) is WorkerStart:
            old = cluster.workers.pop(line.name, None)
            if old is not None:
                # A new incarnation under a live name: the old one restarted (it was cut
                # off or declared dead), so its process is gone, as in the recording.
                old.alive = False
                if validator is not None:
                    validator.worker_gone(old.state)
                    old.validator = None
            ws = WorkerState(line.name, line.threads)
            rw = ReplayWorker(line.name, ws, line.i)
            cluster.workers[line.name] = rw
            cluster.all_workers.append(rw)
            cluster.by_incarnation[(line.name, line.i)] = rw
            if validator is not None:
                validator.watch_worker(ws)
                rw.validator = validator.workers.get(ws)
        elif type(line) is End:
            for _ in lines:  # nothing may follow the outcome (read_trace raises if it does)
                pass
            return _judge_end(cluster, line, result)
    raise TraceError(f"{path}: trace ends without an outcome line")  # read_trace prevents it


def _apply_fault(cluster: ReplayCluster, msg: p.FaultInjected) -> None:
    """Faults change the runtime, not the state machines; only a kill matters here: the
    validator forgets that worker's state from that moment, as in the recording."""
    if msg.kind in ENDS_PROCESS:
        rw = cluster.workers.pop(msg.target, None)
        if rw is not None:
            rw.alive = False
            if cluster.validator is not None:
                cluster.validator.worker_gone(rw.state)
                rw.validator = None


def _judge_violation(path: str | Path, lines: Any, lineno: int, msg: Any, v: Violation,
                     result: Any) -> ReplayResult:
    """A violation struck at ``lineno``: reproduced if the recording ended with it.

    In the simulator nothing follows the violating stimulus but the outcome; a real run
    streams other processes' stimuli until it halts, so the rest is read up to the end.
    """
    end = None
    for _, line in lines:
        if type(line) is End:
            end = line
    rec = end.outcome.violations[0] if end is not None and end.outcome.violations else None
    same = rec is not None and rec.invariant == v.invariant and (
        not rec.stimulus_id or not v.stimulus_id or rec.stimulus_id == v.stimulus_id)
    if same and end is not None and end.phase == "stimulus":
        return result(REPRODUCED, f"reproduced {v.invariant} at stimulus "
                                  f"{msg.stimulus_id!r} (line {lineno})", end, v)
    recorded = (f"the recording had {rec.invariant}" if rec is not None
                else "the recording went on without one")
    return result(DIVERGED, f"diverged at stimulus {msg.stimulus_id!r} (line {lineno}): replay "
                            f"raised {v.invariant} where {recorded}", end, v)


def _judge_end(cluster: ReplayCluster, end: End, result: Any) -> ReplayResult:
    got = cluster.digest()
    if end.digest and got != end.digest:
        return result(DIVERGED, "diverged: the final state digest differs", end)
    out = end.outcome
    if out.violations:
        v = out.violations[0]
        if end.phase == "stimulus":
            return result(DIVERGED, f"diverged: {v.invariant} was recorded at stimulus "
                                    f"{v.stimulus_id!r} but did not recur", end)
        # Found at the end of the run (or when it stalled): the replayed state is the
        # recorded one, so the condition the check found holds again.
        return result(REPRODUCED, f"reproduced the state in which {v.invariant} was found "
                                  f"({end.phase} check)", end, v)
    if not out.results_ok:
        return result(REPRODUCED, f"reproduced the run whose results were wrong: "
                                  f"{', '.join(out.wrong[:5])}", end)
    return result(MATCH, f"replay matches: {end.n} stimuli, every transition count and "
                         "digest equal", end)


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
