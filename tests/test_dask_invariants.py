"""dask.distributed as a target, item 1: squall's invariants on dask's state.

- The views make the catalog's checks run on a real dask ``SchedulerState`` and worker
  ``WorkerState``, built here in-process and driven through dask's own transitions.
- Every catalog invariant has an applicability entry; every dask-only one fires on a state
  broken by hand, with the key and dask's story of it.
- ``DaskValidator`` on a live ``LocalCluster``: a clean run gives no violation and many
  checks; a state broken by hand is caught, incrementally and at quiescence; a stuck task
  is named. One test runs worker processes (marked ``real``).
- ``squall invariants --target dask`` (and ``--json``); ``require_dask``'s one-liners.
"""

from __future__ import annotations

import json
import operator
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("distributed")

from dask._task_spec import Task  # noqa: E402
from distributed import Client, LocalCluster, Scheduler  # noqa: E402
from distributed.collections import HeapSet  # noqa: E402
from distributed.core import Status  # noqa: E402
from distributed.scheduler import ClientState, SchedulerState, WorkerState  # noqa: E402
from distributed.utils import sync  # noqa: E402
from distributed.worker_state_machine import (  # noqa: E402
    ComputeTaskEvent,
    ExecuteSuccessEvent,
)
from distributed.worker_state_machine import WorkerState as DaskWorkerState  # noqa: E402
from sortedcontainers import SortedDict  # noqa: E402

from squall.invariants import CATALOG  # noqa: E402
from squall.targets.dask import DaskUnavailable, require_dask, supported  # noqa: E402
from squall.targets.dask.checker import SchedulerChecker, WorkerChecker  # noqa: E402
from squall.targets.dask.hooks import DaskValidator  # noqa: E402
from squall.targets.dask.invariants import (  # noqa: E402
    APPLICABILITY,
    DASK_INVARIANTS,
    NOT,
    SAME,
    applicability,
)
from squall.targets.dask.view import SchedulerView  # noqa: E402

pytestmark = pytest.mark.xdist_group("dask")


def inc(x: int) -> int:
    return x + 1


def noop(x: Any) -> Any:
    return x


# ------------------------------------------------------------------ a dask SchedulerState,
# in-process: real dask transitions, no sockets


class _State(SchedulerState):
    def log_event(self, topic: Any, msg: Any) -> None:
        pass

    def transitions(self, recommendations: dict[Any, str], stimulus_id: str) -> None:
        self._transitions(recommendations, {}, {}, stimulus_id)


class _Hook:
    """dask's transition hook, feeding a checker (as DaskValidator's plugin does)."""

    def __init__(self, checker: Any) -> None:
        self.checker = checker

    def transition(self, key: Any, start: str, finish: str, *args: Any,
                   stimulus_id: str = "", **kwargs: Any) -> None:
        self.checker.note_transition(key, start, finish, stimulus_id)


