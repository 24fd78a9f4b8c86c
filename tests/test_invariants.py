"""Strict mode: every invariant in the catalog can fire, and healthy runs raise nothing.

Each case below builds a healthy state (checked clean first), breaks it in one precise
way (a corrupted field, or stimuli a broken state machine would produce) and returns the
first violation the validator reports. The parametrised test over the catalog fails for
any invariant that has no case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from squall.cli.main import main
from squall.core import protocol as p
from squall.core.scheduler import (
    SchedulerState,
    SchedulerTaskState,
    TaskState,
    WorkerInfo,
    WorkerStatus,
)
from squall.core.sim import SimCluster
from squall.core.stealing import InFlight, WorkStealing
from squall.core.worker import WorkerState, WorkerTaskState, WTask
from squall.invariants import (
    CATALOG,
    InvariantViolation,
    SchedulerValidator,
    Validator,
    WorkerValidator,
)
from squall.invariants.validator import Reporter
from squall.scenarios.workloads import WORKLOADS, make_workload

CASES: dict[str, Callable[[], InvariantViolation]] = {}


def case(invariant_id: str) -> Callable[[Callable[[], InvariantViolation]],
                                        Callable[[], InvariantViolation]]:
    def register(fn: Callable[[], InvariantViolation]) -> Callable[[], InvariantViolation]:
        assert invariant_id not in CASES, f"two cases for {invariant_id}"
        CASES[invariant_id] = fn
        return fn
    return register


def first(found: list[InvariantViolation]) -> InvariantViolation:
    assert found, "the corruption went unnoticed: no invariant fired"
    return found[0]


def raised(action: Callable[[], Any]) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as info:
        action()
    return info.value


# ---------------------------------------------------------------- a healthy scheduler


class Sched:
    """A scheduler with tasks in every state, and a validator attached and clean:

    a-0 memory (on some worker), b-0 processing, c-0 waiting on a-0 and b-0,
    d-0 waiting on c-0, e-0 processing (needs a-0), r-0 no-worker (restricted to an
    absent worker), bad-0 erred, after-0 erred (blamed on bad-0), loose-0 released.
    """

    def __init__(self) -> None:
        s = self.s = SchedulerState()
        for name in ("w0", "w1", "w2"):
            s.handle(p.AddWorker(stimulus_id=f"add-{name}", time=0, worker=name))
        spec = p.TaskSpecMsg
        s.handle(p.UpdateGraph(
            stimulus_id="graph", time=0, client="c",
            tasks=(spec("a-0"), spec("b-0"), spec("c-0", deps=("a-0", "b-0")),
                   spec("d-0", deps=("c-0",)), spec("bad-0"), spec("after-0", deps=("bad-0",)),
                   spec("r-0", restrictions=("w9",)), spec("loose-0")),
            wanted=("d-0", "after-0", "r-0")))
        self.finish("a-0", 100)
        s.handle(p.UpdateGraph(stimulus_id="graph2", time=1, client="c",
                               tasks=(spec("e-0", deps=("a-0",)),), wanted=("e-0",)))
        ts = s.tasks["bad-0"]
        assert ts.processing_on is not None
        s.handle(p.TaskErred(stimulus_id="err", time=1, worker=ts.processing_on.name,
                             key="bad-0", exception="ValueError"))
        self.v = SchedulerValidator(s)
        assert self.v.check_full(collect=True) == []
        assert [self.t(k).state for k in ("a-0", "b-0", "c-0", "d-0", "e-0", "r-0", "bad-0",
                                          "after-0", "loose-0")] == [
            "memory", "processing", "waiting", "waiting", "processing", "no-worker", "erred",
            "erred", "released"]

    def t(self, key: str) -> TaskState:
        return self.s.tasks[key]

    def w(self, name: str) -> WorkerInfo:
        return self.s.workers[name]

    def finish(self, key: str, nbytes: int = 10) -> None:
        ts = self.s.tasks[key]
        assert ts.processing_on is not None
        self.s.handle(p.TaskFinished(stimulus_id=f"done-{key}", time=1,
                                     worker=ts.processing_on.name, key=key, nbytes=nbytes,
                                     duration=0.5))

    def full(self) -> InvariantViolation:
        return first(self.v.check_full(collect=True))

    def poke(self, key: str) -> InvariantViolation:
        """A stale report naming ``key`` (changes nothing): the incremental check then
        looks at that task."""
        msg = p.TaskFinished(stimulus_id="poke", time=2, worker="nobody", key=key, nbytes=1,
                             duration=0.1)
        self.s.handle(msg)
        return raised(lambda: self.v.after_stimulus(msg))

    def poke_worker(self, name: str) -> InvariantViolation:
        msg = p.Heartbeat(stimulus_id="poke", time=2, worker=name)
        self.s.handle(msg)
        return raised(lambda: self.v.after_stimulus(msg))

    def ghost(self) -> WorkerInfo:
        ws = WorkerInfo("ghost", 1, 99, 0.0)
        ws.status = WorkerStatus.DEAD
        return ws


# Task cases: (corruption, task to poke for the incremental check)
def _task_case(invariant_id: str, key: str) -> Callable[[Callable[[Sched], None]], Any]:
    def register(corrupt: Callable[[Sched], None]) -> Any:
        def full() -> InvariantViolation:
            h = Sched()
            corrupt(h)
            return h.full()

        def incremental() -> InvariantViolation:
            h = Sched()
            corrupt(h)
            return h.poke(key)

        case(invariant_id)(full)
        INCREMENTAL_CASES[invariant_id] = incremental
        return corrupt
    return register


INCREMENTAL_CASES: dict[str, Callable[[], InvariantViolation]] = {}


@case("task.transition-allowed")
def _() -> InvariantViolation:
    h = Sched()

    def bogus(ts: TaskState, sid: str) -> dict[TaskState, str]:
        ts.state = SchedulerTaskState.WAITING
        return {}

    # a broken transition table
    h.s._table[(SchedulerTaskState.MEMORY, SchedulerTaskState.WAITING)] = bogus
    return raised(lambda: h.s.transitions({h.t("a-0"): SchedulerTaskState.WAITING}))


@case("task.transition-has-stimulus-id")
def _() -> InvariantViolation:
    h = Sched()
    ws = h.t("b-0").processing_on
    assert ws is not None
    return raised(lambda: h.s.handle(p.TaskFinished(
        stimulus_id="", time=1, worker=ws.name, key="b-0", nbytes=1, duration=0.1)))


@_task_case("task.known-state", "b-0")
def _(h: Sched) -> None:
    h.t("b-0").state = "bogus"


@_task_case("task.registered-unless-forgotten", "loose-0")
def _(h: Sched) -> None:
    h.t("loose-0").state = SchedulerTaskState.FORGOTTEN


@case("task.wanted-not-forgotten")
def _() -> InvariantViolation:
    h = Sched()
    loose = h.t("loose-0")
    loose.who_wants["c"] = None  # a client wants it, yet a broken path forgets it
    msg = p.Tick(stimulus_id="forget", time=2)
    h.s._stimulus_id = msg.stimulus_id
    h.s.transitions({loose: SchedulerTaskState.FORGOTTEN})
    return raised(lambda: h.v.after_stimulus(msg))


@_task_case("task.processing-on-iff-processing", "c-0")
def _(h: Sched) -> None:
    h.t("c-0").processing_on = h.w("w0")


@_task_case("task.processing-on-one-worker", "b-0")
def _(h: Sched) -> None:
    ts = h.t("b-0")
    assert ts.processing_on is not None
    del ts.processing_on.processing[ts]


@_task_case("task.processing-worker-running", "b-0")
def _(h: Sched) -> None:
    ws = h.t("b-0").processing_on
    del h.s.running[ws]


@_task_case("task.who-has-iff-memory", "c-0")
def _(h: Sched) -> None:
    h.t("c-0").who_has[h.w("w0")] = None


@_task_case("task.holders-record-it", "a-0")
def _(h: Sched) -> None:
    ts = h.t("a-0")
    del next(iter(ts.who_has)).has_what[ts]


@_task_case("task.holders-live", "a-0")
def _(h: Sched) -> None:
    ts, ghost = h.t("a-0"), h.ghost()
    ts.who_has[ghost] = None
    ghost.has_what[ts] = None


@_task_case("task.nbytes-known-in-memory", "a-0")
def _(h: Sched) -> None:
    h.t("a-0").nbytes = -1


@_task_case("task.memory-needed", "a-0")
def _(h: Sched) -> None:
    a = h.t("a-0")
    a.waiters.clear()
    a.who_wants.clear()


@_task_case("task.memory-not-waited-on", "a-0")
def _(h: Sched) -> None:
    h.t("c-0").waiting_on[h.t("a-0")] = None


@_task_case("task.waiting-on-subset", "c-0")
def _(h: Sched) -> None:
    h.t("c-0").waiting_on[h.t("d-0")] = None


@_task_case("task.waiting-on-only-when-waiting", "after-0")
def _(h: Sched) -> None:
    h.t("after-0").waiting_on[h.t("bad-0")] = None


@_task_case("task.waiting-on-exact", "c-0")
def _(h: Sched) -> None:
    h.t("c-0").waiting_on.clear()


@_task_case("task.waiting-waits-on-something", "loose-0")
def _(h: Sched) -> None:
    h.t("loose-0").state = SchedulerTaskState.WAITING


@_task_case("task.inputs-in-memory", "e-0")
def _(h: Sched) -> None:
    c, e = h.t("c-0"), h.t("e-0")  # e-0 now also depends on c-0, which is only waiting
    e.dependencies[c] = None
    c.dependents[e] = None
    c.waiters[e] = None


@_task_case("task.links-symmetric", "a-0")
def _(h: Sched) -> None:
    del h.t("c-0").dependencies[h.t("a-0")]


@_task_case("task.dependency-not-forgotten", "d-0")
def _(h: Sched) -> None:
    del h.s.tasks["c-0"]  # forgotten while d-0 still waits on it


@_task_case("task.waiters-subset", "a-0")
def _(h: Sched) -> None:
    h.t("a-0").waiters[h.t("d-0")] = None


@_task_case("task.waiters-in-play", "a-0")
def _(h: Sched) -> None:
    h.t("c-0").state = SchedulerTaskState.RELEASED


@_task_case("task.in-play-dependents-wait", "a-0")
def _(h: Sched) -> None:
    del h.t("a-0").waiters[h.t("c-0")]


@_task_case("task.unrunnable-iff-no-worker", "b-0")
def _(h: Sched) -> None:
    h.s.unrunnable[h.t("b-0")] = None


@_task_case("task.no-worker-unplaceable", "r-0")
def _(h: Sched) -> None:
    h.t("r-0").restrictions = ("w1",)


@_task_case("task.blame-iff-erred", "b-0")
def _(h: Sched) -> None:
    h.t("b-0").exception_blame = "b-0"


@_task_case("task.retries-within-limit", "b-0")
def _(h: Sched) -> None:
    h.t("b-0").suspicious = h.s.allowed_failures + 1


@_task_case("task.killed-past-limit", "bad-0")
def _(h: Sched) -> None:
    ts = h.t("bad-0")
    ts.exception = "KilledWorker: given up at the first death"
    ts.suspicious = 1


# Worker (the scheduler's record) cases: (corruption, worker to poke)
def _worker_case(invariant_id: str, name: str) -> Callable[[Callable[[Sched], None]], Any]:
    def register(corrupt: Callable[[Sched], None]) -> Any:
        def full() -> InvariantViolation:
            h = Sched()
            corrupt(h)
            return h.full()

        def incremental() -> InvariantViolation:
            h = Sched()
            corrupt(h)
            return h.poke_worker(name)

        case(invariant_id)(full)
        INCREMENTAL_CASES[invariant_id] = incremental
        return corrupt
    return register


def _holder(h: Sched) -> WorkerInfo:
    return next(iter(h.t("a-0").who_has))


@_worker_case("worker.live-record", "w0")
def _(h: Sched) -> None:
    h.w("w0").status = "paused"  # paused, yet still listed as running


@_worker_case("worker.has-what-mirrors-who-has", "w0")
def _(h: Sched) -> None:
    h.w("w0").has_what[h.t("c-0")] = None


@_worker_case("worker.nbytes-sum", "w0")
def _(h: Sched) -> None:
    h.w("w0").nbytes += 5


@_worker_case("worker.processing-mirrors-tasks", "w0")
def _(h: Sched) -> None:
    h.w("w0").processing[h.t("a-0")] = None


@_worker_case("worker.prefix-counts", "w0")
def _(h: Sched) -> None:
    h.w("w0").prefix_counts["zzz"] = 1


@_worker_case("worker.needs-recount", "w0")
def _(h: Sched) -> None:
    h.w("w0").needs[h.t("c-0")] = 1


@_worker_case("worker.fetch-bytes-sum", "w0")
def _(h: Sched) -> None:
    h.w("w0").fetch_bytes += 7


@_worker_case("worker.occupancy-fresh", "w0")
def _(h: Sched) -> None:
    h.s.occupancy = lambda ws: 123.0  # type: ignore[method-assign]  # an accumulated drift


@_worker_case("worker.remembered-occupancy-fresh", "w0")
def _(h: Sched) -> None:
    # placement's memo of w0's occupancy per thread, current but wrong (a missed forget)
    h.s._occupancy_per_thread[h.w("w0")] = 99.0
    h.s._occupancies_version = h.s.estimator.version


@case("task.estimate-fresh")
def _() -> InvariantViolation:
    h = Sched()
    prefix = h.t("b-0").prefix
    h.s.estimator.durations[prefix] = 2 * h.s.estimator.fresh(prefix) + 1  # a stale memo
    return h.full()


@case("worker.occupancy-non-negative")
def _() -> InvariantViolation:
    h = Sched()
    h.s.estimator.observe("", -1.0)  # a broken measurement: a negative duration
    return h.full()


@case("worker.idleness-by-load")
def _() -> InvariantViolation:
    h = Sched()
    ws = next(w for w in h.s.workers.values() if not w.processing)
    del h.s.idle[ws]  # free, yet not idle
    return h.full()


def _idleness_incremental() -> InvariantViolation:
    h = Sched()
    ws = next(w for w in h.s.workers.values() if not w.processing)
    del h.s.idle[ws]
    return h.poke_worker(ws.name)


INCREMENTAL_CASES["worker.idleness-by-load"] = _idleness_incremental


@case("worker.dead-holds-nothing")
def _() -> InvariantViolation:
    h = Sched()
    ws = _holder(h)

    def broken_remove(ws: WorkerInfo, reason: str) -> None:  # forgets to strip its data
        ws.status = WorkerStatus.DEAD
        del h.s.workers[ws.name]
        del h.s.running[ws]
        h.s.idle.pop(ws, None)
        h.s.saturated.pop(ws, None)

    h.s._remove_worker = broken_remove  # type: ignore[method-assign]
    msg = p.RemoveWorker(stimulus_id="gone", time=2, worker=ws.name, reason="died")
    h.s.handle(msg)
    return raised(lambda: h.v.after_stimulus(msg))


@case("cluster.idle-saturated-running")
def _() -> InvariantViolation:
    h = Sched()
    h.s.idle[h.ghost()] = None
    return h.full()


@case("cluster.running-registered")
def _() -> InvariantViolation:
    h = Sched()
    h.s.running[h.ghost()] = None
    return h.full()


@case("cluster.unrunnable-exact")
def _() -> InvariantViolation:
    h = Sched()
    h.s.unrunnable[TaskState("phantom-0", "phantom", (0, 0))] = None
    return h.full()


@case("cluster.workers-map-keys")
def _() -> InvariantViolation:
    h = Sched()
    h.s.workers["alias"] = h.w("w0")
    return h.full()


# ---------------------------------------------------------------- a healthy worker


class Work:
    """A worker state machine with tasks in every state, checked clean:

    x-0 memory, z-0 executing, y-0 cancelled (holds a thread), r-0 ready (no thread),
    u-0 waiting for p-0 (in flight from w1), v-0 waiting for q-0 (to fetch: w1 is busy),
    k-0 waiting for g-0 (missing: w2 did not have it).
    """

    def __init__(self) -> None:
        ws = self.ws = WorkerState("w0", nthreads=2)
        self.data: dict[str, int] = {}
        self.v = WorkerValidator(ws, data=self.data, reporter=Reporter())
        for key in ("x-0", "y-0", "z-0"):
            self.compute(key)
        self.handle(p.ExecuteSuccess(stimulus_id="ran-x", time=1, key="x-0", nbytes=8,
                                     duration=1.0))
        self.handle(p.FreeKeys(stimulus_id="cancel-y", time=1, worker="w0", keys=("y-0",)))
        self.compute("r-0")
        self.compute("u-0", ("p-0", "w1"))
        self.compute("k-0", ("g-0", "w2"))
        self.handle(p.GatherDepFailure(stimulus_id="no-g", time=2, holder="w2", keys=("g-0",),
                                       missing=("g-0",)))
        self.compute("v-0", ("q-0", "w1"))
        assert self.v.check_full(collect=True) == []
        states = {k: t.state for k, t in ws.tasks.items()}
        assert states == {"x-0": "memory", "y-0": "cancelled", "z-0": "executing",
                          "r-0": "ready", "u-0": "waiting", "p-0": "flight", "v-0": "waiting",
                          "q-0": "fetch", "k-0": "waiting", "g-0": "missing"}

    def handle(self, msg: Any) -> None:
        for ins in self.ws.handle(msg):
            if isinstance(ins, p.Execute):
                pass
            elif isinstance(ins, p.ReleaseData):
                for key in ins.keys:
                    self.data.pop(key, None)
        if isinstance(msg, p.ExecuteSuccess):
            self.data[msg.key] = 1
        self.v.after_stimulus(msg)

    def compute(self, key: str, dep: tuple[str, str] | None = None) -> None:
        deps = (p.DepInfo(dep[0], (dep[1],), 10),) if dep else ()
        self.handle(p.ComputeTask(stimulus_id=f"compute-{key}", time=1, worker="w0", key=key,
                                  prefix=key[0], priority=(0, len(self.ws.tasks)),
                                  duration=1.0, deps=deps))

    def t(self, key: str) -> WTask:
        return self.ws.tasks[key]

    def full(self) -> InvariantViolation:
        return first(self.v.check_full(collect=True))


def _wcase(invariant_id: str) -> Callable[[Callable[[Work], None]], Any]:
    def register(corrupt: Callable[[Work], None]) -> Any:
        def full() -> InvariantViolation:
            h = Work()
            corrupt(h)
            return h.full()

        case(invariant_id)(full)
        return corrupt
    return register


@case("wtask.transition-allowed")
def _() -> InvariantViolation:
    h = Work()
    h.ws._table[WorkerTaskState.MEMORY][WorkerTaskState.READY] = None  # a broken table
    return raised(lambda: h.ws._transition(h.t("x-0"), WorkerTaskState.READY))


@case("wtask.transition-has-stimulus-id")
def _() -> InvariantViolation:
    h = Work()
    return raised(lambda: h.ws.handle(p.ComputeTask(
        stimulus_id="", time=3, worker="w0", key="new-0", prefix="new", priority=(0, 99),
        duration=1.0)))


@_wcase("wtask.known-state")
def _(h: Work) -> None:
    h.t("x-0").state = "bogus"


@_wcase("wtask.registered-unless-released")
def _(h: Work) -> None:
    h.t("x-0").state = "released"


@_wcase("wtask.holds-thread-iff-executing")
def _(h: Work) -> None:
    h.ws.executing[h.t("u-0")] = None


@_wcase("wtask.runnable-matches-state")
def _(h: Work) -> None:
    h.t("u-0").runnable = False


@_wcase("wtask.waiting-for-subset")
def _(h: Work) -> None:
    h.t("u-0").waiting_for[h.t("x-0")] = None


@_wcase("wtask.waiting-for-exact")
def _(h: Work) -> None:
    h.t("u-0").waiting_for.clear()


@_wcase("wtask.waiting-iff-inputs-missing")
def _(h: Work) -> None:
    h.t("r-0").state = "waiting"


@_wcase("wtask.links-symmetric")
def _(h: Work) -> None:
    del h.t("p-0").dependents[h.t("u-0")]


@_wcase("wtask.links-registered")
def _(h: Work) -> None:
    del h.ws.tasks["p-0"]


@_wcase("wtask.coming-from-iff-flight")
def _(h: Work) -> None:
    h.t("q-0").coming_from = "w1"


@_wcase("wtask.flight-listed")
def _(h: Work) -> None:
    h.ws.in_flight["w1"].remove(h.t("p-0"))


@_wcase("wtask.flight-from-holder")
def _(h: Work) -> None:
    h.t("p-0").who_has = ["w3"]


@_wcase("wtask.fetch-has-holders")
def _(h: Work) -> None:
    h.t("q-0").who_has = []


@_wcase("wtask.missing-has-no-holders")
def _(h: Work) -> None:
    h.t("g-0").who_has = ["w5"]


@_wcase("wtask.discard-only-in-flight")
def _(h: Work) -> None:
    h.t("q-0").discard = True


@_wcase("wtask.memory-stored")
def _(h: Work) -> None:
    del h.data["x-0"]


@_wcase("wtask.inputs-held-while-running")
def _(h: Work) -> None:
    h.v.inputs["z-0"] = ("gone-0",)  # as if z-0 had been given an input it no longer holds


@_wcase("wtask.ready-queued")
def _(h: Work) -> None:
    h.ws.ready.clear()


@_wcase("wtask.fetch-queued")
def _(h: Work) -> None:
    h.ws.to_fetch.clear()


@_wcase("wtask.error-not-kept")
def _(h: Work) -> None:
    h.t("x-0").state = "error"


@_wcase("wstate.threads-bound")
def _(h: Work) -> None:
    h.ws.nthreads = 1


@_wcase("wstate.executing-set-states")
def _(h: Work) -> None:
    h.ws.nthreads = 3
    h.ws.executing[WTask("ghost-0")] = None


@_wcase("wstate.nbytes-sum")
def _(h: Work) -> None:
    h.ws.nbytes += 1


@_wcase("wstate.in-flight-consistent")
def _(h: Work) -> None:
    h.ws.in_flight["w9"] = []


@_wcase("wstate.fetch-limit")
def _(h: Work) -> None:
    h.ws.fetch_limit = 0


@_wcase("wstate.no-idle-thread-with-ready-task")
def _(h: Work) -> None:
    h.ws.nthreads = 3


@_wcase("wstate.store-matches-memory")
def _(h: Work) -> None:
    h.data["junk-0"] = 1


# ---------------------------------------------------------------- stealing, with a stand-in


class FakeStealing:
    """A stealing extension reduced to the interface the checks read, with a pluggable
    (possibly broken) answer to a victim's response."""

    def __init__(self, state: SchedulerState,
                 on_response: Callable[[p.StealResponse], None] | None = None) -> None:
        self.in_flight: dict[str, dict[str, Any]] = {}
        self.in_flight_occupancy: dict[WorkerInfo, float] = {}
        self.on_response = on_response
        state.extensions.append(self)
        state.stealing = self

    def add_worker(self, ws: WorkerInfo) -> None: ...

    def remove_worker(self, ws: WorkerInfo) -> None: ...

    def tick(self, time: float) -> None: ...

    def steal_response(self, msg: p.StealResponse) -> None:
        self.in_flight.pop(msg.key, None)
        if self.on_response is not None:
            self.on_response(msg)


