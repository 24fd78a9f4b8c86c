"""Invariants of a worker state machine: its task records and its collections.

Worker-task checks are ``fn(wv, wt)`` and worker-state checks ``fn(wv)``, where ``wv``
is the WorkerValidator: ``wv.ws`` the WorkerState, ``wv.data`` the runtime's store of
values when one is attached (else None), and the validator's own recounts
(``wv.mem_bytes``, ``wv.n_ready``; in full checks ``wv.queued_ready`` and
``wv.queued_fetch``, the tasks found in the two heaps).
"""

from __future__ import annotations

from typing import Any

from squall.core.worker import WORKER_TASK_STATES, WORKER_TRANSITIONS, WorkerTaskState
from squall.invariants.base import FULL, WORKER_STATE, WORKER_TASK, Invariant, registrar

WTASK_INVARIANTS: list[Invariant] = []
WTRANSITION_INVARIANTS: list[Invariant] = []  # fn(wv, wt, start, finish, stimulus_id)
WSTATE_INVARIANTS: list[Invariant] = []
wtask_invariant = registrar(WTASK_INVARIANTS, WORKER_TASK)
wtransition_invariant = registrar(WTRANSITION_INVARIANTS, WORKER_TASK)
wstate_invariant = registrar(WSTATE_INVARIANTS, WORKER_STATE)

# a task the scheduler asked this worker to compute
COMPUTE = (WorkerTaskState.WAITING, WorkerTaskState.READY, WorkerTaskState.EXECUTING)
HOLDS_THREAD = (WorkerTaskState.EXECUTING, WorkerTaskState.CANCELLED)
REGISTERED = tuple(s for s in WORKER_TASK_STATES if s != WorkerTaskState.RELEASED)


def _keys(tasks: Any, n: int = 5) -> str:
    keys = [t.key for t in tasks]
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return f"{keys[:n]}{more}"


# ---------------------------------------------------------------- worker-side task: each move


@wtransition_invariant("wtask.transition-allowed",
                       "a worker's task moves only along the worker's transition table")
def transition_allowed(wv: Any, wt: Any, start: str, finish: str, sid: str) -> str | None:
    return None if (start, finish) in WORKER_TRANSITIONS else f"moved {start} -> {finish}"


@wtransition_invariant("wtask.transition-has-stimulus-id",
                       "every worker transition carries the id of the stimulus that caused it")
def transition_has_stimulus_id(wv: Any, wt: Any, start: str, finish: str,
                               sid: str) -> str | None:
    return None if sid else f"moved {start} -> {finish} with an empty stimulus id"


# ---------------------------------------------------------------- worker-side task


@wtask_invariant("wtask.known-state",
                 "a worker's task is waiting, ready, executing, cancelled, memory, error, "
                 "fetch, flight, missing or released", known_state=True)
def known_state(wv: Any, wt: Any) -> str | None:
    return None if wt.state in WORKER_TASK_STATES else f"state is {wt.state!r}"


@wtask_invariant("wtask.registered-unless-released",
                 "a worker's task is registered under its key exactly when it is not released")
def registered_unless_released(wv: Any, wt: Any) -> str | None:
    registered = wv.ws.tasks.get(wt.key) is wt
    if registered == (wt.state != WorkerTaskState.RELEASED):
        return None
    return "released but still registered" if registered else (
        f"in state {wt.state} but not registered under its key")


@wtask_invariant("wtask.holds-thread-iff-executing",
                 "a task holds a thread (is in the executing set) exactly when it is "
                 "executing or cancelled", states=REGISTERED)
def holds_thread_iff_executing(wv: Any, wt: Any) -> str | None:
    listed = wt in wv.ws.executing
    if listed == (wt.state in HOLDS_THREAD):
        return None
    return f"in state {wt.state} but {'' if listed else 'not '}in the executing set"


@wtask_invariant("wtask.runnable-matches-state",
                 "a task waiting, ready or executing is one the scheduler asked for "
                 "(runnable); a cancelled, fetch or missing one is not",
                 states=(WorkerTaskState.WAITING, WorkerTaskState.READY, WorkerTaskState.EXECUTING,
                         WorkerTaskState.CANCELLED, WorkerTaskState.FETCH,
                         WorkerTaskState.MISSING))
def runnable_matches_state(wv: Any, wt: Any) -> str | None:
    if wt.runnable == (wt.state in COMPUTE):
        return None
    return f"in state {wt.state} with runnable={wt.runnable}"


@wtask_invariant("wtask.waiting-for-subset",
                 "a task waits only for its own dependencies", states=REGISTERED, neighbours=True)
def waiting_for_subset(wv: Any, wt: Any) -> str | None:
    deps = wt.dependencies
    for d in wt.waiting_for:
        if d not in deps:
            return f"waits for {d.key!r}, which is not a dependency"
    return None