class Harness:
    """A dask ``SchedulerState`` with workers and a client, a ``SchedulerChecker`` on it."""

    def __init__(self, workers: int = 2, nthreads: int = 1) -> None:
        self.s = _State(aliases={}, clients={}, workers=SortedDict(),
                        host_info=defaultdict(dict), resources=defaultdict(dict), tasks={},
                        unrunnable={}, queued=HeapSet(key=operator.attrgetter("priority")),
                        validate=True)
        self.s.clients["c"] = ClientState("c")
        self.addresses = [self.add_worker(f"tcp://127.0.0.1:{4000 + i}", nthreads).address
                          for i in range(workers)]
        self.checker = SchedulerChecker(self.s)
        self.s.plugins["squall"] = _Hook(self.checker)

    def add_worker(self, address: str, nthreads: int = 1) -> WorkerState:
        s = self.s
        ws = WorkerState(address=address, status=Status.running, pid=0, name=address,
                         nthreads=nthreads, memory_limit=0, local_directory="", nanny=None,
                         server_id=uuid.uuid4().hex, scheduler=s)
        s.workers[address] = ws
        s.aliases[address] = address
        s.running.add(ws)
        s.total_nthreads += nthreads
        info = s.host_info["127.0.0.1"]
        info.setdefault("addresses", set()).add(address)
        info["nthreads"] = info.get("nthreads", 0) + nthreads
        s.check_idle_saturated(ws)
        return ws

    def submit(self, *keys: str, deps: dict[str, list[str]] | None = None,
               want: bool = True) -> None:
        s, cs = self.s, self.s.clients["c"]
        for key in keys:
            ts = s.new_task(key, Task(key, inc, 1), "released")
            ts.priority = (len(s.tasks),)
            for d in (deps or {}).get(key, ()):
                ts.add_dependency(s.tasks[d])
            if want:
                ts.who_wants = {cs}
                cs.wants_what.add(ts)
        s._transitions(dict.fromkeys(keys, "waiting"), {}, {}, f"submit-{keys[0]}")
        self.checker.checkpoint()

    def finish(self, key: str, nbytes: int = 8) -> None:
        s = self.s
        ts = s.tasks[key]
        recs, _, _ = s._transition(key, "memory", f"done-{key}",
                                   worker=ts.processing_on.address, nbytes=nbytes, type=None,
                                   typename="int", startstops=[], run_id=ts.run_id)
        s._transitions(recs, {}, {}, f"done-{key}")
        Scheduler.stimulus_queue_slots_maybe_opened(s, stimulus_id=f"done-{key}")
        self.checker.checkpoint()

    def release(self, *keys: str) -> None:
        recs: dict[Any, str] = {}
        self.s._client_releases_keys(keys, self.s.clients["c"], recs)
        self.s._transitions(recs, {}, {}, f"release-{keys[0]}")
        self.checker.checkpoint()

    def full(self) -> list[tuple[str, str]]:
        """(id, entity) of every violation a full check finds (on a fresh checker)."""
        checker = SchedulerChecker(self.s)
        checker.check_full()
        return [(v.id, v.entity) for v in checker.violations]

    def full_violations(self) -> list[Any]:
        checker = SchedulerChecker(self.s)
        checker.check_full()
        return checker.violations

    def ids(self) -> set[str]:
        return {v for v, _ in self.full()}


@pytest.fixture
def h() -> Harness:
    return Harness()


def chain(h: Harness) -> None:
    """a -> b, both computed; the client wants both."""
    h.submit("a")
    h.submit("b", deps={"b": ["a"]})
    h.finish("a")
    h.finish("b")


# ------------------------------------------------------------------ the catalog on dask's state


def test_every_catalog_invariant_says_whether_it_applies_to_dask() -> None:
    assert {inv.id for inv in CATALOG} == set(APPLICABILITY)
    for inv in CATALOG:
        a = applicability(inv.id)
        assert a.applies or a.note, f"{inv.id}: not applying needs a reason"
    with pytest.raises(KeyError, match="'nope'"):
        applicability("nope")
    assert all(inv.id.startswith("dask.") for inv in DASK_INVARIANTS)


def test_catalog_checks_run_unchanged_on_a_dask_scheduler_state(h: Harness) -> None:
    from squall.invariants.scheduler_checks import (
        has_what_mirrors_who_has,
        links_symmetric,
        memory_needed,
        processing_on_one_worker,
        waiting_on_exact,
    )

    h.submit("a")
    h.submit("b", deps={"b": ["a"]})
    view = h.checker.state
    assert isinstance(view, SchedulerView)
    a, b = view.tasks["a"], view.tasks["b"]
    assert (a.state, b.state) == ("processing", "waiting")
    assert processing_on_one_worker(h.checker, a) is None
    assert waiting_on_exact(h.checker, b) is None and links_symmetric(h.checker, b) is None
    h.finish("a")
    assert memory_needed(h.checker, a) is None  # b waits for it
    ws = next(iter(a.who_has))
    from squall.invariants.validator import WorkerLedger

    ledger = WorkerLedger()
    ledger.n_has = 1
    assert has_what_mirrors_who_has(h.checker, ws, ledger) is None
    ledger.n_has = 2
    assert "has_what lists 1 tasks, 2 tasks name it" in has_what_mirrors_who_has(
        h.checker, ws, ledger)
    # a queued task reads as no-worker: ready, held on the scheduler
    h.submit(*[f"x-{i}" for i in range(10)])
    queued = [t for t in view.tasks.values() if t.dask_state == "queued"]
    assert queued and all(t.state == "no-worker" and t in view.unrunnable for t in queued)


