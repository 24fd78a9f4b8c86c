"""Strict mode on a live dask.distributed cluster: ``DaskValidator``.

Scheduler side (in the process that runs ``distributed.Scheduler``; for a
``LocalCluster``, processes or not, that is the calling process)::

    validator = DaskValidator.attach(cluster.scheduler)
    client.register_plugin(validator.worker_plugin())   # every worker, now and later
    ...                                                  # run the workload
    validator.check_quiescent(client)                    # when the cluster is idle
    validator.raise_first()                              # the first violation, if any
    validator.detach()

- A ``SchedulerPlugin``'s ``transition`` hook notes each transition (and checks what a
  single move must satisfy); the entry points where stimuli arrive (the stream handlers
  of workers and clients, the steal responses, the RPC handlers that move data) are
  wrapped on the instance to note the keys and workers a stimulus names, since dask
  changes replicas, seceded tasks and steals without a transition; and
  ``SchedulerState._transitions`` is wrapped on the instance. The checks run once per
  stimulus, after it, on what it touched: at the end of the outermost stream handler, or
  at the end of ``_transitions`` when no handler is running (a worker lost, a periodic
  callback).
- Worker side, ``worker_plugin()`` is a ``WorkerPlugin`` pickled into each worker
  process. It wraps the worker's ``handle_stimulus`` and checks the worker's state
  machine after each stimulus. It keeps its violations (``client.run`` fetches them) and
  sends each to the scheduler as an event, where the validator collects it.
- dask logs and swallows exceptions from plugins, so nothing is raised inside dask:
  violations are collected as ``squall.invariants.InvariantViolation`` (invariant id,
  the entity and key, dask's own ``story`` of the key, the last stimuli before it) in
  ``violations``; ``raise_first()`` raises the first.
- ``check_quiescent(client)``: waits (with a deadline) until the cluster stops moving,
  then checks the whole scheduler and every worker, the agreement between them, and
  liveness: a task stuck processing or waiting is named, never a timeout.

This module imports distributed (``require_dask`` says how to install it).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from squall.invariants.catalog import BY_ID
from squall.invariants.violation import InvariantViolation
from squall.targets.dask import require_dask

require_dask()

from distributed import Scheduler  # noqa: E402
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin  # noqa: E402
from distributed.utils import in_async_call, sync  # noqa: E402

from squall.targets.dask.checker import (  # noqa: E402
    SchedulerChecker,
    WorkerChecker,
    story_rows,
)
from squall.targets.dask.invariants import DASK_BY_ID  # noqa: E402

logger = logging.getLogger("squall.dask")

PLUGIN_NAME = "squall-validator"
EVENT_TOPIC = "squall-violation"
SETTLE_TIMEOUT = 10.0  # seconds check_quiescent waits for the cluster to stop moving
SETTLE_POLL = 0.05
# seconds the pulse must stay the same: a message already written to a socket is in
# neither side's buffer, and on a loaded machine it can take this long to be handled
SETTLE_QUIET = 0.3
# RPC handlers that move data or workers without transitions of every key they touch:
# after one, the ledger is recounted.
BULK_RPC = ("scatter", "gather", "rebalance", "replicate", "restart", "retire_workers",
            "register-worker", "unregister", "delete_data", "retry")


class DaskValidator:
    """Strict mode for a dask scheduler and its workers; see the module docstring."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.checker: SchedulerChecker | None = None
        self.errors: list[str] = []  # the validator's own failures (never dask's)
        self._worker_violations: list[InvariantViolation] = []
        self._worker_seen: set[tuple[str, int]] = set()
        self._worker_checks: dict[str, int] = {}
        self._active = False
        self._depth = 0  # sync stream handlers running (nested)
        self._undo: list[Callable[[], None]] = []
        self._plugin: _SchedulerHook | None = None

    # ------------------------------------------------------------------ public API

    @classmethod
    def attach(cls, scheduler: Scheduler) -> DaskValidator:
        """A validator attached to ``scheduler`` (a running ``distributed.Scheduler`` in
        this process), checking from now on."""
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"DaskValidator.attach needs a distributed.Scheduler, got "
                            f"{type(scheduler).__name__}")
        validator = cls(scheduler)
        validator._on_loop(validator._install)
        return validator

    def worker_plugin(self) -> WorkerPlugin:
        """The plugin that checks each worker (register it with
        ``client.register_plugin``)."""
        return SquallWorkerPlugin()

    @property
    def violations(self) -> list[InvariantViolation]:
        """Every violation found so far: the scheduler's, then the workers' (those sent
        as events, and those fetched by ``check_quiescent``)."""
        own = list(self.checker.violations) if self.checker is not None else []
        return own + list(self._worker_violations)

    @property
    def checks(self) -> int:
        """Invariant evaluations: the scheduler's, plus each worker's as last reported."""
        own = self.checker.checks if self.checker is not None else 0
        return own + sum(self._worker_checks.values())

    def raise_first(self) -> None:
        """Raise the first violation found, if any."""
        found = self.violations
        if found:
            raise found[0]

    def check_quiescent(self, client: Any, timeout: float = SETTLE_TIMEOUT) -> None:
        """Full checks of the scheduler and every worker, their agreement and liveness,
        once the cluster stops moving (waited for up to ``timeout`` seconds; then checked
        as it is, so what is stuck is named). Violations are collected, not raised: see
        ``raise_first``. ``client``: a synchronous ``distributed.Client`` of the cluster
        (an asynchronous one: ``await acheck_quiescent(client)``)."""
        if getattr(client, "asynchronous", False):
            raise TypeError("check_quiescent needs a synchronous Client; with an "
                            "asynchronous one, await acheck_quiescent(client)")
        deadline = time.monotonic() + timeout
        last = None
        since = time.monotonic()
        while True:
            pulse = self._pulse(_run_everywhere(client, _worker_pulse))
            now = time.monotonic()
            if pulse is None or pulse != last:
                last, since = pulse, now
            elif now - since >= SETTLE_QUIET:
                break
            if now >= deadline:
                break
            time.sleep(SETTLE_POLL)  # polling the cluster for quiet, with a deadline
        reports = _run_everywhere(client, _worker_report)
        self._on_loop(self._quiescent, reports)

    async def acheck_quiescent(self, client: Any, timeout: float = SETTLE_TIMEOUT) -> None:
        """``check_quiescent`` for an asynchronous client, on the scheduler's loop."""
        deadline = time.monotonic() + timeout
        last = None
        since = time.monotonic()
        while True:
            pulse = self._pulse(await client.run(_worker_pulse))
            now = time.monotonic()
            if pulse is None or pulse != last:
                last, since = pulse, now
            elif now - since >= SETTLE_QUIET:
                break
            if now >= deadline:
                break
            await asyncio.sleep(SETTLE_POLL)
        reports = await client.run(_worker_report)
        self._on_loop(self._quiescent, reports)

    def pulse(self, client: Any) -> Any:
        """What changes while the cluster moves (transition counts, workers), or None while
        a task body runs or data is on its way: the same twice, some time apart, and the
        cluster is still."""
        return self._pulse(_run_everywhere(client, _worker_pulse))

    def reset(self, client: Any) -> None:
        """Start over on an idle cluster (all keys released): what was found and counted
        is forgotten, and the scheduler and every worker checked afresh from their state
        now. The hooks stay as they are (a cluster reused between scenarios)."""
        def restart() -> None:
            self.checker = SchedulerChecker(self.scheduler)
            self.errors.clear()
            self._worker_violations.clear()
            self._worker_seen.clear()
            self._worker_checks.clear()

        self._on_loop(restart)
        client.run(_reset_worker)

    def detach(self) -> None:
        """Stop checking on the scheduler (workers keep their plugin until it is
        unregistered: ``client.unregister_worker_plugin("squall-validator")``)."""
        self._on_loop(self._uninstall)

    # ------------------------------------------------------------------ installing

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the scheduler's event loop (directly when already there, or when
        the loop is not running)."""
        loop = self.scheduler.loop
        if in_async_call(loop) or not loop.asyncio_loop.is_running():
            return fn(*args)

        async def call() -> Any:
            return fn(*args)

        return sync(loop, call)

    def _install(self) -> None:
        s = self.scheduler
        self.checker = SchedulerChecker(s)
        self._active = True
        self._plugin = _SchedulerHook(self)
        name = f"{PLUGIN_NAME}-{id(self):x}"  # one per validator
        s.add_plugin(self._plugin, name=name)

        def remove_plugin() -> None:
            s.plugins.pop(name, None)

        self._undo.append(remove_plugin)
        for op in list(s.stream_handlers):
            self._wrap_in(s.stream_handlers, op, stream=True)
        for op in BULK_RPC:
            self._wrap_in(s.handlers, op, stream=False)

        def after_transitions(*args: Any, **kwargs: Any) -> None:
            if self._depth == 0:
                self._checkpoint()

        def replica(ts: Any, ws: Any) -> None:
            checker = self.checker  # (a reset replaces it)
            if checker is not None:
                checker.note_task(ts)
                checker.note_worker(ws.address)

        # replicas change without a transition (the active memory manager, rebalance,
        # replicate, add-keys, a worker lost): each is noted
        self._undo.append(_wrap_method(s, "_transitions", after_transitions, self))
        self._undo.append(_wrap_method(s, "add_replica", replica, self))
        self._undo.append(_wrap_method(s, "remove_replica", replica, self))

    def _uninstall(self) -> None:
        self._active = False
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _wrap_in(self, table: dict[str, Any], op: str, *, stream: bool) -> None:
        original = table.get(op)
        if original is None:
            return
        wrapped = self._wrapped(op, original, stream)
        table[op] = wrapped

        def undo() -> None:
            if table.get(op) is wrapped:  # another wrapper on top stays, inactive ones pass
                table[op] = original

        self._undo.append(undo)

    def _wrapped(self, op: str, original: Callable[..., Any], stream: bool
                 ) -> Callable[..., Any]:
        try:
            signature: inspect.Signature | None = inspect.signature(original)
        except (TypeError, ValueError):
            signature = None

        if inspect.iscoroutinefunction(original):
            @functools.wraps(original)
            async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
                if not self._active:
                    return await original(*args, **kwargs)
                named = _bind(signature, args, kwargs)
                self._before(op, named)
                try:
                    return await original(*args, **kwargs)
                finally:
                    self._after(op, named, bulk=not stream)

            return wrapped_async

        @functools.wraps(original)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not self._active:
                return original(*args, **kwargs)
            named = _bind(signature, args, kwargs)
            steal = self._before(op, named)
            self._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1
                self._after(op, named, bulk=not stream, steal=steal)

        return wrapped

    # ------------------------------------------------------------------ per stimulus

    def _before(self, op: str, named: dict[str, Any]) -> Any:
        """Note what the stimulus names; for a steal response, what was open before."""
        checker = self.checker
        if checker is None:
            return None
        try:
            if op == "log-event":
                if named.get("topic") == EVENT_TOPIC:
                    self._collect_worker(named.get("worker", ""), named.get("msg"))
                return None
            if op in ("keep-alive", "heartbeat-client"):
                return None
            checker.note_stimulus("scheduler", _describe(op, named),
                                  str(named.get("stimulus_id") or ""))
            keys = _named_keys(op, named)
            if keys:
                checker.note_keys(keys)
            worker = named.get("worker", named.get("address"))
            if isinstance(worker, str):
                checker.note_worker(worker)
            if op == "steal-response":
                return self._steal_before(named.get("key"))
        except Exception as e:  # never let checking break dask
            self._error(f"noting {op}", e)
        return None

    def _after(self, op: str, named: dict[str, Any], *, bulk: bool, steal: Any = None) -> None:
        checker = self.checker
        if checker is None or op in ("keep-alive", "heartbeat-client", "log-event"):
            return
        try:
            keys = _named_keys(op, named)
            if keys:
                checker.note_keys(keys)
            if bulk and op in BULK_RPC:
                checker.recount()
            if op == "restart":  # fresh worker processes count their runs from zero
                checker.taken_back.clear()
            if op == "steal-response" and self._depth == 0:
                before, opened = steal if steal is not None else (None, None)
                checker.check_steal_response(
                    named.get("key"), str(named.get("state")), str(named.get("worker")),
                    str(named.get("stimulus_id") or ""), before, opened)
        except Exception as e:
            self._error(f"after {op}", e)
        if self._depth == 0:
            self._checkpoint()

    def _steal_before(self, key: Any) -> tuple[Any, tuple[str, Any] | None]:
        s = self.scheduler
        ts = s.tasks.get(key)
        before = ts.processing_on if ts is not None else None
        ext = s.extensions.get("stealing")
        info = ext.in_flight.get(ts) if ext is not None and ts is not None else None
        opened = (info.get("stimulus_id"), info["victim"]) if info else None
        return before, opened

    def _checkpoint(self) -> None:
        if self.checker is None:
            return
        try:
            self.checker.checkpoint()
        except Exception as e:
            self._error("checking", e)

    def _note_transition(self, key: Any, start: str, finish: str, stimulus_id: str) -> None:
        if self.checker is None or not self._active:
            return
        try:
            self.checker.note_transition(key, start, finish, stimulus_id)
        except Exception as e:
            self._error("noting a transition", e)

    def _error(self, doing: str, e: BaseException) -> None:
        msg = f"squall's dask validator failed {doing}: {type(e).__name__}: {e}"
        if len(self.errors) < 100:
            self.errors.append(msg)
        logger.warning(msg, exc_info=True)

    # ------------------------------------------------------------------ workers, quiescence

    def _collect_worker(self, worker: str, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        mark = (str(payload.get("worker", worker)), int(payload.get("seq", -1)))
        if mark in self._worker_seen:
            return
        self._worker_seen.add(mark)
        exc = violation_from_payload(payload)
        if exc is not None:
            self._worker_violations.append(exc)

    def _pulse(self, workers: dict[str, Any]) -> Any:
        """What changes while the cluster moves; None while a worker is busy or a message
        waits in a batched stream (the scheduler's to a worker, a worker's to it)."""
        if any(p[1] for p in workers.values()):
            return None
        if any(getattr(bs, "buffer", None) for bs in list(self.scheduler.stream_comms.values())):
            return None
        return (self.scheduler.transition_counter, len(self.scheduler.workers),
                tuple(sorted((a, p[0]) for a, p in workers.items())))

    def _quiescent(self, reports: dict[str, Any]) -> None:
        checker = self.checker
        if checker is None:
            return
        try:
            checker.checkpoint()
            checker.check_full()
            states: dict[str, dict[Any, str]] = {}
            runs: dict[Any, int] = {}
            for address, report in reports.items():
                states[address] = report.get("tasks", {})
                for key, n in report.get("runs", {}).items():
                    runs[key] = runs.get(key, 0) + n
                self._worker_checks[address] = int(report.get("checks", 0))
                for payload in report.get("violations", ()):
                    self._collect_worker(address, payload)
                if not report.get("attached", False):
                    self.errors.append(f"worker {address!r} has no squall validator plugin")
            checker.quiescent(states, runs)
        except Exception as e:
            self._error("checking at quiescence", e)


class _SchedulerHook(SchedulerPlugin):
    """Notes every transition for the validator (runs inside dask's ``_transition``)."""

    def __init__(self, validator: DaskValidator) -> None:
        self._validator = validator

    def transition(self, key: Any, start: str, finish: str, *args: Any,
                   stimulus_id: str = "", **kwargs: Any) -> None:
        self._validator._note_transition(key, start, finish, stimulus_id)


class SquallWorkerPlugin(WorkerPlugin):
    """Checks a dask worker's state machine after each stimulus (see the module
    docstring). Pickled into each worker; its state there is the worker's own."""

    name = PLUGIN_NAME

    def __init__(self, push: bool = True) -> None:
        self.push = push  # send each violation to the scheduler as an event
        self.checker: WorkerChecker | None = None
        self.errors: list[str] = []
        self._worker: Any = None
        self._wrapped: Any = None
        self._prior: Any = None
        self._sent = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"push": self.push}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def setup(self, worker: Any) -> None:
        self._worker = worker
        self.checker = WorkerChecker(worker.state, name=worker.address)
        prior = vars(worker).get("handle_stimulus")
        cls = type(worker)

        def handle_stimulus(*stims: Any) -> Any:
            original = (prior if prior is not None
                        else cls.handle_stimulus.__get__(worker, cls))
            checker = self.checker  # (a reset replaces it)
            if checker is None:
                return original(*stims)
            try:
                for ev in stims:
                    checker.note_stimulus(ev)
            except Exception as e:
                self._error("noting a stimulus", e)
            try:
                return original(*stims)
            finally:
                try:
                    for ev in stims:
                        checker.after_stimulus(ev)
                    self._send_new()
                except Exception as e:
                    self._error("checking", e)

        functools.update_wrapper(handle_stimulus, cls.handle_stimulus)
        worker.handle_stimulus = handle_stimulus
        self._wrapped = handle_stimulus
        self._prior = prior

    def reset(self) -> None:
        """Check afresh from the worker's state now: a new checker, nothing found yet."""
        if self._worker is not None:
            self.checker = WorkerChecker(self._worker.state, name=self._worker.address)
        self.errors.clear()
        self._sent = 0

    def teardown(self, worker: Any) -> None:
        if self._wrapped is not None:
            _restore_attr(worker, "handle_stimulus", self._wrapped, self._prior)
        self._wrapped = None

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        checker = self.checker
        if checker is not None and self._wrapped is not None:
            try:
                checker.note_transition(key, start, finish)
            except Exception as e:
                self._error("noting a transition", e)

    def _send_new(self) -> None:
        checker = self.checker
        if checker is None or not self.push:
            return
        found = checker.violations
        while self._sent < len(found):
            payload = violation_payload(found[self._sent], self._worker.address, self._sent)
            self._sent += 1
            try:
                self._worker.log_event(EVENT_TOPIC, payload)
            except Exception as e:
                self._error("sending a violation", e)

    def _error(self, doing: str, e: BaseException) -> None:
        msg = f"squall's dask worker validator failed {doing}: {type(e).__name__}: {e}"
        if len(self.errors) < 100:
            self.errors.append(msg)
        logger.warning(msg, exc_info=True)


