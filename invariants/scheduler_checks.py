"""Invariants of the scheduler's state: its tasks, its records of workers, its collections.

Task checks are ``fn(v, ts)``, worker checks ``fn(v, ws, ledger)`` and cluster checks
``fn(v, workers)``, where ``v`` is the SchedulerValidator (``v.state`` the
SchedulerState) and ``ledger`` the validator's own recount of what the tasks say about
that worker (see validator.WorkerLedger). Each returns None, or a detail string.
"""

from __future__ import annotations

from typing import Any

from squall.core.scheduler import TASK_STATES, SchedulerState, SchedulerTaskState, WorkerStatus
from squall.invariants.base import CLUSTER, FULL, TASK, WORKER, Invariant, registrar

TASK_INVARIANTS: list[Invariant] = []
TRANSITION_INVARIANTS: list[Invariant] = []  # fn(v, ts, start, finish, stimulus_id), per move
WORKER_INVARIANTS: list[Invariant] = []
CLUSTER_INVARIANTS: list[Invariant] = []
task_invariant = registrar(TASK_INVARIANTS, TASK)
transition_invariant = registrar(TRANSITION_INVARIANTS, TASK)
# Worker "states" are its statuses: most invariants are about live workers.
WORKER_LIVE = (WorkerStatus.RUNNING, WorkerStatus.PAUSED, WorkerStatus.CLOSING)
worker_invariant = registrar(WORKER_INVARIANTS, WORKER, WORKER_LIVE)
cluster_invariant = registrar(CLUSTER_INVARIANTS, CLUSTER)

# states of a task that still needs its inputs
IN_PLAY = (SchedulerTaskState.WAITING, SchedulerTaskState.PROCESSING, SchedulerTaskState.NO_WORKER)
LIVE_STATES = tuple(s for s in TASK_STATES if s != SchedulerTaskState.FORGOTTEN)
REL_TOL = 1e-9


def _keys(tasks: Any, n: int = 5) -> str:
    keys = [t.key for t in tasks]
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return f"{keys[:n]}{more}"


def _live(v: Any, ws: Any) -> bool:
    """``ws`` is the current record of its name and not dead."""
    return v.state.workers.get(ws.name) is ws and ws.status != WorkerStatus.DEAD


# ---------------------------------------------------------------- task: each transition

# processing -> processing: a steal's confirm moves a task to another worker
# (SchedulerState.move_processing).
ALLOWED = frozenset(SchedulerState.TRANSITIONS) | {
    (SchedulerTaskState.PROCESSING, SchedulerTaskState.PROCESSING)}


@transition_invariant("task.transition-allowed",
                      "a task moves only along the scheduler's transition table")
def transition_allowed(v: Any, ts: Any, start: str, finish: str, sid: str) -> str | None:
    return None if (start, finish) in ALLOWED else f"moved {start} -> {finish}"


@transition_invariant("task.transition-has-stimulus-id",
                      "every transition carries the id of the stimulus that caused it")
def transition_has_stimulus_id(v: Any, ts: Any, start: str, finish: str,
                               sid: str) -> str | None:
    return None if sid else f"moved {start} -> {finish} with an empty stimulus id"


# ---------------------------------------------------------------- task: state and registration


@task_invariant("task.known-state",
                "a task's state is released, waiting, no-worker, processing, memory, erred "
                "or forgotten", known_state=True)
def known_state(v: Any, ts: Any) -> str | None:
    return None if ts.state in TASK_STATES else f"state is {ts.state!r}"


@task_invariant("task.registered-unless-forgotten",
                "a task is the record registered under its key exactly when it is not forgotten")
def registered_unless_forgotten(v: Any, ts: Any) -> str | None:
    registered = v.state.tasks.get(ts.key) is ts
    if registered == (ts.state != SchedulerTaskState.FORGOTTEN):
        return None
    if registered:
        return "forgotten but still registered"
    return f"in state {ts.state} but not registered under its key"


@task_invariant("task.wanted-not-forgotten",
                "a task a client still wants is never forgotten",
                states=(SchedulerTaskState.FORGOTTEN,))
