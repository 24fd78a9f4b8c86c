"""Which of squall's invariants hold on dask.distributed, and the ones only dask has.

``APPLICABILITY``: for every invariant of ``squall.invariants.CATALOG``, whether it is
checked on dask and how (``SAME``: its function runs unchanged on the views of
``squall.targets.dask.view``; ``ADAPTED``: it runs unchanged on views that map a dask
concept onto squall's, said in the note), or why not (a concept dask lacks or does
differently; a dask-only invariant below often says what dask does instead).

``DASK_INVARIANTS``: invariants of dask's own concepts -- its queue of root-ish tasks,
``unrunnable``, restrictions and resources, replicas, seceded tasks, cancelled and
resumed tasks on workers -- registered as ``squall.invariants.base.Invariant`` with ids
under ``dask.``. Their checks take the same arguments as the catalog's of the same
entity, with the views of ``view.py`` (``ts.raw`` is dask's own object):

- task: ``fn(v, ts)``; worker (the scheduler's record): ``fn(v, ws, ledger)``;
  cluster: ``fn(v, workers)``, ``v.state`` a ``SchedulerView``;
- worker-task: ``fn(wv, wt)``; worker-state: ``fn(wv)``, ``wv.ws`` a ``WorkerStateView``.

``task_checks``/``worker_checks``/... give, per dask state, the check functions the
validator (``squall.targets.dask.hooks``) runs. Importing this module imports no dask.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from squall.invariants.base import (
    CLUSTER,
    FULL,
    INCREMENTAL,
    TASK,
    WORKER,
    WORKER_STATE,
    WORKER_TASK,
    Invariant,
    registrar,
)
from squall.invariants.catalog import CATALOG
from squall.targets.dask.view import (
    DASK_TASK_STATES,
    DASK_WORKER_TASK_STATES,
    SCHEDULER_STATE,
    WORKER_STATUS,
    WORKER_TASK_STATE,
    free_slots,
    worker_task_key,
)

SAME = "same"  # the catalog's function, unchanged, on the views
ADAPTED = "adapted"  # the catalog's function, unchanged, on views that map a dask concept
NOT = "not"  # not checked on dask: the note says why
HOWS = (SAME, ADAPTED, NOT)


@dataclass(frozen=True, slots=True)
class Applicability:
    how: str  # SAME, ADAPTED or NOT
    note: str = ""  # how it is mapped, or why it does not apply

    @property
    def applies(self) -> bool:
        return self.how != NOT


def _same(note: str = "") -> Applicability:
    return Applicability(SAME, note)


def _adapted(note: str) -> Applicability:
    return Applicability(ADAPTED, note)


def _not(reason: str) -> Applicability:
    return Applicability(NOT, reason)


QUEUED_AS_NO_WORKER = "dask's 'queued' reads as no-worker (ready, held on the scheduler)"

APPLICABILITY: dict[str, Applicability] = {
    # ---------------------------------------------------------------- scheduler task
    "task.transition-allowed": _not(
        "dask has its own transition table (with 'queued'), goes through 'released' where "
        "it has no direct move, and raises on a move outside it"),
    "task.transition-has-stimulus-id": _adapted(
        "read from dask's transition hook; dask records a missing id as "
        "'<stimulus_id unset>', read as empty"),
    "task.known-state": _adapted(QUEUED_AS_NO_WORKER),
    "task.registered-unless-forgotten": _same(),
    "task.wanted-not-forgotten": _same(),
    "task.processing-on-iff-processing": _adapted(QUEUED_AS_NO_WORKER),
    "task.processing-on-one-worker": _same(),
    "task.processing-worker-running": _not(
        "dask keeps a paused worker's tasks processing on it, and a paused worker is not "
        "running; see dask.task.processing-on-live-worker"),
    "task.who-has-iff-memory": _adapted(QUEUED_AS_NO_WORKER),
    "task.holders-record-it": _same(),
    "task.holders-live": _adapted("a worker's name is its address; closed reads as dead"),
    "task.nbytes-known-in-memory": _same(),
    "task.memory-needed": _same(),
    "task.memory-not-waited-on": _same(),
    "task.waiting-on-subset": _adapted("dask's waiting_on of None reads as empty"),
    "task.waiting-on-only-when-waiting": _adapted(QUEUED_AS_NO_WORKER),
    "task.waiting-on-exact": _same(),
    "task.waiting-waits-on-something": _same(),
    "task.inputs-in-memory": _adapted(QUEUED_AS_NO_WORKER + ": a queued task's inputs "
                                      "are in memory too"),
    "task.links-symmetric": _same(),
    "task.dependency-not-forgotten": _adapted(
        "a task dask marked has_lost_dependencies counts its dependencies anew: dask "
        "forgets released scattered data even while a dependent that ran holds its result"),
    "task.waiters-subset": _adapted("dask's waiters of None reads as empty"),
    "task.waiters-in-play": _adapted(QUEUED_AS_NO_WORKER + ", so a queued waiter is in play"),
    "task.in-play-dependents-wait": _adapted(QUEUED_AS_NO_WORKER),
    "task.unrunnable-iff-no-worker": _adapted(
        "the unrunnable set reads as dask's unrunnable plus its queue; "
        "dask.task.unrunnable-exact and dask.task.queued-in-queue tell them apart"),
    "task.no-worker-unplaceable": _not(
        "dask holds ready tasks back in 'queued' while workers run, and places by worker, "
        "host and resource restrictions; see dask.task.no-worker-unplaceable"),
    "task.blame-iff-erred": _same(),
    "task.retries-within-limit": _same("dask's suspicious count against allowed_failures"),
    "task.killed-past-limit": _not(
        "dask keeps a KilledWorker as an exception object, which the view does not map onto "
        "the reference scheduler's error text"),
    "task.estimate-fresh": _not(
        "dask keeps one moving average per task prefix and reads it directly: no kept "
        "estimate beside it to recompute"),
    # ---------------------------------------------------------------- scheduler's worker records
    "worker.live-record": _adapted("a worker's name is its address; dask's statuses map to "
                                   "running, paused, closing and dead"),
    "worker.has-what-mirrors-who-has": _same(),
    "worker.nbytes-sum": _adapted("a size dask does not know counts as dask's default size, "
                                  "as dask counts it"),
    "worker.processing-mirrors-tasks": _same(),
    "worker.prefix-counts": _adapted("dask's task_prefix_count leaves out long-running "
                                     "(seceded) tasks; so does the recount"),
    "worker.needs-recount": _adapted("dask's needs_what"),
    "worker.fetch-bytes-sum": _adapted("dask's network occupancy (_network_occ)"),
    "worker.occupancy-fresh": _adapted("dask's own prefix duration estimate; bytes to fetch "
                                       "over the scheduler's bandwidth"),
    "worker.remembered-occupancy-fresh": _not(
        "dask's placement remembers no occupancy between decisions; its kept occupancy is "
        "checked by worker.occupancy-fresh"),
    "worker.occupancy-non-negative": _same(),
    "worker.idleness-by-load": _not(
        "dask's idle set also takes a worker whose occupancy is under half the average, and "
        "'saturated' needs enough pending time; see dask.worker.idle-when-free-thread and "
        "dask.worker.idle-task-count-exact"),
    "worker.dead-holds-nothing": _adapted("a removed worker is closed in dask"),
    "cluster.idle-saturated-running": _adapted("dask's idle is address -> worker"),
    "cluster.running-registered": _same(),
    "cluster.unrunnable-exact": _adapted(
        "unrunnable reads as dask's unrunnable plus its queue, and " + QUEUED_AS_NO_WORKER),
    "cluster.workers-map-keys": _adapted("a worker's name is its address"),
    # ---------------------------------------------------------------- worker state machine
    "wtask.transition-allowed": _not(
        "dask's worker has its own transition table (constrained, long-running, resumed, "
        "rescheduled) and raises InvalidTransition on a move outside it"),
    "wtask.transition-has-stimulus-id": _adapted(
        "a dask worker transition carries the id of the stimulus it is handling"),
    "wtask.known-state": _adapted("constrained reads as ready, long-running as executing, "
                                  "cancelled/resumed by what they were doing"),
    "wtask.registered-unless-released": _not(
        "dask's worker keeps a released task registered while a dependent refers to it; "
        "it leaves only when forgotten"),
    "wtask.holds-thread-iff-executing": _adapted(
        "cancelled/resumed while executing read as cancelled; long-running (seceded) tasks "
        "hold no thread in dask and are checked by dask.wtask.long-running-listed"),
    "wtask.runnable-matches-state": _not(
        "dask keeps no 'asked to compute' flag apart from the run spec, which a cancelled "
        "task keeps"),
    "wtask.waiting-for-subset": _adapted("dask's waiting_for_data"),
    "wtask.waiting-for-exact": _adapted(
        "waiting and ready only: dask lets an executing task's input go once its body has "
        "it (dask#6893)"),
    "wtask.waiting-iff-inputs-missing": _adapted("constrained reads as ready, long-running "
                                                 "as executing"),
    "wtask.links-symmetric": _same(),
    "wtask.links-registered": _same(),
    "wtask.coming-from-iff-flight": _adapted("cancelled/resumed while in flight read as "
                                             "flight"),
    "wtask.flight-listed": _adapted("dask's in_flight_workers (peer -> keys)"),
    "wtask.flight-from-holder": _not(
        "dask refreshes who_has while a transfer is in flight (refresh-who-has, "
        "remove-replicas), so the peer may leave who_has before the data arrives"),
    "wtask.fetch-has-holders": _same(),
    "wtask.missing-has-no-holders": _same(),
    "wtask.discard-only-in-flight": _not(
        "dask has no discard flag: a transfer whose result is unwanted is cancelled(flight)"),
    "wtask.memory-stored": _adapted("the store is dask's data plus its actors"),
    "wtask.inputs-held-while-running": _not(
        "dask lets an executing task's input be released after its body has it (dask#6893)"),
    "wtask.ready-queued": _adapted("the ready queue is dask's ready and constrained heaps"),
    "wtask.fetch-queued": _adapted("the fetch queue is dask's data_needed (per peer)"),
    "wtask.error-not-kept": _not(
        "dask's worker keeps an errored task (state 'error') until the scheduler frees it"),
    "wstate.threads-bound": _adapted("dask's executing set (seceded tasks left out)"),
    "wstate.executing-set-states": _adapted("cancelled/resumed while executing read as "
                                            "cancelled"),
    "wstate.nbytes-sum": _adapted("the sizes of the tasks in data and actors"),
    "wstate.in-flight-consistent": _adapted("dask's in_flight_workers (peer -> keys)"),
    "wstate.fetch-limit": _not(
        "dask opens more transfers than transfer_incoming_count_limit while the bytes "
        "coming in stay under its throttle threshold"),
    "wstate.no-idle-thread-with-ready-task": _adapted(
        "not while the worker is paused; constrained tasks wait for resources, not threads"),
    "wstate.store-matches-memory": _adapted("the store is dask's data plus its actors"),
    # ---------------------------------------------------------------- stealing
    "steal.in-flight-task-live": _adapted("dask's WorkStealing.in_flight"),
    "steal.in-flight-workers-live": _not(
        "dask keeps a steal in flight after its thief left, until the victim answers "
        "(squall calls these orphans)"),
    "steal.unique-ids": _adapted("a steal's id is dask's stimulus id of its request"),
    "steal.in-flight-occupancy-zero": _adapted("dask's WorkStealing.in_flight_occupancy"),
    "steal.accounted": _not(
        "dask's stealing counts moves in its metrics, not how each request ended"),
    "steal.bookings-recount": _not(
        "the view does not map dask's InFlightInfo durations and in_flight_tasks counts "
        "yet (and dask's defaultdicts keep zero entries); with no steal in flight, "
        "steal.in-flight-occupancy-zero checks the booking"),
    "steal.answers-accounted": _not(
        "dask's stealing does not count how each steal-response ended (moved, refused, "
        "thief gone, stale)"),
    "steal.moved-processing": _not(
        "dask keeps no record of the tasks a steal moved (the reference's "
        "WorkStealing.moved)"),
    "steal.orphans-consistent": _not(
        "dask keeps a steal whose thief left in in_flight, not apart as an orphan"),
    "steal.ends-for-a-reason": _not(
        "reads what the reference validator keeps (the steals open before the stimulus, "
        "the stimulus itself); the dask checker looks at steals only while some are open"),
    "steal.thief-gone-only-when-gone": _not(
        "reads what the reference validator keeps (each open steal's thief, the "
        "extension's counts before the answer); the dask checker keeps neither"),
    "steal.books-shared-estimate": _not(
        "dask books a steal at its own cost ratio and transfer model, not one shared "
        "duration-plus-transfer estimate"),
    "steal.idle-worker-fed": _not(
        "dask's balancing has its own rules (cost multipliers, saturation by pending "
        "time); squall's starvation bounds do not describe it"),
    "steal.executing-never-stolen": _adapted(
        "checked on dask's steal-response: 'executing' and 'long-running' answers"),
    "steal.given-up-task-moved": _adapted(
        "checked on dask's steal-response: 'ready', 'constrained' and 'waiting' answers"),
    # ---------------------------------------------------------------- quiescence
    "cluster.memory-agrees": _adapted("each worker's tasks are fetched with client.run"),
    "cluster.wants-agree": _not(
        "the dask checker does not keep each client's wants apart (its client surface "
        "refuses client actions)"),
    "liveness.processing-task-runs": _same(),
    "liveness.waiting-task-progresses": _adapted(QUEUED_AS_NO_WORKER),
    "liveness.worker-tasks-settled": _adapted(
        "released tasks a dependent still refers to and errored tasks (dask's worker keeps "
        "both until freed) are left out, as squall's worker drops them"),
    "liveness.wanted-key-reported": _adapted(
        "wanted: tasks a client wants; reported: those in memory or erred"),
    # ---------------------------------------------------------------- end to end
    "e2e.every-key-resolved": _adapted(
        "at the end of a scenario run on dask, against the client's results"),
    "e2e.no-result-lost": _adapted(
        "at the end of a scenario run on dask, against the client's results"),
    "e2e.result-correct": _adapted(
        "at the end of a scenario run on dask, against the oracle"),
    "e2e.error-correct": _adapted(
        "at the end of a scenario run on dask, against the oracle"),
    "e2e.no-duplicate-run": _adapted(
        "at quiescence: bodies started on the workers (ready -> executing) against the "
        "times the scheduler took the task back (a lost worker, a lost result, reschedule)"),
}


def applicability(inv_id: str) -> Applicability:
    """How the catalog invariant ``inv_id`` is checked on dask; KeyError names it."""
    try:
        return APPLICABILITY[inv_id]
    except KeyError:
        raise KeyError(f"invariant {inv_id!r} has no entry in the dask applicability "
                       "table") from None


# ---------------------------------------------------------------- dask-only invariants

DASK_INVARIANTS: list[Invariant] = []
dask_task = registrar(DASK_INVARIANTS, TASK)
dask_worker = registrar(DASK_INVARIANTS, WORKER, ("running", "paused", "closing"))
dask_cluster = registrar(DASK_INVARIANTS, CLUSTER)
dask_wtask = registrar(DASK_INVARIANTS, WORKER_TASK)
dask_wstate = registrar(DASK_INVARIANTS, WORKER_STATE)

LIVE = tuple(s for s in DASK_TASK_STATES if s != "forgotten")
READY_HELD = ("queued", "no-worker")


def _saturation(v: Any) -> float:
    return float(v.state.raw.WORKER_SATURATION)


@dask_task("dask.task.queued-in-queue",
           "a task is in the scheduler's queue exactly when it is queued", states=LIVE)
def queued_in_queue(v: Any, ts: Any) -> str | None:
    listed = ts.raw in v.state.raw.queued
    if listed == (ts.raw._state == "queued"):
        return None
    return f"{ts.raw._state} but {'' if listed else 'not '}in the queue"


@dask_task("dask.task.unrunnable-exact",
           "a task is in the unrunnable set exactly when it is in no-worker", states=LIVE)
def unrunnable_exact(v: Any, ts: Any) -> str | None:
    listed = ts.raw in v.state.raw.unrunnable
    if listed == (ts.raw._state == "no-worker"):
        return None
    return f"{ts.raw._state} but {'' if listed else 'not '}in the unrunnable set"


@dask_task("dask.task.ready-held",
           "a queued or no-worker task has no worker, no holders, waits on nothing and "
           "has every input in memory", states=READY_HELD, neighbours=True)
def ready_held(v: Any, ts: Any) -> str | None:
    raw = ts.raw
    if raw.processing_on is not None:
        return f"{raw._state} but processing on {raw.processing_on.address!r}"
    if raw.who_has:
        return f"{raw._state} but held by {[w.address for w in raw.who_has]}"
    if raw.waiting_on:
        return f"{raw._state} but waiting on {[d.key for d in raw.waiting_on][:5]}"
    for d in raw.dependencies:
        if not d.who_has:
            return f"{raw._state}, but its input {d.key!r} is {d._state}"
    return None


@dask_task("dask.task.queued-root-ish",
           "only a task without restrictions is queued (dask queues root-ish tasks only)",
           states=("queued",))
def queued_root_ish(v: Any, ts: Any) -> str | None:
    raw = ts.raw
    if raw.worker_restrictions or raw.host_restrictions or raw.resource_restrictions:
        return "queued though it has worker, host or resource restrictions"
    if raw.actor:
        return "an actor is queued"
    return None


def _valid_running(state: Any, raw: Any) -> set[Any] | None:
    """The running workers a task's restrictions allow (None: any), read only."""
    allowed: set[str] | None = None
    if raw.worker_restrictions:
        allowed = {a for a in raw.worker_restrictions if a in state.workers}
        allowed |= {state.aliases[a] for a in raw.worker_restrictions if a in state.aliases}
    if raw.host_restrictions:
        hosts: set[str] = set()
        for h in raw.host_restrictions:
            info = state.host_info.get(state.coerce_hostname(h))
            if info is not None:
                hosts |= info["addresses"]
        allowed = hosts if allowed is None else allowed | hosts
    if raw.resource_restrictions:
        ok: set[str] | None = None
        for resource, need in raw.resource_restrictions.items():
            have = {a for a, n in state.resources.get(resource, {}).items() if n >= need}
            ok = have if ok is None else ok & have
        allowed = ok if allowed is None else allowed & (ok or set())
    if allowed is None:
        return None
    return {ws for ws in state.running if ws.address in allowed}


