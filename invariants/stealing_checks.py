"""Invariants of work stealing, written against a small interface.

The stealing extension is ``SchedulerState.stealing`` (``WorkStealing`` sets it), a
``squall.core.view.StealingView``. What the checks read from it:

- ``in_flight``: a mapping from a task (its key, or its TaskState) to the open steal of
  that task: an object or mapping with ``victim`` and ``thief`` (WorkerInfo records) and,
  optionally, ``steal_id`` (str) and ``ts`` (the TaskState). One entry per task: a second
  steal of a task in flight is refused. While open, the task is processing on the victim.
- ``in_flight_occupancy``: a mapping WorkerInfo -> float, the occupancy booked for steals
  in flight (optional; missing means nothing is booked).

- ``orphans`` (optional): steals whose thief left, awaiting the victim's answer; same
  records as ``in_flight``.
- ``stats`` (optional): counts of steals ``requested`` and of how they ended (see
  ``STEAL_ENDINGS``); ``incoming``, ``outgoing``, ``bookings`` (optional): per worker,
  the open steals it is the thief of, the victim of, and either.

State checks are ``fn(v, ext)``. Response checks are ``fn(v, msg, before, opened, moved)``,
run after a StealResponse: ``before`` is the worker the task was processing on before
the stimulus (or None), ``opened`` the ``(steal_id, victim)`` of the steal of that key
that was open (or orphaned) before it (or None), and ``moved`` whether the task itself
transitioned during the stimulus (a reassignment sends it anew, even to the same worker).

What the reference validator (``SchedulerValidator``) also keeps for these checks, read
with ``getattr`` (absent elsewhere, and then the check that needs it says nothing):
``stimulus`` (the one being checked; None in a full check), ``steal_answers`` (the
StealResponses the extension was handed, see ``answers_before``), and from before the
stimulus: ``_open`` (key -> ``opened`` of every open or orphaned steal), ``_thieves`` (key
-> thief of each steal in flight, orphans left out) and ``_thief_gone`` (``stats``'
"thief-gone" count).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from squall.core import protocol as p
from squall.core.scheduler import SchedulerState, SchedulerTaskState, WorkerStatus
from squall.core.view import StealingView
from squall.core.worker import WorkerTaskState
from squall.invariants.base import STEAL, Invariant, registrar

STEAL_INVARIANTS: list[Invariant] = []
RESPONSE_INVARIANTS: list[Invariant] = []
steal_invariant = registrar(STEAL_INVARIANTS, STEAL)
response_invariant = registrar(RESPONSE_INVARIANTS, STEAL)
OCCUPANCY_TOL = 1e-9


def stealing_extension(state: SchedulerState) -> StealingView | None:
    """The stealing extension of ``state``, or None."""
    return state.stealing


def field(entry: Any, name: str) -> Any:
    """``entry.name`` or ``entry[name]`` (None when absent)."""
    if isinstance(entry, dict):
        return entry.get(name)
    return getattr(entry, name, None)


def open_steals(v: Any, ext: Any, *, orphans: bool = False
                ) -> Iterator[tuple[str, Any, Any]]:
    """``(key, task or None, entry)`` for every steal in flight (and, with ``orphans``,
    every steal whose thief left)."""
    tasks = v.state.tasks
    entries = list(ext.in_flight.items())
    if orphans:
        entries += list((getattr(ext, "orphans", None) or {}).items())
    for k, entry in entries:
        if isinstance(k, str):
            ts = field(entry, "ts")
            yield k, ts if ts is not None else tasks.get(k), entry
        else:
            yield k.key, k, entry


def _where(ts: Any) -> str:
    """Where a task is now, for a message: forgotten, processing on a worker, or its
    state."""
    if ts is None:
        return "forgotten"
    return f"processing on {ts.processing_on.name!r}" if ts.processing_on else str(ts.state)


def _live(v: Any, ws: Any) -> bool:
    return ws is not None and v.state.workers.get(ws.name) is ws and ws.status != WorkerStatus.DEAD


@steal_invariant("steal.in-flight-task-live",
                 "a steal in flight is of a registered task, processing on its victim")
def in_flight_task_live(v: Any, ext: Any) -> str | None:
    tasks = v.state.tasks
    for key, ts, entry in open_steals(v, ext):
        if ts is None or ts.state == SchedulerTaskState.FORGOTTEN or tasks.get(key) is not ts:
            return f"a steal of {key!r} is in flight, but the task is forgotten"
        victim = field(entry, "victim")
        if ts.state != SchedulerTaskState.PROCESSING or ts.processing_on is not victim:
            return (f"a steal of {key!r} from {getattr(victim, 'name', victim)!r} is in "
                    f"flight, but the task is {_where(ts)}")
    return None


@steal_invariant("steal.in-flight-workers-live",
                 "a steal in flight is between two distinct live workers")
def in_flight_workers_live(v: Any, ext: Any) -> str | None:
    for key, _, entry in open_steals(v, ext):
        victim, thief = field(entry, "victim"), field(entry, "thief")
        for role, ws in (("victim", victim), ("thief", thief)):
            if not _live(v, ws):
                return f"the steal of {key!r} in flight has {role} {ws!r}, which is not live"
        if victim is thief:
            return f"the steal of {key!r} in flight has {victim!r} as both victim and thief"
    return None


@steal_invariant("steal.unique-ids", "steals in flight have distinct steal ids")
def unique_ids(v: Any, ext: Any) -> str | None:
    seen: dict[str, str] = {}
    for key, _, entry in open_steals(v, ext):
        sid = field(entry, "steal_id")
        if sid is None:
            continue
        if sid in seen:
            return f"steal id {sid!r} is used for both {seen[sid]!r} and {key!r}"
        seen[sid] = key
    return None


@steal_invariant("steal.in-flight-occupancy-zero",
                 "with no steal in flight, no occupancy is booked for steals")
def in_flight_occupancy_zero(v: Any, ext: Any) -> str | None:
    if ext.in_flight:
        return None
    booked = getattr(ext, "in_flight_occupancy", None) or {}
    for ws, occ in booked.items():
        if abs(occ) > OCCUPANCY_TOL:
            return f"no steal in flight, but {occ!r} s still booked on {ws!r}"
    return None


@steal_invariant("steal.books-shared-estimate",
                 "a new steal books its task at the estimate placement and occupancy use "
                 "(one duration function), plus the transfer to each side")
def books_shared_estimate(v: Any, ext: Any) -> str | None:
    state = v.state
    before = getattr(v, "_open", {})  # steals open after the previous stimulus
    for key, ts, entry in open_steals(v, ext):
        steal_id = field(entry, "steal_id")
        if ts is None or key in before and before[key][0] == steal_id:
            continue  # booked earlier: estimates may have moved on since
        victim_cost, thief_cost = field(entry, "victim_cost"), field(entry, "thief_cost")
        if victim_cost is None or thief_cost is None:
            continue
        d = state.estimator.duration(ts.prefix)
        for role, ws, cost in (("victim", field(entry, "victim"), victim_cost),
                               ("thief", field(entry, "thief"), thief_cost)):
            want = d + state.transfer_cost(ts, ws)
            if abs(cost - want) > 1e-9 * max(1.0, want):
                return (f"steal {steal_id!r} of {key!r} books {cost!r} s on its {role} "
                        f"{ws.name!r}; the estimate is {d!r} s, so {want!r} s with transfer")
    return None


# How every requested steal ends (``WorkStealing.stats``), once each.
STEAL_ENDINGS = ("moved", "refused", "thief-gone", "closed", "victim-gone")


@steal_invariant("steal.accounted",
                 "every steal requested is still open (in flight or orphaned) or ended "
                 "exactly once: moved, refused, thief gone, closed or victim gone; the "
                 "count of tasks moved is the count of steals that moved one")
def accounted(v: Any, ext: Any) -> str | None:
    stats = getattr(ext, "stats", None)
    if not isinstance(stats, dict) or "requested" not in stats:
        return None  # an extension that keeps no such counts
    moved = getattr(ext, "count", None)
    if moved is not None and moved != stats.get("moved", 0):
        return f"{moved} tasks counted as moved, but {stats.get('moved', 0)} steals moved one"
    still_open = len(ext.in_flight) + len(getattr(ext, "orphans", None) or {})
    ended = sum(stats.get(name, 0) for name in STEAL_ENDINGS)
    if stats["requested"] == ended + still_open:
        return None
    how = ", ".join(f"{name} {stats.get(name, 0)}" for name in STEAL_ENDINGS)
    return (f"{stats['requested']} steals requested, but {still_open} open and {ended} "
            f"ended ({how})")


@steal_invariant("steal.bookings-recount",
                 "the occupancy and the counts booked per worker for open steals equal a "
                 "recount of the steals in flight, and a worker has an entry only while "
                 "such a steal involves it")
def bookings_recount(v: Any, ext: Any) -> str | None:
    booked: dict[Any, float] = {}
    counts: dict[str, dict[Any, int]] = {"incoming": {}, "outgoing": {}, "bookings": {}}
    for _, _, entry in open_steals(v, ext):
        victim, thief = field(entry, "victim"), field(entry, "thief")
        victim_cost, thief_cost = field(entry, "victim_cost"), field(entry, "thief_cost")
        if victim_cost is not None and thief_cost is not None:
            booked[victim] = booked.get(victim, 0.0) - victim_cost
            booked[thief] = booked.get(thief, 0.0) + thief_cost
        for name, ws in (("outgoing", victim), ("incoming", thief)):
            counts[name][ws] = counts[name].get(ws, 0) + 1
            counts["bookings"][ws] = counts["bookings"].get(ws, 0) + 1
    if booked or not ext.in_flight:  # (an extension without costs books nothing to recount)
        have = getattr(ext, "in_flight_occupancy", None) or {}
        for ws in set(have) | set(booked):
            if ws not in booked and ws not in counts["bookings"]:
                return (f"{have[ws]!r} s booked on {getattr(ws, 'name', ws)!r}, which no "
                        "open steal involves (an entry outlived its steals)")
            got, want = have.get(ws, 0.0), booked.get(ws, 0.0)
            if abs(got - want) > OCCUPANCY_TOL * max(1.0, abs(want)):
                return (f"{got!r} s booked on {getattr(ws, 'name', ws)!r} for open steals, "
                        f"recounted {want!r} s")
    for name, want_of in counts.items():
        kept = getattr(ext, name, None)
        if kept is None:
            continue  # optional: an extension that keeps no such count
        for ws in set(kept) | set(want_of):
            if ws in kept and ws not in want_of:
                return (f"{name}[{getattr(ws, 'name', ws)!r}] = {kept[ws]}, but no open "
                        "steal involves it so (an entry outlived its steals)")
            if kept.get(ws, 0) != want_of.get(ws, 0):
                return (f"{name}[{getattr(ws, 'name', ws)!r}] = {kept.get(ws, 0)}, but "
                        f"{want_of.get(ws, 0)} open steals involve it so")
    return None


# How every steal answer the extension was handed ends, once each.
ANSWER_ENDINGS = ("moved", "refused", "thief-gone", "stale")


def answers_before(ext: Any, msg: Any) -> int:
    """The steal answers ``ext`` had been handed when a validator first looks at it, ``msg``
    (the stimulus just handled) included: an extension that has requested no steal yet is
    taken to have been handed none but ``msg`` (so a count that starts off zero shows),
    any other at its own count (it was attached before the validator)."""
    stats = getattr(ext, "stats", None)
    if isinstance(stats, dict) and stats.get("requested", 0) > 0:
        return sum(stats.get(name, 0) for name in ANSWER_ENDINGS)
    return 1 if type(msg) is p.StealResponse else 0


@steal_invariant("steal.answers-accounted",
                 "every steal answer the scheduler was handed ended exactly once: moved, "
                 "refused, thief gone, or ignored as stale")
def answers_accounted(v: Any, ext: Any) -> str | None:
    stats = getattr(ext, "stats", None)
    handed = getattr(v, "steal_answers", None)
    if handed is None or not isinstance(stats, dict) or "stale" not in stats:
        return None  # a validator or an extension that keeps no such counts
    ended = sum(stats.get(name, 0) for name in ANSWER_ENDINGS)
    if ended == handed:
        return None
    how = ", ".join(f"{name} {stats.get(name, 0)}" for name in ANSWER_ENDINGS)
    return f"{handed} steal answers handed to the scheduler, but {ended} ended ({how})"


@steal_invariant("steal.moved-processing",
                 "a task recorded as moved by a steal (kept while it stays processing) is "
                 "processing")
def moved_processing(v: Any, ext: Any) -> str | None:
    moved = getattr(ext, "moved", None)
    if not moved:
        return None
    tasks = v.state.tasks
    touched = getattr(v, "_touched", None)
    # Incrementally, a task that left processing moved during the stimulus: look at the
    # tasks it touched when they are fewer (a full check has touched nothing: all).
    keys = ([k for ts in touched if (k := getattr(ts, "key", None)) in moved]
            if touched and len(touched) < len(moved) else list(moved))
    for key in keys:
        ts = tasks.get(key)
        if ts is None or ts.state != SchedulerTaskState.PROCESSING:
            return (f"{key!r} is recorded as moved by a steal, but the task is "
                    f"{'forgotten' if ts is None else ts.state}")
    return None


@steal_invariant("steal.orphans-consistent",
                 "an orphaned steal (its thief left, its answer awaited) is of a task "
                 "processing on its victim, a live worker, while its thief is no longer "
                 "the member under its name, and the task has no steal in flight too")
def orphans_consistent(v: Any, ext: Any) -> str | None:
    orphans = getattr(ext, "orphans", None)
    if not orphans:
        return None
    tasks, workers = v.state.tasks, v.state.workers
    for key, entry in orphans.items():
        ts = field(entry, "ts") or tasks.get(key)
        victim, thief = field(entry, "victim"), field(entry, "thief")
        vname = getattr(victim, "name", victim)
        if key in ext.in_flight:
            return f"{key!r} has a steal in flight and an orphaned one from {vname!r}"
        if not _live(v, victim):
            return f"the orphaned steal of {key!r} has victim {vname!r}, which left"
        if (ts is None or tasks.get(key) is not ts or ts.state != SchedulerTaskState.PROCESSING
                or ts.processing_on is not victim):
            now = _where(ts if ts is not None and tasks.get(key) is ts else None)
            return (f"the steal of {key!r} from {vname!r} is orphaned (answer awaited), but "
                    f"the task is {now}")
        if thief is not None and workers.get(thief.name) is thief:
            return (f"the steal of {key!r} is orphaned, but its thief {thief.name!r} is "
                    "still the member under its name")
    return None


@steal_invariant("steal.ends-for-a-reason",
                 "an open steal ends only when its victim's answer to it arrives, its task "
                 "moves, or its victim leaves (its thief leaving orphans it: still awaited)")
def ends_for_a_reason(v: Any, ext: Any) -> str | None:
    opened = getattr(v, "_open", None)  # steals open (or orphaned) before the stimulus
    msg = getattr(v, "stimulus", None)  # None in a full check: nothing to compare with
    if not opened or msg is None:
        return None
    still = {key: field(entry, "steal_id") for key, _, entry in open_steals(v, ext, orphans=True)}
    tasks = v.state.tasks
    touched = getattr(v, "_touched", {})
    for key, (steal_id, victim) in opened.items():
        if key in still and still[key] == steal_id:
            continue
        if (type(msg) is p.StealResponse and msg.key == key
                and msg.worker == victim.name and steal_id in (None, msg.steal_id)):
            continue  # answered
        if not _live(v, victim):
            continue  # its victim left
        ts = tasks.get(key)
        if ts is None or touched.get(ts, ("",))[0] == key:
            continue  # its task moved (or was forgotten)
        return (f"the steal {steal_id!r} of {key!r} from {victim.name!r} ended, but no answer "
                f"came, the task did not move and the victim is live (stimulus "
                f"{type(msg).__name__})")
    return None


# How long a worker may starve beside clearly spare work before balancing is at fault, and
# for how much longer the same spare task must stay put once that is noticed: several
# balancing rounds and a heartbeat (which tells which queued tasks have started).
STARVE_LIMIT = 1.0
SPARE_CONFIRM = 0.6
SPARE_MIN_DURATION = 0.05  # a shorter task is not clearly worth a move
LOOKED_AT = 32  # idle and saturated workers looked at per check; queue entries per victim: 64


class _IdleWatch:
    """What ``steal.idle-worker-fed`` remembers between stimuli (kept on the validator)."""

    def __init__(self) -> None:
        self.since: dict[Any, float] = {}  # worker -> since when it starved, continuously
        self.pending: dict[Any, tuple[float, dict[str, Any]]] = {}  # worker -> spare seen then


@steal_invariant("steal.idle-worker-fed",
                 "no running worker stays idle (nothing processing, nothing on its way) for "
                 "a second while another has queued independent tasks that would clearly "
                 "finish sooner on it")
def idle_worker_fed(v: Any, ext: Any) -> str | None:
    watch = v.__dict__.get("_idle_watch")
    if watch is None:
        watch = v.__dict__["_idle_watch"] = _IdleWatch()
    state = v.state
    now = state.time
    booked = getattr(ext, "in_flight_occupancy", None) or {}
    since, pending = watch.since, watch.pending
    starving: dict[Any, None] = {}
    if state.saturated:
        for i, ws in enumerate(state.idle):
            if i >= LOOKED_AT:
                break
            if not ws.processing and ws.status == WorkerStatus.RUNNING \
                    and booked.get(ws, 0.0) <= 0.0:
                starving[ws] = None
    for ws in [w for w in since if w not in starving]:
        del since[ws]
        pending.pop(ws, None)
    for ws in starving:
        t0 = since.setdefault(ws, now)
        if now - t0 < STARVE_LIMIT:
            continue
        spare = _spare_tasks(state, ext)
        seen = pending.get(ws)
        if seen is None:
            pending[ws] = (now, spare)
            continue
        if now - seen[0] < SPARE_CONFIRM:
            continue
        still = [k for k, (victim, allowed) in seen[1].items()
                 if spare.get(k, _GONE)[0] is victim and (not allowed or ws.name in allowed)]
        if still:
            victim = spare[still[0]][0]
            return (f"{ws.name!r} has had nothing to do since t={t0:.3f} while {victim.name!r} "
                    f"kept {len(still)} queued independent task(s) it could run sooner, e.g. "
                    f"{still[0]!r}")
        pending[ws] = (now, spare)
    return None


_GONE = (None, ())


def _spare_tasks(state: Any, ext: Any) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """Queued (not running), never moved tasks without inputs, each worth moving by a
    wide margin: key -> (the saturated worker it waits on, the workers it is restricted
    to, () for any)."""
    duration = state.estimator.duration
    booked = getattr(ext, "in_flight_occupancy", None) or {}
    in_flight = ext.in_flight
    orphans = getattr(ext, "orphans", None) or {}
    moved = getattr(ext, "moved", None) or {}  # tasks moved before may be banned from a thief
    # Tasks a victim is asked to give up are on their way out: what is left of its queue may
    # be just what its threads run next (its answer may be slow: a victim cut off answers
    # only when healed), and then nothing there is spare.
    leaving: dict[Any, int] = {}
    for entry in in_flight.values():
        victim = field(entry, "victim")
        leaving[victim] = leaving.get(victim, 0) + 1
    spare: dict[str, Any] = {}
    for i, victim in enumerate(state.saturated):
        if i >= LOOKED_AT:
            break
        if victim.status != WorkerStatus.RUNNING:
            continue
        if len(victim.processing) - leaving.get(victim, 0) <= victim.nthreads:
            continue
        per_thread = (state.occupancy(victim) + booked.get(victim, 0.0)) / victim.nthreads
        for j, ts in enumerate(reversed(victim.processing)):
            if j >= 64:
                break
            key = ts.key
            if (ts.dependencies or key in victim.executing
                    or key in in_flight or key in orphans or key in moved):
                continue
            c = duration(ts.prefix)
            if c >= SPARE_MIN_DURATION and 2 * c + SPARE_MIN_DURATION <= per_thread:
                spare[key] = (victim, ts.restrictions)
    return spare


@response_invariant("steal.executing-never-stolen",
                    "a task its victim reports executing is never moved away from it")
def executing_never_stolen(v: Any, msg: Any, before: Any, opened: Any,
                           moved: bool) -> str | None:
    if msg.state != WorkerTaskState.EXECUTING or before is None or before.name != msg.worker:
        return None
    ts = v.state.tasks.get(msg.key)
    if not _live(v, before) or ts is None or ts.processing_on is before:
        return None
    return (f"{msg.worker!r} answered steal {msg.steal_id!r} executing, yet the task is now "
            f"{_where(ts)}")


@response_invariant("steal.given-up-task-moved",
                    "a task its victim gave up for an open steal is not left assigned there "
                    "(it is moved, or sent again)")
def given_up_task_moved(v: Any, msg: Any, before: Any, opened: Any,
                        moved: bool) -> str | None:
    if msg.state != WorkerTaskState.RELEASED or opened is None:
        return None
    steal_id, victim = opened
    if (steal_id is not None and steal_id != msg.steal_id) or victim.name != msg.worker:
        return None
    ts = v.state.tasks.get(msg.key)
    if moved or ts is None or ts.processing_on is not victim or not _live(v, victim):
        return None
    return (f"{msg.worker!r} gave the task up for steal {msg.steal_id!r}, yet the scheduler "
            "still has it processing there")


@response_invariant("steal.thief-gone-only-when-gone",
                    "a task its victim gave up for an open steal goes to the steal's thief "
                    "if that is still the running member under its name; only if the thief "
                    "had left (or was replaced, or stopped running) is it counted thief-gone")
def thief_gone_only_when_gone(v: Any, msg: Any, before: Any, opened: Any,
                              moved: bool) -> str | None:
    thieves = getattr(v, "_thieves", None)
    if msg.state != WorkerTaskState.RELEASED or opened is None or thieves is None:
        return None
    steal_id, victim = opened
    if (steal_id is not None and steal_id != msg.steal_id) or victim.name != msg.worker:
        return None  # not the answer to the steal that was open: stale
    thief = thieves.get(msg.key)  # None: the steal was orphaned, its thief gone already
    if (thief is None or v.state.workers.get(thief.name) is not thief
            or thief.status != WorkerStatus.RUNNING):
        return None  # the thief is gone: placed afresh, counted thief-gone
    stats = getattr(stealing_extension(v.state), "stats", None)
    was = getattr(v, "_thief_gone", None)
    if isinstance(stats, dict) and was is not None and stats.get("thief-gone", 0) > was:
        return (f"{msg.worker!r} gave the task up for steal {msg.steal_id!r}, counted "
                f"thief-gone, but its thief {thief.name!r} is the running member")
    ts = v.state.tasks.get(msg.key)
    if ts is None or ts.state != SchedulerTaskState.PROCESSING or ts.processing_on is not thief:
        return (f"{msg.worker!r} gave the task up for steal {msg.steal_id!r} and its thief "
                f"{thief.name!r} is the running member, yet the task is {_where(ts)}")
    return None
