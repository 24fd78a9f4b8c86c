"""Expected task durations: the one function placement, occupancy and stealing share.

An estimate is per task prefix: a moving average of measured run times, else the user's
hint for that prefix, else a default. While a task runs longer than its prefix's
estimate, heartbeats raise the estimate to what has already elapsed, so work queued
behind a surprisingly long task becomes worth moving. Chaos skews the output here, and
only here, so every consumer sees the same skewed value.
"""

from __future__ import annotations

DEFAULT_DURATION = 0.5  # seconds, for a prefix with no measurement and no hint
MOVING_AVERAGE_WEIGHT = 0.5  # weight of a new measurement


class DurationEstimator:
    __slots__ = ("default", "_measured", "_hinted", "_skew", "_skew_all", "durations", "version")

    def __init__(self, default: float = DEFAULT_DURATION) -> None:
        self.default = default
        self._measured: dict[str, float] = {}
        self._hinted: dict[str, float] = {}
        self._skew: dict[str, float] = {}
        self._skew_all = 1.0
        # prefix -> skewed estimate of every prefix seen, kept current so that duration()
        # is one lookup; read-only outside this class (occupancy reads it in its loop).
        self.durations: dict[str, float] = {}
        self.version = 0  # changes whenever an estimate may have changed

    def duration(self, prefix: str) -> float:
        """Expected run time of one task of ``prefix``, in seconds."""
        d = self.durations.get(prefix)
        if d is None:
            return self.default * self._skew_all * self._skew.get(prefix, 1.0)
        return d

    def is_known(self, prefix: str) -> bool:
        """Whether any task of this prefix has been measured (not merely hinted)."""
        return prefix in self._measured

    def hint(self, prefix: str, duration: float | None) -> None:
        """The user's hint, used until a measurement exists; the first hint wins.
        A prefix without a hint is registered with the default."""
        if duration is not None and prefix not in self._hinted:
            self._hinted[prefix] = duration
            self._refresh(prefix)
        elif prefix not in self.durations:
            self._refresh(prefix)

    def observe(self, prefix: str, duration: float) -> None:
        """A task of ``prefix`` finished after ``duration`` seconds of compute."""
        old = self._measured.get(prefix)
        if old is None or duration > 2 * old:
            # first measurement, or a task ran far longer than expected: reset
            self._measured[prefix] = duration
        else:
            w = MOVING_AVERAGE_WEIGHT
            self._measured[prefix] = w * duration + (1 - w) * old
        self._refresh(prefix)

    def observe_running(self, prefix: str, elapsed: float) -> bool:
        """A task of ``prefix`` has been running ``elapsed`` s; raise the estimate if it is
        already longer than expected. Returns whether the estimate changed."""
        base = self._base(prefix)
        if elapsed <= base:
            return False
        self._measured[prefix] = elapsed
        self._refresh(prefix)
        return True

    def skew(self, factor: float, prefix: str | None = None) -> None:
        """Multiply estimates by ``factor`` (for one prefix, or for all). Chaos uses this."""
        if not factor > 0:
            raise ValueError(f"skew factor must be > 0, got {factor}")
        if prefix is None:
            self._skew_all = factor
            for p in self.durations:
                self._refresh(p)
        else:
            self._skew[prefix] = factor
            self._refresh(prefix)

    def _base(self, prefix: str) -> float:
        d = self._measured.get(prefix)
        if d is None:
            d = self._hinted.get(prefix, self.default)
        return d

    def fresh(self, prefix: str) -> float:
        """``duration(prefix)`` recomputed from what was measured, hinted and skewed, not
        read from ``durations``: the invariants compare the two."""
        return self._base(prefix) * self._skew_all * self._skew.get(prefix, 1.0)

    def _refresh(self, prefix: str) -> None:
        self.version += 1
        self.durations[prefix] = self.fresh(prefix)

    def snapshot(self) -> dict[str, float]:
        """Current skewed estimates of every prefix seen."""
        return dict(self.durations)