def test_clean_dask_transitions_break_nothing(h: Harness) -> None:
    chain(h)
    h.submit(*[f"x-{i}" for i in range(10)])  # root-ish: some are queued
    for key in [k for k, ts in h.s.tasks.items() if ts.state == "processing"]:
        h.finish(key)
    while any(ts.state == "processing" for ts in h.s.tasks.values()):
        h.finish(next(k for k, ts in h.s.tasks.items() if ts.state == "processing"))
    h.release("a", "b")
    assert "a" not in h.s.tasks  # released and forgotten
    assert h.checker.violations == [] and h.checker.checks > 100
    assert h.full() == []


def test_who_has_broken_by_hand_names_the_invariant_key_and_story(h: Harness) -> None:
    chain(h)
    ts = h.s.tasks["b"]
    ws = next(iter(ts.who_has))
    ts.who_has.discard(ws)  # dropped from who_has, left in has_what
    h.checker.note_keys(["b"])
    h.checker.checkpoint()
    found = {v.id: v for v in h.checker.violations}
    assert set(found) >= {"task.who-has-iff-memory", "worker.has-what-mirrors-who-has"}
    v = found["task.who-has-iff-memory"]
    assert v.entity == "task 'b'" and "held by no worker" in v.detail
    assert [t[:3] for t in v.story][-1] == ("b", "processing", "memory")  # dask's story
    assert "['b']" in found["worker.has-what-mirrors-who-has"].detail
    assert v.recent is not None and "task.who-has-iff-memory" in str(v)


# ------------------------------------------------------------------ dask-only invariants fire


def _break(h: Harness, breaker: Callable[[Harness], Any]) -> set[str]:
    breaker(h)
    return h.ids()


def _queued(h: Harness) -> Any:
    h.submit(*[f"x-{i}" for i in range(10)])
    return next(ts for ts in h.s.tasks.values() if ts.state == "queued")


def _processing(h: Harness) -> Any:
    h.submit("p")
    return h.s.tasks["p"]


def _memory(h: Harness) -> Any:
    h.submit("m")
    h.finish("m")
    return h.s.tasks["m"]


def _set_state(ts: Any, state: str) -> None:
    ts._state = state


def _steal_from_queue(h: Harness) -> None:
    ts = _queued(h)
    h.s.queued.discard(ts)


def _queue_a_no_worker(h: Harness) -> None:
    ts = _queued(h)
    h.s.queued.discard(ts)
    _set_state(ts, "no-worker")
    h.s.unrunnable[ts] = 0.0
    h.s.queued.add(h.s.tasks["x-9"]) if h.s.tasks["x-9"].state == "queued" else None


def _no_worker_listed(h: Harness) -> None:
    ts = _processing(h)
    h.s.unrunnable[ts] = 0.0


def _queued_with_waiting_on(h: Harness) -> None:
    ts = _queued(h)
    ts.waiting_on = {h.s.tasks["x-0"] if ts.key != "x-0" else h.s.tasks["x-1"]}


def _queued_with_restrictions(h: Harness) -> None:
    _queued(h).worker_restrictions = {h.addresses[0]}


def _no_worker_with_workers(h: Harness) -> None:
    ts = _queued(h)
    h.s.queued.discard(ts)
    _set_state(ts, "no-worker")
    h.s.unrunnable[ts] = 0.0


