"""Work stealing: balancing decisions, the steal protocol's races, snapshots, the CLI.

Races are driven two ways: exactly, by handing stimuli to a SchedulerState and
WorkerStates in a chosen order (``Manual``), and in the simulator, where faults land
inside the window between a steal request and its answer.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from squall.cli.main import main
from squall.core import protocol as p
from squall.core.estimates import DurationEstimator
from squall.core.graph import TaskGraph, TaskSpec
from squall.core.scheduler import SchedulerState
from squall.core.sim import SimCluster, SimWorker
from squall.core.snapshot import (
    SnapshotError,
    balance_snapshot,
    load_snapshot,
    snapshot_of,
)
from squall.core.stealing import WorkStealing
from squall.core.worker import WorkerState
from squall.invariants import SchedulerValidator
from squall.scenarios.workloads import independent

MB = 1_000_000


# ---------------------------------------------------------------------- exact races


class Manual:
    """A scheduler, its stealing and its workers; messages move only when a test says.

    Scheduler -> worker messages queue per worker (FIFO, as on a real link); worker ->
    scheduler messages queue in one list. Task bodies run until ``finish``. Checks on the
    way that no key's body starts on one worker while it runs on another live one, and
    strict mode on the scheduler after each of its stimuli (``v``).
    """

    def __init__(self, workers: dict[str, int]) -> None:
        self.s = SchedulerState()
        self.steal = WorkStealing(self.s)
        self.v = SchedulerValidator(self.s)
        self.t = 0.0
        self._n = 0
        self.workers: dict[str, WorkerState] = {}
        self.inbox: dict[str, list[Any]] = {}
        self.to_sched: list[Any] = []
        self.running: dict[str, set[str]] = {}
        self.computed: list[tuple[str, str]] = []  # (worker, key) of every body start
        for name, n in workers.items():
            self.add(name, n)

    def sid(self, kind: str) -> str:
        self._n += 1
        return f"{kind}-{self._n}"

    def add(self, name: str, nthreads: int = 1) -> None:
        self.workers[name] = WorkerState(name, nthreads)
        self.inbox[name] = []
        self.running[name] = set()
        self.sched(p.AddWorker(stimulus_id=self.sid("add"), time=self.t, worker=name,
                               nthreads=nthreads))

    def kill(self, name: str) -> None:
        """The worker dies: what it had not received is lost; the scheduler is told."""
        del self.workers[name]
        del self.inbox[name]
        del self.running[name]
        self.sched(p.RemoveWorker(stimulus_id=self.sid("died"), time=self.t, worker=name,
                                  reason="died"))

    def sched(self, msg: Any) -> list[Any]:
        out = self.s.handle(msg)
        self.v.after_stimulus(msg)
        for ins in out:
            name = getattr(ins, "worker", None)
            if name in self.inbox:
                self.inbox[name].append(ins)
        return out

    def submit(self, tasks: list[tuple[str, str, float]],
               deps: dict[str, tuple[str, ...]] | None = None,
               priority: dict[str, int] | None = None) -> None:
        """Place (key, worker, duration hint) on that worker, then lift the restriction."""
        deps = deps or {}
        priority = priority or {}
        self.sched(p.UpdateGraph(
            stimulus_id=self.sid("graph"), time=self.t, client="c",
            tasks=tuple(p.TaskSpecMsg(k, deps=deps.get(k, ()), duration=d, restrictions=(w,),
                                      priority=priority.get(k, 0))
                        for k, w, d in tasks),
            wanted=tuple(k for k, _, _ in tasks)))
        for k, _, _ in tasks:
            self.s.tasks[k].restrictions = ()

    def deliver(self, name: str, n: int | None = None) -> None:
        msgs = self.inbox[name]
        n = len(msgs) if n is None else n
        batch, self.inbox[name] = msgs[:n], msgs[n:]
        for msg in batch:
            self.worker_handle(name, msg)

    def deliver_all(self) -> None:
        for name in list(self.inbox):
            self.deliver(name)

    def worker_handle(self, name: str, msg: Any) -> None:
        for ins in self.workers[name].handle(msg):
            if isinstance(ins, p.Execute):
                for other, keys in self.running.items():
                    assert ins.key not in keys, f"{ins.key} starts on {name} while on {other}"
                self.running[name].add(ins.key)
                self.computed.append((name, ins.key))
            elif isinstance(ins, p.GatherDep | p.ReleaseData):
                pass  # no data moves in these tests
            else:
                self.to_sched.append(ins)

    def finish(self, name: str, key: str) -> None:
        self.running[name].remove(key)
        self.worker_handle(name, p.ExecuteSuccess(stimulus_id=self.sid("done"), time=self.t,
                                                  key=key, nbytes=10, duration=1.0))

    def run_all(self) -> None:
        """Deliver everything and finish every body, until nothing moves."""
        for _ in range(50):
            self.deliver_all()
            bodies = [(n, k) for n, keys in self.running.items() for k in sorted(keys)]
            for name, key in bodies:
                self.finish(name, key)
            if not bodies and not self.to_sched:
                return
            self.flush()
        raise AssertionError("still busy after 50 steps")

    def flush(self) -> list[Any]:
        """Deliver every worker -> scheduler message, in order; return what it caused."""
        out: list[Any] = []
        while self.to_sched:
            msg = self.to_sched.pop(0)
            out.extend(self.sched(msg))
        return out

    def tick(self) -> list[p.StealRequest]:
        self.t += 0.1
        out = self.sched(p.Tick(stimulus_id=self.sid("tick"), time=self.t))
        return [m for m in out if isinstance(m, p.StealRequest)]

    def where(self, key: str) -> str | None:
        ws = self.s.tasks[key].processing_on
        return ws.name if ws is not None else None

    def assert_settled(self) -> None:
        assert self.steal.in_flight == {}
        assert self.steal.orphans == {}
        assert self.steal.in_flight_occupancy == {}


def _victim_with_queue() -> Manual:
    """w0 runs a-0 and has b-0 queued; w1 is idle. One round requests b-0 for w1."""
    m = Manual({"w0": 1, "w1": 1})
    m.submit([("a-0", "w0", 1.0), ("b-0", "w0", 1.0)])
    m.deliver_all()
    assert m.running["w0"] == {"a-0"}
    return m


def test_a_queued_task_is_moved_to_the_idle_worker_and_computed_there_once() -> None:
    m = _victim_with_queue()
    requests = m.tick()
    assert [(r.worker, r.key) for r in requests] == [("w0", "b-0")]
    rec = m.steal.in_flight["b-0"]
    assert (rec.victim.name, rec.thief.name, rec.steal_id) == ("w0", "w1", requests[0].steal_id)
    booked = m.steal.in_flight_occupancy
    assert booked[rec.victim] == pytest.approx(-1.0) and booked[rec.thief] == pytest.approx(1.0)
    assert m.tick() == []  # a second steal of b-0 is never requested while one is open
    m.deliver("w0")
    out = m.flush()
    assert [(c.worker, c.key) for c in out if isinstance(c, p.ComputeTask)] == [("w1", "b-0")]
    assert m.where("b-0") == "w1" and m.steal.count == 1
    m.assert_settled()
    m.deliver_all()
    m.finish("w1", "b-0")
    m.finish("w0", "a-0")
    m.flush()
    assert m.s.tasks["b-0"].state == "memory" and m.s.tasks["a-0"].state == "memory"
    assert sorted(m.computed) == [("w0", "a-0"), ("w1", "b-0")]


def test_race_task_finished_before_the_answer() -> None:
    m = _victim_with_queue()
    m.tick()
    # The victim runs a-0 and then b-0 to the end before the request reaches it.
    m.finish("w0", "a-0")
    m.finish("w0", "b-0")
    m.deliver("w0")  # answers "memory"
    assert m.to_sched[-1].state == "memory"
    out = m.flush()
    assert not [c for c in out if isinstance(c, p.ComputeTask)]
    assert m.s.tasks["b-0"].state == "memory"
    assert m.steal.stats["closed"] == 1 and m.steal.stats["stale"] == 1
    assert m.steal.count == 0
    m.assert_settled()


def test_race_task_started_before_the_request_is_refused() -> None:
    m = _victim_with_queue()
    m.tick()
    m.finish("w0", "a-0")  # b-0 starts executing
    m.deliver("w0")
    out = m.flush()
    assert m.steal.stats["refused"] == 1
    assert not [c for c in out if isinstance(c, p.ComputeTask)]
    assert m.where("b-0") == "w0"
    m.assert_settled()


def test_race_task_released_by_the_client_while_the_steal_is_open() -> None:
    m = _victim_with_queue()
    m.tick()
    m.sched(p.ClientReleasesKeys(stimulus_id=m.sid("rel"), time=m.t, client="c",
                                 keys=("b-0",)))
    assert "b-0" not in m.s.tasks
    assert m.steal.in_flight == {}
    m.deliver("w0")  # the request, then FreeKeys
    out = m.flush()
    assert m.steal.stats["stale"] == 1
    assert not [c for c in out if isinstance(c, p.ComputeTask)]
    assert "b-0" not in m.workers["w0"].tasks and "b-0" not in m.workers["w1"].tasks
    m.assert_settled()


@pytest.mark.parametrize("answer_first", [False, True])
def test_race_victim_died(answer_first: bool) -> None:
    m = _victim_with_queue()
    m.tick()
    if answer_first:
        m.deliver("w0")  # it released b-0 and answered, then died; the answer is late
    late = list(m.to_sched)
    m.to_sched.clear()
    m.kill("w0")
    assert m.steal.in_flight == {} and m.steal.stats["victim-gone"] == 1
    m.to_sched.extend(late)
    m.flush()
    assert m.steal.stats["stale"] == (1 if answer_first else 0)
    # Both tasks are placed again on the only live worker, which computes each once.
    assert m.where("a-0") == "w1" and m.where("b-0") == "w1"
    m.run_all()
    assert {k: m.s.tasks[k].state for k in ("a-0", "b-0")} == {"a-0": "memory", "b-0": "memory"}
    m.assert_settled()


def test_race_thief_died_before_the_answer() -> None:
    m = _victim_with_queue()
    m.tick()
    m.kill("w1")
    assert m.steal.in_flight == {} and list(m.steal.orphans) == ["b-0"]
    assert m.steal.in_flight_occupancy == {}
    m.deliver("w0")  # w0 gives b-0 up
    out = m.flush()
    assert m.steal.stats["thief-gone"] == 1
    # Placed again, here on the victim, which gets it anew; never left on a dead record.
    assert [(c.worker, c.key) for c in out if isinstance(c, p.ComputeTask)] == [("w0", "b-0")]
    assert m.s.tasks["b-0"].processing_on is m.s.workers["w0"]
    m.deliver("w0")
    m.finish("w0", "a-0")
    m.finish("w0", "b-0")
    m.flush()
    assert m.s.tasks["b-0"].state == "memory"
    m.assert_settled()


def test_race_thief_replaced_by_a_new_worker_at_the_same_name() -> None:
    m = _victim_with_queue()
    m.tick()
    old = m.s.workers["w1"]
    m.kill("w1")
    m.add("w1")
    new = m.s.workers["w1"]
    assert new is not old and new.incarnation > old.incarnation
    m.deliver("w0")
    out = m.flush()
    assert m.steal.stats["thief-gone"] == 1 and m.steal.count == 0
    computes = [(c.worker, c.key) for c in out if isinstance(c, p.ComputeTask)]
    assert computes == [("w1", "b-0")]
    assert m.s.tasks["b-0"].processing_on is new  # the new incarnation, told to compute it
    m.deliver("w1")
    assert m.running["w1"] == {"b-0"}
    m.finish("w1", "b-0")
    m.flush()
    assert m.s.tasks["b-0"].state == "memory"
    m.assert_settled()


def test_race_thief_died_then_the_victim_died_before_answering() -> None:
    m = _victim_with_queue()
    m.tick()
    m.kill("w1")
    assert list(m.steal.orphans) == ["b-0"]
    m.add("w2")  # somewhere for the tasks to go
    m.kill("w0")  # the orphan's answer will never come: it goes with its victim
    assert m.steal.orphans == {} and m.steal.stats["victim-gone"] == 1
    assert m.where("a-0") == "w2" and m.where("b-0") == "w2"
    m.run_all()
    assert {m.s.tasks[k].state for k in ("a-0", "b-0")} == {"memory"}
    assert m.v.check_full(collect=True) == []
    m.assert_settled()


def test_race_thief_died_then_the_task_finished_on_the_victim() -> None:
    m = _victim_with_queue()
    m.tick()
    m.kill("w1")
    assert list(m.steal.orphans) == ["b-0"]
    m.finish("w0", "a-0")  # b-0 starts, and ends, before the request arrives
    m.finish("w0", "b-0")
    m.flush()
    assert m.steal.orphans == {} and m.steal.stats["closed"] == 1
    m.deliver("w0")  # answers "memory": stale
    m.flush()
    assert m.steal.stats["stale"] == 1 and m.s.tasks["b-0"].state == "memory"
    assert m.v.check_full(collect=True) == []
    m.assert_settled()


def test_race_answer_to_an_older_steal_of_the_same_task_is_ignored() -> None:
    m = _victim_with_queue()
    first = m.tick()[0]
    # b-0 is rescheduled while steal 1 is open (released and submitted again), lands on
    # the victim again, and a second steal of it is requested.
    m.sched(p.ClientReleasesKeys(stimulus_id=m.sid("rel"), time=m.t, client="c",
                                 keys=("b-0",)))
    m.submit([("b-0", "w0", 1.0)])
    second = m.tick()
    assert [r.key for r in second] == ["b-0"] and second[0].steal_id != first.steal_id
    m.deliver("w0")  # request 1 (released), FreeKeys, ComputeTask (ready again), request 2
    answers = [(a.steal_id, a.state) for a in m.to_sched]
    assert answers == [(first.steal_id, "released"), (second[0].steal_id, "released")]
    out = m.flush()
    assert m.steal.stats["stale"] == 1 and m.steal.count == 1
    assert [(c.worker, c.key) for c in out if isinstance(c, p.ComputeTask)] == [("w1", "b-0")]
    m.deliver_all()
    m.finish("w1", "b-0")
    m.finish("w0", "a-0")
    m.flush()
    assert sorted(m.computed) == [("w0", "a-0"), ("w1", "b-0")]
    m.assert_settled()


def test_race_task_rescheduled_while_the_steal_is_open() -> None:
    # b-0 needs d-0, held by w2. w2 dies while b-0's steal is open: d-0 is lost, b-0
    # goes back to waiting (rescheduled), and the victim's late answer is stale.
    m = Manual({"w0": 1, "w1": 1, "w2": 1})
    m.submit([("d-0", "w2", 0.1)])
    m.deliver("w2")
    m.finish("w2", "d-0")
    m.flush()
    m.submit([("a-0", "w0", 1.0), ("b-0", "w0", 1.0)], deps={"b-0": ("d-0",)})
    m.deliver_all()
    requests = m.tick()
    assert ("w0", "b-0") in [(r.worker, r.key) for r in requests]
    m.kill("w2")
    assert m.s.tasks["b-0"].state != "processing" or m.where("b-0") != "w0"
    assert "b-0" not in m.steal.in_flight and m.steal.stats["closed"] >= 1
    m.deliver_all()
    m.flush()
    assert m.steal.stats["stale"] >= 1 and m.steal.count == 0
    m.run_all()
    assert all(m.s.tasks[k].state == "memory" for k in ("a-0", "b-0"))
    assert [k for _, k in m.computed].count("b-0") == 1
    m.assert_settled()


def test_a_task_is_never_moved_back_to_a_worker_it_was_stolen_from() -> None:
    # Balancing decisions only: nothing is delivered to w1, so what it has stays queued.
    m = _victim_with_queue()
    assert [r.key for r in m.tick()] == ["b-0"]
    m.deliver("w0")
    m.flush()
    assert m.where("b-0") == "w1"
    # w1 then gets a long task of its own and w0 runs dry: w1 looks worth robbing.
    m.submit([("z-0", "w1", 5.0)])
    m.s.tasks["z-0"].restrictions = ("w1",)
    m.finish("w0", "a-0")
    m.flush()
    m.t += 2 * m.steal.settle
    assert m.tick() == []  # b-0 does not go back to w0
    m.add("w2")  # but it may go on to a third worker
    assert [(r.worker, r.key) for r in m.tick()] == [("w1", "b-0")]
    assert m.steal.in_flight["b-0"].thief.name == "w2"


@pytest.mark.parametrize("heartbeat", [True, False])
def test_a_task_reported_executing_is_never_requested(heartbeat: bool) -> None:
    # a-2, last in w0's queue, has the highest priority: it runs as soon as z-0 is done.
    m = Manual({"w0": 1, "w1": 1})
    m.submit([("z-0", "w0", 1.0), ("a-0", "w0", 1.0), ("a-1", "w0", 1.0), ("a-2", "w0", 1.0)],
             priority={"a-2": 10})
    m.deliver_all()
    m.finish("w0", "z-0")
    m.flush()
    assert m.running["w0"] == {"a-2"}
    if heartbeat:
        m.sched(p.Heartbeat(stimulus_id=m.sid("hb"), time=m.t, worker="w0",
                            executing={"a-2": 0.01}))
    requests = m.tick()
    if heartbeat:
        assert [r.key for r in requests] == ["a-1"]
    else:
        # Not known to be running: asked for, and refused by the worker itself.
        assert [r.key for r in requests] == ["a-2"]
        m.deliver("w0")
        m.flush()
        assert m.steal.stats["refused"] == 1 and m.where("a-2") == "w0"
    m.run_all()
    assert sorted(k for _, k in m.computed) == ["a-0", "a-1", "a-2", "z-0"]
    m.assert_settled()


def test_restrictions_are_respected() -> None:
    m = Manual({"w0": 1, "w1": 1, "w2": 1})
    m.submit([("a-0", "w0", 1.0), ("b-0", "w0", 1.0), ("c-0", "w0", 1.0)])
    for key in ("b-0", "c-0"):
        m.s.tasks[key].restrictions = ("w0", "w2")
    m.deliver_all()
    m.sched(p.Heartbeat(stimulus_id=m.sid("hb"), time=m.t, worker="w0",
                        executing={"a-0": 0.01}))
    m.tick()
    # w1 may not take b-0 or c-0; w2 takes one of them and is full.
    assert {k: r.thief.name for k, r in m.steal.in_flight.items()} == {"c-0": "w2"}


class _CountingEstimator(DurationEstimator):
    __slots__ = ("calls",)

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def duration(self, prefix: str) -> float:
        self.calls += 1
        return super().duration(prefix)


def test_a_round_looks_at_a_bounded_number_of_tasks_per_victim() -> None:
    def estimates_used(per_worker: int) -> int:
        snap = {"workers": [{"name": f"w{i}"} for i in range(20)],
                "tasks": [{"key": f"x-{i}-{j}", "duration": 1.0, "worker": f"w{i}",
                           "state": "executing" if j == 0 else "ready"}
                          for i in range(10) for j in range(per_worker)]}
        loaded = load_snapshot(snap)
        counting = _CountingEstimator()
        counting.observe("x", 1.0)
        loaded.state.estimator = counting
        assert loaded.stealing.balance() == 10  # one task for each of the 10 idle workers
        return counting.calls

    assert estimates_used(2000) == estimates_used(20)


# ---------------------------------------------------------------------- snapshots


def _snap(tasks: list[dict[str, Any]], workers: int = 2, data: list[dict[str, Any]] | None = None,
          **extra: Any) -> dict[str, Any]:
    snap: dict[str, Any] = {"bandwidth": 100 * MB,
                            "workers": [{"name": f"w{i}", "nthreads": 1} for i in range(workers)],
                            "data": data or [], "tasks": tasks}
    snap.update(extra)
    return snap


def _task(key: str, worker: str, state: str = "ready", duration: float | None = 1.0,
          deps: tuple[str, ...] = ()) -> dict[str, Any]:
    t: dict[str, Any] = {"key": key, "prefix": key.split("-")[0], "deps": list(deps),
                         "worker": worker, "state": state}
    if duration is not None:
        t["duration"] = duration
    return t


def test_snapshot_an_executing_task_alone_stays_put() -> None:
    snap = _snap([_task("x-0", "w0", "executing")])
    assert balance_snapshot(snap, rounds=3) == {"w0": ["x-0"], "w1": []}


def test_snapshot_two_ready_tasks_become_one_each() -> None:
    snap = _snap([_task("x-0", "w0"), _task("x-1", "w0")])
    assert balance_snapshot(snap) == {"w0": ["x-0"], "w1": ["x-1"]}


def test_snapshot_a_task_whose_input_takes_10s_to_move_stays_put() -> None:
    data = [{"key": "d0", "nbytes": 1000 * MB, "on": ["w0"]}]
    snap = _snap([_task("x-0", "w0", "executing", deps=("d0",)),
                  _task("x-1", "w0", deps=("d0",))], data=data)
    assert balance_snapshot(snap, rounds=5) == {"w0": ["x-0", "x-1"], "w1": []}


def test_snapshot_a_move_happens_only_when_it_saves_more_than_it_costs() -> None:
    data = [{"key": "d0", "nbytes": 100 * MB, "on": ["w0"]}]  # 1 s to move, 1 s to compute
    short = [_task("x-0", "w0", "executing", deps=("d0",)), _task("x-1", "w0", deps=("d0",))]
    assert balance_snapshot(_snap(short, data=data)) == {"w0": ["x-0", "x-1"], "w1": []}
    long = short + [_task(f"x-{i}", "w0", deps=("d0",)) for i in range(2, 6)]
    moved = balance_snapshot(_snap(long, data=data))
    assert len(moved["w1"]) == 1  # worth it now, and one task fills the thief
    # A thief already holding the input is preferred and takes it without transfer.
    data2 = [{"key": "d0", "nbytes": 100 * MB, "on": ["w0", "w2"]}]
    snap = _snap(long, workers=3, data=data2)
    loaded = load_snapshot(snap)
    loaded.stealing.balance()
    thieves = {r.thief.name for r in loaded.stealing.in_flight.values()}
    assert "w2" in thieves


def test_snapshot_cheap_to_move_tasks_go_first() -> None:
    data = [{"key": "d0", "nbytes": 40 * MB, "on": ["w0"]}]
    snap = _snap([_task("x-0", "w0", "executing"), _task("y-0", "w0", deps=("d0",)),
                  _task("z-0", "w0"), _task("y-1", "w0", deps=("d0",))], data=data)
    assert balance_snapshot(snap) == {"w0": ["x-0", "y-0", "y-1"], "w1": ["z-0"]}


def test_snapshot_no_over_balancing_and_executing_tasks_never_move() -> None:
    tasks = [_task("x-0", "w0", "executing")] + [_task(f"x-{i}", "w0") for i in range(1, 10)]
    one = balance_snapshot(_snap(tasks, workers=4))
    assert one["w0"][0] == "x-0" and len(one["w0"]) == 7
    assert [len(one[w]) for w in ("w1", "w2", "w3")] == [1, 1, 1]
    many = balance_snapshot(_snap(tasks, workers=4), rounds=10)
    assert many == one  # the thieves are busy now: nothing more moves


def test_snapshot_unknown_duration_prefix_is_stolen() -> None:
    snap = _snap([_task("u-0", "w0", "executing", duration=None),
                  _task("u-1", "w0", duration=None), _task("u-2", "w0", duration=None)],
                 workers=3)
    out = balance_snapshot(snap)
    assert out["w0"] == ["u-0"] and sorted(out["w1"] + out["w2"]) == ["u-1", "u-2"]


def test_snapshot_trivial_tasks_are_never_stolen() -> None:
    tasks = [_task(f"t-{i}", "w0", "executing" if i == 0 else "ready", duration=0.001)
             for i in range(500)]
    out = balance_snapshot(_snap(tasks), rounds=5)
    assert out["w1"] == []


@pytest.mark.parametrize("mutate, field", [
    (lambda s: s["tasks"][0].update(worker="w9"), "tasks[0].worker: unknown worker 'w9'"),
    (lambda s: s["tasks"][1].update(deps=["d9"]), "tasks[1].deps: missing dependency 'd9'"),
    (lambda s: s["tasks"][0].update(state="done"), "tasks[0].state: must be"),
    (lambda s: s["data"][0].update(on=["w7"]), "data[0].on: unknown worker 'w7'"),
    (lambda s: s["data"][0].update(nbytes=-1), "data[0].nbytes: must be"),
    (lambda s: s.pop("workers"), "workers: missing"),
    (lambda s: s["workers"][0].update(nthreads=0), "workers[0].nthreads: must be"),
    (lambda s: s["tasks"][1].update(key="x-0"), "tasks[1].key: duplicate key 'x-0'"),
    (lambda s: s["tasks"][1].update(duration=2.0), "tasks[1].duration: prefix 'x' has"),
    (lambda s: s["tasks"][1].update(state="executing"), "tasks[1].state: worker 'w0' has 1"),
    (lambda s: s["tasks"][0].update(colour="red"), "tasks[0].colour: unknown field"),
    (lambda s: s.update(bandwidth="fast"), "bandwidth: must be a positive number"),
])
def test_snapshot_errors_name_the_field(mutate: Any, field: str) -> None:
    snap = _snap([_task("x-0", "w0", "executing", deps=("d0",)), _task("x-1", "w0")],
                 data=[{"key": "d0", "nbytes": 10, "on": ["w0"]}])
    mutate(snap)
    with pytest.raises(SnapshotError) as e:
        balance_snapshot(snap)
    assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_cli_balance_prints_the_assignment(tmp_path: Any, capsys: Any) -> None:
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(_snap([_task("x-0", "w0"), _task("x-1", "w0")])))
    main(["balance", str(path), "--rounds", "2"])
    assert json.loads(capsys.readouterr().out) == {"w0": ["x-0"], "w1": ["x-1"]}


def test_a_snapshot_written_from_a_state_is_the_one_it_was_loaded_from() -> None:
    """``snapshot_of`` writes what ``load_snapshot`` reads: workers, queues in order,
    executing tasks, inputs with every holder, estimates."""
    data = [{"key": "d-0", "nbytes": 40 * MB, "on": ["w0", "w2"]},
            {"key": "e-0", "nbytes": 10, "on": ["w1"]}]
    snap = _snap([_task("x-0", "w0", "executing", deps=("d-0",)),
                  _task("y-0", "w0", duration=2.0, deps=("d-0", "e-0")),
                  _task("x-1", "w0"), _task("x-2", "w1"),
                  _task("z-0", "w2", "executing", duration=0.5)], workers=3, data=data)
    assert snapshot_of(load_snapshot(snap).state) == snap


def test_replay_writes_the_snapshot_at_a_moment_and_balance_reads_it(tmp_path: Any,
                                                                      run_cli: Any) -> None:
    from squall.scenarios.model import ClusterShape, Generated, Scenario
    from squall.scenarios.runner import run_scenario

    trace = tmp_path / "t.jsonl"
    sc = Scenario(workload=Generated(name="skewed-durations", tasks=60),
                  cluster=ClusterShape(workers=3, stealing=True))
    assert run_scenario(sc, trace=trace).ok
    tasks = {}
    for at in ("0", "0.5", "1000"):
        path = tmp_path / f"snap-{at}.json"
        code, out, err = run_cli(["replay", str(trace), "--snapshot", str(path), "--at", at])
        assert code == 0 and err == "" and f"written to {path}" in out
        snap = json.loads(path.read_text())
        tasks[at] = [t["key"] for t in snap["tasks"]]
        code, out, err = run_cli(["balance", str(path), "--rounds", "2"])
        assert code == 0 and err == ""
        assignment = json.loads(out)
        assert sorted(assignment) == ["w0", "w1", "w2"]
        assert sorted(k for keys in assignment.values() for k in keys) == sorted(tasks[at])
        if at == "0.5":  # the workers' heartbeats have said what runs
            assert any(t["state"] == "executing" for t in snap["tasks"])
    # all 60 assigned at the start, some done by 0.5 s, none left at the end
    assert len(tasks["0"]) == 60 > len(tasks["0.5"]) > 0 == len(tasks["1000"])


@pytest.mark.parametrize("argv, fragment", [
    (["--snapshot", "s.json"], "--snapshot FILE and --at SECONDS go together"),
    (["--at", "1"], "--snapshot FILE and --at SECONDS go together"),
    (["--snapshot", "s.json", "--at", "-1"], "--at must be a number of seconds >= 0"),
    (["--snapshot", "s.json", "--at", "nan"], "--at must be a number of seconds >= 0"),
    (["--snapshot", "no-dir/s.json", "--at", "1"], "cannot write snapshot 'no-dir/s.json'"),
])
def test_replay_snapshot_bad_options_are_one_line(tmp_path: Any, monkeypatch: Any,
                                                  run_cli: Any, argv: list[str],
                                                  fragment: str) -> None:
    from squall.scenarios.model import Generated, Scenario
    from squall.scenarios.runner import run_scenario

    monkeypatch.chdir(tmp_path)
    run_scenario(Scenario(workload=Generated(name="chain", tasks=3)), trace="t.jsonl")
    code, _, err = run_cli(["replay", "t.jsonl", *argv])
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("squall: error: ") and fragment in err


def test_a_snapshot_nested_too_deeply_is_one_line(tmp_path: Any, run_cli: Any) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"workers": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, _, err = run_cli(["balance", str(path)])
    assert code == 2 and err.count("\n") == 1 and "nested too deeply" in err


@pytest.mark.parametrize("content, fragment", [
    (None, "cannot read snapshot"),
    ("{not json", "is not valid JSON"),
    (json.dumps({"workers": [{"name": "w0"}], "tasks": [{"key": "x-0", "worker": "w1",
                                                         "state": "ready"}]}),
     "tasks[0].worker: unknown worker 'w1'"),
])
def test_cli_balance_bad_input_is_one_line(tmp_path: Any, capsys: Any, content: str | None,
                                           fragment: str) -> None:
    path = tmp_path / "snap.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as e:
        main(["balance", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("squall: error: ")
    assert fragment in err and str(path) in err


# ---------------------------------------------------------------------- in the simulator


def _watch_double_execution(cluster: SimCluster, sw: SimWorker, seen: list[str]) -> None:
    """Record any key whose body starts while another live worker still runs it."""

    def obs(wstate: WorkerState, wts: Any, start: str, finish: str, sid: str) -> None:
        if finish != "executing":
            return
        for other in cluster.workers.values():
            if other is not sw and other.alive:
                t = other.state.tasks.get(wts.key)
                if t is not None and t.state in ("executing", "cancelled"):
                    seen.append(f"{wts.key} on {sw.name} and {other.name}")

    sw.state.observers.append(obs)


def _watched(cluster: SimCluster, seen: list[str]) -> None:
    for sw in cluster.workers.values():
        _watch_double_execution(cluster, sw, seen)


def _join(cluster: SimCluster, seen: list[str], name: str | None = None) -> None:
    new = cluster.add_worker(name)
    _watch_double_execution(cluster, cluster.workers[new], seen)


def _rejoin(cluster: SimCluster, seen: list[str], name: str) -> None:
    """A new worker at the name of one just killed (unless it is alive again)."""
    if name not in cluster.workers:
        _join(cluster, seen, name)


def _settled(cluster: SimCluster) -> None:
    st = cluster.stealing
    assert st is not None
    assert st.in_flight == {} and st.orphans == {} and st.in_flight_occupancy == {}


def _joiner_cluster(seen: list[str], tasks: int = 40) -> tuple[SimCluster, TaskGraph]:
    """w0 has everything; w1 joins at 0.05 and steals at the 0.1 round (requests reach w0
    at 0.101, answers the scheduler at 0.102)."""
    c = SimCluster(workers=1, seed=0, stealing=True)
    _watched(c, seen)
    c.at(0.05, _join, c, seen)
    return c, independent(tasks, duration=0.05)


def test_sim_race_thief_died_before_the_answer() -> None:
    seen: list[str] = []
    c, g = _joiner_cluster(seen)
    c.at(0.1005, c.kill_worker, "w1")
    out = c.run(g)
    assert out.results_ok and not seen and not out.runs
    assert c.stealing is not None and c.stealing.stats["thief-gone"] >= 1
    _settled(c)


def test_sim_race_thief_replaced_at_the_same_name() -> None:
    seen: list[str] = []
    c, g = _joiner_cluster(seen)
    c.at(0.1003, c.kill_worker, "w1")
    c.at(0.1004, _join, c, seen, "w1")
    out = c.run(g)
    assert out.results_ok and not seen and not out.runs
    assert c.stealing is not None and c.stealing.stats["thief-gone"] >= 1
    assert out.busy["w1"] > 0  # the new w1 got work
    _settled(c)


def test_sim_race_victim_died_before_the_answer() -> None:
    seen: list[str] = []
    c, g = _joiner_cluster(seen)
    c.at(0.1005, c.kill_worker, "w0")
    out = c.run(g)
    assert out.results_ok and not seen
    assert c.stealing is not None and c.stealing.stats["victim-gone"] >= 1
    assert set(out.runs) <= {"task-0", "task-1"}  # at most what w0 was running
    _settled(c)


def test_sim_race_tasks_finished_before_the_answers() -> None:
    seen: list[str] = []
    c, g = _joiner_cluster(seen, tasks=12)
    # Requests sent at 0.1 reach w0 at 2.1, long after it ran its 0.6 s of work.
    c.at(0.09, lambda: c.set_link("scheduler", "w0", latency=2.0))
    out = c.run(g)
    assert out.results_ok and not seen and not out.runs
    st = c.stealing
    assert st is not None and st.stats["closed"] >= 1 and st.count == 0
    _settled(c)


def _chaotic_run(seed: int, totals: dict[str, int]) -> None:
    """Deaths, replacements and joins just after balancing rounds, over slow links (20 ms
    each way), so that they land between steal requests and their answers."""
    rng = random.Random(seed)
    seen: list[str] = []
    c = SimCluster(workers=3, seed=seed, stealing=True, latency=0.02, jitter=0.005)
    _watched(c, seen)
    killed = False
    for _ in range(5):
        t = rng.randrange(1, 15) * 0.1 + rng.uniform(0.0, 0.04)
        if rng.random() < 0.3:
            c.at(t, _join, c, seen)
        else:
            name = f"w{rng.randrange(4)}"
            killed = True
            c.at(t, c.kill_worker, name)
            if rng.random() < 0.5:
                c.at(t + 0.001, _rejoin, c, seen, name)
    c.at(0.0, _join, c, seen)  # w3, late by its link's latency
    graph = TaskGraph(TaskSpec(f"t{i % 4}-{i}", duration=0.05 * (1 + i % 4),
                               sim_duration=rng.uniform(0.01, 0.3)) for i in range(120))
    out = c.run(graph)
    assert out.results_ok, (seed, out.wrong)
    assert not seen, (seed, seen)
    if not killed:
        assert not out.runs
    _settled(c)
    assert c.stealing is not None
    for k, v in c.stealing.stats.items():
        totals[k] = totals.get(k, 0) + v


def test_sim_stealing_under_random_deaths_and_joins() -> None:
    totals: dict[str, int] = {}
    for seed in range(12):
        _chaotic_run(seed, totals)
    # Every outcome of the protocol happened at least once on the way.
    for outcome in ("moved", "refused", "thief-gone", "victim-gone", "closed", "stale"):
        assert totals.get(outcome, 0) > 0, (outcome, totals)


def test_sim_same_seed_same_digest_with_stealing() -> None:
    def run() -> str:
        c = SimCluster(workers=2, seed=3, stealing=True)
        c.at(0.3, c.add_worker)
        c.at(0.7, c.kill_worker, "w0")
        return c.run(independent(100, duration=0.05)).digest

    assert run() == run()


def test_sim_worker_joining_mid_run_gets_a_fair_share() -> None:
    c = SimCluster(workers=4, seed=0, stealing=True)
    done: dict[str, int] = {}
    half = 200 * 0.1 / 4 / 2

    def count(target: str, msg: Any) -> None:
        if isinstance(msg, p.ExecuteSuccess) and c.now > half:
            done[target] = done.get(target, 0) + 1

    c.recorders.append(count)
    c.at(half, c.add_worker)
    out = c.run(independent(200, duration=0.1))
    assert out.results_ok and not out.runs
    others = [n for w, n in done.items() if w != "w4"]
    share = done.get("w4", 0) / (sum(others) / len(others))
    assert 0.7 <= share <= 1.3, (done, share)


def test_sim_unknown_duration_tasks_are_stolen_before_any_finishes() -> None:
    # No hints: the estimate is the default until a task finishes (the first at 3 s).
    g = TaskGraph(TaskSpec(f"long-{i}", sim_duration=3.0 + i % 3) for i in range(8))
    c = SimCluster(workers=1, seed=0, stealing=True)
    c.at(0.2, c.add_worker)
    first_steal: list[float] = []

    def note(target: str, msg: Any) -> None:
        if isinstance(msg, p.StealRequest) and not first_steal:
            first_steal.append(c.now)

    c.recorders.append(note)
    out = c.run(g)
    assert out.results_ok and out.steals >= 2
    assert first_steal and first_steal[0] < 3.0
    alone = SimCluster(workers=1, seed=0).run(g)
    assert out.makespan < 0.7 * alone.makespan


def test_sim_trivial_tasks_with_a_shared_input_are_not_churned() -> None:
    g = TaskGraph([TaskSpec("input-0", duration=0.01, nbytes=1 << 20)]
                  + [TaskSpec(f"tiny-{i}", deps=("input-0",), duration=0.001,
                              sim_duration=0.001 * (0.5 + (i % 11) / 10)) for i in range(1000)])
    for late in (False, True):
        c = SimCluster(workers=2 if late else 4, seed=0, stealing=True)
        if late:
            c.at(0.02, c.add_worker)
            c.at(0.02, c.add_worker)
        out = c.run(g)
        assert out.results_ok
        assert out.steals <= 0.01 * 1000


def test_sim_a_surprisingly_long_task_lets_the_work_behind_it_be_stolen() -> None:
    # w0 runs slow-0 (hinted 0.1 s, really 10 s) with q-0 queued behind it; q-0's input
    # is on w0 and takes 0.5 s to move, which the 0.1 s estimate does not justify. The
    # heartbeats correct the estimate while slow-0 runs, and q-0 is stolen.
    def run(heartbeats: bool) -> tuple[float, str]:
        g = TaskGraph([
            TaskSpec("big-0", duration=0.01, nbytes=50 * MB, restrictions=("w0",)),
            TaskSpec("slow-0", duration=0.1, sim_duration=10.0, restrictions=("w0",)),
            TaskSpec("q-0", deps=("big-0",), duration=0.1),
        ])
        c = SimCluster(workers=2, seed=0, stealing=True,
                       heartbeat_interval=0.5 if heartbeats else None)
        finished: dict[str, tuple[float, str]] = {}

        def note(target: str, msg: Any) -> None:
            if isinstance(msg, p.ExecuteSuccess):
                finished[msg.key] = (c.now, target)

        c.recorders.append(note)
        assert c.run(g).results_ok
        return finished["q-0"]

    when, where = run(heartbeats=True)
    assert where == "w1" and when < 3.0
    when, where = run(heartbeats=False)
    assert where == "w0" and when > 10.0


def test_sim_wrong_estimates_makespan_close_to_the_bound() -> None:
    rng = random.Random(1)
    g = TaskGraph()
    i = 0
    for name, factor in (("over", 10.0), ("under", 0.1), ("right", 1.0)):
        mean = rng.uniform(0.05, 0.2)
        for _ in range(200):
            g.add_spec(TaskSpec(f"{name}-{i}", duration=mean * factor,
                                sim_duration=rng.expovariate(1 / mean)))
            i += 1
    total = sum(s.actual_duration for s in g)
    bound = max(total / 8, max(s.actual_duration for s in g))
    on = SimCluster(workers=8, seed=0, stealing=True).run(g)
    off = SimCluster(workers=8, seed=0).run(g)
    assert on.results_ok and off.results_ok
    assert on.makespan / bound <= 1.3
    assert on.makespan < off.makespan
