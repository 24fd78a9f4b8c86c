"""``ChaosSchedule``: a list of timed faults, given or drawn from a seed.

Three ways to get one:

- ``ChaosSchedule.timed(f1, f2, ...)``: the faults as given;
- ``ChaosSchedule.from_rates(seed, {"kill": 0.2, "pause": 0.5}, workers=4, duration=10)``:
  each kind strikes as a Poisson process of that many faults per second, every choice
  (which worker, how long, how slow) drawn from ``seed``;
- ``ChaosSchedule.swarm(seed, workers=4, duration=10)``: swarm testing -- the seed also
  draws which kinds take part and their rates, so different seeds stress different mixes
  instead of every run getting a little of everything.

A drawn schedule is still plain data (``faults``, a tuple of injectors, plus the seed and
rates it came from): it goes into a ``Scenario`` and a trace like any other. It keeps the
cluster able to finish: a killed worker's name joins again shortly after, every partition
and pause has an end, and at most one of the named workers is out of action at a time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence

import msgspec

from squall.chaos.injectors import (
    AnyFault,
    Fault,
    JoinWorker,
    KillWorker,
    Partition,
    PauseWorker,
    SkewEstimates,
    SlowNetwork,
    timeline,
)

RATE_KINDS = ("kill", "pause", "slow-link", "partition", "skew", "join")
SKEW_FACTORS = (10.0, 0.1, 3.0, 0.3)
LATENCIES = (0.005, 0.02, 0.05)
BANDWIDTHS = (None, 50e6, 10e6)
PAUSES = (0.1, 0.5, 1.0, 2.0)


class ChaosSchedule(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    faults: tuple[AnyFault, ...] = ()
    seed: int | None = None  # where a drawn schedule came from
    rates: dict[str, float] = {}  # kind -> faults per second it was drawn with

    @classmethod
    def timed(cls, *faults: AnyFault) -> ChaosSchedule:
        return cls(faults=tuple(faults))

    @classmethod
    def from_rates(cls, seed: int, rates: Mapping[str, float], *,
                   workers: int | Sequence[str], duration: float, start: float = 0.0,
                   prefixes: Sequence[str] = (), outage: float = 3.0) -> ChaosSchedule:
        """Faults of each kind at ``rates[kind]`` per second over ``[start, start +
        duration)``. ``prefixes``: what skews may target (besides every prefix).
        ``outage``: the longest a partition lasts (make it longer than the heartbeat
        timeout to have partitioned workers declared dead)."""
        for kind, rate in rates.items():
            if kind not in RATE_KINDS:
                raise ValueError(f"unknown fault kind {kind!r} in rates; choose from "
                                 f"{', '.join(RATE_KINDS)}")
            if not rate >= 0:
                raise ValueError(f"rate of {kind!r} must be >= 0, got {rate}")
        if not duration > 0:
            raise ValueError(f"duration must be > 0, got {duration}")
        names = [f"w{i}" for i in range(workers)] if isinstance(workers, int) else list(workers)
        if not names:
            raise ValueError("a drawn chaos schedule needs at least one worker to act on")
        rng = random.Random(f"chaos:{seed}")
        arrivals: list[tuple[float, int, str]] = []
        for order, kind in enumerate(RATE_KINDS):  # fixed order: same seed, same faults
            rate = rates.get(kind, 0.0)
            t = start
            while rate > 0:
                t += rng.expovariate(rate)
                if t >= start + duration:
                    break
                arrivals.append((round(t, 3), order, kind))
        arrivals.sort()
        drawn = _Drawer(rng, names, prefixes, outage)
        faults: list[AnyFault] = []
        for t, _, kind in arrivals:
            faults.extend(drawn.fault(kind, t))
        faults.sort(key=lambda f: f.at)
        return cls(faults=tuple(faults), seed=seed, rates=dict(rates))

    @classmethod
    def swarm(cls, seed: int, *, workers: int | Sequence[str], duration: float,
              start: float = 0.0, max_rate: float = 1.0, prefixes: Sequence[str] = (),
              outage: float = 3.0) -> ChaosSchedule:
        """Swarm mode: the seed draws which kinds take part (each with probability 1/2, at
        least one) and their rates (log-uniform in [max_rate / 20, max_rate] per second)."""
        rng = random.Random(f"swarm:{seed}")
        kinds = [k for k in RATE_KINDS if rng.random() < 0.5] or [rng.choice(RATE_KINDS)]
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

    def __iter__(self) -> Iterator[AnyFault]:  # type: ignore[override]
        return iter(self.faults)

    def __len__(self) -> int:
        return len(self.faults)


class _Drawer:
    """Turns (time, kind) arrivals into faults, keeping at most one named worker out of
    action (dead, paused or cut off) at a time, so the run can always finish."""

    def __init__(self, rng: random.Random, names: list[str], prefixes: Sequence[str],
                 outage: float) -> None:
        self.rng = rng
        self.names = names
        self.prefixes = list(prefixes)
        self.outage = outage
        self.busy_until: dict[str, float] = {}  # worker -> when it is back in action

    def _victim(self, t: float) -> str | None:
        out = [n for n, until in self.busy_until.items() if until > t]
        if out and len(self.names) > 1:
            return None  # someone is already down: wait for them
        free = [n for n in self.names if self.busy_until.get(n, 0.0) <= t]
        return self.rng.choice(free) if free else None

    def fault(self, kind: str, t: float) -> list[AnyFault]:
        rng = self.rng
        if kind == "skew":
            prefix = rng.choice([None, *self.prefixes])
            return [SkewEstimates(at=t, factor=rng.choice(SKEW_FACTORS), prefix=prefix)]
        if kind == "join":
            return [JoinWorker(at=t)]
        if kind == "slow-link":
            worker = rng.choice(self.names)
            peers = ["*", "scheduler", *[n for n in self.names if n != worker]]
            latency = rng.choice(LATENCIES)
            return [SlowNetwork(at=t, worker=worker, peer=rng.choice(peers), latency=latency,
                                jitter=round(latency * rng.choice((0.0, 0.4)), 4),
                                bandwidth=rng.choice(BANDWIDTHS))]
        victim = self._victim(t)
        if victim is None:
            return []
        if kind == "kill":
            back = round(t + rng.uniform(0.2, 1.0), 3)
            self.busy_until[victim] = back
            return [KillWorker(at=t, worker=victim), JoinWorker(at=back, worker=victim)]
        if kind == "pause":
            seconds = rng.choice(PAUSES)
            self.busy_until[victim] = t + seconds
            return [PauseWorker(at=t, worker=victim, seconds=seconds)]
        # partition: from everyone, or only from the scheduler
        seconds = round(rng.uniform(0.2, self.outage), 3)
        self.busy_until[victim] = t + seconds + 1.0  # time to rejoin after the heal
        return [Partition(at=t, worker=victim, peer=rng.choice(("*", "scheduler")),
                          seconds=seconds)]