def _processing_against_restrictions(h: Harness) -> None:
    ts = _processing(h)
    other = next(a for a in h.addresses if a != ts.processing_on.address)
    ts.worker_restrictions = {other}


def _processing_on_closed(h: Harness) -> None:
    ts = _processing(h)
    ts.processing_on.status = Status.closed


def _replicated_not_listed(h: Harness) -> None:
    ts = _memory(h)
    other = next(ws for ws in h.s.workers.values() if ws not in ts.who_has)
    ts.who_has.add(other)
    other._has_what[ts] = None
    other.nbytes += ts.get_nbytes()


def _actor_in_no_actors(h: Harness) -> None:
    _processing(h).actor = True


def _idle_but_not_listed(h: Harness) -> None:
    h.s.idle.pop(h.addresses[0])


def _idle_task_count_stale(h: Harness) -> None:
    h.s.idle_task_count.discard(h.s.workers[h.addresses[0]])


def _long_running_not_processing(h: Harness) -> None:
    ts = _memory(h)
    h.s.workers[h.addresses[0]].long_running.add(ts)


def _used_resources_drift(h: Harness) -> None:
    ws = h.s.workers[h.addresses[0]]
    ws.resources = {"GPU": 1}
    ws.used_resources = {"GPU": 1}


def _needs_what_held(h: Harness) -> None:
    ts = _memory(h)
    ws = next(iter(ts.who_has))
    ws.needs_what[ts] = 1


def _queued_with_free_slots(h: Harness) -> None:
    ts = _processing(h)
    ws = ts.processing_on
    h.s._transition("p", "released", "cancel")  # frees a slot, without the queue noticing
    ts = h.s.new_task("q-0", Task("q-0", inc, 1), "released")
    ts.priority = (0,)
    _set_state(ts, "queued")
    h.s.queued.add(ts)
    assert ws is not None


def _prefix_counts_drift(h: Harness) -> None:
    _processing(h).processing_on.task_prefix_count["p"] += 1


def _unrunnable_out_of_order(h: Harness) -> None:
    h.s.running.clear()  # nothing runs: new tasks go to no-worker
    for ws in h.s.workers.values():
        ws.status = Status.paused
    h.s.idle.clear()
    h.s.idle_task_count.clear()
    h.submit("n-0", "n-1")
    first, second = list(h.s.unrunnable)  # in the order they became unrunnable
    h.s.unrunnable[first], h.s.unrunnable[second] = 2.0, 1.0


SCHEDULER_BREAKS: dict[str, Callable[[Harness], Any]] = {
    "dask.task.queued-in-queue": _steal_from_queue,
    "dask.task.unrunnable-exact": _no_worker_listed,
    "dask.task.ready-held": _queued_with_waiting_on,
    "dask.task.queued-root-ish": _queued_with_restrictions,
    "dask.task.no-worker-unplaceable": _no_worker_with_workers,
    "dask.task.restrictions-respected": _processing_against_restrictions,
    "dask.task.processing-on-live-worker": _processing_on_closed,
    "dask.task.replicated-iff-many-holders": _replicated_not_listed,
    "dask.task.actor-on-one-worker": _actor_in_no_actors,
    "dask.worker.idle-when-free-thread": _idle_but_not_listed,
    "dask.worker.idle-task-count-exact": _idle_task_count_stale,
    "dask.worker.long-running-processing": _long_running_not_processing,
    "dask.worker.used-resources-sum": _used_resources_drift,
    "dask.worker.needs-not-held": _needs_what_held,
    "dask.cluster.queued-only-when-full": _queued_with_free_slots,
    "dask.cluster.prefix-counts-global": _prefix_counts_drift,
    "dask.cluster.unrunnable-since-ordered": _unrunnable_out_of_order,
}


@pytest.mark.parametrize("inv_id", sorted(SCHEDULER_BREAKS))
def test_dask_only_scheduler_invariant_fires_on_a_state_broken_by_hand(
        h: Harness, inv_id: str) -> None:
    assert h.ids() == set()
    assert inv_id in _break(h, SCHEDULER_BREAKS[inv_id])