def _steal(h: Sched, key: str, thief: WorkerInfo | None = None,
           sid: str = "steal-1") -> dict[str, Any]:
    ts = h.t(key)
    victim = ts.processing_on
    assert victim is not None
    if thief is None:
        thief = next(w for w in h.s.workers.values() if w is not victim)
    return {"victim": victim, "thief": thief, "steal_id": sid}


def _note(h: Sched) -> None:
    """A quiet stimulus, so the validator sees (and records) the open steals."""
    msg = p.Tick(stimulus_id="tick", time=2)
    h.s.handle(msg)
    h.v.after_stimulus(msg)


@case("steal.in-flight-task-live")
def _() -> InvariantViolation:
    h = Sched()
    ext = FakeStealing(h.s)
    ext.in_flight["a-0"] = {"victim": _holder(h), "thief": h.w("w2"), "steal_id": "s"}
    return h.full()


@case("steal.in-flight-workers-live")
def _() -> InvariantViolation:
    h = Sched()
    FakeStealing(h.s).in_flight["b-0"] = _steal(h, "b-0", thief=h.ghost())
    return h.full()


@case("steal.unique-ids")
def _() -> InvariantViolation:
    h = Sched()
    ext = FakeStealing(h.s)
    ext.in_flight["b-0"] = _steal(h, "b-0", sid="same")
    ext.in_flight["e-0"] = _steal(h, "e-0", sid="same")
    return h.full()