def wanted_not_forgotten(v: Any, ts: Any) -> str | None:
    return f"forgotten while wanted by {list(ts.who_wants)}" if ts.who_wants else None


# ---------------------------------------------------------------- task: processing


@task_invariant("task.processing-on-iff-processing",
                "a task has a worker assigned (processing_on) exactly when it is processing",
                states=LIVE_STATES)
def processing_on_iff_processing(v: Any, ts: Any) -> str | None:
    if (ts.processing_on is not None) == (ts.state == SchedulerTaskState.PROCESSING):
        return None
    if ts.processing_on is None:
        return "processing, but processing_on is None"
    return f"in state {ts.state} but processing_on is {ts.processing_on.name!r}"


@task_invariant("task.processing-on-one-worker",
                "a processing task sits in the processing set of the worker it is assigned to",
                states=(SchedulerTaskState.PROCESSING,))
def processing_on_one_worker(v: Any, ts: Any) -> str | None:
    ws = ts.processing_on
    if ws is None or ts in ws.processing:
        return None
    return f"processing on {ws.name!r}, which does not list it in its processing set"


@task_invariant("task.processing-worker-running",
                "a processing task is assigned to the live, running record of its worker "
                "(never a dead or replaced one)", states=(SchedulerTaskState.PROCESSING,))
def processing_worker_running(v: Any, ts: Any) -> str | None:
    ws = ts.processing_on
    if ws is None:
        return None
    current = v.state.workers.get(ws.name)
    if current is ws and ws.status != WorkerStatus.DEAD and ws in v.state.running:
        return None
    if current is None:
        return f"processing on {ws!r}, which the scheduler no longer knows"
    if current is not ws:
        return f"processing on a stale record {ws!r}; the live one is {current!r}"
    return f"processing on {ws!r}, which is not running"


# ---------------------------------------------------------------- task: memory


@task_invariant("task.who-has-iff-memory",
                "a task has holders (who_has) exactly when it is in memory", states=LIVE_STATES)
def who_has_iff_memory(v: Any, ts: Any) -> str | None:
    if bool(ts.who_has) == (ts.state == SchedulerTaskState.MEMORY):
        return None
    if ts.who_has:
        return f"in state {ts.state} but held by {[w.name for w in ts.who_has]}"
    return "in memory but held by no worker"


@task_invariant("task.holders-record-it",
                "every worker holding a task lists it in its has_what",
                states=(SchedulerTaskState.MEMORY,))
def holders_record_it(v: Any, ts: Any) -> str | None:
    for ws in ts.who_has:
        if ts not in ws.has_what:
            return f"held by {ws.name!r}, whose has_what does not list it"
    return None


@task_invariant("task.holders-live", "every holder of a task is a live worker record",
                states=(SchedulerTaskState.MEMORY,))
def holders_live(v: Any, ts: Any) -> str | None:
    for ws in ts.who_has:
        if not _live(v, ws):
            return f"held by {ws!r}, which is dead or replaced"
    return None


@task_invariant("task.nbytes-known-in-memory",
                "a task in memory has a known size (nbytes >= 0)",
                states=(SchedulerTaskState.MEMORY,))
def nbytes_known_in_memory(v: Any, ts: Any) -> str | None:
    return None if ts.nbytes >= 0 else f"in memory with nbytes={ts.nbytes}"


@task_invariant("task.memory-needed",
                "a task in memory is wanted by a client or needed by a dependent",
                states=(SchedulerTaskState.MEMORY,), neighbours=True)
def memory_needed(v: Any, ts: Any) -> str | None:
    if ts.who_wants or ts.waiters:
        return None
    return "in memory but no client wants it and no dependent waits for it"


@task_invariant("task.memory-not-waited-on",
                "a task in memory is in no dependent's waiting_on",
                states=(SchedulerTaskState.MEMORY,), neighbours=True)
def memory_not_waited_on(v: Any, ts: Any) -> str | None:
    for d in ts.dependents:
        if ts in d.waiting_on:
            return f"dependent {d.key!r} still waits on it"
    return None


# ---------------------------------------------------------------- task: dependencies


@task_invariant("task.waiting-on-subset",
                "waiting_on is a subset of the task's dependencies",
                states=LIVE_STATES, neighbours=True)