@dask_task("dask.task.no-worker-unplaceable",
           "a task is in no-worker only while no running worker its restrictions allow "
           "exists", states=("no-worker",))
def no_worker_unplaceable(v: Any, ts: Any) -> str | None:
    state = v.state.raw
    raw = ts.raw
    valid = _valid_running(state, raw)
    if valid is None:
        return (f"in no-worker though {len(state.running)} worker(s) are running"
                if state.running else None)
    if valid:
        return f"in no-worker though allowed worker(s) {sorted(w.address for w in valid)} run"
    if raw.loose_restrictions and state.running:
        return "in no-worker with loose restrictions while workers run"
    return None


@dask_task("dask.task.restrictions-respected",
           "a processing task runs on a worker its worker, host and resource restrictions "
           "allow (unless they are loose)", states=("processing",))
def restrictions_respected(v: Any, ts: Any) -> str | None:
    raw = ts.raw
    ws = raw.processing_on
    if ws is None or raw.loose_restrictions or not (
            raw.worker_restrictions or raw.host_restrictions or raw.resource_restrictions):
        return None
    valid = _valid_running(v.state.raw, raw)
    if valid is None or ws in valid or ws not in v.state.raw.running:
        return None
    return (f"processing on {ws.address!r}, which its restrictions do not allow "
            f"(allowed: {sorted(w.address for w in valid)})")


