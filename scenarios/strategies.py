"""Hypothesis strategies for graphs, cluster shapes, chaos schedules and whole scenarios.

Every random choice is drawn through Hypothesis (the simulator's own seed included), so
a failing example shrinks and nothing is flaky. Choices are drawn from small ordered
menus whose first entry is the simplest, because Hypothesis shrinks toward it.

Settings profiles: ``squall.scenarios.profiles`` (``squall-dev``, ``squall-ci``,
``squall-deep``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from msgspec.structs import replace

from squall.chaos.clients import CLIENT, ReleaseKeys, SubmitKeys, WantKeys
from squall.chaos.injectors import (
    OUT_OF_ACTION,
    UNNOTICED,
    Fault,
    Heal,
    JoinWorker,
    KillWorker,
    SlowNetwork,
    effects,
)
from squall.chaos.kinds import WORKER, Maybe, Menu, Pick, drawn_kinds
from squall.core.oracle import output_bytes
from squall.scenarios.model import (
    ClusterShape,
    ExplicitGraph,
    Generated,
    Scenario,
    TaskDef,
    Workload,
)
from squall.scenarios.workloads import WORKLOADS

PREFIXES = ("a", "b", "c", "d")
SIM_DURATIONS = (0.01, 0.001, 0.1, 0.5, 2.0)
HINT_FACTORS = (1.0, None, 10.0, 0.1)  # hint = actual x factor; None: no hint
NBYTES = (100, 10_000, 1_000_000, 10_000_000)
FAULT_TIMES = st.integers(0, 300).map(lambda cs: cs / 100)  # 0 .. 3 virtual seconds
HEARTBEAT_TIMEOUT = 2.0  # set whenever a schedule partitions or pauses workers


# ------------------------------------------------------------------ graphs


_TASK = st.tuples(
    st.sampled_from(PREFIXES),
    st.lists(st.integers(1, 8), max_size=3, unique=True),  # deps: offsets back
    st.sampled_from(SIM_DURATIONS),
    st.sampled_from(HINT_FACTORS),
    st.sampled_from(NBYTES),
    st.integers(0, 24).map(lambda x: x == 24),  # fails: rare, shrinks to "does not fail"
)


RESTRICTED_GRAPH_ODDS = 4  # one graph in this many has restricted tasks (given workers)


@st.composite
def graphs(draw: st.DrawFn, *, min_tasks: int = 1, max_tasks: int = 50,
           workers: int = 0) -> ExplicitGraph:
    """Random DAGs: each task depends on up to three of the eight tasks before it.

    Drawn as a list of task templates, so that shrinking can drop any task; a
    dependency is an offset back, so the graph stays acyclic whatever is dropped.
    With ``workers`` (named w0, w1, ...), some graphs restrict the tasks of a prefix or
    two to one or two of them (swarm-style: most graphs have none, and shrinking removes
    them), so that queues of restricted tasks build up, to be placed and stolen among
    the workers they allow.
    """
    templates = draw(st.lists(_TASK, min_size=min_tasks, max_size=max_tasks))
    if not (workers > 0
            and draw(st.integers(1, RESTRICTED_GRAPH_ODDS)) == RESTRICTED_GRAPH_ODDS):
        return _build_graph(templates)
    names = st.lists(st.integers(0, workers - 1), min_size=1, max_size=2, unique=True).map(
        lambda ix: tuple(f"w{i}" for i in sorted(ix)))
    return _build_graph(templates, {prefix: draw(st.one_of(st.just(()), names))
                                    for prefix in PREFIXES})


def _build_graph(templates: list[tuple[str, list[int], float, float | None, int, bool]],
                 restricted: dict[str, tuple[str, ...]] | None = None) -> ExplicitGraph:
    """The graph of ``templates``; ``restricted``: prefix -> the workers its tasks may run
    on."""
    where = restricted or {}
    tasks: list[TaskDef] = []
    for i, (prefix, offsets, actual, factor, nbytes, fails) in enumerate(templates):
        tasks.append(TaskDef(
            key=f"{prefix}-{i}",
            deps=tuple(tasks[i - o].key for o in sorted(offsets, reverse=True) if o <= i),
            duration=None if factor is None else actual * factor,
            sim_duration=actual,
            nbytes=nbytes,
            fails=fails,
            restrictions=where.get(prefix, ()),
        ))
    return ExplicitGraph(tasks=tuple(tasks))


def generated_workloads(max_tasks: int = 200) -> st.SearchStrategy[Generated]:
    return st.builds(lambda name, n, seed: Generated(name=name, tasks=n, seed=seed),
                     st.sampled_from(sorted(WORKLOADS)), st.integers(1, max_tasks),
                     st.integers(0, 1000))


# ------------------------------------------------------------------ cluster shapes


@st.composite
def cluster_shapes(draw: st.DrawFn, *, max_workers: int = 4, max_threads: int = 2,
                   stealing: bool | None = None, fragile: bool = False) -> ClusterShape:
    """``fragile``: a task may also be given up after 0 or 1 deaths of its workers."""
    if stealing is None:
        stealing = draw(st.booleans())
    allowed_failures = draw(st.sampled_from((3, 0, 1))) if fragile else 3
    return ClusterShape(
        allowed_failures=allowed_failures,
        workers=draw(st.integers(1, max_workers)),
        threads=draw(st.integers(1, max_threads)),
        latency=draw(st.sampled_from((0.001, 0.0001, 0.01))),
        bandwidth=draw(st.sampled_from((100e6, 1e9, 10e6))),
        jitter=draw(st.sampled_from((0.0, 0.002))),
        stealing=stealing,
    )


# ------------------------------------------------------------------ chaos schedules


def faults(workers: int) -> st.SearchStrategy[Fault]:
    """One timed fault of any kind the registry says how to draw (``draw``, by ``rank``:
    the first is what Hypothesis shrinks toward), against one of ``workers`` workers
    (named w0, w1, ...)."""
    name = st.integers(0, max(0, workers - 1)).map(lambda i: f"w{i}")
    return st.one_of(*(st.builds(kind.cls, at=FAULT_TIMES,
                                 **{field: _menu(menu, name) for field, menu in kind.draw.items()})
                       for kind in drawn_kinds() if kind.draw is not None))


def _menu(menu: Menu, worker: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """The strategy drawing from a field's menu (``squall.chaos.kinds``)."""
    if isinstance(menu, Pick):
        return worker if menu is WORKER else st.sampled_from((None, *PREFIXES))
    if isinstance(menu, Maybe):
        return st.one_of(st.none(), _menu(menu.menu, worker))
    return st.sampled_from(menu)