@case("steal.in-flight-occupancy-zero")
def _() -> InvariantViolation:
    h = Sched()
    FakeStealing(h.s).in_flight_occupancy[h.w("w0")] = 0.5
    return h.full()


@case("steal.books-shared-estimate")
def _() -> InvariantViolation:
    h = Sched()
    steal = _steal(h, "b-0")
    d = h.s.estimator.duration(h.t("b-0").prefix)
    FakeStealing(h.s).in_flight["b-0"] = dict(steal, victim_cost=d, thief_cost=2 * d + 1)
    return h.full()


@case("steal.accounted")
def _() -> InvariantViolation:
    h = Sched()
    WorkStealing(h.s).stats["requested"] += 1  # a steal asked for, then lost track of
    return h.full()


def test_a_moved_count_that_drifts_from_the_moves_is_not_accounted_for() -> None:
    h = Sched()
    WorkStealing(h.s).count += 1  # a move counted that no steal made
    e = h.full()
    assert e.invariant.id == "steal.accounted" and "counted as moved" in e.detail


@case("steal.bookings-recount")
def _() -> InvariantViolation:
    h = Sched()
    steal = _steal(h, "b-0")
    ts = h.t("b-0")
    d = h.s.estimator.duration(ts.prefix)
    costs = {"victim_cost": d + h.s.transfer_cost(ts, steal["victim"]),
             "thief_cost": d + h.s.transfer_cost(ts, steal["thief"])}
    FakeStealing(h.s).in_flight["b-0"] = dict(steal, **costs)  # and booked on nobody
    return h.full()