@dask_task("dask.task.processing-on-live-worker",
           "a processing task is assigned to the live record of its worker, running or "
           "paused (never a removed or replaced one)", states=("processing",))
def processing_on_live_worker(v: Any, ts: Any) -> str | None:
    ws = ts.raw.processing_on
    if ws is None:
        return None
    current = v.state.raw.workers.get(ws.address)
    if current is ws and ws.status.name in ("running", "paused", "closing_gracefully"):
        return None
    if current is None:
        return f"processing on {ws.address!r}, which the scheduler no longer knows"
    if current is not ws:
        return f"processing on a stale record of {ws.address!r} (a worker that reconnected)"
    return f"processing on {ws.address!r}, whose status is {ws.status.name}"


@dask_task("dask.task.replicated-iff-many-holders",
           "a task is in the replicated set exactly when more than one worker holds it",
           states=LIVE)
def replicated_iff_many_holders(v: Any, ts: Any) -> str | None:
    listed = ts.raw in v.state.raw.replicated_tasks
    n = len(ts.raw.who_has or ())
    if listed == (n > 1):
        return None
    return f"held by {n} worker(s) but {'' if listed else 'not '}in the replicated set"


@dask_task("dask.task.actor-on-one-worker",
           "an actor in memory lives on exactly one of its holders; a processing one is "
           "in its worker's actors", states=("memory", "processing"))
