"""The stimuli dask's scheduler receives, as squall records them: ``DaskStimulus``.

dask's scheduler keeps a log of what its transitions did (``transition_log``), not of what
caused them. ``SchedulerStimuli`` wraps the entry points where its inputs arrive -- the
stream handlers of workers and clients (``task-finished``, ``task-erred``,
``update-graph``, ``client-releases-keys``, ...), the RPC handlers ``register-worker``
and ``unregister``, and ``remove_worker`` however it is reached (a broken stream, the
worker TTL) -- and calls every recorder with ``("scheduler", DaskStimulus(...))`` before
dask handles it, on the scheduler's event loop.

A ``DaskStimulus`` is a small msgspec struct tagged ``"target": "dask"``: the handler
(``op``, as dask names it), its ``stimulus_id``, the time (the cluster's clock: seconds
since the graph was submitted), the worker by its name, the keys, and the handler's other scalar arguments
that say what happened (``client``, ``nthreads``, ``status``, ``run_id``, ``nbytes``...).
Task bodies, results and tracebacks are left out.

The workers' side: ``WorkerStimulusLog``, a ``WorkerPlugin``, wraps each worker's state
machine (``distributed.worker_state_machine.WorkerState.handle_stimulus``) and sends every
event it handles, as dask's own ``_to_dict`` gives it (``run_spec``, values and
tracebacks left out by dask's ``to_loggable``), with the worker's transition count before
it, to the scheduler on the event topic ``WORKER_TOPIC``. ``SchedulerStimuli`` takes those
messages off the scheduler's ``log-event`` stream (they are not kept in dask's event log)
and calls every recorder with ``(worker name, DaskWorkerStimulus(...))``. A worker's first
record is ``op="start"`` with its address and threads: enough to build a fresh
``WorkerState`` and feed it the rest (``squall.targets.dask.replay``). What a worker
handled in the moment before it was killed may be missing: it had not reached the
scheduler.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

import msgspec

# handler name in dask (stream handlers, then RPC handlers) -> what a trace calls it
STREAM_OPS = ("task-finished", "task-erred", "release-worker-data", "add-keys", "long-running",
              "reschedule", "worker-status-change", "request-refresh-who-has", "steal-response",
              "update-graph", "client-desires-keys", "client-releases-keys", "cancel-keys",
              "update-data", "close-client")
RPC_OPS = ("register-worker", "unregister", "heartbeat_worker")
# The scalar arguments a stimulus keeps besides its keys, worker and stimulus id.
WORKER_TOPIC = "squall-stimulus"  # the event topic a worker's stimulus records travel on
KEPT = ("client", "name", "nthreads", "status", "state", "run_id", "nbytes", "expected",
        "close", "compute_duration", "reason", "force")

Scalar = str | int | float | bool | None


class DaskStimulus(msgspec.Struct, tag="dask", tag_field="target", frozen=True,
                   omit_defaults=True):
    """One stimulus dask's scheduler received (see the module docstring)."""

    op: str  # the handler, as dask names it: "task-finished", "update-graph", ...
    stimulus_id: str = ""
    time: float = 0.0  # seconds since the cluster started
    worker: str = ""  # the worker it is from or about, by name (its address before it has one)
    keys: tuple[str, ...] = ()
    args: dict[str, Scalar] = {}


class DaskWorkerStimulus(msgspec.Struct, tag="dask-worker", tag_field="target", frozen=True,
                         omit_defaults=True):
    """One stimulus a dask worker's state machine handled (see the module docstring)."""

    op: str  # the event's class, as dask names it ("ComputeTaskEvent", ...), or "start"
    stimulus_id: str = ""
    time: float = 0.0  # the cluster's clock when the worker handled it
    worker: str = ""  # the worker's name
    address: str = ""  # the worker's address: a new incarnation has a new one or a new id
    incarnation: str = ""  # dask's id of the worker process (``Worker.id``)
    c: int = 0  # the worker's transition count before it
    event: dict[str, Any] = {}  # dask's ``_to_dict`` of the event ("start": nthreads)


Recorder = Callable[[str, Any], None]