@wtask_invariant("wtask.waiting-for-exact",
                 "a task to compute waits for exactly those of its dependencies not in "
                 "memory here", states=COMPUTE, neighbours=True)
def waiting_for_exact(wv: Any, wt: Any) -> str | None:
    waiting_for = wt.waiting_for
    for d in wt.dependencies:
        if (d.state != WorkerTaskState.MEMORY) != (d in waiting_for):
            if d in waiting_for:
                return f"waits for {d.key!r}, which is in memory"
            return f"does not wait for {d.key!r}, which is {d.state}"
    return None


@wtask_invariant("wtask.waiting-iff-inputs-missing",
                 "a task to compute is waiting exactly when some input is not here yet",
                 states=COMPUTE, neighbours=True)
def waiting_iff_inputs_missing(wv: Any, wt: Any) -> str | None:
    if (wt.state == WorkerTaskState.WAITING) == bool(wt.waiting_for):
        return None
    if wt.waiting_for:
        return f"{wt.state} while waiting for {_keys(wt.waiting_for)}"
    return "waiting, but for nothing"


@wtask_invariant("wtask.links-symmetric",
                 "a worker's dependency and dependent links are symmetric",
                 states=REGISTERED, neighbours=True)
def links_symmetric(wv: Any, wt: Any) -> str | None:
    for d in wt.dependencies:
        if wt not in d.dependents:
            return f"depends on {d.key!r}, which does not list it as a dependent"
    for d in wt.dependents:
        if wt not in d.dependencies:
            return f"lists {d.key!r} as a dependent, which does not depend on it"
    return None


@wtask_invariant("wtask.links-registered",
                 "every dependency and dependent of a worker's task is registered",
                 states=REGISTERED, neighbours=True)
def links_registered(wv: Any, wt: Any) -> str | None:
    tasks = wv.ws.tasks
    for d in wt.dependencies:
        if tasks.get(d.key) is not d:
            return f"depends on {d.key!r}, which is not registered"
    for d in wt.dependents:
        if tasks.get(d.key) is not d:
            return f"has dependent {d.key!r}, which is not registered"
    return None


@wtask_invariant("wtask.coming-from-iff-flight",
                 "a task names the peer it comes from exactly when it is in flight",
                 states=REGISTERED)
def coming_from_iff_flight(wv: Any, wt: Any) -> str | None:
    if (wt.coming_from is not None) == (wt.state == WorkerTaskState.FLIGHT):
        return None
    return f"in state {wt.state} with coming_from={wt.coming_from!r}"


@wtask_invariant("wtask.flight-listed",
                 "a task in flight is listed among the transfers from the peer it comes from",
                 states=(WorkerTaskState.FLIGHT,))
def flight_listed(wv: Any, wt: Any) -> str | None:
    peer = wt.coming_from
    if peer is None or wt in wv.ws.in_flight.get(peer, ()):
        return None
    return f"in flight from {peer!r}, but no transfer from {peer!r} lists it"


@wtask_invariant("wtask.flight-from-holder",
                 "a task is fetched only from a peer believed to hold it",
                 states=(WorkerTaskState.FLIGHT,))
def flight_from_holder(wv: Any, wt: Any) -> str | None:
    peer = wt.coming_from
    if peer is None or peer in wt.who_has:
        return None
    return f"in flight from {peer!r}, which is not among its holders {wt.who_has}"


@wtask_invariant("wtask.fetch-has-holders",
                 "a task to fetch has at least one peer to fetch it from",
                 states=(WorkerTaskState.FETCH,), neighbours=True)
def fetch_has_holders(wv: Any, wt: Any) -> str | None:
    return None if wt.who_has else "to fetch, but no peer is known to hold it"


@wtask_invariant("wtask.missing-has-no-holders",
                 "a task is missing only when no peer is known to hold it",
                 states=(WorkerTaskState.MISSING,), neighbours=True)
def missing_has_no_holders(wv: Any, wt: Any) -> str | None:
    return f"missing, yet peers {wt.who_has} are believed to hold it" if wt.who_has else None


@wtask_invariant("wtask.discard-only-in-flight",
                 "only a task in flight is marked to be dropped on arrival",
                 states=REGISTERED, neighbours=True)
def discard_only_in_flight(wv: Any, wt: Any) -> str | None:
    return f"in state {wt.state} but marked discard" \
        if wt.discard and wt.state != WorkerTaskState.FLIGHT \
        else None


@wtask_invariant("wtask.memory-stored",
                 "a task in memory has its value in the worker's store",
                 states=(WorkerTaskState.MEMORY,))
def memory_stored(wv: Any, wt: Any) -> str | None:
    data = wv.data
    if data is None or wt.key in data:
        return None
    return "in memory, but its value is not in the worker's store"


