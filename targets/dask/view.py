"""Read-only views of dask.distributed's state in the vocabulary squall's invariants read.

The catalog's check functions (``squall.invariants``) read a scheduler's tasks, its
records of workers and its collections through plain attributes (``ts.state``,
``ts.who_has``, ``ws.has_what``, ``state.idle``...). dask's scheduler keeps the same
concepts under nearly the same names; these views close the gaps, so the catalog's
functions run unchanged on a live dask scheduler or worker:

- ``SchedulerView(state)``: a ``distributed.scheduler.SchedulerState`` (the scheduler
  itself) as squall's ``SchedulerState``. ``TaskView`` and ``WorkerView`` stand for dask's
  ``TaskState`` and ``WorkerState``: one view per dask object (``view.task(ts) is
  view.task(ts)``), so the identity checks of the catalog (``state.tasks.get(key) is ts``)
  mean what they say. A forgotten task's view is dropped with ``forget``.
- ``WorkerStateView(ws)``: a worker's ``distributed.worker_state_machine.WorkerState``
  as squall's worker ``WorkerState``, with ``WTaskView`` for its tasks.

What differs is mapped, never hidden:

- Scheduler task states: dask's ``queued`` (ready, every input in memory, held back
  while every worker is full) reads as ``no-worker`` (ready, held on the scheduler with
  no worker assigned): squall has one state for "ready but not on a worker". The
  ``unrunnable`` view is dask's unrunnable set plus its queue, so "in unrunnable exactly
  when no-worker" keeps its meaning; the dask-only invariants tell the two apart
  (``squall.targets.dask.invariants``). ``dask_state`` is dask's own.
- Worker statuses: running, paused; closing, closing_gracefully and stopping read as
  closing; closed, failed and stopped as dead; the starting ones as ``init``.
- Worker task states: ``constrained`` (ready, waiting for resources) reads as ready,
  ``long-running`` (seceded) as executing; ``cancelled`` and ``resumed`` read as
  ``cancelled`` while their body runs (``previous`` executing or long-running) and as
  ``flight`` while their transfer runs (``previous`` flight) -- squall's "in flight,
  dropped on arrival"; ``rescheduled`` and ``forgotten`` as released. ``state_key``
  says which of these a task is (``cancelled(flight)``), for choosing its checks.
- None for "empty" (dask's ``who_has``, ``waiting_on``, ``waiters``) reads as empty.

Nothing here writes to dask's state, and importing this module imports no dask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

# ---------------------------------------------------------------- state vocabularies

# dask scheduler task state -> squall's name for it (the others are the same word)
SCHEDULER_STATE: dict[str, str] = {"queued": "no-worker"}
DASK_TASK_STATES = ("released", "waiting", "no-worker", "queued", "processing", "memory",
                    "erred", "forgotten")

# dask worker status (Status.<name>) -> squall's WorkerStatus value
WORKER_STATUS: dict[str, str] = {
    "running": "running", "paused": "paused", "closing": "closing",
    "closing_gracefully": "closing", "stopping": "closing", "closed": "dead",
    "failed": "dead", "stopped": "dead", "init": "init", "created": "init",
    "starting": "init", "undefined": "init", "dont_reply": "init",
}

# dask worker task state (or state(previous)) -> squall's worker task state
WORKER_TASK_STATE: dict[str, str] = {
    "released": "released", "waiting": "waiting", "ready": "ready", "constrained": "ready",
    "executing": "executing", "long-running": "executing", "memory": "memory",
    "error": "error", "fetch": "fetch", "flight": "flight", "missing": "missing",
    "rescheduled": "released", "forgotten": "released",
    "cancelled(executing)": "cancelled", "cancelled(long-running)": "cancelled",
    "cancelled(flight)": "flight", "resumed(executing)": "cancelled",
    "resumed(long-running)": "cancelled", "resumed(flight)": "flight",
}
DASK_WORKER_TASK_STATES = tuple(WORKER_TASK_STATE)

STIMULUS_ID_UNSET = "<stimulus_id unset>"  # what dask records for a missing stimulus id
_EMPTY: frozenset[Any] = frozenset()


def worker_status(status: Any) -> str:
    """squall's name for a dask ``Status`` (or its name)."""
    name = getattr(status, "name", status)
    return WORKER_STATUS.get(name, str(name))