def with_recovery(chaos: list[Fault]) -> tuple[Fault, ...]:
    """The schedule, then (if it can leave the cluster without a working worker) every
    partition healed and one fresh worker joining: a scenario must be able to finish.

    Partitions heal only after the heartbeat timeout had time to notice them: a link cut
    in the simulator drops messages for good (nothing resends them), as a connection
    reset would, and only the failure detector recovers from that.
    """
    if not any(effects(f) & OUT_OF_ACTION for f in chaos):
        return tuple(chaos)
    end = max(f.at for f in chaos) + 0.5
    cuts = [f.at for f in chaos if "cut" in effects(f)]
    if cuts:
        end = max(end, max(cuts) + HEARTBEAT_TIMEOUT + 1.0)
    return (*chaos, Heal(at=round(end, 2)), JoinWorker(at=round(end, 2)))


RESTART_TIMES = st.integers(0, 60).map(lambda i: i / 20)  # 0 .. 3 s, every 50 ms


def restarts(workers: int) -> st.SearchStrategy[tuple[Fault, Fault]]:
    """A worker's process dies and a new one starts at once at its address (a restart).
    On a 50 ms grid, so that restarts often land on a balancing round (every 100 ms), when
    steals are sent."""
    name = st.integers(0, max(0, workers - 1)).map(lambda i: f"w{i}")
    return st.builds(lambda at, w: (KillWorker(at=at, worker=w), JoinWorker(at=at, worker=w)),
                     RESTART_TIMES, name)


