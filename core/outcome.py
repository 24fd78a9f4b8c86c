"""What a run returns, in either runtime."""

from __future__ import annotations

import msgspec


class Violation(msgspec.Struct, frozen=True, omit_defaults=True):
    """An invariant that did not hold (the serialisable part of InvariantViolation)."""

    invariant: str  # id, e.g. "task.processing-on-one-worker"
    text: str
    entity: str  # what it is about, e.g. "task 'x-1'"
    key: str = ""
    start: str = ""
    finish: str = ""
    stimulus_id: str = ""
    time: float = 0.0
    detail: str = ""


class Outcome(msgspec.Struct, omit_defaults=True):
    results_ok: bool  # every wanted key has the right value or the error its task raised
    makespan: float  # seconds (virtual in the simulator)
    n_tasks: int
    transitions: int  # scheduler + workers
    digest: str  # hash of the stimulus stream; equal seeds give equal digests
    busy: dict[str, float] = {}  # worker name -> seconds spent executing
    n_stimuli: int = 0
    n_erred: int = 0  # keys that ended in error (raised, or blamed on one that did)
    wrong: list[str] = []  # keys whose result or error was not what it should be
    stale_reports: int = 0
    faults: dict[str, int] = {}  # kind -> count injected
    invariant_checks: int = 0
    violations: list[Violation] = []
    runs: dict[str, int] = {}  # key -> body runs, only for keys that ran more than once
    steals: int = 0
    wall_time: float = 0.0
    trace_path: str = ""
    # Why the run stopped at its time budget (the simulator's ``max_time``) with the work
    # still progressing ("": it did not). Slow, not stuck: no violation, and its results
    # were not judged (``ok`` is False, ``failed`` too).
    budget_exceeded: str = ""

    @property
    def ok(self) -> bool:
        return self.results_ok and not self.violations

    @property
    def failed(self) -> bool:
        """A violation or a wrong result was found (a run over its time budget found
        neither: it is not ``ok`` and not ``failed``)."""
        return not self.ok and not self.budget_exceeded


def format_violation(v: Violation) -> str:
    """A violation as a few indented lines: the invariant, the entity, where it struck."""
    lines = [f"invariant {v.invariant} violated: {v.text}"]
    if v.entity:
        lines.append(f"  entity:     {v.entity}")
    if v.detail:
        lines.append(f"  detail:     {v.detail}")
    if v.key:
        lines.append(f"  transition: {v.key!r} {v.start} -> {v.finish}")
    if v.stimulus_id:
        lines.append(f"  stimulus:   {v.stimulus_id} at t={v.time:.6g}")
    return "\n".join(lines)


class TargetReplay(msgspec.Struct, kw_only=True):
    """What a target's replay of its own stimulus records found
    (``squall.core.view.ReplayableTarget``); ``squall.scenarios.replay`` judges it against
    the recorded outcome."""

    replayed: int = 0  # stimuli fed back into the target's state machines
    recorded: int = 0  # stimuli the trace holds for this target
    divergence: str = ""  # where the replay first differs from the record ("": nowhere)
    violation: Violation | None = None  # the first violation the replay raised
    not_replayed: str = ""  # what was not replayed, and why ("": everything was)