# ---------------------------------------------------------------- run on the workers


def _plugin(dask_worker: Any) -> SquallWorkerPlugin | None:
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, SquallWorkerPlugin) else None


RUN_ATTEMPTS = 20  # a broadcast that met a worker closing is sent again, this often


def _run_everywhere(client: Any, fn: Callable[..., Any]) -> Any:
    """``client.run(fn)`` on every worker the scheduler knows. A worker whose connection
    closes while the call is on its way (dask dropping it) fails the whole broadcast: it
    is sent again once the scheduler has let the worker go."""
    for attempt in range(RUN_ATTEMPTS):
        try:
            return client.run(fn)
        except OSError:  # (dask's CommClosedError is one)
            if attempt == RUN_ATTEMPTS - 1:
                raise
            time.sleep(SETTLE_POLL)  # polling the cluster for the worker's removal
    return None


def _reset_worker(dask_worker: Any) -> None:
    plugin = _plugin(dask_worker)
    if plugin is not None:
        plugin.reset()


def _worker_pulse(dask_worker: Any) -> tuple[int, bool]:
    """(transitions so far, whether a body runs or a transfer is on its way)."""
    state = dask_worker.state
    busy = bool(state.executing or state.long_running or state.in_flight_tasks
                or state.ready or state.data_needed and any(state.data_needed.values())
                or getattr(getattr(dask_worker, "batched_stream", None), "buffer", None))
    return state.transition_counter, busy