def actor_on_one_worker(v: Any, ts: Any) -> str | None:
    raw = ts.raw
    if not raw.actor:
        return None
    if raw._state == "memory":
        n = sum(raw in ws.actors for ws in raw.who_has or ())
        return None if n == 1 else f"an actor in memory on {n} of its holders"
    ws = raw.processing_on
    return None if ws is None or raw in ws.actors else (
        f"a processing actor not in {ws.address!r}'s actors")


@dask_worker("dask.worker.idle-when-free-thread",
             "a running worker with fewer tasks processing than threads is idle, and "
             "never saturated")
def idle_when_free_thread(v: Any, ws: Any, ledger: Any) -> str | None:
    raw = ws.raw
    state = v.state.raw
    if raw.status.name != "running":
        if raw.address in state.idle or raw in state.saturated:
            return f"{raw.status.name}, yet idle or saturated"
        return None
    if len(raw.processing) < raw.nthreads:
        if state.idle.get(raw.address) is not raw:
            return f"{len(raw.processing)} task(s) on {raw.nthreads} thread(s), but not idle"
        if raw in state.saturated:
            return f"{len(raw.processing)} task(s) on {raw.nthreads} thread(s), but saturated"
    return None


@dask_worker("dask.worker.idle-task-count-exact",
             "a running worker is in idle_task_count exactly when it has a free slot at "
             "worker-saturation")
