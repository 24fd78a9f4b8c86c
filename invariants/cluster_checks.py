"""Invariants that need the scheduler and its workers together: agreement at quiescence,
liveness, and end to end.

Each check is ``fn(cv)`` where ``cv`` is the cluster-bound Validator: ``cv.state`` the
SchedulerState, ``cv.worker_states()`` the live workers' WorkerStates by name,
``cv.store(name)`` a worker's store of values (or None) and ``cv.cluster`` the runtime
(SimCluster, or a replay of one). A check returns None or ``(entity, detail)``.

Quiescent means nothing is in flight: no message, no transfer, no task body running. At
that moment a task that is not finished can only be waiting for a worker to exist.
"""

from __future__ import annotations

from typing import Any

from squall.core.oracle import error_problem
from squall.core.scheduler import SchedulerTaskState, WorkerStatus
from squall.core.worker import WorkerTaskState
from squall.invariants.base import (
    CLUSTER,
    END,
    END_TO_END,
    INCREMENTAL,
    LIVENESS,
    QUIESCENT,
    Invariant,
    registrar,
)

QUIESCENT_INVARIANTS: list[Invariant] = []
LIVENESS_INVARIANTS: list[Invariant] = []
END_INVARIANTS: list[Invariant] = []
cluster_invariant = registrar(QUIESCENT_INVARIANTS, CLUSTER)
liveness_invariant = registrar(LIVENESS_INVARIANTS, LIVENESS)
end_invariant = registrar(END_INVARIANTS, END_TO_END)

IN_PLAY = (SchedulerTaskState.WAITING, SchedulerTaskState.PROCESSING, SchedulerTaskState.NO_WORKER)
Found = tuple[str, str] | None


def _keys(keys: list[str], n: int = 5) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return f"{keys[:n]}{more}"


# ---------------------------------------------------------------- agreement at quiescence


@cluster_invariant("cluster.memory-agrees",
                   "at quiescence, each live worker holds in memory exactly what the scheduler "
                   "believes it holds", scope=QUIESCENT)
def memory_agrees(cv: Any) -> Found:
    machines = cv.worker_states()
    for name, ws in cv.state.workers.items():
        wst = machines.get(name)
        if wst is None:
            continue
        believed = {ts.key for ts in ws.has_what}
        held = {k for k, wt in wst.tasks.items() if wt.state == WorkerTaskState.MEMORY}
        if believed != held:
            lost = sorted(believed - held)
            extra = sorted(held - believed)
            return (f"worker {name!r}", f"the scheduler believes it holds {_keys(lost)} which "
                    f"it does not; it holds {_keys(extra)} the scheduler does not know of")
    return None


@cluster_invariant("cluster.wants-agree",
                   "at quiescence, the scheduler's clients of each key (who_wants) are the "
                   "clients that want it: every release and every request has been applied",
                   scope=QUIESCENT)
def wants_agree(cv: Any) -> Found:
    wanted_by = getattr(cv.cluster, "wanted_by", None)
    if wanted_by is None:
        return None  # a runtime that does not keep clients apart
    tasks = cv.state.tasks
    for key, ts in tasks.items():
        have = set(ts.who_wants)
        want = wanted_by.get(key, set())
        if have != want:
            return (f"task {key!r}", f"the scheduler has it wanted by {sorted(have)}, the "
                    f"clients that want it are {sorted(want)}")
    for key, clients in wanted_by.items():
        if clients and key not in tasks:
            return (f"task {key!r}", f"wanted by {sorted(clients)}, unknown to the scheduler")
    return None


# ---------------------------------------------------------------- liveness


@liveness_invariant("liveness.processing-task-runs",
                    "at quiescence, no task is processing: a processing task always has a "
                    "worker running it or a message on its way", scope=QUIESCENT)
def processing_task_runs(cv: Any) -> Found:
    stuck = [ts for ts in cv.state.tasks.values() if ts.state == SchedulerTaskState.PROCESSING]
    if not stuck:
        return None
    ts = stuck[0]
    ws = ts.processing_on
    name = ws.name if ws is not None else "?"
    wst = cv.worker_states().get(name)
    wt = wst.tasks.get(ts.key) if wst is not None else None
    view = ("is not alive" if wst is None else "has no record of it" if wt is None
            else f"has it {wt.state}")
    return (f"task {ts.key!r}", f"stuck processing on {name!r}, which {view}; "
            f"stuck processing: {_keys([t.key for t in stuck])}")


@liveness_invariant("liveness.waiting-task-progresses",
                    "at quiescence, every waiting task waits only on tasks that are themselves "
                    "waiting, processing or in no-worker", scope=QUIESCENT)
def waiting_task_progresses(cv: Any) -> Found:
    for ts in cv.state.tasks.values():
        if ts.state != SchedulerTaskState.WAITING:
            continue
        dead_ends = [d for d in ts.waiting_on if d.state not in IN_PLAY]
        if dead_ends:
            d = dead_ends[0]
            return (f"task {ts.key!r}", f"stuck waiting on {d.key!r}, which is {d.state} and "
                    "will not be computed")
    return None