def test_a_dask_only_task_violation_carries_the_key_and_story(h: Harness) -> None:
    ts = _queued(h)
    h.s.queued.discard(ts)
    v = next(v for v in h.full_violations() if v.id == "dask.task.queued-in-queue")
    assert v.entity == f"task {ts.key!r} (dask: queued)"
    assert v.story and all(t[0] == ts.key for t in v.story)
    assert v.story[-1][2] == "queued"


# ------------------------------------------------------------------ the worker side


class WorkerHarness:
    """A dask worker ``WorkerState`` (pure), driven by dask's own events, checked."""

    def __init__(self) -> None:
        self.ws = DaskWorkerState(nthreads=1, address="tcp://127.0.0.1:5000", validate=True)
        self.checker = WorkerChecker(self.ws)
        self.ws.plugins["squall"] = _Hook(self.checker)  # type: ignore[assignment]

    def handle(self, ev: Any) -> Any:
        self.checker.note_stimulus(ev)
        out = self.ws.handle_stimulus(ev)
        self.checker.after_stimulus(ev)
        return out

    def ids(self) -> set[str]:
        checker = WorkerChecker(self.ws)
        checker.check_full()
        return {v.id for v in checker.violations}


@pytest.fixture
def wh() -> WorkerHarness:
    wh = WorkerHarness()
    wh.handle(ComputeTaskEvent.dummy("x", stimulus_id="s1"))
    wh.handle(ComputeTaskEvent.dummy("y", stimulus_id="s2"))
    return wh


def test_catalog_checks_run_on_a_dask_worker_state(wh: WorkerHarness) -> None:
    assert wh.ws.tasks["x"].state == "executing" and wh.ws.tasks["y"].state == "ready"
    wh.handle(ExecuteSuccessEvent.dummy("x", stimulus_id="s3"))
    assert wh.ws.tasks["x"].state == "memory" and wh.ws.tasks["y"].state == "executing"
    assert wh.checker.violations == [] and wh.checker.checks > 20
    assert wh.checker.runs == {"x": 1, "y": 1}
    assert wh.ids() == set()
    wh.ws.nbytes += 1  # the bytes held no longer add up
    assert "wstate.nbytes-sum" in wh.ids()


def _w_previous(wh: WorkerHarness) -> None:
    wh.ws.tasks["y"].previous = "executing"


def _w_long_running(wh: WorkerHarness) -> None:
    wh.ws.long_running.add(wh.ws.tasks["y"])


def _w_waiting(wh: WorkerHarness) -> None:
    wh.ws.waiting.add(wh.ws.tasks["y"])


def _w_missing(wh: WorkerHarness) -> None:
    wh.ws.missing_dep_flight.add(wh.ws.tasks["y"])


def _w_constrained(wh: WorkerHarness) -> None:
    ts = wh.ws.tasks["y"]
    wh.ws.ready.discard(ts)
    ts.state = "constrained"
    wh.ws.constrained.add(ts)


def _w_resources(wh: WorkerHarness) -> None:
    wh.ws.total_resources = {"GPU": 2}
    wh.ws.available_resources = {"GPU": 1}


WORKER_BREAKS: dict[str, Callable[[WorkerHarness], Any]] = {
    "dask.wtask.previous-iff-cancelled": _w_previous,
    "dask.wtask.long-running-listed": _w_long_running,
    "dask.wtask.waiting-listed": _w_waiting,
    "dask.wtask.missing-listed": _w_missing,
    "dask.wtask.constrained-has-resources": _w_constrained,
    "dask.wstate.resources-balance": _w_resources,
}


@pytest.mark.parametrize("inv_id", sorted(WORKER_BREAKS))
def test_dask_only_worker_invariant_fires_on_a_state_broken_by_hand(
        wh: WorkerHarness, inv_id: str) -> None:
    assert wh.ids() == set()
    WORKER_BREAKS[inv_id](wh)
    assert inv_id in wh.ids()