def _worker_report(dask_worker: Any) -> dict[str, Any]:
    """A worker's full check and what the scheduler compares it with."""
    plugin = _plugin(dask_worker)
    if plugin is None or plugin.checker is None:
        checker = WorkerChecker(dask_worker.state, name=dask_worker.address)
        checker.check_full()
        return {"attached": False, "tasks": checker.tasks_now(), "runs": {},
                "checks": checker.checks,
                "violations": [violation_payload(v, dask_worker.address, i)
                               for i, v in enumerate(checker.violations)]}
    checker = plugin.checker
    checker.check_full()
    plugin._send_new()
    return {"attached": True, "tasks": checker.tasks_now(), "runs": dict(checker.runs),
            "checks": checker.checks, "errors": list(plugin.errors),
            "violations": [violation_payload(v, dask_worker.address, i)
                           for i, v in enumerate(checker.violations)]}


# ---------------------------------------------------------------- violations between processes


def violation_payload(exc: InvariantViolation, worker: str, seq: int) -> dict[str, Any]:
    """A violation as plain, msgpack-able values."""
    return {"id": exc.id, "entity": exc.entity, "detail": exc.detail, "key": exc.key,
            "start": exc.start, "finish": exc.finish, "stimulus_id": exc.stimulus_id,
            "time": exc.time, "story": story_rows(exc.story),
            "recent": [[str(r), m if isinstance(m, dict | str) else str(m)]
                       for r, m in exc.recent],
            "worker": worker, "seq": seq}


