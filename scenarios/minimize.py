"""Minimize a failing scenario further, by the length of its trace.

Hypothesis shrinks the choices a scenario was drawn from, which can leave a local minimum:
a task that no longer matters but that its dependents' offsets keep, a fault that could
strike earlier, a fifth worker. ``minimize(scenario, still_fails)`` then tries simpler
scenarios -- one task fewer (its dependents lose that input), one fault fewer, a fault
earlier, one worker fewer, one thread, no stealing, two tasks fewer, plainer links and
tasks, one task or worker fewer with the faults striking another worker or as much sooner
as the task took -- and keeps a candidate when ``still_fails`` holds for it and it is smaller: fewer
stimuli delivered, then fewer tasks, then fewer faults. Greedy, to a fixed point or a budget
of candidate runs (``max_candidates``), never a time limit unless asked: the simulator is
deterministic, so the same failure shrinks to the same scenario on any machine and load.
A generator's workload (``Generated``) is first spelt out task by task, the same tasks in
an ``ExplicitGraph``, so that its tasks can go one at a time.

Then 1-minimal: a single fault (or client action), task or worker that can go with the
failure kept goes, even when the trace gets longer without it (``redundant_parts`` lists
what could still go), and the greedy loop runs again from there, never taking back a part:
each round removes a part or shortens the trace, so it ends.

A failure that ran into the virtual-time cap (``max_time``: a livelock, a cluster stuck
with its clock still ticking) first tries a lower cap, halved, then three quarters: the
same verdict sooner, by the cycle it is stuck in, not by the virtual time it was given.

It also shrinks the cluster's clock, the way it shrinks tasks and faults: a failure that
waits for the failure detector spends most of its trace on clock ticks and heartbeats.
So it tries no heartbeat timeout, a shorter one, no heartbeats, fewer of them, a slower
clock (``tick_interval``), and a faster one with the faults as much sooner (still on
their ticks, with less work to wait through); and, for a worker cut off from everyone,
the verdict the heartbeat timeout would reach without the wait: the worker dies (a
``KillWorker``, which the scheduler hears of at once), at the time the timeout would
notice or sooner. A candidate with more faults is kept only when its trace is shorter.
When the clock ticks (stealing, or a heartbeat timeout), long tasks are also cut short by
whole ticks, the faults after the cut striking as much sooner.

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
from functools import partial

from msgspec.structs import replace

from squall.chaos.injectors import Fault
from squall.core.outcome import Outcome
from squall.scenarios.model import ExplicitGraph, Generated, Scenario, ScenarioError, TaskDef

# The candidate runs ``minimize`` spends at most. A budget of runs, not of seconds, so that
# the result is the same on any machine and under any load (with a time limit it was
# wherever the machine had got to). The built-in mutants' failures reach their fixed point
# in 3-1,500 candidates (BENCHMARKS.md, "Shrinking"), so this leaves room for bigger ones;
# a candidate of a shrunk failure runs in milliseconds, so it costs a minute at worst.
MAX_CANDIDATES = 5_000
MIN_HEARTBEAT_TIMEOUT = 0.2  # a shorter timeout is not shrunk further
MIN_MAX_TIME = 1.0  # a failure at the virtual-time cap: the cap is not lowered below this
SLOWEST_TICK = 1.0  # the clock is slowed (tick_interval doubled) up to this
FASTEST_TICK = 0.01  # and sped up (halved, faults too) down to the faults' 10 ms grid
PAIRS_UP_TO = 24  # graphs this small also try dropping any two tasks at once
# still_fails(candidate) -> the candidate's outcome when it fails the same way, else None
Judge = Callable[[Scenario], Outcome | None]
Size = tuple[int, int, int]


def size(scenario: Scenario, outcome: Outcome) -> Size:
    w = scenario.workload
    tasks = len(w.tasks) if isinstance(w, ExplicitGraph) else w.tasks
    return (outcome.n_stimuli, tasks, len(scenario.chaos))


def parts(scenario: Scenario) -> int:
    """What ``redundant_parts`` removes, counted: faults (client actions among them), tasks,
    workers; and the failure detector (a heartbeat timeout), which a fault -- its verdict,
    a worker's death -- may stand in for."""
    w = scenario.workload
    tasks = len(w.tasks) if isinstance(w, ExplicitGraph) else w.tasks
    return (len(scenario.chaos) + tasks + scenario.cluster.workers
            + (scenario.cluster.heartbeat_timeout is not None))


JudgeMany = Callable[[list[Scenario]], list[Outcome | None]]


