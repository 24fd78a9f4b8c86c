"""Minimize a failing scenario further, by the length of its trace.

Hypothesis shrinks the choices a scenario was drawn from, which can leave a local minimum:
a task that no longer matters but that its dependents' offsets keep, a fault that could
strike earlier, a fifth worker. ``minimize(scenario, still_fails)`` then tries simpler
scenarios -- one task fewer (its dependents lose that input), one fault fewer, a fault
earlier, one worker fewer, one thread, no stealing, two tasks fewer, plainer links and
tasks -- and keeps a
candidate when ``still_fails`` holds for it and it is smaller: fewer stimuli delivered,
then fewer tasks, then fewer faults. Greedy, to a fixed point or a time limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from msgspec.structs import replace

from squall.core.outcome import Outcome
from squall.scenarios.model import ExplicitGraph, Scenario, ScenarioError

PAIRS_UP_TO = 24  # graphs this small also try dropping any two tasks at once
# still_fails(candidate) -> the candidate's outcome when it fails the same way, else None
Judge = Callable[[Scenario], Outcome | None]
Size = tuple[int, int, int]


def size(scenario: Scenario, outcome: Outcome) -> Size:
    w = scenario.workload
    tasks = len(w.tasks) if isinstance(w, ExplicitGraph) else w.tasks
    return (outcome.n_stimuli, tasks, len(scenario.chaos))


def minimize(scenario: Scenario, outcome: Outcome, still_fails: Judge, *,
             time_limit: float = 20.0) -> tuple[Scenario, Outcome, int]:
    """The smallest scenario found that still fails, its outcome, and how many candidates
    were tried. ``outcome`` is the failing outcome of ``scenario``."""
    deadline = time.monotonic() + time_limit
    best, best_out, best_size = scenario, outcome, size(scenario, outcome)
    tried = 0
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        for candidate in _simpler(best):
            if time.monotonic() >= deadline:
                break
            try:
                candidate.check()
            except ScenarioError:
                continue
            tried += 1
            out = still_fails(candidate)
            if out is None:
                continue
            s = size(candidate, out)
            if s < best_size:
                best, best_out, best_size = candidate, out, s
                improved = True
                break  # start again from the smaller scenario
    return best, best_out, tried


def _simpler(sc: Scenario) -> Iterator[Scenario]:
    """Candidate simplifications of ``sc``, the most drastic first."""
    chaos = sc.chaos
    for i in range(len(chaos)):
        yield replace(sc, chaos=chaos[:i] + chaos[i + 1:])
    w = sc.workload
    if isinstance(w, ExplicitGraph) and len(w.tasks) > 1:
        for i in reversed(range(len(w.tasks))):
            gone = w.tasks[i].key
            tasks = tuple(replace(t, deps=tuple(d for d in t.deps if d != gone))
                          for j, t in enumerate(w.tasks) if j != i)
            yield replace(sc, workload=ExplicitGraph(tasks=tasks))
    c = sc.cluster
    if c.workers > 1:
        yield replace(sc, cluster=replace(c, workers=c.workers - 1))
    if c.threads > 1:
        yield replace(sc, cluster=replace(c, threads=1))
    if c.stealing:
        yield replace(sc, cluster=replace(c, stealing=False))
    if c.jitter:
        yield replace(sc, cluster=replace(c, jitter=0.0))
    for i, f in enumerate(chaos):
        if f.at >= 0.02:
            earlier = replace(f, at=round(f.at / 2, 2))
            yield replace(sc, chaos=chaos[:i] + (earlier,) + chaos[i + 1:])
    if isinstance(w, ExplicitGraph) and 2 < len(w.tasks) <= PAIRS_UP_TO:
        # Placement is sensitive to every task: two may have to go together.
        n = len(w.tasks)
        for i in reversed(range(n)):
            for j in reversed(range(i)):
                gone = (w.tasks[i].key, w.tasks[j].key)
                tasks = tuple(replace(t, deps=tuple(d for d in t.deps if d not in gone))
                              for k, t in enumerate(w.tasks) if k not in (i, j))
                yield replace(sc, workload=ExplicitGraph(tasks=tasks))
    if isinstance(w, ExplicitGraph):
        for i, t in enumerate(w.tasks):
            if t.sim_duration is None:
                continue  # its hint is its duration: nothing plainer to say
            plain = replace(t, duration=t.sim_duration, nbytes=100)
            if plain != t:
                tasks = w.tasks[:i] + (plain,) + w.tasks[i + 1:]
                yield replace(sc, workload=ExplicitGraph(tasks=tasks))