def test_every_dask_only_invariant_has_a_breaking_test() -> None:
    assert {inv.id for inv in DASK_INVARIANTS} == set(SCHEDULER_BREAKS) | set(WORKER_BREAKS)


def test_a_task_stuck_at_quiescence_is_named(h: Harness) -> None:
    h.submit("stuck")
    h.checker.quiescent({a: {} for a in h.addresses}, {})
    found = {v.id: v for v in h.checker.violations}
    v = found["liveness.processing-task-runs"]
    assert v.entity == "task 'stuck'" and "has no record of it" in v.detail
    assert v.story[-1][:3] == ("stuck", "waiting", "processing")


def test_quiescent_checks_compare_workers_with_the_scheduler_and_count_runs(
        h: Harness) -> None:
    h.submit("d")
    h.finish("d")
    holder = next(iter(h.s.tasks["d"].who_has)).address
    agreed = {a: ({"d": "memory"} if a == holder else {}) for a in h.addresses}
    h.checker.quiescent(agreed, {"d": 1})
    assert h.checker.violations == []
    h.checker.quiescent({a: {} for a in h.addresses}, {"d": 2})  # lost, and ran twice
    found = {v.id: v for v in h.checker.violations}
    assert "d" in found["cluster.memory-agrees"].detail
    assert found["e2e.no-duplicate-run"].entity == "task 'd'"
    assert "ran 2 times, 1 accounted for" in found["e2e.no-duplicate-run"].detail


# ------------------------------------------------------------------ a live dask cluster


@pytest.fixture(scope="module")
def dask_client() -> Iterator[tuple[LocalCluster, Client]]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield cluster, client


@pytest.fixture
def validated(dask_client: tuple[LocalCluster, Client]
              ) -> Iterator[tuple[LocalCluster, Client, DaskValidator]]:
    cluster, client = dask_client
    validator = DaskValidator.attach(cluster.scheduler)
    client.register_plugin(validator.worker_plugin())
    yield cluster, client, validator
    validator.detach()


def _on_scheduler(cluster: LocalCluster, fn: Callable[[], Any]) -> Any:
    async def call() -> Any:
        return fn()

    return sync(cluster.scheduler.loop, call)


def test_a_clean_dask_run_gives_no_violation(validated: Any) -> None:
    cluster, client, validator = validated
    futures = client.map(inc, range(200), pure=False)
    total = client.submit(sum, futures)
    assert total.result() == sum(range(1, 201))
    graph = {"c-0": (inc, 0), **{f"c-{i}": (inc, f"c-{i - 1}") for i in range(1, 50)}}
    assert client.get(graph, "c-49") == 50
    validator.check_quiescent(client)
    del futures, total
    validator.check_quiescent(client)
    assert validator.violations == [] and validator.errors == []
    assert validator.checks > 1000
    validator.raise_first()  # nothing to raise


def test_a_live_state_broken_by_hand_is_caught_with_its_story(validated: Any) -> None:
    cluster, client, validator = validated
    future = client.submit(inc, 1, key="broken-1")
    assert future.result() == 2
    s = cluster.scheduler

    def drop_holder() -> Any:
        ts = s.tasks["broken-1"]
        ws = next(iter(ts.who_has))
        ts.who_has.discard(ws)  # the scheduler forgets the holder, has_what keeps it
        validator.checker.note_keys(["broken-1"])
        validator.checker.checkpoint()
        ts.who_has.add(ws)  # put back for the tests that share this cluster
        return ws.address

    address = _on_scheduler(cluster, drop_holder)
    found = {v.id: v for v in validator.violations}
    assert "task.who-has-iff-memory" in found and "worker.has-what-mirrors-who-has" in found
    v = found["task.who-has-iff-memory"]
    assert v.entity == "task 'broken-1'" and v.story[-1][:3] == ("broken-1", "processing",
                                                                 "memory")
    assert repr(address) in found["worker.has-what-mirrors-who-has"].entity
    with pytest.raises(AssertionError, match="task.who-has-iff-memory|worker.has-what"):
        validator.raise_first()