class SchedulerStimuli:
    """Wraps a ``distributed.Scheduler``'s entry points so every recorder in ``recorders``
    sees each stimulus (call on the scheduler's event loop; ``detach`` puts them back)."""

    def __init__(self, scheduler: Any, clock: Callable[[], float] | None = None) -> None:
        self.scheduler = scheduler
        started = time.monotonic()
        self.clock = clock if clock is not None else lambda: time.monotonic() - started
        self.recorders: list[Recorder] = []
        self._undo: list[Callable[[], None]] = []
        for op in STREAM_OPS:
            self._wrap_in(scheduler.stream_handlers, op)
        for op in RPC_OPS:
            self._wrap_in(scheduler.handlers, op)
        # Reached from inside the scheduler too (a broken stream, the worker TTL): the
        # instance attribute shadows the method for every ``self.remove_worker(...)``.
        shadowed = "remove_worker" in vars(scheduler)  # by another wrapper already
        original = scheduler.remove_worker
        ours = scheduler.remove_worker = self._wrapped("remove-worker", original)

        def undo() -> None:
            if vars(scheduler).get("remove_worker") is ours:  # not under another wrapper
                if shadowed:
                    scheduler.remove_worker = original
                else:
                    del vars(scheduler)["remove_worker"]

        self._undo.append(undo)
        self._intercept_worker_records()

    def _intercept_worker_records(self) -> None:
        """Worker stimulus records arrive as ``log-event`` messages on ``WORKER_TOPIC``:
        they go to the recorders, not into dask's event log; other topics pass."""
        table = self.scheduler.stream_handlers
        original = table.get("log-event")
        if original is None:
            return
        receive = self._worker_record

        def log_event(*args: Any, **kwargs: Any) -> Any:
            topic = kwargs.get("topic", args[1] if len(args) > 1 else None)
            if topic == WORKER_TOPIC:
                receive(kwargs.get("msg", args[2] if len(args) > 2 else None))
                return None
            return original(*args, **kwargs)

        table["log-event"] = log_event

        def undo() -> None:
            if table.get("log-event") is log_event:
                table["log-event"] = original

        self._undo.append(undo)

    def _worker_record(self, msg: Any) -> None:
        if not self.recorders or not isinstance(msg, dict):
            return
        try:
            raw = msgspec.json.decode(msg["r"])
            handled = float(raw.pop("t"))
            raw["time"] = round(self.clock() - max(time.time() - handled, 0.0), 6)
            stimulus = msgspec.convert(raw, DaskWorkerStimulus)
        except (KeyError, TypeError, ValueError, msgspec.ValidationError):
            return  # not a record of ours: nothing to log
        for recorder in self.recorders:
            recorder(stimulus.worker, stimulus)

    def _wrap_in(self, table: dict[str, Any], op: str) -> None:
        original = table.get(op)
        if original is None:  # not in this version of dask
            return
        ours = table[op] = self._wrapped(op, original)

        def undo() -> None:
            if table.get(op) is ours:  # a wrapper put on top later stays
                table[op] = original

        self._undo.append(undo)

    def _wrapped(self, op: str, original: Callable[..., Any]) -> Callable[..., Any]:
        try:
            signature: inspect.Signature | None = inspect.signature(original)
        except (TypeError, ValueError):
            signature = None
        record = self._record

        if inspect.iscoroutinefunction(original):
            @functools.wraps(original)
            async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
                record(op, signature, args, kwargs)
                return await original(*args, **kwargs)

            return wrapped_async

        @functools.wraps(original)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            record(op, signature, args, kwargs)
            return original(*args, **kwargs)

        return wrapped

    def _record(self, op: str, signature: inspect.Signature | None, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> None:
        if not self.recorders:
            return
        try:
            stimulus = self.describe(op, signature, args, kwargs)
        except Exception:  # never let recording break dask's handling
            stimulus = DaskStimulus(op=op, time=self.clock())
        for recorder in self.recorders:
            recorder("scheduler", stimulus)

    def describe(self, op: str, signature: inspect.Signature | None, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> DaskStimulus:
        """The stimulus a handler call stands for."""
        named: dict[str, Any] = dict(kwargs)
        if signature is not None and args:
            try:
                named = dict(signature.bind_partial(*args, **kwargs).arguments)
            except TypeError:
                pass
        keys: tuple[str, ...] = ()
        if "key" in named:
            keys = (str(named["key"]),)
        elif named.get("keys") is not None:
            keys = tuple(str(k) for k in named["keys"])
        worker = named.get("worker", named.get("address"))
        if op == "register-worker" and named.get("name") is not None:
            worker = named["name"]
        elif isinstance(worker, str):
            ws = self.scheduler.workers.get(worker)
            if ws is not None and ws.name is not None:
                worker = ws.name
        kept = {name: _scalar(named[name]) for name in KEPT
                if name in named and named[name] is not None}
        return DaskStimulus(op=op, stimulus_id=str(named.get("stimulus_id") or ""),
                            time=round(self.clock(), 6),
                            worker="" if worker is None else str(worker), keys=keys,
                            args=kept)

    def detach(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.recorders.clear()


def _scalar(value: Any) -> Scalar:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)