def idle_task_count_exact(v: Any, ws: Any, ledger: Any) -> str | None:
    raw = ws.raw
    listed = raw in v.state.raw.idle_task_count
    free = raw.status.name == "running" and free_slots(raw, _saturation(v)) > 0
    if listed == free:
        return None
    return (f"{len(raw.processing)} processing ({len(raw.long_running)} seceded) on "
            f"{raw.nthreads} thread(s): {'' if listed else 'not '}in idle_task_count")


@dask_worker("dask.worker.long-running-processing",
             "a worker's long-running (seceded) tasks are among its processing tasks")
def long_running_processing(v: Any, ws: Any, ledger: Any) -> str | None:
    raw = ws.raw
    strays = [ts.key for ts in raw.long_running if ts not in raw.processing]
    return f"long-running but not processing here: {strays[:5]}" if strays else None


@dask_worker("dask.worker.used-resources-sum",
             "the resources a worker has in use equal the sum over its processing tasks' "
             "resource restrictions")
def used_resources_sum(v: Any, ws: Any, ledger: Any) -> str | None:
    raw = ws.raw
    if not raw.resources and not any(raw.used_resources.values()):
        return None
    want: dict[str, float] = dict.fromkeys(raw.used_resources, 0.0)
    for ts in raw.processing:
        for r, n in (ts.resource_restrictions or {}).items():
            want[r] = want.get(r, 0.0) + n
    bad = {r: (raw.used_resources.get(r, 0.0), n) for r, n in want.items()
           if abs(raw.used_resources.get(r, 0.0) - n) > 1e-9}
    return f"used vs recount: {bad}" if bad else None