def worker_task_key(ts: Any) -> str:
    """A dask worker task's state, with where it came from for cancelled and resumed:
    ``cancelled(flight)``."""
    state = ts.state
    if state == "cancelled" or state == "resumed":
        return f"{state}({ts.previous})"
    return state


class Mapped:
    """A dask collection seen through a view: iterating gives views, ``in`` takes one."""

    __slots__ = ("raw", "wrap")

    def __init__(self, raw: Any, wrap: Callable[[Any], Any]) -> None:
        self.raw = raw
        self.wrap = wrap

    def __iter__(self) -> Iterator[Any]:
        return map(self.wrap, self.raw)

    def __contains__(self, item: Any) -> bool:
        raw = getattr(item, "raw", None)
        return raw is not None and raw in self.raw

    def __len__(self) -> int:
        return len(self.raw)

    def __bool__(self) -> bool:
        return bool(self.raw)

    def __repr__(self) -> str:
        return f"{[getattr(x, 'key', getattr(x, 'address', x)) for x in self.raw]!r}"


# ---------------------------------------------------------------- scheduler side


class TaskView:
    """A dask scheduler ``TaskState`` as squall's ``TaskState`` (read only)."""

    __slots__ = ("raw", "_s")

    def __init__(self, raw: Any, s: SchedulerView) -> None:
        self.raw = raw
        self._s = s

    def __repr__(self) -> str:
        return f"<task {self.raw.key!r} {self.raw._state}>"

    @property
    def key(self) -> Any:
        return self.raw.key

    @property
    def state(self) -> str:
        state = self.raw._state
        return SCHEDULER_STATE.get(state, state)

    @property
    def dask_state(self) -> str:
        return self.raw._state

    @property
    def processing_on(self) -> WorkerView | None:
        ws = self.raw.processing_on
        return None if ws is None else self._s.worker(ws)

    @property
    def who_has(self) -> Mapped:
        return Mapped(self.raw.who_has or _EMPTY, self._s.worker)

    @property
    def waiting_on(self) -> Mapped:
        return Mapped(self.raw.waiting_on or _EMPTY, self._s.task)

    @property
    def waiters(self) -> Mapped:
        return Mapped(self.raw.waiters or _EMPTY, self._s.task)

    @property
    def dependencies(self) -> Mapped:
        return Mapped(self.raw.dependencies, self._s.task)

    @property
    def dependents(self) -> Mapped:
        return Mapped(self.raw.dependents, self._s.task)

    @property
    def who_wants(self) -> Any:
        return self.raw.who_wants or ()

    @property
    def nbytes(self) -> int:
        return self.raw.nbytes

    @property
    def exception_blame(self) -> Any:
        return self.raw.exception_blame

    @property
    def exception(self) -> str | None:
        return self.raw.exception_text or None

    @property
    def suspicious(self) -> int:
        return self.raw.suspicious

    @property
    def prefix(self) -> str:
        return self.raw.prefix.name

    @property
    def restrictions(self) -> Any:
        return self.raw.worker_restrictions or ()


class WorkerView:
    """A dask scheduler ``WorkerState`` as squall's ``WorkerInfo`` (read only). Its name
    is its address: dask files its workers by address."""

    __slots__ = ("raw", "_s")

    def __init__(self, raw: Any, s: SchedulerView) -> None:
        self.raw = raw
        self._s = s

    def __repr__(self) -> str:
        return f"<worker {self.raw.address!r} {self.raw.status.name}>"

    @property
    def name(self) -> str:
        return self.raw.address

    @property
    def address(self) -> str:
        return self.raw.address

    @property
    def status(self) -> str:
        return worker_status(self.raw.status)

    @property
    def processing(self) -> Mapped:
        return Mapped(self.raw.processing, self._s.task)

    @property
    def has_what(self) -> Mapped:
        return Mapped(self.raw.has_what, self._s.task)

    @property
    def nthreads(self) -> int:
        return self.raw.nthreads

    @property
    def nbytes(self) -> int:
        return self.raw.nbytes

    @property
    def prefix_counts(self) -> dict[str, int]:
        """Tasks processing here by prefix, long-running (seceded) ones left out, as
        dask counts them."""
        return {p: n for p, n in self.raw.task_prefix_count.items() if n}

    @property
    def needs(self) -> Mapping[Any, int]:
        """Inputs (dask TaskStates) this worker must fetch -> tasks here needing each."""
        return self.raw.needs_what

    @property
    def fetch_bytes(self) -> int:
        return self.raw._network_occ

    @property
    def bandwidth(self) -> None:
        return None  # dask divides bytes to fetch by the scheduler's bandwidth

    @property
    def executing(self) -> Mapped:
        return Mapped(self.raw.executing, self._s.task)