def test_a_worker_state_broken_by_hand_is_fetched_at_quiescence(validated: Any) -> None:
    cluster, client, validator = validated
    future = client.submit(inc, 1, key="wbroken-1")
    assert future.result() == 2

    def break_nbytes(dask_worker: Any) -> None:
        dask_worker.state.nbytes += 1

    def heal_nbytes(dask_worker: Any) -> None:
        dask_worker.state.nbytes -= 1

    address = next(iter(client.who_has(future)["wbroken-1"]))
    client.run(break_nbytes, workers=[address])
    try:
        validator.check_quiescent(client)
    finally:
        client.run(heal_nbytes, workers=[address])
    found = {v.id: v for v in validator.violations}
    assert "wstate.nbytes-sum" in found
    assert repr(address) in found["wstate.nbytes-sum"].entity


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_worker_processes_are_validated_and_report_to_the_scheduler() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        validator = DaskValidator.attach(cluster.scheduler)
        client.register_plugin(validator.worker_plugin())
        futures = client.map(inc, range(100), pure=False)
        assert sum(client.gather(futures)) == sum(range(1, 101))
        validator.check_quiescent(client)
        assert validator.violations == [] and validator.errors == []
        assert validator.checks > 1000

        def break_waiting(dask_worker: Any) -> None:  # a stray entry in the waiting set
            ts = next(iter(dask_worker.state.tasks.values()))
            dask_worker.state.waiting.add(ts)

        holder = client.who_has(futures[0])[futures[0].key][0]
        client.run(break_waiting, workers=[holder])
        validator.check_quiescent(client)
        assert "dask.wtask.waiting-listed" in {v.id for v in validator.violations}
        validator.detach()


# ------------------------------------------------------------------ the CLI, the install


def test_cli_lists_what_applies_to_dask_and_why_not(run_cli: Any) -> None:
    code, out, _ = run_cli(["invariants", "--target", "dask"])
    assert code == 0
    assert "task.processing-on-one-worker" in out and "dask.task.queued-in-queue" in out
    assert "do not apply" in out and "dask-only" in out
    code, out, _ = run_cli(["invariants", "--target", "dask", "--json"])
    rows = json.loads(out)
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {inv.id for inv in CATALOG} | {inv.id for inv in DASK_INVARIANTS}
    assert by_id["task.transition-allowed"]["how"] == NOT and by_id[
        "task.transition-allowed"]["note"]
    assert by_id["task.links-symmetric"]["how"] == SAME
    assert by_id["dask.task.queued-in-queue"]["how"] == "dask-only"
    code, out, _ = run_cli(["invariants", "--target", "dask", "--json", "--entity",
                            "liveness"])
    assert {r["entity"] for r in json.loads(out)} == {"liveness"}
    code, out, _ = run_cli(["invariants", "--json"])  # the default target: the reference
    assert set(json.loads(out)[0]) == {"id", "entity", "scope", "text"}


def test_cli_rejects_an_unknown_target_in_one_line(run_cli: Any) -> None:
    code, _, err = run_cli(["invariants", "--target", "spark"])
    assert code == 2 and "'spark'" in err and len(err.strip().splitlines()) == 1


def test_require_dask_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import distributed

    assert require_dask() == distributed.__version__
    assert supported("2026.8.0") and supported("2026.8.3")
    assert not supported("2026.9.0") and not supported("2024.1.0") and not supported("x")
    monkeypatch.setattr(distributed, "__version__", "2024.1.0")
    with pytest.raises(DaskUnavailable) as e:
        require_dask()
    assert str(e.value) == ("dask.distributed 2024.1.0 is installed; squall supports "
                            "distributed>=2026.8,<2026.9: pip install 'squall[dask]'")
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(DaskUnavailable) as e:
        require_dask()
    assert str(e.value) == ("dask.distributed is not installed: "
                            "pip install 'squall[dask]'")