@case("steal.idle-worker-fed")
def _() -> InvariantViolation:
    s = SchedulerState()
    for name in ("w0", "w1"):
        s.handle(p.AddWorker(stimulus_id=f"add-{name}", time=0, worker=name))
    tasks = tuple(p.TaskSpecMsg(f"x-{i}", duration=1.0, restrictions=("w0",)) for i in range(4))
    s.handle(p.UpdateGraph(stimulus_id="graph", time=0, client="c", tasks=tasks,
                           wanted=tuple(t.key for t in tasks)))
    for t in tasks:
        s.tasks[t.key].restrictions = ()  # all queued on w0, free to move; w1 has nothing
    FakeStealing(s)  # which never steals
    v = SchedulerValidator(s)
    for i in range(1, 40):
        msg = p.Tick(stimulus_id=f"tick-{i}", time=i / 10)
        s.handle(msg)
        try:
            v.after_stimulus(msg)
        except InvariantViolation as e:
            return e
    raise AssertionError("w1 starved beside w0's queue and nothing fired")


@case("steal.executing-never-stolen")
def _() -> InvariantViolation:
    h = Sched()
    b = h.t("b-0")

    def move_anyway(msg: p.StealResponse) -> None:  # ignores that the victim runs it
        h.s.move_processing(b, steal["thief"])

    ext = FakeStealing(h.s, move_anyway)
    steal = ext.in_flight["b-0"] = _steal(h, "b-0")
    _note(h)
    msg = p.StealResponse(stimulus_id="answer", time=3, worker=steal["victim"].name,
                          key="b-0", steal_id="steal-1", state="executing")
    h.s.handle(msg)
    return raised(lambda: h.v.after_stimulus(msg))