@wtask_invariant("wtask.inputs-held-while-running",
                 "a task runs only with every input the scheduler gave it in memory on its "
                 "worker", states=(WorkerTaskState.EXECUTING,), neighbours=True)
def inputs_held_while_running(wv: Any, wt: Any) -> str | None:
    tasks = wv.ws.tasks
    lacking = [k for k in wv.inputs.get(wt.key, ())
               if (d := tasks.get(k)) is None or d.state != WorkerTaskState.MEMORY]
    return f"executing without its input(s) {lacking}" if lacking else None


@wtask_invariant("wtask.ready-queued",
                 "a ready task is in the ready queue", states=(WorkerTaskState.READY,), scope=FULL)
def ready_queued(wv: Any, wt: Any) -> str | None:
    return None if wt in wv.queued_ready else "ready, but not in the ready queue"


@wtask_invariant("wtask.fetch-queued",
                 "a task to fetch is in the fetch queue", states=(WorkerTaskState.FETCH,),
                 scope=FULL)
def fetch_queued(wv: Any, wt: Any) -> str | None:
    return None if wt in wv.queued_fetch else "to fetch, but not in the fetch queue"


# ---------------------------------------------------------------- worker state as a whole


@wstate_invariant("wstate.threads-bound",
                  "no more tasks hold a thread than the worker has threads")
def threads_bound(wv: Any) -> str | None:
    ws = wv.ws
    if len(ws.executing) <= ws.nthreads:
        return None
    return f"{len(ws.executing)} tasks hold threads, nthreads={ws.nthreads}: {_keys(ws.executing)}"


@wstate_invariant("wstate.executing-set-states",
                  "the executing set holds only registered tasks that are executing or "
                  "cancelled")
def executing_set_states(wv: Any) -> str | None:
    tasks = wv.ws.tasks
    for wt in wv.ws.executing:
        if wt.state not in HOLDS_THREAD or tasks.get(wt.key) is not wt:
            return f"{wt.key!r} holds a thread in state {wt.state}"
    return None


@wstate_invariant("wstate.nbytes-sum",
                  "a worker's stored bytes equal the sum of the sizes of its tasks in memory")
def nbytes_sum(wv: Any) -> str | None:
    if wv.ws.nbytes == wv.mem_bytes:
        return None
    return f"nbytes={wv.ws.nbytes}, its tasks in memory add up to {wv.mem_bytes}"


@wstate_invariant("wstate.in-flight-consistent",
                  "every transfer from a peer lists only tasks in flight from that peer")
def in_flight_consistent(wv: Any) -> str | None:
    for peer, batch in wv.ws.in_flight.items():
        if not batch:
            return f"an empty transfer from {peer!r}"
        for wt in batch:
            if wt.state != WorkerTaskState.FLIGHT or wt.coming_from != peer:
                return (f"transfer from {peer!r} lists {wt.key!r}, which is {wt.state} "
                        f"(coming from {wt.coming_from!r})")
    return None


@wstate_invariant("wstate.fetch-limit",
                  "no more peers are fetched from at once than the fetch limit")
def fetch_limit(wv: Any) -> str | None:
    ws = wv.ws
    if len(ws.in_flight) <= ws.fetch_limit:
        return None
    return f"{len(ws.in_flight)} transfers in flight, limit {ws.fetch_limit}"


@wstate_invariant("wstate.no-idle-thread-with-ready-task",
                  "after a stimulus, no thread is free while a task is ready")
def no_idle_thread_with_ready_task(wv: Any) -> str | None:
    ws = wv.ws
    if wv.n_ready == 0 or len(ws.executing) >= ws.nthreads:
        return None
    return f"{wv.n_ready} task(s) ready, {ws.nthreads - len(ws.executing)} thread(s) free"


@wstate_invariant("wstate.store-matches-memory",
                  "between stimuli, the worker's store holds exactly its tasks in memory",
                  scope=FULL)
def store_matches_memory(wv: Any) -> str | None:
    data = wv.data
    if data is None:
        return None
    tasks = wv.ws.tasks
    extra = sorted(k for k in data if k not in tasks or tasks[k].state != WorkerTaskState.MEMORY)
    if extra:
        return f"the store holds {extra[:5]}, which are not in memory here"
    return None


# ERROR tasks are dropped in the same stimulus that creates them (the scheduler owns the
# error), so a registered task in "error" never outlives a stimulus.
@wtask_invariant("wtask.error-not-kept",
                 "a worker keeps no record of a task whose body raised",
                 states=(WorkerTaskState.ERROR,))
def error_not_kept(wv: Any, wt: Any) -> str | None:
    return "an errored task is still registered" if wv.ws.tasks.get(wt.key) is wt else None