class _Tasks:
    """dask's ``tasks`` (key -> TaskState) as key -> TaskView."""

    __slots__ = ("_s",)

    def __init__(self, s: SchedulerView) -> None:
        self._s = s

    def get(self, key: Any, default: Any = None) -> Any:
        ts = self._s.raw.tasks.get(key)
        return default if ts is None else self._s.task(ts)

    def __getitem__(self, key: Any) -> TaskView:
        return self._s.task(self._s.raw.tasks[key])

    def __contains__(self, key: Any) -> bool:
        return key in self._s.raw.tasks

    def __len__(self) -> int:
        return len(self._s.raw.tasks)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._s.raw.tasks)

    def keys(self) -> Iterable[Any]:
        return self._s.raw.tasks.keys()

    def values(self) -> Iterator[TaskView]:
        return map(self._s.task, list(self._s.raw.tasks.values()))

    def items(self) -> Iterator[tuple[Any, TaskView]]:
        task = self._s.task
        return ((k, task(ts)) for k, ts in list(self._s.raw.tasks.items()))


class _Workers:
    """dask's ``workers`` (address -> WorkerState) as address -> WorkerView."""

    __slots__ = ("_s",)

    def __init__(self, s: SchedulerView) -> None:
        self._s = s

    def get(self, address: Any, default: Any = None) -> Any:
        ws = self._s.raw.workers.get(address)
        return default if ws is None else self._s.worker(ws)

    def __getitem__(self, address: str) -> WorkerView:
        return self._s.worker(self._s.raw.workers[address])

    def __contains__(self, address: Any) -> bool:
        return address in self._s.raw.workers

    def __len__(self) -> int:
        return len(self._s.raw.workers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._s.raw.workers)

    def values(self) -> Iterator[WorkerView]:
        return map(self._s.worker, list(self._s.raw.workers.values()))

    def items(self) -> Iterator[tuple[str, WorkerView]]:
        worker = self._s.worker
        return ((a, worker(ws)) for a, ws in list(self._s.raw.workers.items()))


class _Idle:
    """dask's ``idle`` (address -> WorkerState) as a set of WorkerViews."""

    __slots__ = ("_s",)

    def __init__(self, s: SchedulerView) -> None:
        self._s = s

    def __contains__(self, ws: Any) -> bool:
        raw = getattr(ws, "raw", None)
        return raw is not None and self._s.raw.idle.get(raw.address) is raw

    def __iter__(self) -> Iterator[WorkerView]:
        return map(self._s.worker, list(self._s.raw.idle.values()))

    def __len__(self) -> int:
        return len(self._s.raw.idle)

    def __bool__(self) -> bool:
        return bool(self._s.raw.idle)


class _Unrunnable:
    """Tasks ready but held on the scheduler: dask's ``unrunnable`` and ``queued``."""

    __slots__ = ("_s",)

    def __init__(self, s: SchedulerView) -> None:
        self._s = s

    def __contains__(self, ts: Any) -> bool:
        raw = getattr(ts, "raw", None)
        return raw is not None and (raw in self._s.raw.unrunnable or raw in self._s.raw.queued)

    def __iter__(self) -> Iterator[TaskView]:
        task = self._s.task
        yield from map(task, list(self._s.raw.unrunnable))
        yield from map(task, list(self._s.raw.queued))

    def __len__(self) -> int:
        return len(self._s.raw.unrunnable) + len(self._s.raw.queued)

    def __bool__(self) -> bool:
        return len(self) > 0