def violation_from_payload(payload: dict[str, Any]) -> InvariantViolation | None:
    inv = BY_ID.get(payload.get("id", "")) or DASK_BY_ID.get(payload.get("id", ""))
    if inv is None:
        return None
    return InvariantViolation(
        inv, str(payload.get("entity", "")), str(payload.get("detail", "")),
        key=str(payload.get("key", "")), start=str(payload.get("start", "")),
        finish=str(payload.get("finish", "")),
        stimulus_id=str(payload.get("stimulus_id", "")),
        time=float(payload.get("time", 0.0)),
        recent=[tuple(r) for r in payload.get("recent", ())],
        story=[tuple(r) for r in payload.get("story", ())])


# ---------------------------------------------------------------- helpers


def _wrap_method(obj: Any, name: str, after: Callable[..., None], owner: Any
                 ) -> Callable[[], None]:
    """Shadow the method ``name`` on the instance ``obj``: the method runs, then (while
    ``owner._active``) ``after`` with the same arguments. The method is looked up at each
    call (on the class, or on an instance wrapper that was there first), so a patch of
    the class made later still runs. Returns the undo."""
    prior = vars(obj).get(name)
    cls = type(obj)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        method = prior if prior is not None else getattr(cls, name).__get__(obj, cls)
        try:
            return method(*args, **kwargs)
        finally:
            if owner._active:
                try:
                    after(*args, **kwargs)
                except Exception as e:
                    owner._error(f"after {name}", e)

    functools.update_wrapper(wrapped, getattr(cls, name))
    setattr(obj, name, wrapped)
    return lambda: _restore_attr(obj, name, wrapped, prior)