@dask_worker("dask.worker.needs-not-held",
             "a worker never needs to fetch what it already holds")
def needs_not_held(v: Any, ws: Any, ledger: Any) -> str | None:
    raw = ws.raw
    both = [ts.key for ts in raw.needs_what if ts in raw.has_what]
    return f"needs and holds {both[:5]}" if both else None


@dask_cluster("dask.cluster.queued-only-when-full",
              "tasks are queued only while every running worker is full at "
              "worker-saturation (with queuing off, nothing is queued)")
def queued_only_when_full(v: Any, workers: Any) -> str | None:
    state = v.state.raw
    if not state.queued:
        return None
    saturation = _saturation(v)
    if math.isinf(saturation):
        return f"{len(state.queued)} task(s) queued with queuing off (worker-saturation inf)"
    free = [ws for ws in state.running if free_slots(ws, saturation) > 0]
    if not free:
        return None
    ws = free[0]
    return (f"{len(state.queued)} task(s) queued (e.g. {state.queued.peek().key!r}) while "
            f"{ws.address!r} has {free_slots(ws, saturation)} free slot(s)")


@dask_cluster("dask.cluster.prefix-counts-global",
              "the per-worker task prefix counts add up to the scheduler's global counts",
              scope=FULL)
def prefix_counts_global(v: Any, workers: Any) -> str | None:
    state = v.state.raw
    total: dict[str, int] = {}
    for ws in state.workers.values():
        for p, n in ws.task_prefix_count.items():
            if n:
                total[p] = total.get(p, 0) + n
    glob = {p: n for p, n in state._task_prefix_count_global.items() if n}
    if total == glob:
        return None
    diff = sorted(p for p in total.keys() | glob.keys() if total.get(p) != glob.get(p))[:5]
    return "per-worker vs global: " + ", ".join(
        f"{p}: {total.get(p, 0)} vs {glob.get(p, 0)}" for p in diff)