def joins() -> st.SearchStrategy[Fault]:
    """A new worker joins (scale-up)."""
    return st.builds(JoinWorker, at=FAULT_TIMES, threads=st.sampled_from((None, 2)))


@st.composite
def chaos_schedules(draw: st.DrawFn, workers: int, *, max_faults: int = 3,
                    min_faults: int = 0, kinds: str = "any") -> tuple[Fault, ...]:
    """``kinds``: "any" fault (a restart among them); "joins" only (scale-up); "restarts"
    (restarts at the same address, and slow links that keep messages in flight across
    them)."""
    if kinds == "joins":
        return tuple(draw(st.lists(joins(), min_size=min_faults, max_size=max_faults)))
    if kinds == "restarts":
        slow = st.builds(SlowNetwork, at=FAULT_TIMES,
                         worker=st.integers(0, max(0, workers - 1)).map(lambda i: f"w{i}"),
                         latency=st.sampled_from((0.05, 0.5)))
        drawn = draw(st.lists(st.one_of(restarts(workers), slow.map(lambda f: (f,))),
                              min_size=min_faults, max_size=max_faults))
        return with_recovery([f for group in drawn for f in group])
    # A restart (a worker's process dies and a new one starts at its address, as a nanny
    # does) is drawn among the single faults too, so that every space, and the swarm,
    # meets restarts under steals, not only the space named for them.
    drawn = draw(st.lists(st.one_of(faults(workers).map(lambda f: (f,)), restarts(workers)),
                          min_size=min_faults, max_size=max_faults))
    return with_recovery([f for group in drawn for f in group])


# ------------------------------------------------------------------ client actions


SECOND_CLIENT = "c2"
CLIENT_ODDS = 5  # one drawn scenario in this many has client actions (where a space allows)


@st.composite
def client_actions(draw: st.DrawFn, keys: list[str], *,
                   max_actions: int = 2) -> tuple[Fault, ...]:
    """What clients do mid-run, for a graph whose keys are ``keys`` (in a topological
    order): up to ``max_actions`` of -- a release (a cancel, if the keys still run); a
    release and a re-request; a release, then a second one of those keys and others; a
    second client wanting keys, and letting them go, or the first client releasing them
    while the second still wants them; the keys asked for again while they run (a
    resubmission); the last few keys submitted late (a graph submitted mid-run, while
    faults strike). It shrinks toward one early release of the first key."""
    picks = st.lists(st.integers(0, len(keys) - 1), min_size=1, max_size=3,
                     unique=True).map(lambda ix: tuple(keys[i] for i in sorted(ix)))
    out: list[Fault] = []
    late = False
    for _ in range(draw(st.integers(1, max_actions))):
        what = draw(st.sampled_from(("release", "re-request", "second", "resubmit",
                                     "late", "release-again")))
        at = draw(FAULT_TIMES)
        then = round(at + draw(FAULT_TIMES), 2)
        if what == "late":
            if late or len(keys) < 2:
                continue
            late = True  # (one late submission: what depends on it is in it)
            n = draw(st.integers(1, min(5, len(keys) - 1)))
            out.append(SubmitKeys(at=at, keys=tuple(keys[-n:])))
            continue
        chosen = draw(picks)
        if what == "release":
            out.append(ReleaseKeys(at=at, keys=chosen))
        elif what == "release-again":  # some keys released twice, among others still wanted
            again = tuple(sorted({*chosen, *draw(picks)}, key=keys.index))
            out += [ReleaseKeys(at=at, keys=chosen), ReleaseKeys(at=then, keys=again)]
        elif what == "re-request":
            out += [ReleaseKeys(at=at, keys=chosen), WantKeys(at=then, keys=chosen)]
        elif what == "second":
            out.append(WantKeys(at=at, client=SECOND_CLIENT, keys=chosen))
            leaving = draw(st.sampled_from((None, SECOND_CLIENT, CLIENT)))
            if leaving is not None:
                out.append(ReleaseKeys(at=then, client=leaving, keys=chosen))
        else:
            out.append(WantKeys(at=at, keys=chosen))
    return tuple(out)