def waiting_on_subset(v: Any, ts: Any) -> str | None:
    deps = ts.dependencies
    for d in ts.waiting_on:
        if d not in deps:
            return f"waits on {d.key!r}, which is not a dependency"
    return None


@task_invariant("task.waiting-on-only-when-waiting",
                "only a waiting task waits on dependencies (waiting_on is empty otherwise)",
                states=(SchedulerTaskState.RELEASED, SchedulerTaskState.NO_WORKER,
                        SchedulerTaskState.PROCESSING, SchedulerTaskState.MEMORY,
                        SchedulerTaskState.ERRED), neighbours=True)
def waiting_on_only_when_waiting(v: Any, ts: Any) -> str | None:
    if not ts.waiting_on:
        return None
    return f"in state {ts.state} but waiting on {_keys(ts.waiting_on)}"


@task_invariant("task.waiting-on-exact",
                "a waiting task waits on exactly those of its dependencies not in memory",
                states=(SchedulerTaskState.WAITING,), neighbours=True)
def waiting_on_exact(v: Any, ts: Any) -> str | None:
    waiting_on = ts.waiting_on
    for d in ts.dependencies:
        if (d.state != SchedulerTaskState.MEMORY) != (d in waiting_on):
            if d in waiting_on:
                return f"waits on {d.key!r}, which is in memory"
            return f"does not wait on {d.key!r}, which is {d.state}"
    return None


@task_invariant("task.waiting-waits-on-something",
                "a waiting task has a dependency not yet in memory (else it would be placed)",
                states=(SchedulerTaskState.WAITING,), neighbours=True)
def waiting_waits_on_something(v: Any, ts: Any) -> str | None:
    return None if ts.waiting_on else "waiting, but on nothing"


@task_invariant("task.inputs-in-memory",
                "a processing or no-worker task has every dependency in memory",
                states=(SchedulerTaskState.PROCESSING, SchedulerTaskState.NO_WORKER),
                neighbours=True)
def inputs_in_memory(v: Any, ts: Any) -> str | None:
    for d in ts.dependencies:
        if d.state != SchedulerTaskState.MEMORY:
            return f"{ts.state}, but its dependency {d.key!r} is {d.state}"
    return None


@task_invariant("task.links-symmetric",
                "dependency and dependent links are symmetric", states=LIVE_STATES, neighbours=True)
def links_symmetric(v: Any, ts: Any) -> str | None:
    for d in ts.dependencies:
        if ts not in d.dependents:
            return f"depends on {d.key!r}, which does not list it as a dependent"
    for d in ts.dependents:
        if ts not in d.dependencies:
            return f"lists {d.key!r} as a dependent, which does not depend on it"
    return None


@task_invariant("task.dependency-not-forgotten",
                "no dependency of a task is forgotten while the task exists",
                states=LIVE_STATES, neighbours=True)
def dependency_not_forgotten(v: Any, ts: Any) -> str | None:
    tasks = v.state.tasks
    for d in ts.dependencies:
        if d.state == SchedulerTaskState.FORGOTTEN or tasks.get(d.key) is not d:
            return f"depends on {d.key!r}, which is forgotten"
    first = v.deps_seen.setdefault(ts, len(ts.dependencies))
    if len(ts.dependencies) != first:
        return (f"had {first} dependencies, now {len(ts.dependencies)}: one was forgotten "
                "while this task needed it")
    return None


@task_invariant("task.waiters-subset", "a task's waiters are among its dependents",
                states=LIVE_STATES, neighbours=True)
def waiters_subset(v: Any, ts: Any) -> str | None:
    dependents = ts.dependents
    for d in ts.waiters:
        if d not in dependents:
            return f"waiter {d.key!r} is not a dependent"
    return None


@task_invariant("task.waiters-in-play",
                "every waiter of a task is waiting, processing or no-worker",
                states=LIVE_STATES, neighbours=True)
def waiters_in_play(v: Any, ts: Any) -> str | None:
    for d in ts.waiters:
        if d.state not in IN_PLAY:
            return f"waiter {d.key!r} is {d.state}"
    return None


