"""Validator: strict mode for a whole simulated (or replayed) cluster.

``SimCluster(validate=True)`` builds ``Validator(cluster)`` and calls, as it runs:
``watch_worker(ws)`` when a worker state machine starts, ``worker_gone(ws)`` when its
process dies, ``after_scheduler_stimulus(msg)`` / ``after_worker_stimulus(ws, msg)``
after each stimulus is handled, ``quiescent(cluster)`` whenever nothing is in flight,
``check_end(cluster)`` when every wanted key has a result and ``check_stuck(cluster,
why)`` when the cluster stalls. It drives one SchedulerValidator and one WorkerValidator
per worker, and adds what needs them all: agreement at quiescence, liveness, end to end,
and no body run twice.

What it reads of the cluster is a ``squall.core.view.ClusterView``: ``scheduler``,
``workers`` (live, by name: objects with ``state`` and, in the simulator, ``data``), and
for the end checks ``graph``, ``wanted``, ``results``, ``runs``, ``now`` and ``pending``.
A replay of a trace provides the same view.

``phase`` says which checks are running, so that whoever catches a violation knows which
kind found it: ``running`` (after each stimulus), ``quiescent`` (nothing in flight, wanted
keys unfinished), ``stuck`` (the runtime gave up waiting) or ``end`` (every wanted key has
a result). Checks that find nothing leave it ``running``.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Any

from squall.core.oracle import expected_results
from squall.core.scheduler import SchedulerState, TaskState
from squall.core.view import ClusterView
from squall.core.worker import WorkerState, WTask
from squall.invariants.catalog import invariant
from squall.invariants.cluster_checks import (
    END_INVARIANTS,
    LIVENESS_INVARIANTS,
    QUIESCENT_INVARIANTS,
)
from squall.invariants.validator import (
    Move,
    Reporter,
    SchedulerValidator,
    WorkerValidator,
)
from squall.invariants.violation import InvariantViolation

_DUPLICATE_RUN = invariant("e2e.no-duplicate-run")

RUNNING = "running"  # checking what each stimulus touched
QUIESCENT = "quiescent"  # nothing in flight, wanted keys unfinished: checking for stuck keys
STUCK = "stuck"  # the runtime found the cluster stalled
END = "end"  # every wanted key has a result: the full and end-to-end checks


class Validator:
    """Strict mode for a cluster (see the module docstring for the hooks it offers).

    ``on_violation``: callbacks called with each InvariantViolation before it is raised
    (a trace writer closes its trace there). ``trace_path``: shown in violation messages.
    ``checks``: invariant evaluations so far. ``phase``: which checks run (or found a
    violation): RUNNING, QUIESCENT, STUCK or END.
    """

    def __init__(self, cluster: ClusterView) -> None:
        self.cluster = cluster
        self.phase = RUNNING
        self.reporter = Reporter()
        self.scheduler = SchedulerValidator(cluster.scheduler, reporter=self.reporter)
        self.workers: dict[WorkerState, WorkerValidator] = {}
        self.kills = 0  # worker processes that died (the runtime's view)
        self.legit_reruns: dict[str, int] = {}  # key -> body reruns a death accounts for
        # key -> ((deaths when its last run was taken on, keys let go before it was handed
        # out), scheduler record, ran on a removed worker), at its last start
        self._last_start: dict[str, tuple[tuple[int, int], TaskState | None, bool]] = {}
        self._taken_on: dict[tuple[str, str], int] = {}  # (worker, key) -> deaths then
        self._gone_checks = 0
        self._gone_transitions = 0
        self._own_checks = 0
        self._quiet_at: tuple[int, int] | None = None  # transition counts at the last check
        # (transition counts, time) when the cluster last went quiet with these counts
        self._quiet_since: tuple[tuple[int, int], float] | None = None
        # (graph, its size) they were computed for: a graph grows as graphs are submitted
        self._expected: tuple[Any, int, dict[str, Any]] | None = None
        self._dependents: tuple[Any, int, dict[str, list[str]]] | None = None

    # ------------------------------------------------------------------ shared settings

    @property
    def on_violation(self) -> list[Callable[[InvariantViolation], Any]]:
        return self.reporter.on_violation

    @property
    def trace_path(self) -> str:
        return self.reporter.trace_path

    @trace_path.setter
    def trace_path(self, path: str) -> None:
        self.reporter.trace_path = str(path)

    @property
    def state(self) -> SchedulerState:
        return self.cluster.scheduler

    @property
    def checks(self) -> int:
        return (self.scheduler.checks + sum(wv.checks for wv in self.workers.values())
                + self._gone_checks + self._own_checks)

    # ------------------------------------------------------------------ hooks the runtime calls

    def watch_worker(self, ws: WorkerState) -> None:
        holder = self.cluster.workers.get(ws.name)
        data = getattr(holder, "data", None) if getattr(holder, "state", None) is ws else None
        self.workers[ws] = WorkerValidator(ws, data=data, reporter=self.reporter,
                                           on_run=self._run_seen)

    def worker_gone(self, ws: WorkerState) -> None:
        wv = self.workers.pop(ws, None)
        if wv is not None:
            wv.detach()
            self._gone_checks += wv.checks
            self._gone_transitions += wv.transitions
        self.kills += 1

    def after_scheduler_stimulus(self, msg: Any) -> None:
        self.scheduler.after_stimulus(msg)

    def after_worker_stimulus(self, ws: WorkerState, msg: Any) -> None:
        wv = self.workers.get(ws)
        if wv is not None:
            wv.after_stimulus(msg)

    def quiescent(self, cluster: ClusterView) -> None:
        """Nothing is in flight. With wanted keys unfinished and nothing periodic that could
        still change the state, the cluster is stuck: say which keys, now, rather than
        after a stall timeout.

        A heartbeat timeout could still declare a silent worker dead; once every worker
        has been heard from since all went quiet, none is silent, and nothing will change.
        Work stealing is no way out: at quiescence nothing runs, so a task still assigned
        somewhere is one its worker lost, whatever a later round might do with it by chance.
        """
        if cluster.scheduler.heartbeat_timeout is not None:
            counts = self._counts()
            if self._quiet_since is None or self._quiet_since[0] != counts:
                self._quiet_since = (counts, cluster.now)
                return
            since = self._quiet_since[1]
            if any(ws.last_seen <= since for ws in self.state.workers.values()):
                return
        if len(cluster.results) >= len(cluster.wanted):
            return
        self.phase = QUIESCENT
        self._check_stalled()
        self.phase = RUNNING  # nothing found: the run goes on

    def check_end(self, cluster: ClusterView) -> None:
        """Every wanted key has a result: full check, then end to end; at quiescence also
        agreement and liveness."""
        self.phase = END
        self.check_full()
        if cluster.pending == 0:
            self._run(QUIESCENT_INVARIANTS)
            self._run(LIVENESS_INVARIANTS)
        self._run(END_INVARIANTS)
        self.phase = RUNNING

    def check_stuck(self, cluster: ClusterView, why: str) -> None:
        """The cluster stalled (``why``): full check, then (when nothing is in flight)
        agreement and liveness, which name the stuck keys."""
        self.phase = STUCK
        self._check_stalled()
        self.phase = RUNNING

    def _check_stalled(self) -> None:
        counts = self._counts()
        if self._quiet_at == counts:
            return
        self._quiet_at = counts
        self.check_full()
        if self.cluster.pending == 0:
            self._run(QUIESCENT_INVARIANTS)
            self._run(LIVENESS_INVARIANTS)

    def check_full(self, *, collect: bool = False) -> list[InvariantViolation]:
        """The whole scheduler, then every live worker."""
        found = self.scheduler.check_full(collect=collect)
        for wv in list(self.workers.values()):
            found += wv.check_full(collect=collect)
        return found

    # ------------------------------------------------------------------ what checks read

    def worker_states(self) -> dict[str, WorkerState]:
        return {name: w.state for name, w in self.cluster.workers.items()
                if w.state in self.workers}

    def store(self, name: str) -> Any:
        w = self.cluster.workers.get(name)
        return getattr(w, "data", None) if w is not None else None

    def holds(self, name: str, key: str) -> bool:
        """Whether live worker ``name`` has ``key``'s value (its store, else its state)."""
        w = self.cluster.workers.get(name)
        if w is None:
            return False
        data = getattr(w, "data", None)
        if data is not None:
            return key in data
        wt = w.state.tasks.get(key)
        return wt is not None and wt.state == "memory"

    def expected(self) -> dict[str, Any]:
        """Each key's value by a sequential evaluation of the graph (or "error:<key>")."""
        graph = self.cluster.graph
        cached = self._expected
        if cached is None or cached[0] is not graph or cached[1] != len(graph):
            cached = self._expected = (graph, len(graph), expected_results(graph))
        return cached[2]

    def graph_dependents(self) -> dict[str, list[str]]:
        """key -> the keys of the graph that depend on it."""
        graph = self.cluster.graph
        cached = self._dependents
        if cached is None or cached[0] is not graph or cached[1] != len(graph):
            dependents: dict[str, list[str]] = {}
            for spec in graph:
                for d in spec.deps:
                    dependents.setdefault(d, []).append(spec.key)
            cached = self._dependents = (graph, len(graph), dependents)
        return cached[2]

    def wanted(self) -> Set[str]:
        """The keys the client wants."""
        return self.cluster.wanted

    # ------------------------------------------------------------------ internals

    def _run(self, invariants: list[Any]) -> None:
        for inv in invariants:
            self._own_checks += 1
            found = inv.check(self)
            if found is not None:
                entity, detail = found
                self.reporter.report(inv, entity, detail, None, "", self.state.time)

    def _counts(self) -> tuple[int, int]:
        return (self.state.transition_counter,
                self._gone_transitions + sum(wv.transitions for wv in self.workers.values()))

    def _run_seen(self, wv: WorkerValidator, wt: WTask, move: Move, sid: str) -> None:
        """A worker takes a task on, or starts its body. A second start is legitimate when
        a worker died (or was removed) between the two runs being handed out (the first
        may start after the death that dooms it: its cancellation is on its way), when
        either ran on a worker the scheduler had removed (a partitioned worker runs on,
        unaware), when the key was submitted anew, or when between the two runs being
        handed out the scheduler let its result (or its run) go while no client wanted it
        -- a client released it, or it was only an input whose dependents were done --
        and it was needed again (a client wants it again, or a key depending on it), or
        gave its run up because its worker reported an input missing (a report that may
        predate the run: the fetch failed against a holder that had died)."""
        ws = wv.ws
        deaths = self.scheduler.removed + self.kills
        if move[2] != "executing":  # taken on: remember when
            self._taken_on[(ws.name, wt.key)] = deaths
            return
        self._own_checks += 1
        key = wt.key
        # deaths when it was taken on, and keys let go before the scheduler handed it out
        epoch = (self._taken_on.pop((ws.name, key), deaths),
                 self.scheduler.handed_out.get(wt.run_id, 0))
        ts = self.state.tasks.get(key)
        record = self.state.workers.get(ws.name)
        removed = record is None or record.status == "dead"
        prev = self._last_start.get(key)
        self._last_start[key] = (epoch, ts, removed)
        if prev is None:
            return
        # (the two starts may come in the other order than their runs were handed out: a
        # stale assignment's message can arrive after the new one's run started)
        first, last = sorted((prev[0][1], epoch[1]))
        if prev[0][0] != epoch[0] or prev[1] is not ts or prev[2] or removed or \
                key in self.scheduler.let_go[first:last]:
            self.legit_reruns[key] = self.legit_reruns.get(key, 0) + 1
            return
        self.reporter.report(
            _DUPLICATE_RUN, f"worker {ws.name!r}, task {key!r}",
            f"its body starts again on {ws.name!r} though no worker died since the run "
            "before was handed out", move, sid, ws.time,
            [t for t in ws.transition_log if t[0] == key])