# ------------------------------------------------------------------ scenarios


SWARM = "all"  # every space: each example draws one (swarm testing); what explore defaults to


def check_space(space: str) -> None:
    """ValueError (one line, listing the names) unless ``space`` is SWARM or a named space
    of SCENARIO_SPACES."""
    if space != SWARM and space not in SCENARIO_SPACES:
        raise ValueError(f"unknown scenario space {space!r}; choose one of: "
                         f"{', '.join(space_names())}")


def space_names() -> list[str]:
    """SWARM first, then the named spaces (SCENARIO_SPACES)."""
    return [SWARM, *SCENARIO_SPACES]


@st.composite
def scenarios(draw: st.DrawFn, space: str = "small",
              on_space: Callable[[str], None] | None = None) -> Scenario:
    """A whole scenario from the named space (see SCENARIO_SPACES), or, for SWARM
    ("all"), from a space drawn for each example: swarm testing, so that every example
    leaves out what its space leaves out (faults, stealing, generated workloads, ...) and
    the parameters within it are that space's. Deterministic for a given Hypothesis seed;
    it shrinks toward the first space ("small"). ``on_space``, if given, is told the space
    of each scenario as it is drawn (it draws nothing: the scenarios stay the same)."""
    check_space(space)
    if space == SWARM:
        space = draw(st.sampled_from(tuple(SCENARIO_SPACES)))
    if on_space is not None:
        on_space(space)
    limits = SCENARIO_SPACES[space]
    shape = draw(cluster_shapes(max_workers=limits["workers"],
                                stealing=True if limits.get("stealing") else None,
                                fragile=bool(limits.get("fragile"))))
    explicit = graphs(max_tasks=limits["tasks"], workers=shape.workers)
    if limits.get("generated"):
        workload = draw(st.one_of(explicit, generated_workloads(limits["tasks"])))
    else:
        workload = draw(explicit)
    kinds = "joins" if limits.get("joins") else "restarts" if limits.get("restarts") else "any"
    chaos = draw(chaos_schedules(shape.workers, max_faults=limits["faults"],
                                 min_faults=limits.get("min_faults", 0), kinds=kinds))
    workload = unstranded(workload, chaos)
    if any(effects(f) & UNNOTICED for f in chaos):
        # Without a heartbeat timeout nothing ever notices a cut-off worker.
        shape = replace(shape, heartbeat_timeout=HEARTBEAT_TIMEOUT)
    scenario = Scenario(workload=workload, cluster=shape, chaos=chaos,
                        seed=draw(st.integers(0, 1000)))
    if limits.get("clients", 1) and draw(st.integers(1, CLIENT_ODDS)) == CLIENT_ODDS:
        keys = scenario.graph().topological_order()
        scenario = replace(scenario, chaos=(*chaos, *draw(client_actions(keys))))
    # A livelock is cut short, a slow run is not: the cap scales with the work.
    return replace(scenario, cluster=replace(shape, max_time=time_budget(scenario)))


def unstranded(workload: Workload, chaos: tuple[Fault, ...]) -> Workload:
    """``workload`` with its restrictions kept to workers no fault may take away for good
    (killed, paused or cut off, and not started again under the same name): a task only
    such workers may run waits forever, as it should (dask leaves it in no-worker), which
    is not what a search for bugs should spend a scenario on. A task left with none is
    unrestricted."""
    if not isinstance(workload, ExplicitGraph) or not any(t.restrictions
                                                          for t in workload.tasks):
        return workload
    gone: set[str] = set()
    for i, f in enumerate(chaos):
        if not effects(f) & OUT_OF_ACTION:
            continue
        for name in (getattr(f, "worker", None), getattr(f, "peer", None)):
            # started again later, or at the same time but after it (faults at one time
            # strike in the schedule's order)
            if isinstance(name, str) and not any(
                    isinstance(g, JoinWorker) and g.worker == name
                    and (g.at > f.at or (g.at == f.at and j > i))
                    for j, g in enumerate(chaos)):
                gone.add(name)
    if not gone:
        return workload
    return ExplicitGraph(tasks=tuple(
        replace(t, restrictions=tuple(n for n in t.restrictions if n not in gone))
        if t.restrictions else t for t in workload.tasks))