@task_invariant("task.in-play-dependents-wait",
                "every dependent that is waiting, processing or no-worker is a waiter",
                states=LIVE_STATES, neighbours=True)
def in_play_dependents_wait(v: Any, ts: Any) -> str | None:
    waiters = ts.waiters
    for d in ts.dependents:
        if d.state in IN_PLAY and d not in waiters:
            return f"dependent {d.key!r} is {d.state} but not a waiter"
    return None


# ---------------------------------------------------------------- task: no-worker, erred


@task_invariant("task.unrunnable-iff-no-worker",
                "a task is in the unrunnable set exactly when it is in no-worker",
                states=LIVE_STATES)
def unrunnable_iff_no_worker(v: Any, ts: Any) -> str | None:
    listed = ts in v.state.unrunnable
    if listed == (ts.state == SchedulerTaskState.NO_WORKER):
        return None
    return f"in state {ts.state} but {'' if listed else 'not '}in the unrunnable set"


@task_invariant("task.no-worker-unplaceable",
                "a task is in no-worker only while no running worker may run it",
                states=(SchedulerTaskState.NO_WORKER,))
def no_worker_unplaceable(v: Any, ts: Any) -> str | None:
    state = v.state
    if ts.restrictions:
        ok = [n for n in ts.restrictions if state.workers.get(n) in state.running]
        return f"in no-worker though allowed worker(s) {ok} are running" if ok else None
    if state.running:
        return f"in no-worker though {len(state.running)} worker(s) are running"
    return None


@task_invariant("task.blame-iff-erred",
                "a task has an error blamed on some task exactly when it is erred",
                states=LIVE_STATES)
def blame_iff_erred(v: Any, ts: Any) -> str | None:
    if (ts.exception_blame is not None) == (ts.state == SchedulerTaskState.ERRED):
        return None
    if ts.state == SchedulerTaskState.ERRED:
        return "erred, but no task is blamed"
    return f"in state {ts.state} with an error blamed on {ts.exception_blame!r}"


@task_invariant("task.estimate-fresh",
                "the duration estimate kept for a task's prefix (what placement, occupancy "
                "and stealing read) equals its recomputation from what was measured, "
                "hinted and skewed", scope=FULL)
def estimate_fresh(v: Any, ts: Any) -> str | None:
    estimator = v.state.estimator
    fresh = getattr(estimator, "fresh", None)
    kept = getattr(estimator, "durations", {}).get(ts.prefix)
    if fresh is None or kept is None:
        return None  # an estimator that keeps nothing, or nothing yet for this prefix
    want = fresh(ts.prefix)
    if abs(kept - want) <= REL_TOL * max(1.0, abs(want)):
        return None
    return f"estimate of prefix {ts.prefix!r} kept as {kept!r} s, recomputed {want!r} s"


@task_invariant("task.retries-within-limit",
                "a task whose workers died under it more than allowed_failures times is not "
                "run again: it is erred (KilledWorker)",
                states=(SchedulerTaskState.WAITING, SchedulerTaskState.NO_WORKER,
                        SchedulerTaskState.PROCESSING, SchedulerTaskState.MEMORY))
def retries_within_limit(v: Any, ts: Any) -> str | None:
    # (A client submitting an erred key anew would start it over; the simulator never does.)
    limit = v.state.allowed_failures
    if ts.suspicious <= limit:
        return None
    return (f"{ts.state} after {ts.suspicious} deaths of workers running it "
            f"(allowed_failures={limit})")


@task_invariant("task.killed-past-limit",
                "a task is given up because its workers died (KilledWorker) only after they "
                "died under it more than allowed_failures times",
                states=(SchedulerTaskState.ERRED,))
def killed_past_limit(v: Any, ts: Any) -> str | None:
    if ts.exception_blame != ts.key or not ts.killed:
        return None
    limit = v.state.allowed_failures
    if ts.suspicious > limit:
        return None
    return (f"given up (KilledWorker) after {ts.suspicious} deaths of workers running it "
            f"(allowed_failures={limit})")


# ---------------------------------------------------------------- the scheduler's view of a worker


