"""``ChaosSchedule``: a list of timed faults, given or drawn from a seed.

Three ways to get one:

- ``ChaosSchedule.timed(f1, f2, ...)``: the faults as given;
- ``ChaosSchedule.from_rates(seed, {"kill": 0.2, "pause": 0.5}, workers=4, duration=10)``:
  each kind strikes as a Poisson process of that many faults per second, every choice
  (which worker, how long, how slow) drawn from ``seed``;
- ``ChaosSchedule.swarm(seed, workers=4, duration=10)``: swarm testing -- the seed also
  draws which kinds take part and their rates, so different seeds stress different mixes
  instead of every run getting a little of everything.

Every registered kind with an ``at_rate`` class method takes part (``rate_kinds()``, in
the order they registered: the order in which the seed draws them); ``at_rate`` draws each
fault's details. A drawn schedule is still plain data (``faults``, a tuple of injectors,
plus the seed and rates it came from): it goes into a ``Scenario`` and a trace like any
other. It keeps the cluster able to finish: a killed worker's name joins again shortly
after, every partition and pause has an end, and at most one of the named workers is out
of action at a time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence

import msgspec

from squall.chaos.injectors import Fault, timeline
from squall.chaos.kinds import Faults, as_faults, rate_kinds


class ChaosSchedule(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    faults: Faults = ()
    seed: int | None = None  # where a drawn schedule came from
    rates: dict[str, float] = {}  # kind -> faults per second it was drawn with

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "faults", as_faults(self.faults, "faults"))

    @classmethod
    def timed(cls, *faults: Fault) -> ChaosSchedule:
        return cls(faults=tuple(faults))

    @classmethod
    def from_rates(cls, seed: int, rates: Mapping[str, float], *,
                   workers: int | Sequence[str], duration: float, start: float = 0.0,
                   prefixes: Sequence[str] = (), outage: float = 3.0) -> ChaosSchedule:
        """Faults of each kind at ``rates[kind]`` per second over ``[start, start +
        duration)``. ``prefixes``: what skews may target (besides every prefix).
        ``outage``: the longest a partition lasts (make it longer than the heartbeat
        timeout to have partitioned workers declared dead)."""
        drawn_kinds = rate_kinds()
        for name, rate in rates.items():
            if name not in drawn_kinds:
                raise ValueError(f"unknown fault kind {name!r} in rates; choose from "
                                 f"{', '.join(drawn_kinds)}")
            if not rate >= 0:
                raise ValueError(f"rate of {name!r} must be >= 0, got {rate}")
        if not duration > 0:
            raise ValueError(f"duration must be > 0, got {duration}")
        names = [f"w{i}" for i in range(workers)] if isinstance(workers, int) else list(workers)
        if not names:
            raise ValueError("a drawn chaos schedule needs at least one worker to act on")
        rng = random.Random(f"chaos:{seed}")
        arrivals: list[tuple[float, int, str]] = []
        for order, name in enumerate(drawn_kinds):  # fixed order: same seed, same faults
            rate = rates.get(name, 0.0)
            t = start
            while rate > 0:
                t += rng.expovariate(rate)
                if t >= start + duration:
                    break
                arrivals.append((round(t, 3), order, name))
        arrivals.sort()
        drawer = RateDrawer(rng, names, prefixes, outage)
        faults: list[Fault] = []
        for t, _, name in arrivals:
            faults.extend(drawn_kinds[name](drawer, t))
        faults.sort(key=lambda f: f.at)
        return cls(faults=tuple(faults), seed=seed, rates=dict(rates))

    @classmethod
    def swarm(cls, seed: int, *, workers: int | Sequence[str], duration: float,
              start: float = 0.0, max_rate: float = 1.0, prefixes: Sequence[str] = (),
              outage: float = 3.0) -> ChaosSchedule:
        """Swarm mode: the seed draws which kinds take part (each with probability 1/2, at
        least one) and their rates (log-uniform in [max_rate / 20, max_rate] per second)."""
        rng = random.Random(f"swarm:{seed}")
        drawn_kinds = rate_kinds()
        kinds = [k for k in drawn_kinds if rng.random() < 0.5] or [rng.choice(list(drawn_kinds))]
        lo = math.log(max_rate / 20)
        rates = {k: round(math.exp(rng.uniform(lo, math.log(max_rate))), 4) for k in kinds}
        return cls.from_rates(seed, rates, workers=workers, duration=duration, start=start,
                              prefixes=prefixes, outage=outage)

    def timeline(self) -> list[Fault]:
        """The faults in the order they strike (a timed partition followed by its heal)."""
        return timeline(self.faults)

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.faults:
            out[f.kind_name()] = out.get(f.kind_name(), 0) + 1
        return out

    def __iter__(self) -> Iterator[Fault]:  # type: ignore[override]
        return iter(self.faults)

    def __len__(self) -> int:
        return len(self.faults)


class RateDrawer:
    """What a kind's ``at_rate`` draws with (a ``squall.chaos.kinds.RateDraw``): the seed's
    random numbers, and who is out of action until when, so that at most one named worker
    is at a time and the run can always finish."""

    def __init__(self, rng: random.Random, names: list[str], prefixes: Sequence[str],
                 outage: float) -> None:
        self.rng = rng
        self.names = names
        self.prefixes = list(prefixes)
        self.outage = outage
        self.busy_until: dict[str, float] = {}  # worker -> when it is back in action

    def victim(self, t: float) -> str | None:
        out = [n for n, until in self.busy_until.items() if until > t]
        if out and len(self.names) > 1:
            return None  # someone is already down: wait for them
        free = [n for n in self.names if self.busy_until.get(n, 0.0) <= t]
        return self.rng.choice(free) if free else None

    def out_until(self, name: str, until: float) -> None:
        self.busy_until[name] = until