class Estimator:
    """dask's duration estimate of a task prefix, as ``estimator.duration(prefix)``."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def duration(self, prefix: str) -> float:
        raw = self._raw
        tp = raw.task_prefixes.get(prefix)
        return raw.UNKNOWN_TASK_DURATION if tp is None else raw._get_prefix_duration(tp)


class StealingAdapter:
    """dask's ``WorkStealing`` extension as squall's ``StealingView``: each steal in
    flight by task, with its victim, thief and id (dask's stimulus id of the request)."""

    __slots__ = ("_s", "_raw")

    def __init__(self, s: SchedulerView, raw: Any) -> None:
        self._s = s
        self._raw = raw

    @property
    def in_flight(self) -> dict[TaskView, dict[str, Any]]:
        s = self._s
        return {s.task(ts): {"victim": s.worker(info["victim"]), "thief": s.worker(info["thief"]),
                             "steal_id": info.get("stimulus_id"), "ts": s.task(ts)}
                for ts, info in list(self._raw.in_flight.items())}

    @property
    def in_flight_occupancy(self) -> dict[WorkerView, float]:
        s = self._s
        return {s.worker(ws): occ for ws, occ in list(self._raw.in_flight_occupancy.items())}


class SchedulerView:
    """A dask ``SchedulerState`` as squall's ``SchedulerState``: see the module docstring."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._tv: dict[int, TaskView] = {}
        self._wv: dict[int, WorkerView] = {}
        self.tasks = _Tasks(self)
        self.workers = _Workers(self)
        self.idle = _Idle(self)
        self.unrunnable = _Unrunnable(self)
        self.estimator = Estimator(raw)

    # one view per dask object, kept (with the object) until forgotten
    def task(self, ts: Any) -> TaskView:
        v = self._tv.get(id(ts))
        if v is None:
            v = self._tv[id(ts)] = TaskView(ts, self)
        return v

    def worker(self, ws: Any) -> WorkerView:
        v = self._wv.get(id(ws))
        if v is None:
            v = self._wv[id(ws)] = WorkerView(ws, self)
        return v

    def forget(self, ts: Any) -> None:
        """Drop the view of a task dask forgot."""
        self._tv.pop(id(ts), None)

    def forget_worker(self, ws: Any) -> None:
        self._wv.pop(id(ws), None)

    @property
    def running(self) -> Mapped:
        return Mapped(self.raw.running, self.worker)

    @property
    def saturated(self) -> Mapped:
        return Mapped(self.raw.saturated, self.worker)

    @property
    def allowed_failures(self) -> float:
        """The scheduler's allowed_failures (a bare SchedulerState has none: no limit)."""
        return getattr(self.raw, "allowed_failures", math.inf)

    @property
    def bandwidth(self) -> float:
        return self.raw.bandwidth

    @property
    def extensions(self) -> Any:
        return self.raw.extensions

    @property
    def stealing(self) -> StealingAdapter | None:
        ext = self.raw.extensions.get("stealing")
        return None if ext is None else StealingAdapter(self, ext)

    @property
    def time(self) -> float:
        from time import time  # dask's clock: wall time

        return time()

    def occupancy(self, ws: WorkerView) -> float:
        return ws.raw.occupancy

    def story(self, keys: Iterable[Any]) -> list[Any]:
        return list(self.raw.story(*keys))


# ---------------------------------------------------------------- worker side


class WTaskView:
    """A dask worker-side ``TaskState`` as squall's ``WTask`` (read only)."""

    __slots__ = ("raw", "_w")

    def __init__(self, raw: Any, w: WorkerStateView) -> None:
        self.raw = raw
        self._w = w

    def __repr__(self) -> str:
        return f"<wtask {self.raw.key!r} {worker_task_key(self.raw)}>"

    @property
    def key(self) -> Any:
        return self.raw.key

    @property
    def state(self) -> str:
        key = worker_task_key(self.raw)
        return WORKER_TASK_STATE.get(key, key)

    @property
    def state_key(self) -> str:
        return worker_task_key(self.raw)

    @property
    def dependencies(self) -> Mapped:
        return Mapped(self.raw.dependencies, self._w.task)

    @property
    def dependents(self) -> Mapped:
        return Mapped(self.raw.dependents, self._w.task)

    @property
    def waiting_for(self) -> Mapped:
        return Mapped(self.raw.waiting_for_data, self._w.task)

    @property
    def who_has(self) -> set[str]:
        return self.raw.who_has

    @property
    def coming_from(self) -> str | None:
        return self.raw.coming_from

    @property
    def nbytes(self) -> int:
        return self.raw.nbytes or 0

    @property
    def priority(self) -> Any:
        return self.raw.priority


class _WTasks:
    __slots__ = ("_w",)

    def __init__(self, w: WorkerStateView) -> None:
        self._w = w

    def get(self, key: Any, default: Any = None) -> Any:
        ts = self._w.raw.tasks.get(key)
        return default if ts is None else self._w.task(ts)

    def __getitem__(self, key: Any) -> WTaskView:
        return self._w.task(self._w.raw.tasks[key])

    def __contains__(self, key: Any) -> bool:
        return key in self._w.raw.tasks

    def __len__(self) -> int:
        return len(self._w.raw.tasks)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._w.raw.tasks)

    def values(self) -> Iterator[WTaskView]:
        return map(self._w.task, list(self._w.raw.tasks.values()))

    def items(self) -> Iterator[tuple[Any, WTaskView]]:
        task = self._w.task
        return ((k, task(ts)) for k, ts in list(self._w.raw.tasks.items()))


