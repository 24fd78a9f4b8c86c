"""A bounded log of state transitions, cheap enough to keep on in every run.

Each transition is ``(key, old state, new state, stimulus id)``. The log keeps them flat,
four slots per transition in one list, and is trimmed in bulk after each stimulus, so
logging a transition allocates nothing that outlives it. (A deque of tuples keeps one
live tuple per transition: on a 100,000-task simulation with a million transitions,
allocating and evicting those cost about 5% of the run.)
"""

from __future__ import annotations

from collections.abc import Iterator


class TransitionLog:
    """The last ``size`` transitions, oldest first: ``add((key, old, new, sid))`` to log
    one, iterate for ``(key, old, new, sid)`` tuples, ``trim()`` after each stimulus."""

    __slots__ = ("size", "add", "_flat")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"transition log size must be >= 0, got {size}")
        self.size = size
        self._flat: list[str] = []
        # The list's own extend: logging runs no Python code of its own.
        self.add = self._flat.extend

    def trim(self) -> None:
        """Drop all but the last ``size`` transitions once there are twice as many."""
        flat = self._flat
        if len(flat) > 8 * self.size:
            del flat[:len(flat) - 4 * self.size]

    def __iter__(self) -> Iterator[tuple[str, str, str, str]]:
        flat = self._flat
        entries = iter(flat[max(0, len(flat) - 4 * self.size):])
        return zip(entries, entries, entries, entries, strict=True)  # (four slots each)

    def __len__(self) -> int:
        return min(len(self._flat) // 4, self.size)

    def __repr__(self) -> str:
        return f"<TransitionLog {len(self)}/{self.size}>"