@worker_invariant("worker.live-record",
                  "a worker in the workers map is the live record of its name, in running "
                  "exactly when its status is running")
def live_record(v: Any, ws: Any, ledger: Any) -> str | None:
    state = v.state
    if state.workers.get(ws.name) is not ws:
        return f"{ws!r} is not the record registered under {ws.name!r}"
    if ws.status == WorkerStatus.DEAD:
        return f"{ws!r} is registered but dead"
    if (ws in state.running) != (ws.status == WorkerStatus.RUNNING):
        return f"status {ws.status} but {'' if ws in state.running else 'not '}in running"
    return None


@worker_invariant("worker.has-what-mirrors-who-has",
                  "a worker's has_what lists exactly the tasks whose who_has names it")
def has_what_mirrors_who_has(v: Any, ws: Any, ledger: Any) -> str | None:
    if len(ws.has_what) == ledger.n_has:
        return None
    strays = [t for t in ws.has_what if ws not in t.who_has][:5]
    return (f"has_what lists {len(ws.has_what)} tasks, {ledger.n_has} tasks name it in "
            f"who_has; listed but not held: {_keys(strays)}")


@worker_invariant("worker.nbytes-sum",
                  "a worker's stored bytes equal the sum of the sizes of the tasks it holds")
def nbytes_sum(v: Any, ws: Any, ledger: Any) -> str | None:
    if ws.nbytes == ledger.nbytes:
        return None
    return f"nbytes={ws.nbytes}, but the tasks it holds add up to {ledger.nbytes}"


@worker_invariant("worker.processing-mirrors-tasks",
                  "a worker's processing set holds exactly the tasks processing on it")
def processing_mirrors_tasks(v: Any, ws: Any, ledger: Any) -> str | None:
    if len(ws.processing) == ledger.n_proc:
        return None
    strays = [t for t in ws.processing if t.processing_on is not ws][:5]
    return (f"processing set has {len(ws.processing)} tasks, {ledger.n_proc} tasks are "
            f"processing on it; listed but assigned elsewhere: {_keys(strays)}")


@worker_invariant("worker.prefix-counts",
                  "a worker's per-prefix task counts equal a recount of its processing tasks")
def prefix_counts(v: Any, ws: Any, ledger: Any) -> str | None:
    if ws.prefix_counts == ledger.prefix:
        return None
    return f"prefix_counts={dict(ws.prefix_counts)}, recount={dict(ledger.prefix)}"


@worker_invariant("worker.needs-recount",
                  "the inputs a worker must fetch (needs) equal a recount over its "
                  "processing tasks")
def needs_recount(v: Any, ws: Any, ledger: Any) -> str | None:
    if ws.needs == ledger.need_count:
        return None
    have = {t.key: n for t, n in ws.needs.items()}
    want = {t.key: n for t, n in ledger.need_count.items()}
    diff = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))[:5]
    return f"needs differ from a recount for {diff}: " + ", ".join(
        f"{k}: {have.get(k, 0)} vs {want.get(k, 0)}" for k in diff)


@worker_invariant("worker.fetch-bytes-sum",
                  "the bytes a worker must fetch equal the sum of the sizes of its needs")
def fetch_bytes_sum(v: Any, ws: Any, ledger: Any) -> str | None:
    if ws.fetch_bytes == ledger.fetch:
        return None
    return f"fetch_bytes={ws.fetch_bytes}, but its needs add up to {ledger.fetch}"


@worker_invariant("worker.occupancy-fresh",
                  "a worker's occupancy equals a fresh recomputation from its processing tasks")
def occupancy_fresh(v: Any, ws: Any, ledger: Any) -> str | None:
    state = v.state
    duration = state.estimator.duration
    fresh = sum(n * duration(p) for p, n in ledger.prefix.items())
    fresh += ledger.fetch / (ws.bandwidth or state.bandwidth)
    got = state.occupancy(ws)
    if abs(got - fresh) <= REL_TOL * max(1.0, abs(fresh)):
        return None
    return f"occupancy {got!r}, recomputed {fresh!r}"


@worker_invariant("worker.remembered-occupancy-fresh",
                  "the occupancy per thread placement remembers for a worker (and would use "
                  "without recomputing it) equals its recomputation")