@case("steal.given-up-task-moved")
def _() -> InvariantViolation:
    h = Sched()
    ext = FakeStealing(h.s)  # drops the steal, leaves the task where it was
    steal = ext.in_flight["b-0"] = _steal(h, "b-0")
    _note(h)
    msg = p.StealResponse(stimulus_id="answer", time=3, worker=steal["victim"].name,
                          key="b-0", steal_id="steal-1", state="released")
    h.s.handle(msg)
    return raised(lambda: h.v.after_stimulus(msg))


def _answer(h: Sched, msg: p.StealResponse) -> InvariantViolation:
    h.s.handle(msg)
    return raised(lambda: h.v.after_stimulus(msg))


@case("steal.answers-accounted")
def _() -> InvariantViolation:
    h = Sched()
    ext = WorkStealing(h.s)
    ext.steal_response = lambda msg: None  # type: ignore[method-assign]  # counts nothing
    return _answer(h, p.StealResponse(stimulus_id="answer", time=3, worker="w0", key="b-0",
                                      steal_id="steal-9", state="released"))


def test_answers_counted_from_a_wrong_start_are_not_accounted_for() -> None:
    h = Sched()
    WorkStealing(h.s).stats["stale"] = 1  # one stale answer before any was handed over
    e = h.full()
    assert e.invariant.id == "steal.answers-accounted" and "0 steal answers" in e.detail


