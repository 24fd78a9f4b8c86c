"""Work stealing: move queued tasks from saturated workers to idle ones.

``WorkStealing(state)`` attaches itself to a ``SchedulerState`` (``state.extensions`` and,
first in line, ``state.observers``). Every ``interval`` seconds of ``Tick`` time it runs
one balancing round:

- thieves are running workers that are idle: a free thread now, or (if they received a
  steal recently) less queued work per thread than the time until a later round could
  feed them; a thief stops stealing as soon as it is no longer idle;
- victims are saturated workers (more tasks than threads), most loaded first; from each
  it looks at a bounded number of queued tasks at the tail of its queue, so a round costs
  O(saturated workers), whatever the number of tasks;
- tasks are tried cheapest-to-move first (input transfer + protocol overhead against
  compute time); a task is moved only if it would finish earlier on the thief by at least
  half its own cost, counting steals already in flight, which also makes moving it back
  never worth it; tasks shorter than the protocol's own overhead, tasks that cost more
  than ``MAX_COST_RATIO`` times their compute to move, executing tasks, tasks whose
  restrictions exclude the thief, and tasks moved less than ``settle`` seconds ago are
  left alone; a task never goes back to a worker it was stolen from.

Durations come from ``state.estimator.duration``, the function placement and occupancy
use. A prefix with no known duration gets the estimator's default, so it can be stolen.

The protocol. The scheduler sends ``StealRequest(victim, key, steal_id)`` and books the
expected occupancy change. The victim releases the task if it has not started it and
answers ``StealResponse`` with its state. Then:

- the task left processing on the victim meanwhile (finished, erred, released,
  rescheduled, its victim died): the steal was closed when it happened, and the answer
  is stale and ignored (counted in ``stats["stale"]``);
- the victim kept it (executing, already done, ...): nothing moves (``refused``);
- the victim released it and the thief is still the same running worker: the task is
  moved with ``SchedulerState.move_processing`` (``moved``);
- the thief died or was replaced by a new worker at the same name before the answer:
  the steal leaves ``in_flight`` for ``orphans``; if the victim then answers that it
  released the task, the task is placed again with ``decide_worker`` (``thief-gone``).

Only one steal per task is open at a time (orphans included), and an answer is matched
on ``steal_id``, so an answer to an older steal of the same task is stale. Any
reassignment of the task closes its steal. A task is therefore never computed by two
workers at once, and a task its victim gave up is never left assigned there.

Interface for invariant checkers (read-only):

``WorkStealing.in_flight: dict[str, InFlight]``
    open steals by task key. ``InFlight`` has ``.ts`` (the TaskState), ``.victim`` and
    ``.thief`` (WorkerInfo), ``.steal_id``, ``.time`` (when requested) and the booked
    ``.victim_cost`` / ``.thief_cost`` (seconds). While a record is open, ``ts.state``
    is processing, ``ts.processing_on is victim``, and victim and thief are distinct
    live workers (the current ``state.workers[name]``). Steals whose thief left are in
    ``WorkStealing.orphans`` (same records) until the victim answers.
``WorkStealing.in_flight_occupancy: dict[WorkerInfo, float]``
    the booked change of each live worker's occupancy: minus ``victim_cost`` per open
    steal it is the victim of, plus ``thief_cost`` per open steal it is the thief of. An
    entry exists only while a steal involving that (live) worker is open, so the dict is
    empty whenever ``in_flight`` is (an orphaned steal books nothing).
``WorkStealing.incoming`` / ``outgoing`` / ``bookings: dict[WorkerInfo, int]``
    per live worker, the open steals it is the thief of, the victim of, and either.
``WorkStealing.stats: dict[str, int]``
    every requested steal ends once, as ``moved``, ``refused``, ``thief-gone``,
    ``closed`` or ``victim-gone``, or is still open (``in_flight`` or ``orphans``).

``balance_snapshot(snapshot, rounds)`` and ``squall balance SNAPSHOT.json`` replay
balancing decisions on a given assignment (see ``load_snapshot`` for the format).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from squall.core import protocol as p
from squall.core.scheduler import (
    PROCESSING,
    RELEASED,
    RUNNING,
    SchedulerState,
    TaskState,
    WorkerInfo,
)
from squall.core.worker import WorkerTaskState

STEAL_INTERVAL = 0.1  # seconds between balancing rounds
STEAL_OVERHEAD = 0.005  # seconds a move costs besides transfers: request, answer, reassign
MAX_COST_RATIO = 8.0  # never move a task costing more than this many times its compute
MAX_CANDIDATES = 16  # stealable tasks looked at per victim per round
SCAN_LIMIT = 64  # queue entries looked at per victim per round
HOLDERS_LOOKED_AT = 8  # holders of an input considered as thieves, per input
SETTLE = 0.2  # seconds a moved task stays put before it may move on (never back)


@dataclass(slots=True, eq=False)
class InFlight:
    """One open steal."""

    ts: TaskState
    victim: WorkerInfo
    thief: WorkerInfo
    steal_id: str
    time: float
    victim_cost: float
    thief_cost: float


class WorkStealing:
    """The balancing extension of one ``SchedulerState``."""

    def __init__(self, state: SchedulerState, *, interval: float = STEAL_INTERVAL,
                 settle: float = SETTLE) -> None:
        if not interval > 0:
            raise ValueError(f"stealing interval must be > 0, got {interval}")
        self.state = state
        self.interval = interval
        self.settle = settle
        self.horizon = 2 * interval  # a thief with less queued work than this is idle
        self.in_flight: dict[str, InFlight] = {}
        self.in_flight_occupancy: dict[WorkerInfo, float] = {}
        # steals whose thief left before the victim answered: key -> record
        self.orphans: dict[str, InFlight] = {}
        self.count = 0  # tasks moved
        self.rounds = 0
        self.stats: dict[str, int] = {
            "requested": 0, "moved": 0, "refused": 0, "thief-gone": 0, "stale": 0,
            "closed": 0,  # the task left processing while its steal was open
            "victim-gone": 0,
        }
        self._open: dict[WorkerInfo, int] = {}  # live worker -> open steals involving it
        self._incoming: dict[WorkerInfo, int] = {}
        self._outgoing: dict[WorkerInfo, int] = {}
        self._moved: dict[str, tuple[float, tuple[str, ...]]] = {}  # key -> (when, stolen from)
        self._recent: dict[WorkerInfo, float] = {}  # thief -> until when to look at it
        self._next_round = 0.0
        self._ids = 0
        state.extensions.append(self)
        state.stealing = self
        # First, so that a steal is closed before any other observer (a validator) looks.
        state.observers.insert(0, self._on_transition)

    # ------------------------------------------------------------------ scheduler hooks


    @property
    def moved(self) -> dict[str, tuple[float, tuple[str, ...]]]:
        """Tasks a steal moved, while they stay processing: key -> (when, the workers it
        was stolen from). Read only: the invariants read it, stealing alone writes it."""
        return self._moved

    # Counts kept alongside ``in_flight`` so that balancing need not scan it: live worker
    # -> open steals it is the thief of (``incoming``), the victim of (``outgoing``), and
    # either (``bookings``). Read only: the invariants recount them from ``in_flight``.
    @property
    def incoming(self) -> dict[WorkerInfo, int]:
        return self._incoming

    @property
    def outgoing(self) -> dict[WorkerInfo, int]:
        return self._outgoing

    @property
    def bookings(self) -> dict[WorkerInfo, int]:
        return self._open

    def add_worker(self, ws: WorkerInfo) -> None:
        """A new worker is idle: the scheduler puts it in ``state.idle``, where we look."""

    def remove_worker(self, ws: WorkerInfo) -> None:
        """Steals from ``ws`` are void: the scheduler reschedules its tasks. Steals to
        ``ws`` become orphans: the victim may already have given the task up, so its
        answer is still awaited, and then the task is placed afresh."""
        for rec in [r for r in self.in_flight.values() if r.victim is ws or r.thief is ws]:
            self._close(rec)
            if rec.victim is ws:
                self.stats["victim-gone"] += 1
            else:
                self.orphans[rec.ts.key] = rec
        for key in [k for k, r in self.orphans.items() if r.victim is ws]:
            del self.orphans[key]
            self.stats["victim-gone"] += 1
        self._open.pop(ws, None)
        self._incoming.pop(ws, None)
        self._outgoing.pop(ws, None)
        self.in_flight_occupancy.pop(ws, None)
        self._recent.pop(ws, None)

    def tick(self, time: float) -> None:
        if time + 1e-9 >= self._next_round:
            self._next_round = time + self.interval
            self.balance()

    def steal_response(self, msg: p.StealResponse) -> None:
        state = self.state
        rec = self.in_flight.get(msg.key)
        orphan = False
        if rec is None:
            rec = self.orphans.get(msg.key)
            orphan = True
        if rec is None or rec.steal_id != msg.steal_id or msg.worker != rec.victim.name:
            self.stats["stale"] += 1  # closed meanwhile, or an older steal's answer
            return
        if orphan:
            del self.orphans[msg.key]
        else:
            self._close(rec)
        ts, thief = rec.ts, rec.thief
        if msg.state != WorkerTaskState.RELEASED:
            self.stats["refused"] += 1  # started, or done: it stays where it is
            return
        if not orphan and state.workers.get(thief.name) is thief and thief.status is RUNNING:
            moved = self._moved.get(ts.key)
            origins = (moved[1] if moved else ()) + (rec.victim.name,)
            state.move_processing(ts, thief)
            self._moved[ts.key] = (state.time, origins)
            self.count += 1
            self.stats["moved"] += 1
        else:
            # The victim gave it up and the thief is gone: place it again (maybe on the
            # victim, which then gets it anew). Not via "released", which would also drop
            # inputs only this task needs.
            self.stats["thief-gone"] += 1
            ws = state.decide_worker(ts)
            if ws is None:
                state.transitions({ts: RELEASED})
            else:
                state.move_processing(ts, ws)

    def _on_transition(self, state: SchedulerState, ts: TaskState, start: str, finish: str,
                       sid: str) -> None:
        # Any move off the victim (finished, erred, released, rescheduled, reassigned)
        # ends the task's open steal: its answer will be stale.
        if start is PROCESSING:
            if finish is not PROCESSING and self._moved:
                self._moved.pop(ts.key, None)
            if self.in_flight:
                rec = self.in_flight.get(ts.key)
                if rec is not None and rec.ts is ts:
                    self._close(rec)
                    self.stats["closed"] += 1
            if self.orphans:
                rec = self.orphans.get(ts.key)
                if rec is not None and rec.ts is ts:
                    del self.orphans[ts.key]
                    self.stats["closed"] += 1

    # ------------------------------------------------------------------ booking

    def _book(self, ws: WorkerInfo, amount: float) -> None:
        self._open[ws] = self._open.get(ws, 0) + 1
        self.in_flight_occupancy[ws] = self.in_flight_occupancy.get(ws, 0.0) + amount

    def _unbook(self, ws: WorkerInfo, amount: float) -> None:
        n = self._open.get(ws)
        if n is None:
            return  # the worker left; its booking went with it
        if n == 1:
            del self._open[ws]
            del self.in_flight_occupancy[ws]  # exactly zero again, no float residue
        else:
            self._open[ws] = n - 1
            self.in_flight_occupancy[ws] -= amount

    def _close(self, rec: InFlight) -> None:
        del self.in_flight[rec.ts.key]
        self._unbook(rec.victim, -rec.victim_cost)
        self._unbook(rec.thief, rec.thief_cost)
        _decrement(self._outgoing, rec.victim)
        _decrement(self._incoming, rec.thief)

    def _projected(self, ws: WorkerInfo) -> float:
        """Occupancy counting the steals in flight, never below zero."""
        occ = self.state.occupancy(ws) + self.in_flight_occupancy.get(ws, 0.0)
        return occ if occ > 0.0 else 0.0

    # ------------------------------------------------------------------ balancing

    def balance(self) -> int:
        """One balancing round now; returns the number of steals requested."""
        state = self.state
        self.rounds += 1
        if not state.saturated:
            return 0
        # Enough thieves for every steal this round could request, and no more.
        limit = MAX_CANDIDATES * len(state.saturated)
        proj: dict[WorkerInfo, float] = {}
        pool: list[WorkerInfo] = []
        for ws in state.idle:
            if len(pool) >= limit:
                break
            pool.append(ws)
        # Recent thieves may hold a task or two and still run dry before the next round.
        now = state.time
        for ws, until in list(self._recent.items()):
            if now > until or ws.status is not RUNNING or ws in state.idle:
                del self._recent[ws]
            else:
                pool.append(ws)
        thieves = _ThiefHeap()
        for ws in pool:
            occ = self._projected(ws)
            proj[ws] = occ
            if self._hungry(ws, occ):
                thieves.push(ws, occ / ws.nthreads)
        if not thieves:
            return 0
        victims: list[tuple[float, int, WorkerInfo]] = []
        for ws in state.saturated:
            if ws not in thieves:
                occ = self._projected(ws)
                proj[ws] = occ
                victims.append((-occ / ws.nthreads, len(victims), ws))
        victims.sort()
        requested = 0
        for _, _, victim in victims:
            if not thieves:
                break
            requested += self._rob(victim, thieves, proj)
        return requested

    def _hungry(self, ws: WorkerInfo, occ: float) -> bool:
        """A free thread now, or less work left per thread than the horizon: the part of
        its running tasks already done (from the last heartbeat) does not count."""
        n = len(ws.processing) + self._incoming.get(ws, 0)
        if n < ws.nthreads:
            return True
        if ws.executing:
            duration = self.state.estimator.duration
            since = self.state.time - ws.last_seen
            for key, elapsed in ws.executing.items():
                ts = self.state.tasks.get(key)
                if ts is not None and ts.processing_on is ws:
                    d = duration(ts.prefix)
                    e = elapsed + since
                    if e < d:  # an overdue task may run as long again: no discount
                        occ -= e
        return occ / ws.nthreads < self.horizon

    def _candidates(self, victim: WorkerInfo) -> list[tuple[int, int, TaskState, float]]:
        """Stealable tasks from the tail of the victim's queue, cheapest to move first."""
        state = self.state
        duration = state.estimator.duration
        now = state.time
        executing = victim.executing
        in_flight = self.in_flight
        orphans = self.orphans
        moved = self._moved
        bandwidth = state.bandwidth
        found: list[tuple[int, int, TaskState, float]] = []
        for i, ts in enumerate(reversed(victim.processing)):
            if i >= SCAN_LIMIT or len(found) >= MAX_CANDIDATES:
                break
            key = ts.key
            if key in in_flight or key in executing or key in orphans:
                continue
            m = moved.get(key)
            if m is not None and now - m[0] < self.settle:
                continue
            c = duration(ts.prefix)
            if c < STEAL_OVERHEAD:
                continue  # moving it costs more than running it
            nbytes = 0
            for dts in ts.dependencies:
                nbytes += dts.nbytes if dts.nbytes > 0 else 0
            # For the order only (the thief chosen may hold some inputs already). Ratios
            # within a factor of two count as equal: then the tail, which runs last, first.
            ratio = (nbytes / bandwidth + STEAL_OVERHEAD) / c
            found.append((math.floor(math.log2(ratio)), i, ts, c))
        found.sort(key=_ratio_then_tail)
        return found

    def _rob(self, victim: WorkerInfo, thieves: _ThiefHeap,
             proj: dict[WorkerInfo, float]) -> int:
        state = self.state
        requested = 0
        for _, _, ts, c in self._candidates(victim):
            if len(victim.processing) - self._outgoing.get(victim, 0) <= victim.nthreads:
                break  # what is left is running, or about to
            if not thieves:
                break
            thief = self._choose_thief(ts, thieves, proj)
            if thief is None:
                continue
            tt = state.transfer_cost(ts, thief)
            if (tt + STEAL_OVERHEAD) / c > MAX_COST_RATIO:
                continue
            tv = state.transfer_cost(ts, victim)
            wait_victim = proj[victim] / victim.nthreads
            finish_thief = proj[thief] / thief.nthreads + tt + c + STEAL_OVERHEAD
            # Half the task's cost as margin: a move back can never pass this test.
            if finish_thief + (c + tv) / 2 > wait_victim:
                continue
            self._request(ts, victim, thief, c + tv, c + tt)
            requested += 1
            proj[victim] = max(0.0, proj[victim] - (c + tv))
            proj[thief] += c + tt
            # Look at it again until the work it now has should be nearly done.
            self._recent[thief] = state.time + proj[thief] / thief.nthreads + self.interval
            if self._hungry(thief, proj[thief]):
                thieves.push(thief, proj[thief] / thief.nthreads)
            else:
                thieves.remove(thief)
        return requested

    def _choose_thief(self, ts: TaskState, thieves: _ThiefHeap,
                      proj: dict[WorkerInfo, float]) -> WorkerInfo | None:
        """The hungry worker where ``ts`` would finish first, looking only at the least
        loaded thief, holders of its inputs and (if restricted) the allowed workers."""
        state = self.state
        m = self._moved.get(ts.key)
        banned = m[1] if m is not None else ()
        options: list[WorkerInfo] = []
        if ts.restrictions:
            for name in ts.restrictions[:SCAN_LIMIT]:
                ws = state.workers.get(name)
                if ws is not None and ws in thieves:
                    options.append(ws)
        else:
            top = thieves.top(banned)
            if top is not None:
                options.append(top)
            for dts in ts.dependencies:
                for j, ws in enumerate(dts.who_has):
                    if j >= HOLDERS_LOOKED_AT:
                        break
                    if ws in thieves:
                        options.append(ws)
        best: WorkerInfo | None = None
        best_finish = math.inf
        for ws in options:
            if ws.name in banned:
                continue  # no ping-pong: never back to where it was stolen from
            finish = proj[ws] / ws.nthreads + state.transfer_cost(ts, ws)
            if finish < best_finish:
                best, best_finish = ws, finish
        return best

    def _request(self, ts: TaskState, victim: WorkerInfo, thief: WorkerInfo,
                 victim_cost: float, thief_cost: float) -> None:
        state = self.state
        self._ids += 1
        steal_id = f"steal-{self._ids}"
        self.in_flight[ts.key] = InFlight(ts, victim, thief, steal_id, state.time,
                                          victim_cost, thief_cost)
        self._book(victim, -victim_cost)
        self._book(thief, thief_cost)
        self._outgoing[victim] = self._outgoing.get(victim, 0) + 1
        self._incoming[thief] = self._incoming.get(thief, 0) + 1
        self.stats["requested"] += 1
        state.emit(p.StealRequest(stimulus_id=state.stimulus_id, time=state.time,
                                  worker=victim.name, key=ts.key, steal_id=steal_id))