class _Batch:
    """A transfer from one peer (dask: the keys in ``in_flight_workers[peer]``) as the
    task views in flight from it; a key no longer registered reads as a released task."""

    __slots__ = ("_w", "_keys")

    def __init__(self, w: WorkerStateView, keys: set[Any]) -> None:
        self._w = w
        self._keys = keys

    def __iter__(self) -> Iterator[Any]:
        tasks = self._w.raw.tasks
        for k in list(self._keys):
            ts = tasks.get(k)
            yield _Gone(k) if ts is None else self._w.task(ts)

    def __contains__(self, wt: Any) -> bool:
        return getattr(wt, "key", None) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)


class _Gone:
    """A key a collection names that the worker no longer has a task for."""

    __slots__ = ("key",)
    state = "released"
    coming_from = None

    def __init__(self, key: Any) -> None:
        self.key = key


class _Store:
    """The worker's values: ``data`` and its actors."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def __contains__(self, key: Any) -> bool:
        return key in self._raw.data or key in self._raw.actors

    def __iter__(self) -> Iterator[Any]:
        yield from list(self._raw.data.keys())
        yield from list(self._raw.actors)


class WorkerStateView:
    """A dask ``worker_state_machine.WorkerState`` as squall's worker ``WorkerState``."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._tv: dict[int, WTaskView] = {}
        self.tasks = _WTasks(self)
        self.store = _Store(raw)

    def task(self, ts: Any) -> WTaskView:
        v = self._tv.get(id(ts))
        if v is None:
            v = self._tv[id(ts)] = WTaskView(ts, self)
        return v

    def forget(self, ts: Any) -> None:
        self._tv.pop(id(ts), None)

    @property
    def name(self) -> str:
        return getattr(self.raw, "address", "?")

    @property
    def nthreads(self) -> int:
        return self.raw.nthreads

    @property
    def executing(self) -> Mapped:
        """The tasks holding a thread (dask leaves out seceded, long-running ones)."""
        return Mapped(self.raw.executing, self.task)

    @property
    def in_flight(self) -> dict[str, _Batch]:
        return {peer: _Batch(self, keys)
                for peer, keys in list(self.raw.in_flight_workers.items())}

    @property
    def nbytes(self) -> int:
        return self.raw.nbytes

    @property
    def fetch_limit(self) -> float:
        return self.raw.transfer_incoming_count_limit

    @property
    def time(self) -> float:
        from time import time

        return time()


def free_slots(ws: Any, saturation: float) -> float:
    """How many more tasks dask's scheduler may send the (scheduler-side) worker ``ws``
    before it is full at ``worker-saturation`` (infinite with queuing off)."""
    if math.isinf(saturation):
        return math.inf
    return max(math.ceil(saturation * ws.nthreads), 1) - (len(ws.processing)
                                                           - len(ws.long_running))