def _restore_attr(obj: Any, name: str, ours: Any, prior: Any = None) -> None:
    """Drop the instance attribute ``name`` if it is still ``ours`` (the class's method
    shows again); leave another wrapper on top alone."""
    if vars(obj).get(name) is ours:
        if prior is None:
            del vars(obj)[name]
        else:
            setattr(obj, name, prior)


def _bind(signature: inspect.Signature | None, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> dict[str, Any]:
    if not args or signature is None:
        return kwargs
    try:
        return dict(signature.bind_partial(*args, **kwargs).arguments)
    except TypeError:
        return kwargs


def _named_keys(op: str, named: dict[str, Any]) -> tuple[Any, ...]:
    if op == "update-graph":  # its new tasks all transition
        return ()
    key = named.get("key")
    if key is not None:
        return (key,)
    for name in ("keys", "who_has", "data"):
        keys = named.get(name)
        if keys:
            return tuple(keys)
    return ()


def _describe(op: str, named: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"op": op}
    keys = _named_keys(op, named)
    if keys:
        out["keys"] = [str(k) for k in keys[:5]] + (["..."] if len(keys) > 5 else [])
    for name in ("worker", "state", "stimulus_id"):
        value = named.get(name)
        if isinstance(value, str | int | float):
            out[name] = value
    return out


__all__ = ["DaskValidator", "SquallWorkerPlugin", "violation_from_payload",
           "violation_payload"]