def remembered_occupancy_fresh(v: Any, ws: Any, ledger: Any) -> str | None:
    remembered = getattr(v.state, "remembered_occupancy", None)
    kept = None if remembered is None else remembered(ws)
    if kept is None:
        return None
    fresh = v.state.occupancy(ws) / ws.nthreads
    if abs(kept - fresh) <= REL_TOL * max(1.0, abs(fresh)):
        return None
    return f"placement remembers {kept!r} s per thread, recomputed {fresh!r} s"


@worker_invariant("worker.occupancy-non-negative",
                  "a worker's occupancy, bytes to fetch and stored bytes are never negative")
def occupancy_non_negative(v: Any, ws: Any, ledger: Any) -> str | None:
    occ = v.state.occupancy(ws)
    if occ >= 0 and ws.fetch_bytes >= 0 and ws.nbytes >= 0:
        return None
    return f"occupancy={occ!r}, fetch_bytes={ws.fetch_bytes}, nbytes={ws.nbytes}"


@worker_invariant("worker.idleness-by-load",
                  "a running worker is idle exactly when it has fewer tasks than threads, "
                  "saturated exactly when it has more")
def idleness_by_load(v: Any, ws: Any, ledger: Any) -> str | None:
    state = v.state
    n = len(ws.processing)
    idle, saturated = ws in state.idle, ws in state.saturated
    if ws.status == WorkerStatus.RUNNING:
        if idle == (n < ws.nthreads) and saturated == (n > ws.nthreads):
            return None
    elif not idle and not saturated:
        return None
    return (f"{ws.status}, {n} task(s) on {ws.nthreads} thread(s), idle={idle}, "
            f"saturated={saturated}")


@worker_invariant("worker.dead-holds-nothing",
                  "a removed worker processes nothing and holds nothing",
                  states=(WorkerStatus.DEAD,))
def dead_holds_nothing(v: Any, ws: Any, ledger: Any) -> str | None:
    if not ws.processing and not ws.has_what:
        return None
    return (f"dead, yet processing {_keys(ws.processing)} and holding "
            f"{_keys(ws.has_what)}")


# ---------------------------------------------------------------- cluster-wide collections


@cluster_invariant("cluster.idle-saturated-running",
                   "idle and saturated are disjoint subsets of the running workers")
def idle_saturated_running(v: Any, workers: Any) -> str | None:
    state = v.state
    for ws in workers:
        idle, saturated = ws in state.idle, ws in state.saturated
        if idle and saturated:
            return f"{ws!r} is both idle and saturated"
        if (idle or saturated) and ws not in state.running:
            return f"{ws!r} is {'idle' if idle else 'saturated'} but not running"
    return None


@cluster_invariant("cluster.running-registered",
                   "every running worker is a registered, live worker with status running")
def running_registered(v: Any, workers: Any) -> str | None:
    state = v.state
    for ws in workers:
        if ws in state.running and (state.workers.get(ws.name) is not ws
                                    or ws.status != WorkerStatus.RUNNING):
            return f"{ws!r} is in running but is not a live running record"
    if len(state.running) > len(state.workers):
        return f"{len(state.running)} running workers but {len(state.workers)} registered"
    return None


@cluster_invariant("cluster.unrunnable-exact",
                   "the unrunnable set holds exactly the registered tasks in no-worker")
def unrunnable_exact(v: Any, workers: Any) -> str | None:
    state = v.state
    if len(state.unrunnable) == v.n_no_worker:
        return None
    strays = [t for t in state.unrunnable
              if t.state != SchedulerTaskState.NO_WORKER or state.tasks.get(t.key) is not t]
    return (f"{len(state.unrunnable)} unrunnable, {v.n_no_worker} registered tasks in "
            f"no-worker; strays: {_keys(strays)}")


@cluster_invariant("cluster.workers-map-keys",
                   "the workers map files every record under its own name", scope=FULL)
def workers_map_keys(v: Any, workers: Any) -> str | None:
    for name, ws in v.state.workers.items():
        if ws.name != name:
            return f"{ws!r} is registered under {name!r}"
    return None