@dask_cluster("dask.cluster.unrunnable-since-ordered",
              "the unrunnable set is ordered by when each task became unrunnable",
              scope=FULL)
def unrunnable_since_ordered(v: Any, workers: Any) -> str | None:
    prev = -math.inf
    for ts, since in v.state.raw.unrunnable.items():
        if since < prev:
            return f"{ts.key!r} unrunnable since {since!r}, after one since {prev!r}"
        prev = since
    return None


# ---------------------------------------------------------------- worker side, dask-only

WT_REGISTERED = tuple(s for s in DASK_WORKER_TASK_STATES if s not in ("forgotten",))


@dask_wtask("dask.wtask.previous-iff-cancelled",
            "a task has a previous state exactly when it is cancelled or resumed, and a next "
            "state exactly when it is resumed", states=WT_REGISTERED)
def previous_iff_cancelled(wv: Any, wt: Any) -> str | None:
    raw = wt.raw
    state = raw.state
    if (raw.previous is not None) != (state in ("cancelled", "resumed")):
        return f"{state} with previous={raw.previous!r}"
    if (raw.next is not None) != (state == "resumed"):
        return f"{state} with next={raw.next!r}"
    return None


@dask_wtask("dask.wtask.long-running-listed",
            "a task is in the long-running set exactly when it is long-running (or "
            "cancelled or resumed from it)", states=WT_REGISTERED)
def long_running_listed(wv: Any, wt: Any) -> str | None:
    listed = wt.raw in wv.ws.raw.long_running
    key = worker_task_key(wt.raw)
    if listed == (key in ("long-running", "cancelled(long-running)",
                          "resumed(long-running)")):
        return None
    return f"{key} but {'' if listed else 'not '}in the long-running set"


@dask_wtask("dask.wtask.waiting-listed",
            "a task is in the waiting set exactly when it is waiting", states=WT_REGISTERED)
def waiting_listed(wv: Any, wt: Any) -> str | None:
    listed = wt.raw in wv.ws.raw.waiting
    if listed == (wt.raw.state == "waiting"):
        return None
    return f"{wt.raw.state} but {'' if listed else 'not '}in the waiting set"


@dask_wtask("dask.wtask.missing-listed",
            "a task is in missing_dep_flight exactly when it is missing", states=WT_REGISTERED)
def missing_listed(wv: Any, wt: Any) -> str | None:
    listed = wt.raw in wv.ws.raw.missing_dep_flight
    if listed == (wt.raw.state == "missing"):
        return None
    return f"{wt.raw.state} but {'' if listed else 'not '}in missing_dep_flight"


@dask_wtask("dask.wtask.constrained-has-resources",
            "only a task with resource restrictions is constrained", states=("constrained",))
def constrained_has_resources(wv: Any, wt: Any) -> str | None:
    return None if wt.raw.resource_restrictions else "constrained without resource restrictions"


@dask_wstate("dask.wstate.resources-balance",
             "a worker's available resources plus those its running tasks hold equal its "
             "total")