def test_stale_answers_are_accounted_for_once_each() -> None:
    h = Sched()
    ext = WorkStealing(h.s)
    for i in range(3):  # answers to steals nobody requested: stale, ignored
        msg = p.StealResponse(stimulus_id=f"answer-{i}", time=3, worker="w0", key="b-0",
                              steal_id=f"steal-{i}", state="released")
        h.s.handle(msg)
        h.v.after_stimulus(msg)
    assert ext.stats["stale"] == 3 and h.v.check_full(collect=True) == []


@case("steal.moved-processing")
def _() -> InvariantViolation:
    h = Sched()
    WorkStealing(h.s).moved["a-0"] = (0.5, ("w1",))  # a-0 is in memory, long done
    return h.full()


def test_a_moved_record_kept_after_its_task_finished_is_found_incrementally() -> None:
    h = Sched()
    ext = WorkStealing(h.s)
    more = p.UpdateGraph(stimulus_id="more", time=2, client="c", wanted=("x-0", "x-1", "x-2"),
                         tasks=(p.TaskSpecMsg("x-0"), p.TaskSpecMsg("x-1"), p.TaskSpecMsg("x-2")))
    h.s.handle(more)
    h.v.after_stimulus(more)
    # More tasks recorded as moved (all processing) than a stimulus touches: the
    # incremental check looks at the touched ones only.
    for key in ("b-0", "x-0", "x-1", "x-2"):
        assert h.t(key).state == "processing"
        ext.moved[key] = (0.5, ("w9",))
    _note(h)
    ws = h.t("b-0").processing_on
    assert ws is not None
    msg = p.TaskFinished(stimulus_id="done-b", time=3, worker=ws.name, key="b-0", nbytes=1,
                         duration=0.1)
    h.s.handle(msg)
    assert "b-0" not in ext.moved  # dropped as the task left processing
    ext.moved["b-0"] = (0.5, ("w9",))  # as if it had been kept
    e = raised(lambda: h.v.after_stimulus(msg))
    assert e.invariant.id == "steal.moved-processing" and "memory" in e.detail


@case("steal.orphans-consistent")
def _() -> InvariantViolation:
    h = Sched()
    ext = WorkStealing(h.s)
    ts = h.t("b-0")
    ext.stats["requested"] += 1  # (asked for, still open: accounted)
    # Its victim left, but the orphan stays: the task is no longer processing there.
    ext.orphans["b-0"] = InFlight(ts, h.ghost(), h.ghost(), "steal-1", 0.0, 0.1, 0.1)
    return h.full()


@case("steal.ends-for-a-reason")
def _() -> InvariantViolation:
    h = Sched()
    ext = FakeStealing(h.s)
    ext.in_flight["b-0"] = _steal(h, "b-0")
    _note(h)
    del ext.in_flight["b-0"]  # dropped: no answer, the task did not move, the victim lives
    msg = p.Tick(stimulus_id="tick", time=3)
    h.s.handle(msg)
    return raised(lambda: h.v.after_stimulus(msg))


@case("steal.thief-gone-only-when-gone")
def _() -> InvariantViolation:
    h = Sched()
    b = h.t("b-0")

    def place_elsewhere(msg: p.StealResponse) -> None:  # as if the live thief were gone
        h.s.move_processing(b, next(w for w in h.s.workers.values()
                                    if w is not steal["victim"] and w is not steal["thief"]))

    ext = FakeStealing(h.s, place_elsewhere)
    steal = ext.in_flight["b-0"] = _steal(h, "b-0")
    _note(h)
    return _answer(h, p.StealResponse(stimulus_id="answer", time=3,
                                      worker=steal["victim"].name, key="b-0",
                                      steal_id="steal-1", state="released"))


