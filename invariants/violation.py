"""InvariantViolation: what broke, where, by which transition, after which stimuli."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from squall.core.outcome import Violation
from squall.invariants.base import Invariant

RECENT_SHOWN = 10  # stimuli listed in the message (the ring keeps more)
_LINE = 110  # characters per stimulus line in the message


class InvariantViolation(AssertionError):
    """An invariant of the catalog did not hold.

    ``invariant``: the Invariant (id, entity kind, text); ``entity``: which one, e.g.
    ``task 'x-1'``; ``key``/``start``/``finish``: the transition that broke it (empty
    when a full check found it); ``stimulus_id`` and ``time``: the stimulus being
    handled; ``recent``: the last stimuli as ``(target, message)``; ``trace_path``:
    where the run's trace is written, if it has one.
    """

    def __init__(self, invariant: Invariant, entity: str, detail: str, *, key: str = "",
                 start: str = "", finish: str = "", stimulus_id: str = "", time: float = 0.0,
                 recent: Iterable[tuple[str, Any]] = (), story: Iterable[Any] = (),
                 trace_path: str = "") -> None:
        self.invariant = invariant
        self.entity = entity
        self.detail = detail
        self.key = key
        self.start = start
        self.finish = finish
        self.stimulus_id = stimulus_id
        self.time = time
        self.recent = list(recent)
        self.story = list(story)
        self.trace_path = trace_path
        super().__init__(self.render())

    @property
    def id(self) -> str:
        return self.invariant.id

    @property
    def text(self) -> str:
        return self.invariant.text

    def render(self) -> str:
        inv = self.invariant
        lines = [f"invariant {inv.id} violated ({inv.entity}): {inv.text}",
                 f"  entity:     {self.entity}",
                 f"  detail:     {_clip(self.detail, 400)}"]
        if self.key:
            lines.append(f"  transition: {self.key!r} {self.start} -> {self.finish}")
        if self.stimulus_id:
            lines.append(f"  stimulus:   {self.stimulus_id} at t={self.time:.6g}")
        if self.story:
            lines.append("  story of the key (key, from, to, stimulus):")
            lines += [f"    {t}" for t in self.story[-5:]]
        if self.recent:
            shown = self.recent[-RECENT_SHOWN:]
            lines.append(f"  last {len(shown)} stimuli (receiver: message):")
            lines += [f"    {_clip(f'{target}: {describe(msg)}', _LINE)}"
                      for target, msg in shown]
        if self.trace_path:
            lines.append(f"  trace:      {self.trace_path}")
        return "\n".join(lines)

    def to_violation(self) -> Violation:
        """The serialisable part, for Outcome.violations and traces."""
        return Violation(invariant=self.invariant.id, text=self.invariant.text,
                         entity=self.entity, key=self.key, start=self.start,
                         finish=self.finish, stimulus_id=self.stimulus_id, time=self.time,
                         detail=_clip(self.detail, 1000))


def describe(msg: Any) -> str:
    """One line for a message: its JSON, which starts with its op tag."""
    try:
        return msgspec.json.encode(msg).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(msg)


def _clip(s: str, n: int) -> str:
    s = s.replace("\n", " ")
    return s if len(s) <= n else s[: n - 3] + "..."