class _Search:
    """Candidates judged in order, ``window`` at a time, counted as if one by one: a
    window's candidates after the first one kept are judged but not counted, and a window
    never reaches past the budget. So the candidates counted, and what is kept, are the
    same whatever the window (and, with no time limit, whatever the machine's speed)."""

    def __init__(self, still_fails: Judge, judge_many: JudgeMany | None, window: int,
                 max_candidates: int, time_limit: float | None) -> None:
        self.still_fails = still_fails
        self.judge_many = judge_many
        self.window = max(1, window)
        self.left = max(0, max_candidates)
        self.deadline = None if time_limit is None else time.monotonic() + time_limit
        self.counted = 0

    @property
    def spent(self) -> bool:
        return self.left <= 0 or (self.deadline is not None
                                  and time.monotonic() >= self.deadline)

    def first(self, candidates: Iterator[Scenario],
              keep: Callable[[Scenario, Outcome], bool]) -> tuple[Scenario, Outcome] | None:
        """The first of ``candidates`` that still fails and ``keep`` takes, if found
        within the budget."""
        while not self.spent:
            chunk = list(itertools.islice(candidates, min(self.window, self.left)))
            if not chunk:
                return None
            outs = (self.judge_many(chunk) if self.judge_many is not None
                    else [self.still_fails(c) for c in chunk])
            for i, (candidate, out) in enumerate(zip(chunk, outs, strict=True)):
                if out is not None and keep(candidate, out):
                    self.left -= i + 1
                    self.counted += i + 1
                    return candidate, out
            self.left -= len(chunk)
            self.counted += len(chunk)
        return None


def minimize(scenario: Scenario, outcome: Outcome, still_fails: Judge, *,
             max_candidates: int = MAX_CANDIDATES, time_limit: float | None = None,
             window: int = 1, judge_many: JudgeMany | None = None,
             ) -> tuple[Scenario, Outcome, int]:
    """The smallest scenario found that still fails, its outcome, and how many candidates
    were tried (at most ``max_candidates``). ``outcome`` is the failing outcome of
    ``scenario``.

    ``judge_many`` judges a list of candidates at once (in parallel, on a cluster: each
    outcome is what ``still_fails`` gives for that candidate); candidates then go to it
    ``window`` at a time, and the first of them (in the order they are tried) that is
    kept is kept, and counted as if they were judged one by one: the same result, and
    the same count, as judging them one by one.

    ``time_limit`` (seconds, None: none) stops it sooner on a slow or loaded machine: a
    last resort, since the result then depends on the machine and its load."""
    search = _Search(still_fails, judge_many, window, max_candidates, time_limit)
    explicit = _explicit(scenario)
    if explicit is not None:  # a generator's graph, spelt out: its tasks can then go
        same = search.first(_valid(iter([explicit])),
                            lambda c, out: size(c, out) <= size(scenario, outcome))
        if same is not None:
            scenario, outcome = same
    best, best_out = _descend(search, scenario, outcome, bounded=False)
    while not search.spent:
        # 1-minimal: a part the failure does not need goes, even if the trace gets longer
        fewer = search.first(_valid(s for _, s in _removals(best)), lambda c, o: True)
        if fewer is None:
            break
        best, best_out = _descend(search, *fewer, bounded=True)
    return best, best_out, search.counted


def _descend(search: _Search, best: Scenario, best_out: Outcome, *,
             bounded: bool) -> tuple[Scenario, Outcome]:
    """Greedy: the first simpler candidate that still fails with a smaller ``size``, again
    from there, to a fixed point. ``bounded``: with no more ``parts`` than before (once a
    part has gone for being redundant, it does not come back)."""
    while True:
        smaller = partial(_smaller, size(best, best_out), parts(best) if bounded else None)
        found = search.first(_valid(_simpler(best, best_out)), smaller)
        if found is None:
            return best, best_out
        best, best_out = found


def _smaller(than: Size, most: int | None, candidate: Scenario, out: Outcome) -> bool:
    return size(candidate, out) < than and (most is None or parts(candidate) <= most)


def redundant_parts(scenario: Scenario, still_fails: Judge) -> list[str]:
    """The single faults (client actions among them), tasks and workers of ``scenario``
    that can be removed with ``still_fails`` still holding: empty when it is 1-minimal."""
    return [what for what, smaller in _removals(scenario)
            if _is_valid(smaller) and still_fails(smaller) is not None]