def resources_balance(wv: Any) -> str | None:
    raw = wv.ws.raw
    if not raw.total_resources:
        return None
    left = dict(raw.total_resources)
    for r, n in raw.available_resources.items():
        left[r] = left.get(r, 0.0) - n
    for ts in raw.executing | raw.long_running:
        for r, n in (ts.resource_restrictions or {}).items():
            left[r] = left.get(r, 0.0) - n
    bad = {r: n for r, n in left.items() if abs(n) > 1e-9}
    return f"total - available - held = {bad}" if bad else None


DASK_BY_ID: dict[str, Invariant] = {inv.id: inv for inv in DASK_INVARIANTS}


# ---------------------------------------------------------------- what runs where

def applying(invariants: Iterable[Invariant]) -> list[Invariant]:
    """Those of ``invariants`` checked on dask (dask-only ones always are)."""
    return [inv for inv in invariants
            if inv.id.startswith("dask.") or applicability(inv.id).applies]


def _squall_state(dask_state: str, worker: bool) -> str:
    if worker:
        return WORKER_TASK_STATE.get(dask_state, dask_state)
    return SCHEDULER_STATE.get(dask_state, dask_state)


# Per-invariant dask states it skips though the state it maps to is covered (the note in
# APPLICABILITY says why).
_SKIP_STATES: dict[str, frozenset[str]] = {
    "wtask.holds-thread-iff-executing": frozenset({
        "long-running", "cancelled(long-running)", "resumed(long-running)"}),
    "wtask.waiting-for-exact": frozenset({
        "executing", "long-running", "cancelled(executing)", "cancelled(long-running)",
        "resumed(executing)", "resumed(long-running)"}),
}


def state_table(invariants: Iterable[Invariant], dask_states: Iterable[str], *,
                scopes: tuple[str, ...], worker: bool = False,
                neighbours_only: bool = False) -> dict[str, tuple[Invariant, ...]]:
    """dask state -> the invariants (of ``scopes``) that run on a task in it. A catalog
    invariant runs where the squall state the dask state reads as is among its states;
    a dask-only one where the dask state itself is. As in squall's validator, the
    known-state invariants run only on a state with no entry."""
    chosen = [inv for inv in applying(invariants) if inv.scope in scopes
              and (inv.neighbours or not neighbours_only) and not inv.known_state]
    table: dict[str, tuple[Invariant, ...]] = {}
    for s in dask_states:
        squall = _squall_state(s, worker)
        table[s] = tuple(
            inv for inv in chosen
            if s not in _SKIP_STATES.get(inv.id, ())
            and (inv.states is None
                 or (s in inv.states if inv.id.startswith("dask.") else squall in inv.states)))
    return table


def known_state_checks(invariants: Iterable[Invariant]) -> tuple[Invariant, ...]:
    """What runs on a task in a state dask does not know: every invariant of all states."""
    return tuple(inv for inv in applying(invariants) if inv.states is None)


def worker_status_table(invariants: Iterable[Invariant], scopes: tuple[str, ...]
                        ) -> dict[str, tuple[Invariant, ...]]:
    """dask worker status name -> the worker invariants that run on it."""
    chosen = [inv for inv in applying(invariants) if inv.scope in scopes]
    return {status: tuple(inv for inv in chosen if inv.applies(squall))
            for status, squall in WORKER_STATUS.items()}


def rows() -> dict[str, list[dict[str, str]]]:
    """What ``squall invariants --target dask`` lists: ``applies`` and ``not`` (catalog
    invariants, with how or why) and ``dask-only``."""
    out: dict[str, list[dict[str, str]]] = {"applies": [], "not": [], "dask-only": []}
    for inv in CATALOG:
        a = applicability(inv.id)
        row = {"id": inv.id, "entity": inv.entity, "scope": inv.scope, "text": inv.text,
               "how": a.how, "note": a.note}
        out["applies" if a.applies else "not"].append(row)
    for inv in DASK_INVARIANTS:
        out["dask-only"].append({"id": inv.id, "entity": inv.entity, "scope": inv.scope,
                                 "text": inv.text, "how": "dask-only", "note": ""})
    return out


SCOPES_INCREMENTAL = (INCREMENTAL,)
SCOPES_ALL = (INCREMENTAL, FULL)
__all__ = [
    "ADAPTED", "APPLICABILITY", "Applicability", "DASK_BY_ID", "DASK_INVARIANTS", "NOT",
    "SAME", "applicability", "applying", "known_state_checks", "rows", "state_table",
    "worker_status_table",
]