def test_a_bookings_entry_left_at_zero_after_its_steals_closed_is_found() -> None:
    h = Sched()
    ext = WorkStealing(h.s)
    ext.bookings[h.w("w0")] = 0  # no steal open: no entry (the occupancy one too)
    ext.in_flight_occupancy[h.w("w0")] = 1e-17  # float residue, under any tolerance
    e = h.full()
    assert e.invariant.id == "steal.bookings-recount" and "outlived" in e.detail


# ---------------------------------------------------------------- a simulated cluster


def _finished_run(graph: Any = None, workers: int = 2) -> SimCluster:
    """A small run that ended cleanly, validator attached, nothing left in flight."""
    c = SimCluster(workers=workers, seed=0, validate=True)
    c.run(graph if graph is not None else make_workload("independent", 4))
    assert c.pending == 0
    return c


def _validator(c: SimCluster) -> Validator:
    assert isinstance(c.validator, Validator)
    return c.validator


def _keep_busy(c: SimCluster) -> None:
    """Something still pending: the cluster is not quiescent (no liveness checks)."""
    c.at(c.now + 100, lambda: None)


@case("cluster.memory-agrees")
def _() -> InvariantViolation:
    c = _finished_run()
    sw = c.workers["w0"]
    key = next(k for k, t in sw.state.tasks.items() if t.state == "memory")
    wt = sw.state.tasks.pop(key)  # the worker lost it, consistently, without telling
    sw.state.nbytes -= wt.nbytes
    del sw.data[key]
    return raised(lambda: _validator(c).check_end(c))


@case("cluster.wants-agree")
def _() -> InvariantViolation:
    c = _finished_run()
    key = next(iter(c.wanted_by))
    c.wanted_by[key].add("c2")  # a second client's request the scheduler never heard of
    return raised(lambda: _validator(c).check_end(c))


def _deaf_worker_cluster(**kwargs: Any) -> SimCluster:
    """One worker whose state machine (broken) ignores every request to compute."""
    c = SimCluster(workers=1, seed=0, validate=True, **kwargs)
    c.workers["w0"].state._handlers[p.ComputeTask] = lambda msg: None
    return c


@case("liveness.processing-task-runs")
def _() -> InvariantViolation:
    c = _deaf_worker_cluster()
    return raised(lambda: c.run(make_workload("independent", 1)))


@case("liveness.waiting-task-progresses")
def _() -> InvariantViolation:
    c = SimCluster(workers=0, seed=0, validate=True)
    s = c.scheduler
    s.handle(p.UpdateGraph(stimulus_id="g", time=0, client="client", wanted=("d-0",),
                           tasks=(p.TaskSpecMsg("c-0"), p.TaskSpecMsg("d-0", deps=("c-0",)))))
    dep = s.tasks["c-0"]  # a broken scheduler drops c-0 back to released and leaves it
    dep.state = SchedulerTaskState.RELEASED
    del s.unrunnable[dep]
    c.results.clear()
    c.wanted = {"d-0"}
    c.wanted_by = {"d-0": {"client"}}  # (as the client's own submission would have it)
    return raised(lambda: _validator(c).check_stuck(c, "test"))


@case("liveness.worker-tasks-settled")
def _() -> InvariantViolation:
    c = _finished_run()
    c.workers["w1"].state.handle(p.ComputeTask(  # started, never to finish
        stimulus_id="stray", time=c.now, worker="w1", key="stray-0", prefix="stray",
        priority=(0, 0), duration=1.0))
    return raised(lambda: _validator(c).check_stuck(c, "test"))


@case("liveness.wanted-key-reported")
def _() -> InvariantViolation:
    c = _finished_run()
    del c.results["task-2"]  # the client never heard
    return raised(lambda: _validator(c).check_stuck(c, "test"))


@case("e2e.every-key-resolved")
def _() -> InvariantViolation:
    c = _finished_run()
    _keep_busy(c)
    del c.results["task-1"]
    return raised(lambda: _validator(c).check_end(c))


@case("e2e.no-result-lost")
def _() -> InvariantViolation:
    c = _finished_run()
    _keep_busy(c)
    c.scheduler.handle(p.ClientReleasesKeys(stimulus_id="drop", time=c.now, client="client",
                                            keys=("task-3",)))  # result reported, then gone
    return raised(lambda: _validator(c).check_end(c))


@case("e2e.result-correct")
def _() -> InvariantViolation:
    c = _finished_run()
    sw = next(sw for sw in c.workers.values() if "task-0" in sw.data)
    sw.data["task-0"] += 1
    return raised(lambda: _validator(c).check_end(c))


@case("e2e.error-correct")
def _() -> InvariantViolation:
    c = _finished_run()
    c.results["task-0"] = ("erred", "error:task-0")
    return raised(lambda: _validator(c).check_end(c))


@case("e2e.no-duplicate-run")
def _() -> InvariantViolation:
    c = _finished_run()
    holder = next(n for n, sw in c.workers.items() if "task-0" in sw.data)
    other = next(n for n in c.workers if n != holder)
    # The same body again on another worker, though no worker died.
    return raised(lambda: c._deliver_to_worker(c.workers[other], [p.ComputeTask(
        stimulus_id="again", time=c.now, worker=other, key="task-0", prefix="task",
        priority=(0, 0), duration=0.1)]))


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("inv", CATALOG, ids=lambda inv: inv.id)
def test_every_invariant_has_a_case_that_makes_it_fire_first(inv: Any) -> None:
    make = CASES.get(inv.id)
    assert make is not None, f"invariant {inv.id} has no test case that makes it fire"
    violation = make()
    assert violation.invariant.id == inv.id, str(violation)
    assert violation.invariant is inv