def _removals(sc: Scenario) -> Iterator[tuple[str, Scenario]]:
    """``sc`` with one part fewer, each named: a fault, a task (its dependents lose that
    input), a worker no fault or link names (the workers after it renamed down)."""
    for i, f in enumerate(sc.chaos):
        yield f"fault {i} ({type(f).__name__} at {f.at:g})", replace(
            sc, chaos=sc.chaos[:i] + sc.chaos[i + 1:])
    w = sc.workload
    if isinstance(w, ExplicitGraph) and len(w.tasks) > 1:
        for t in w.tasks:
            yield f"task {t.key}", replace(sc, workload=_without(w, {t.key}))
    if isinstance(w, Generated) and w.tasks > 1:
        yield "a generated task", replace(sc, workload=replace(w, tasks=w.tasks - 1))
    c = sc.cluster
    if c.workers > 1:
        named = {n for f in sc.chaos if (n := _worker_of(f)) is not None}
        named |= {p for f in sc.chaos if isinstance(p := getattr(f, "peer", None), str)}
        named |= {link.worker for link in c.links}
        if isinstance(sc.workload, ExplicitGraph):  # (a worker a task may run on stays)
            named |= {n for t in sc.workload.tasks for n in t.restrictions}
        for k in range(c.workers):
            if f"w{k}" in named:
                continue
            down = {f"w{j}": f"w{j - 1}" for j in range(k + 1, c.workers)}
            fewer = _renamed(sc, down)
            yield f"worker w{k}", replace(fewer, cluster=replace(fewer.cluster,
                                                                 workers=c.workers - 1))


def _explicit(sc: Scenario) -> Scenario | None:
    """``sc`` with its generated workload spelt out task by task (an ``ExplicitGraph`` of
    the same tasks), or None: already explicit, or a task an explicit graph cannot say."""
    if not isinstance(sc.workload, Generated):
        return None
    try:
        graph = sc.graph()
    except ScenarioError:
        return None
    specs = list(graph.tasks.values())
    if any(t.prefix is not None or t.func is not None for t in specs):
        return None
    return replace(sc, workload=ExplicitGraph(tasks=tuple(
        TaskDef(t.key, deps=t.deps, duration=t.duration, sim_duration=t.sim_duration,
                nbytes=t.nbytes, fails=t.fails, priority=t.priority,
                restrictions=t.restrictions) for t in specs)))


def _is_valid(candidate: Scenario) -> bool:
    try:
        candidate.check()
    except ScenarioError:
        return False
    return True


def _valid(candidates: Iterator[Scenario]) -> Iterator[Scenario]:
    for candidate in candidates:
        try:
            candidate.check()
        except ScenarioError:
            continue
        yield candidate


def _simpler(sc: Scenario, out: Outcome | None = None) -> Iterator[Scenario]:
    """Candidate simplifications of ``sc`` (whose failing outcome is ``out``), the most
    drastic first."""
    if out is not None:
        yield from _capped(sc, out)
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


def _capped(sc: Scenario, out: Outcome) -> Iterator[Scenario]:
    """A failure found when virtual time reached the cap (``max_time``: a livelock, or a
    cluster stuck with its clock ticking): the same scenario with a lower cap, half, then
    three quarters of it. A run that is merely slow ends over its budget there, not failed,
    so the judge refuses it; one that is stuck is as stuck sooner, with a shorter trace."""
    cap = sc.cluster.max_time
    v = out.violations[0] if out.violations else None
    if v is None or not (v.time >= cap or "max_time" in v.detail):
        return
    for lower in (cap / 2, cap * 3 / 4):
        lower = round(lower, 3)
        if lower >= MIN_MAX_TIME:
            yield replace(sc, cluster=replace(sc.cluster, max_time=lower))


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
    workload = sc.workload
    if isinstance(workload, ExplicitGraph) and any(t.restrictions for t in workload.tasks):
        workload = ExplicitGraph(tasks=tuple(
            replace(t, restrictions=tuple(other.get(n, n) for n in t.restrictions))
            if t.restrictions else t for t in workload.tasks))
    return replace(sc, workload=workload, chaos=chaos,
                   cluster=replace(sc.cluster, links=links))


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
    if (timeout is not None or c.stealing) and chaos and c.tick_interval / 2 >= FASTEST_TICK:
        # A faster clock, every fault as much sooner: a fault on the k-th tick is still on
        # the k-th tick, so it meets the balancer (or the timeout) as it did, and the work
        # it had to strike in the middle of need not last as long -- the tasks that only
        # kept a worker busy until then can go.
        yield replace(sc, cluster=replace(c, tick_interval=round(c.tick_interval / 2, 4)),
                      chaos=tuple(replace(f, at=round(f.at / 2, 4)) for f in chaos))
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