@liveness_invariant("liveness.worker-tasks-settled",
                    "at quiescence, a member worker's tasks are all in memory: nothing is "
                    "left to run, fetch or find", scope=QUIESCENT)
def worker_tasks_settled(cv: Any) -> Found:
    """A worker the scheduler removed (declared dead, or replaced) is no member: nothing
    it holds is the cluster's any more, and it is closed, tasks and all, when it next
    reaches the scheduler. At quiescence such a worker is one that cannot hear the
    scheduler (a "close" on its way is not quiescence): cut off, it holds what it held
    when the link went down, and that is not stuck work."""
    members = cv.state.workers
    for name, wst in cv.worker_states().items():
        record = members.get(name)
        if record is None or record.status == WorkerStatus.DEAD:
            continue
        stuck = [wt for wt in wst.tasks.values() if wt.state != WorkerTaskState.MEMORY]
        if stuck:
            wt = stuck[0]
            return (f"worker {name!r}, task {wt.key!r}",
                    f"stuck {wt.state} on {name!r}: {_keys([t.key for t in stuck])}")
    return None


@liveness_invariant("liveness.wanted-key-reported",
                    "at quiescence, every wanted key without a result is still being worked on",
                    scope=QUIESCENT)
def wanted_key_reported(cv: Any) -> Found:
    results = getattr(cv.cluster, "results", None)
    if results is None:
        return None
    tasks = cv.state.tasks
    for key in sorted(cv.wanted() - results.keys()):
        ts = tasks.get(key)
        if ts is None or ts.state not in IN_PLAY:
            where = "forgotten" if ts is None else ts.state
            return (f"task {key!r}", f"wanted, no result reported, and {where} on the "
                    "scheduler")
    return None


# ---------------------------------------------------------------- end to end


@end_invariant("e2e.every-key-resolved",
               "every submitted key ends with a result or a reported error", scope=END)
def every_key_resolved(cv: Any) -> Found:
    results = cv.cluster.results
    missing = sorted(k for k in cv.wanted() if k not in results)
    if not missing:
        return None
    return (f"task {missing[0]!r}", f"no result for {len(missing)} key(s): {_keys(missing)}")


@end_invariant("e2e.no-result-lost",
               "every key reported in memory is still held by a live worker at the end",
               scope=END)
def no_result_lost(cv: Any) -> Found:
    tasks = cv.state.tasks
    for key, (kind, _) in cv.cluster.results.items():
        if kind != "memory":
            continue
        ts = tasks.get(key)
        if ts is None or ts.state != SchedulerTaskState.MEMORY:
            return (f"task {key!r}", "reported in memory, but now "
                    f"{'forgotten' if ts is None else ts.state} on the scheduler")
        held = [ws.name for ws in ts.who_has if cv.holds(ws.name, key)]
        if not held:
            return (f"task {key!r}", f"reported in memory; the scheduler lists "
                    f"{[w.name for w in ts.who_has]} but none of them has the value")
    return None


@end_invariant("e2e.result-correct",
               "every key whose computation succeeds ends in memory with the value a "
               "sequential evaluation gives", scope=END)
def result_correct(cv: Any) -> Found:
    expected = cv.expected()
    tasks = cv.state.tasks
    for key, (kind, _) in cv.cluster.results.items():
        want = expected.get(key)
        if kind != "memory" or isinstance(want, str):
            continue
        ts = tasks.get(key)
        for ws in ts.who_has if ts is not None else ():
            store = cv.store(ws.name)
            if store is not None and key in store and store[key] != want:
                return (f"task {key!r}", f"{ws.name!r} holds {store[key]!r}, a sequential "
                        f"evaluation gives {want!r}")
    return None


@end_invariant("e2e.error-correct",
               "a key whose computation raises is reported erred, blamed on a task upstream "
               "of it that raised; any other error is a KilledWorker", scope=END)
def error_correct(cv: Any) -> Found:
    expected = cv.expected()
    tasks = cv.state.tasks
    graph = cv.cluster.graph
    for key, (kind, value) in cv.cluster.results.items():
        want = expected.get(key)
        if kind != "erred":
            if isinstance(want, str):
                return (f"task {key!r}", f"should raise ({want}) but was reported {kind}")
            continue
        blame = str(value).removeprefix("error:")
        blamed = tasks.get(blame)
        # a task given up after its workers died (KilledWorker) explains it too
        killed = blamed is not None and blamed.state == SchedulerTaskState.ERRED and (
            blamed.exception or "").startswith("KilledWorker")
        problem = error_problem(graph, key, blame, want, killed=killed)
        if problem is not None:
            return (f"task {key!r}", problem)
    return None


@end_invariant("e2e.no-duplicate-run",
               "no task body runs twice, unless a worker died (or was removed) between the "
               "two runs being handed out", scope=INCREMENTAL)
def no_duplicate_run(cv: Any) -> Found:
    runs = getattr(cv.cluster, "runs", None) or {}
    for key, n in runs.items():
        allowed = 1 + cv.legit_reruns.get(key, 0)
        if n > allowed:
            return (f"task {key!r}", f"its body ran {n} times, {allowed} accounted for by "
                    "worker deaths")
    return None