def _ratio_then_tail(c: tuple[int, int, TaskState, float]) -> tuple[int, int]:
    return c[0], c[1]


def _decrement(counts: dict[WorkerInfo, int], ws: WorkerInfo) -> None:
    n = counts.get(ws)
    if n is not None:
        if n <= 1:
            del counts[ws]
        else:
            counts[ws] = n - 1


class _ThiefHeap:
    """Hungry workers, least loaded per thread first; updated entries replace old ones."""

    __slots__ = ("_heap", "_current", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, WorkerInfo]] = []
        self._current: dict[WorkerInfo, int] = {}
        self._seq = 0

    def push(self, ws: WorkerInfo, load: float) -> None:
        self._seq += 1
        self._current[ws] = self._seq
        heapq.heappush(self._heap, (load, self._seq, ws))

    def remove(self, ws: WorkerInfo) -> None:
        self._current.pop(ws, None)

    def top(self, skip: tuple[str, ...] = ()) -> WorkerInfo | None:
        """The least loaded worker whose name is not in ``skip`` (a task's past victims)."""
        heap = self._heap
        aside = []
        found = None
        while heap:
            entry = heap[0]
            if self._current.get(entry[2]) != entry[1]:
                heapq.heappop(heap)  # superseded by a later push, or removed
            elif entry[2].name in skip:
                aside.append(heapq.heappop(heap))
            else:
                found = entry[2]
                break
        for entry in aside:
            heapq.heappush(heap, entry)
        return found

    def __contains__(self, ws: object) -> bool:
        return ws in self._current

    def __bool__(self) -> bool:
        return bool(self._current)
