"""Minimize a failing scenario further, by the length of its trace.

Hypothesis shrinks the choices a scenario was drawn from, which can leave a local minimum:
a task that no longer matters but that its dependents' offsets keep, a fault that could
strike earlier, a fifth worker. ``minimize(scenario, still_fails)`` then tries simpler
scenarios -- one task fewer (its dependents lose that input), one fault fewer, a fault
earlier, one worker fewer, one thread, no stealing, two tasks fewer, plainer links and
tasks, one task or worker fewer with the faults striking another worker or as much sooner
as the task took -- and keeps a candidate when ``still_fails`` holds for it and it is smaller: fewer
stimuli delivered, then fewer tasks, then fewer faults. Greedy, to a fixed point or a time
limit.

It also shrinks the cluster's clock, the way it shrinks tasks and faults: a failure that
waits for the failure detector spends most of its trace on clock ticks and heartbeats.
So it tries no heartbeat timeout, a shorter one, no heartbeats, fewer of them, and a
slower clock (``tick_interval``); and, for a worker cut off from everyone, the verdict the
heartbeat timeout would reach without the wait: the worker dies (a ``KillWorker``, which
the scheduler hears of at once), at the time the timeout would notice or sooner. A
candidate with more faults is kept only when its trace is shorter. When the clock ticks
(stealing, or a heartbeat timeout), long tasks are also cut short by whole ticks, the
faults after the cut striking as much sooner.

Last, when nothing above helps, it drops many tasks at once: Hypothesis leaves filler tasks
whose only part is where the failing task is placed, and no drop of one or two keeps the
failure while the faults strike where and when they were tuned to. So it drops all but
one task's ancestry (and that plus one task), halves, quarters, ..., and refits the faults
to the smaller run: the workers they strike renamed, all of them sooner or later; for an
ancestry also the first fault and the others shifted apart, and on the slowest link
Hypothesis draws, whose delays leave a fault wider windows.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

from msgspec.structs import replace

from squall.chaos.injectors import Fault
from squall.core.outcome import Outcome
from squall.scenarios.model import ExplicitGraph, Scenario, ScenarioError

MIN_HEARTBEAT_TIMEOUT = 0.2  # a shorter timeout is not shrunk further
SLOWEST_TICK = 1.0  # the clock is slowed (tick_interval doubled) up to this
PAIRS_UP_TO = 24  # graphs this small also try dropping any two tasks at once
# still_fails(candidate) -> the candidate's outcome when it fails the same way, else None
Judge = Callable[[Scenario], Outcome | None]
Size = tuple[int, int, int]


def size(scenario: Scenario, outcome: Outcome) -> Size:
    w = scenario.workload
    tasks = len(w.tasks) if isinstance(w, ExplicitGraph) else w.tasks
    return (outcome.n_stimuli, tasks, len(scenario.chaos))


def minimize(scenario: Scenario, outcome: Outcome, still_fails: Judge, *,
             time_limit: float = 20.0, window: int = 1,
             judge_many: Callable[[list[Scenario]], list[Outcome | None]] | None = None,
             ) -> tuple[Scenario, Outcome, int]:
    """The smallest scenario found that still fails, its outcome, and how many candidates
    were tried. ``outcome`` is the failing outcome of ``scenario``.

    ``judge_many`` judges a list of candidates at once (in parallel, on a cluster: each
    outcome is what ``still_fails`` gives for that candidate); candidates then go to it
    ``window`` at a time, and the first of them (in the order they are tried) that is
    smaller is kept: the same result as judging them one by one."""
    deadline = time.monotonic() + time_limit
    best, best_out, best_size = scenario, outcome, size(scenario, outcome)
    tried = 0
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        candidates = _valid(_simpler(best))
        while not improved and time.monotonic() < deadline:
            chunk = list(itertools.islice(candidates, max(1, window)))
            if not chunk:
                break
            tried += len(chunk)
            outs = (judge_many(chunk) if judge_many is not None
                    else [still_fails(c) for c in chunk])
            for candidate, out in zip(chunk, outs, strict=True):
                if out is None:
                    continue
                s = size(candidate, out)
                if s < best_size:
                    best, best_out, best_size = candidate, out, s
                    improved = True
                    break  # start again from the smaller scenario
    return best, best_out, tried


def _valid(candidates: Iterator[Scenario]) -> Iterator[Scenario]:
    for candidate in candidates:
        try:
            candidate.check()
        except ScenarioError:
            continue
        yield candidate


def _simpler(sc: Scenario) -> Iterator[Scenario]:
    """Candidate simplifications of ``sc``, the most drastic first."""
    chaos = sc.chaos
    for i in range(len(chaos)):
        yield replace(sc, chaos=chaos[:i] + chaos[i + 1:])
    for smaller, _ in _fewer(sc):
        yield smaller
    c = sc.cluster
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
    yield from _sooner(sc)
    w = sc.workload
    if isinstance(w, ExplicitGraph) and 2 < len(w.tasks) <= PAIRS_UP_TO:
        # Placement is sensitive to every task: two may have to go together.
        n = len(w.tasks)
        for i in reversed(range(n)):
            for j in reversed(range(i)):
                yield replace(sc, workload=_without(w, {w.tasks[i].key, w.tasks[j].key}))
    if isinstance(w, ExplicitGraph):
        for i, t in enumerate(w.tasks):
            if t.sim_duration is None:
                continue  # its hint is its duration: nothing plainer to say
            plain = replace(t, duration=t.sim_duration, nbytes=100)
            if plain != t:
                tasks = w.tasks[:i] + (plain,) + w.tasks[i + 1:]
                yield replace(sc, workload=ExplicitGraph(tasks=tasks))
    # One task or worker fewer moves work to other workers, and a worker that runs one
    # task fewer is that much sooner where the failure needs it: the faults may then have
    # to strike another worker, or sooner, to hit the same moment.
    named = {name for f in chaos if (name := _worker_of(f)) is not None}
    for smaller, saved in _fewer(sc):
        others = [f"w{b}" for b in range(smaller.cluster.workers)]
        pairs = sorted({(min(a, b), max(a, b)) for a in named for b in others if b != a})
        for moved in [smaller, *(_swap_workers(smaller, a, b) for a, b in pairs)]:
            if moved is not smaller:
                yield moved
            if saved > 0 and moved.chaos:
                yield replace(moved, chaos=tuple(replace(f, at=round(max(0.0, f.at - saved), 2))
                                                 for f in moved.chaos))
    yield from _regrouped(sc)


def _fewer(sc: Scenario) -> Iterator[tuple[Scenario, float]]:
    """One task fewer (its dependents lose that input), then one worker fewer; with the
    seconds of work that saves (the task's duration)."""
    w = sc.workload
    if isinstance(w, ExplicitGraph) and len(w.tasks) > 1:
        for i in reversed(range(len(w.tasks))):
            t = w.tasks[i]
            took = t.sim_duration if t.sim_duration is not None else t.duration
            yield replace(sc, workload=_without(w, {t.key})), took or 0.0
    c = sc.cluster
    if c.workers > 1:
        yield replace(sc, cluster=replace(c, workers=c.workers - 1)), 0.0


def _without(w: ExplicitGraph, gone: set[str] | frozenset[str]) -> ExplicitGraph:
    return ExplicitGraph(tasks=tuple(replace(t, deps=tuple(d for d in t.deps if d not in gone))
                                     for t in w.tasks if t.key not in gone))


def _worker_of(f: Fault) -> str | None:
    """The one worker a fault strikes, if it names one."""
    name = getattr(f, "worker", None)
    return name if isinstance(name, str) and name != "*" else None


def _swap_workers(sc: Scenario, a: str, b: str) -> Scenario:
    """``sc`` with workers ``a`` and ``b`` trading places in every fault and link."""
    return _renamed(sc, {a: b, b: a})


def _renamed(sc: Scenario, other: dict[str, str], first: float = 0.0,
             rest: float = 0.0) -> Scenario:
    """``sc`` with its workers renamed (``other``) in every fault and link, and its first
    fault striking ``first`` seconds later, the others ``rest`` seconds later."""
    start = min((f.at for f in sc.chaos), default=0.0)
    chaos = tuple(replace(f, at=round(max(0.0, f.at + (first if f.at == start else rest)), 2),
                          **{field: other[getattr(f, field)] for field in ("worker", "peer")
                             if getattr(f, field, None) in other})
                  for f in sc.chaos)
    links = tuple(replace(link, worker=other.get(link.worker, link.worker))
                  for link in sc.cluster.links)
    return replace(sc, chaos=chaos, cluster=replace(sc.cluster, links=links))


def _sooner(sc: Scenario) -> Iterator[Scenario]:
    """Candidates that reach the same state with fewer clock ticks and heartbeats."""
    c, chaos = sc.cluster, sc.chaos
    timeout = c.heartbeat_timeout
    if timeout is not None:
        for i, f in enumerate(chaos):
            verdict = f.timeout_verdict()  # a worker cut off for good: it dies
            if verdict is None:
                continue
            if any(type(g) is type(verdict) and replace(g, at=f.at) == verdict
                   and g.at >= f.at for g in chaos):
                continue  # the verdict strikes already
            # The timeout's verdict without the wait: the cut-off worker dies, when the
            # timeout would notice it or (halving) sooner; with the failure detector or
            # without it, if it was there only for this worker.
            delay = timeout
            while delay >= 0.02:
                death = replace(verdict, at=round(f.at + delay, 2))
                died = replace(sc, chaos=chaos[:i + 1] + (death,) + chaos[i + 1:])
                yield replace(died, cluster=replace(c, heartbeat_timeout=None))
                yield died
                delay /= 2
        yield replace(sc, cluster=replace(c, heartbeat_timeout=None))
        if timeout / 2 >= MIN_HEARTBEAT_TIMEOUT:
            shorter = round(timeout / 2, 2)
            hb = c.heartbeat_interval
            yield replace(sc, cluster=replace(
                c, heartbeat_timeout=shorter,
                heartbeat_interval=None if hb is None else min(hb, shorter / 2)))
    if c.heartbeat_interval is not None:
        yield replace(sc, cluster=replace(c, heartbeat_interval=None))
        longer = c.heartbeat_interval * 2
        if timeout is None or longer <= timeout / 2:
            yield replace(sc, cluster=replace(c, heartbeat_interval=longer))
    if (timeout is not None or c.stealing) and c.tick_interval * 2 <= SLOWEST_TICK:
        yield replace(sc, cluster=replace(c, tick_interval=round(c.tick_interval * 2, 3)))
    if timeout is not None or c.stealing:
        yield from _shortened(sc)


SHORTEN_TICKS = (20, 10, 5, 2, 1)  # the cuts _shortened tries, in clock ticks


def _shortened(sc: Scenario) -> Iterator[Scenario]:
    """``sc`` with its long tasks shorter and what follows them sooner: every task longer
    than the cut loses the cut, and every fault at or after it strikes that much sooner.
    A failure that needs long tasks only for what happens between them (stealing acts on
    clock ticks) then takes fewer ticks to reach. The cut is a whole number of ticks, so
    the faults keep their place among the ticks (scaling time instead moved them off it,
    and the failures with it)."""
    w = sc.workload
    if not isinstance(w, ExplicitGraph):
        return
    tick = sc.cluster.tick_interval
    longest = max((t.sim_duration or 0.0 for t in w.tasks), default=0.0)
    for ticks in SHORTEN_TICKS:
        cut = round(ticks * tick, 3)
        if cut >= longest:
            continue
        tasks = tuple(replace(t, duration=_less(t.duration, cut),
                              sim_duration=_less(t.sim_duration, cut)) for t in w.tasks)
        chaos = tuple(replace(f, at=round(f.at - cut, 2)) if f.at >= cut else f
                      for f in sc.chaos)
        yield replace(sc, workload=ExplicitGraph(tasks=tasks), chaos=chaos)


def _less(seconds: float | None, cut: float) -> float | None:
    return round(seconds - cut, 3) if seconds is not None and seconds > cut else seconds


# Many tasks fewer at once: Hypothesis leaves filler tasks that only decide where the
# failing task is placed, and no drop of one or two keeps the failure while the faults
# still strike the worker and the moment they were tuned to. So whole groups go -- all
# but what one task reads (transitively), that plus one task, halves, quarters, ... --
# and the faults are refitted to the smaller run: the workers they strike renamed, and
# struck sooner or later.
REFIT_LATER = 0.1  # all faults at once: up to this much later (and any amount sooner)
REFIT_APART = 0.05  # the first fault and the others apart: this much sooner or later
REFIT_LATENCY = 0.01  # the slowest link Hypothesis draws: wider windows for a fault


def _regrouped(sc: Scenario) -> Iterator[Scenario]:
    """Candidates with many tasks fewer, their faults refitted."""
    w = sc.workload
    if not isinstance(w, ExplicitGraph) or len(w.tasks) < 3:
        return
    for gone, thorough in _groups(w):
        yield from _refit(replace(sc, workload=_without(w, gone)), thorough=thorough)


def _groups(w: ExplicitGraph) -> Iterator[tuple[frozenset[str], bool]]:
    """Sets of tasks to drop together, the most drastic first; with True for the ones
    worth refitting the faults thoroughly (all but one task's ancestry)."""
    keys = [t.key for t in w.tasks]
    deps = {t.key: t.deps for t in w.tasks}
    everything = frozenset(keys)
    kept = sorted({_ancestry(t.key, deps) for t in w.tasks if t.deps}, key=len)
    groups = [(everything - keep, True) for keep in kept]
    groups += [(everything - keep - {k}, False) for keep in kept for k in keys]
    n = len(keys)
    chunk = n // 2
    while chunk >= 1:
        groups += [(frozenset(keys[i:i + chunk]), False) for i in range(0, n, chunk)]
        chunk //= 2
    seen: set[frozenset[str]] = set()
    for gone, thorough in groups:
        if gone and gone != everything and gone not in seen:
            seen.add(gone)
            yield gone, thorough


def _ancestry(key: str, deps: dict[str, tuple[str, ...]]) -> frozenset[str]:
    """``key`` and every task it reads, transitively."""
    out, todo = {key}, [key]
    while todo:
        for d in deps[todo.pop()]:
            if d in deps and d not in out:
                out.add(d)
                todo.append(d)
    return frozenset(out)


def _refit(sc: Scenario, *, thorough: bool) -> Iterator[Scenario]:
    """``sc`` as it is, then with its faults striking other workers (any renaming of the
    ones they name) and sooner or later, on the faults' 10 ms grid; ``thorough``: also
    the first fault and the others shifted apart, and over the slowest link."""
    yield sc
    if not sc.chaos:
        return
    workers = [f"w{b}" for b in range(sc.cluster.workers)]
    named = sorted({n for f in sc.chaos if (n := _worker_of(f)) in workers})
    renamings = [_renaming(workers, dict(zip(named, image, strict=True)))
                 for image in itertools.permutations(workers, len(named))]
    start = min(f.at for f in sc.chaos)
    shifts = sorted(range(-round(start * 100), round(REFIT_LATER * 100) + 1), key=abs)
    for cs in shifts:
        for other in renamings:
            if cs or any(a != b for a, b in other.items()):
                yield _renamed(sc, other, cs / 100, cs / 100)
    if not thorough:
        return
    apart = sorted(range(-round(REFIT_APART * 100), round(REFIT_APART * 100) + 1), key=abs)
    links = [sc.cluster.latency] + [REFIT_LATENCY] * (sc.cluster.latency < REFIT_LATENCY)
    for latency in links:
        over = replace(sc, cluster=replace(sc.cluster, latency=latency))
        for first in apart:
            for rest in apart if len(sc.chaos) > 1 else [first]:
                for other in renamings:
                    yield _renamed(over, other, first / 100, rest / 100)


def _renaming(workers: list[str], image: dict[str, str]) -> dict[str, str]:
    """``image`` made a permutation of ``workers``: a worker whose name was taken gets one
    that was freed."""
    freed = iter(w for w in workers if w not in image.values())
    return {w: image.get(w) or (next(freed) if w in image.values() else w) for w in workers}