def test_every_case_names_an_invariant_of_the_catalog() -> None:
    assert set(CASES) <= {inv.id for inv in CATALOG}


@pytest.mark.parametrize("invariant_id", sorted(INCREMENTAL_CASES))
def test_the_incremental_check_finds_what_a_stimulus_touches(invariant_id: str) -> None:
    violation = INCREMENTAL_CASES[invariant_id]()
    assert violation.invariant.id == invariant_id, str(violation)
    assert violation.stimulus_id == "poke"


def test_the_catalog_is_large_and_every_entity_and_area_is_covered() -> None:
    ids = [inv.id for inv in CATALOG]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)
    entities = {inv.entity for inv in CATALOG}
    assert entities == {"task", "worker", "cluster", "worker-task", "worker-state", "steal",
                        "liveness", "end-to-end"}
    assert all(inv.text and "\n" not in inv.text for inv in CATALOG)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_healthy_runs_of_every_workload_raise_nothing(name: str) -> None:
    c = SimCluster(workers=3, threads=2, seed=3, validate=True, jitter=0.0005)
    c.at(0.2, c.kill_worker, "w1")
    c.at(0.3, c.add_worker)
    c.at(0.1, c.pause_worker, "w2", 0.3)
    out = c.run(make_workload(name, 80, seed=3))
    assert out.invariant_checks > 0
    assert _validator(c).check_full(collect=True) == []


def test_healthy_runs_with_stealing_and_heartbeat_timeouts_raise_nothing() -> None:
    for seed in range(4):
        c = SimCluster(workers=4, seed=seed, validate=True, stealing=True,
                       heartbeat_timeout=2.0)
        c.at(0.5, c.kill_worker, "w0")
        c.at(0.4, lambda c=c: c.set_link("w3", "scheduler", latency=0.05))
        out = c.run(make_workload("skewed-durations", 120, seed=seed))
        assert out.results_ok
        assert out.invariant_checks > 0


def test_strict_mode_is_switched_on_by_the_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("SQUALL_VALIDATE", "1")
    assert isinstance(SimCluster(workers=1).validator, Validator)
    monkeypatch.setenv("SQUALL_VALIDATE", "0")
    assert SimCluster(workers=1).validator is None


def test_a_violation_names_the_transition_stimulus_and_recent_stimuli() -> None:
    c = SimCluster(workers=2, seed=0, validate=True)
    seen: list[InvariantViolation] = []
    v = _validator(c)
    v.on_violation.append(seen.append)
    v.trace_path = "/tmp/run.jsonl"

    def corrupt(state: SchedulerState, ts: TaskState, start: str, finish: str,
                sid: str) -> None:
        if finish == SchedulerTaskState.MEMORY and ts.key == "chain-3":
            ts.who_has.clear()  # a broken processing -> memory: nobody holds the result

    c.scheduler.observers.insert(0, corrupt)
    with pytest.raises(InvariantViolation) as info:
        c.run(make_workload("chain", 6))
    e = info.value
    assert seen == [e]
    assert e.invariant.id == "task.who-has-iff-memory"
    assert (e.key, e.start, e.finish) == ("chain-3", "processing", "memory")
    assert e.stimulus_id.startswith("execute-") and e.entity == "task 'chain-3'"
    assert any(msg.stimulus_id == e.stimulus_id for _, msg in e.recent)
    text = str(e)
    assert "task.who-has-iff-memory" in text and "'chain-3' processing -> memory" in text
    assert "/tmp/run.jsonl" in text and len(text.splitlines()) < 40
    record = e.to_violation()
    assert (record.invariant, record.key, record.start, record.finish) == (
        "task.who-has-iff-memory", "chain-3", "processing", "memory")
    assert record.stimulus_id == e.stimulus_id and record.text == e.invariant.text


def test_a_stuck_cluster_is_named_by_its_key_at_once_not_after_a_timeout() -> None:
    c = _deaf_worker_cluster(stall_timeout=1e6)
    with pytest.raises(InvariantViolation) as info:
        c.run(make_workload("independent", 1))
    assert info.value.entity == "task 'task-0'"
    assert c.now < 1.0  # found when the cluster went quiet, not after a stall timeout


def test_validators_run_without_a_simulator() -> None:
    s = SchedulerState()
    v = SchedulerValidator(s)
    s.handle(p.AddWorker(stimulus_id="add", time=0, worker="w0"))
    msg = p.UpdateGraph(stimulus_id="g", time=0, client="c", wanted=("x-0",),
                        tasks=(p.TaskSpecMsg("x-0"),))
    out = s.handle(msg)
    v.after_stimulus(msg)
    assert v.checks > 0
    ws = WorkerState("w0")
    wv = WorkerValidator(ws)
    for m in out:
        if isinstance(m, p.ComputeTask):
            ws.handle(m)
            wv.after_stimulus(m)
    assert wv.checks > 0 and ws.tasks["x-0"].state == "executing"
    assert v.check_full(collect=True) == [] and wv.check_full(collect=True) == []


def test_cli_lists_the_catalog_as_a_table_and_as_json(capsys: Any) -> None:
    import json

    main(["invariants", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [inv.id for inv in CATALOG]
    assert set(rows[0]) == {"id", "entity", "scope", "text"}
    main(["invariants", "--entity", "liveness"])
    out = capsys.readouterr().out
    assert "liveness.processing-task-runs" in out and "task.known-state" not in out


def test_cli_rejects_an_unknown_entity_in_one_line(capsys: Any) -> None:
    with pytest.raises(SystemExit) as info:
        main(["invariants", "--entity", "nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "'nope'" in err and len(err.splitlines()) == 1