BASE_TIME = 600.0  # virtual seconds every drawn scenario may take, whatever its work


def time_budget(scenario: Scenario) -> float:
    """A virtual-time cap (``max_time``) that no healthy run of ``scenario`` reaches:
    BASE_TIME, plus the faults' times (the last one, every pause and partition, a heartbeat
    timeout), plus a generous multiple (two, and one more per fault, each of which may
    lose all the work done) of Graham's bound on a schedule that never idles: the work
    (task bodies, their messages and input transfers over the slowest link any fault
    sets) over the threads of the smallest cluster the faults may leave (one worker),
    plus the critical path."""
    c = scenario.cluster
    slow = [f for f in scenario.chaos if isinstance(f, SlowNetwork)]
    latency = max([c.latency + c.jitter,
                   *((f.latency or 0.0) + (f.jitter or 0.0) for f in slow)])
    bandwidth = min([c.bandwidth, *(f.bandwidth for f in slow if f.bandwidth)])
    graph = scenario.graph()
    specs = graph.tasks
    longest: dict[str, float] = {}  # key -> the longest path of costs ending with it
    work = 0.0
    for key in graph.topological_order():
        spec = specs[key]
        cost = spec.actual_duration + 2 * latency  # its body, asked for and reported
        before = 0.0
        for dep in spec.deps:
            cost += latency + output_bytes(specs[dep]) / bandwidth
            before = max(before, longest[dep])
        work += cost
        longest[key] = before + cost
    critical = max(longest.values(), default=0.0)
    threads = min([c.threads, *(f.threads for f in scenario.chaos
                                if isinstance(f, JoinWorker) and f.threads)])
    faults = max((f.at for f in scenario.chaos), default=0.0) + sum(
        getattr(f, "seconds", None) or 0.0 for f in scenario.chaos) + (
        c.heartbeat_timeout or 0.0)
    return round(BASE_TIME + faults + (2 + len(scenario.chaos)) * (work / threads + critical),
                 3)


# "clients": 0: no client actions drawn there (elsewhere one scenario in CLIENT_ODDS has some)
SCENARIO_SPACES: dict[str, dict[str, int]] = {
    # up to 50 tasks, 4 workers, 3 faults: fast, and shrinks to something readable
    "small": {"tasks": 50, "workers": 4, "faults": 3},
    "calm": {"tasks": 50, "workers": 4, "faults": 0},
    "stealing": {"tasks": 50, "workers": 4, "faults": 3, "stealing": 1},
    "medium": {"tasks": 200, "workers": 8, "faults": 8, "generated": 1},
    "storm": {"tasks": 80, "workers": 6, "faults": 12, "min_faults": 5},
    # aimed at bugs the spaces above rarely reach (see squall.mutants.catalog):
    # a task given up after 0 or 1 deaths of its workers (the retry limit at work)
    "fragile": {"tasks": 30, "workers": 3, "faults": 3, "min_faults": 1, "fragile": 1,
                "clients": 0},
    # workers restarting at the same address while steals and messages are in flight
    "restarts": {"tasks": 30, "workers": 3, "faults": 4, "min_faults": 1, "stealing": 1,
                 "restarts": 1, "clients": 0},
    # scale-up: workers joining a busy cluster, which stealing must feed
    "imbalance": {"tasks": 30, "workers": 2, "faults": 2, "min_faults": 1, "stealing": 1,
                  "joins": 1, "clients": 0},
}
