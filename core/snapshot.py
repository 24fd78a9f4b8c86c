"""Balance snapshots: a scheduler's assignment written as JSON, loaded into a fresh
``SchedulerState`` with ``WorkStealing``, to debug a balancing decision in isolation
(``squall balance SNAPSHOT.json``). ``snapshot_of`` writes one from a scheduler's state
(``squall replay TRACE --snapshot FILE --at SECONDS`` does, at a moment of a recorded
run); ``load_snapshot`` reads one. Pure: a snapshot is a parsed JSON value, not a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from squall.core import protocol as p
from squall.core.graph import key_prefix
from squall.core.scheduler import SchedulerState, SchedulerTaskState
from squall.core.stealing import STEAL_INTERVAL, WorkStealing
from squall.core.worker import WorkerTaskState


class SnapshotError(ValueError):
    """A malformed balance snapshot; the message is one line naming the field."""


_TOP_FIELDS = ("bandwidth", "workers", "data", "tasks")
_WORKER_FIELDS = ("name", "nthreads")
_DATA_FIELDS = ("key", "nbytes", "on")
_TASK_FIELDS = ("key", "prefix", "duration", "deps", "worker", "state")
SNAPSHOT_STATES = ("executing", "ready")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _entries(snapshot: dict[str, Any], name: str, allowed: tuple[str, ...],
             required: bool) -> list[dict[str, Any]]:
    if name not in snapshot:
        if required:
            raise SnapshotError(f"{name}: missing")
        return []
    items = snapshot[name]
    if not isinstance(items, list):
        raise SnapshotError(f"{name}: must be a list, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SnapshotError(f"{name}[{i}]: must be an object, got {type(item).__name__}")
        for field in item:
            if field not in allowed:
                raise SnapshotError(f"{name}[{i}].{field}: unknown field "
                                    f"(expected one of {', '.join(allowed)})")
    return items


def _string(item: dict[str, Any], where: str, field: str) -> str:
    if field not in item:
        raise SnapshotError(f"{where}.{field}: missing")
    v = item[field]
    if not isinstance(v, str) or not v:
        raise SnapshotError(f"{where}.{field}: must be a non-empty string, got {v!r}")
    return v


def _parse_snapshot(snapshot: Any) -> tuple[float, list[tuple[str, int]],
                                            list[tuple[str, int, list[str]]],
                                            list[tuple[str, str, float | None, list[str], str,
                                                       str]]]:
    """Check every field; return (bandwidth, workers, data, tasks) as plain tuples."""
    if not isinstance(snapshot, dict):
        raise SnapshotError(f"snapshot: must be a JSON object, got {type(snapshot).__name__}")
    for field in snapshot:
        if field not in _TOP_FIELDS:
            raise SnapshotError(f"{field}: unknown field (expected one of "
                                f"{', '.join(_TOP_FIELDS)})")
    bandwidth = snapshot.get("bandwidth", 100e6)
    if not _is_number(bandwidth) or bandwidth <= 0:
        raise SnapshotError(f"bandwidth: must be a positive number, got {bandwidth!r}")

    workers: list[tuple[str, int]] = []
    threads: dict[str, int] = {}
    for i, w in enumerate(_entries(snapshot, "workers", _WORKER_FIELDS, True)):
        where = f"workers[{i}]"
        name = _string(w, where, "name")
        if name in threads:
            raise SnapshotError(f"{where}.name: duplicate worker {name!r}")
        n = w.get("nthreads", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise SnapshotError(f"{where}.nthreads: must be an integer >= 1, got {n!r}")
        threads[name] = n
        workers.append((name, n))
    if not workers:
        raise SnapshotError("workers: at least one worker is needed")

    data: list[tuple[str, int, list[str]]] = []
    keys: dict[str, str] = {}  # key -> where it was defined
    for i, d in enumerate(_entries(snapshot, "data", _DATA_FIELDS, False)):
        where = f"data[{i}]"
        key = _string(d, where, "key")
        if key in keys:
            raise SnapshotError(f"{where}.key: duplicate key {key!r} (also {keys[key]})")
        keys[key] = where
        nbytes = d.get("nbytes")
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise SnapshotError(f"{where}.nbytes: must be an integer >= 0, got {nbytes!r}")
        on = d.get("on")
        if not isinstance(on, list) or not on:
            raise SnapshotError(f"{where}.on: must be a non-empty list of worker names, "
                                f"got {on!r}")
        for name in on:
            if name not in threads:
                raise SnapshotError(f"{where}.on: unknown worker {name!r}")
        if len(set(on)) != len(on):
            raise SnapshotError(f"{where}.on: a worker is listed twice: {on}")
        data.append((key, nbytes, list(on)))

    tasks: list[tuple[str, str, float | None, list[str], str, str]] = []
    durations: dict[str, tuple[float | None, str]] = {}
    executing: dict[str, int] = {}
    for i, t in enumerate(_entries(snapshot, "tasks", _TASK_FIELDS, True)):
        where = f"tasks[{i}]"
        key = _string(t, where, "key")
        if key in keys:
            raise SnapshotError(f"{where}.key: duplicate key {key!r} (also {keys[key]})")
        keys[key] = where
        prefix = _string(t, where, "prefix") if "prefix" in t else key_prefix(key)
        duration = t.get("duration")
        if duration is not None and (not _is_number(duration) or duration < 0):
            raise SnapshotError(f"{where}.duration: must be a number >= 0, got {duration!r}")
        seen = durations.setdefault(prefix, (duration, where))
        if seen[0] != duration:
            raise SnapshotError(f"{where}.duration: prefix {prefix!r} has duration {seen[0]!r} "
                                f"in {seen[1]}")
        deps = t.get("deps", [])
        if not isinstance(deps, list) or not all(isinstance(x, str) for x in deps):
            raise SnapshotError(f"{where}.deps: must be a list of keys, got {deps!r}")
        for dep in deps:
            if dep not in keys or not keys[dep].startswith("data["):
                raise SnapshotError(f"{where}.deps: missing dependency {dep!r} (a dependency "
                                    "must be listed in data)")
        if len(set(deps)) != len(deps):
            raise SnapshotError(f"{where}.deps: a dependency is listed twice: {deps}")
        worker = _string(t, where, "worker")
        if worker not in threads:
            raise SnapshotError(f"{where}.worker: unknown worker {worker!r}")
        st = t.get("state")
        if st not in SNAPSHOT_STATES:
            raise SnapshotError(f"{where}.state: must be 'executing' or 'ready', got {st!r}")
        if st == "executing":
            executing[worker] = executing.get(worker, 0) + 1
            if executing[worker] > threads[worker]:
                raise SnapshotError(f"{where}.state: worker {worker!r} has {threads[worker]} "
                                    f"thread(s) and more executing tasks")
        tasks.append((key, prefix, duration, deps, worker, st))
    return float(bandwidth), workers, data, tasks


@dataclass(slots=True)
class LoadedSnapshot:
    state: SchedulerState
    stealing: WorkStealing
    executing: dict[str, str]  # key -> worker, for the tasks the snapshot says are running
    workers: list[str]
    task_keys: list[str]


def load_snapshot(snapshot: Any, *, interval: float = STEAL_INTERVAL) -> LoadedSnapshot:
    """A ``SchedulerState`` (with ``WorkStealing``) in the snapshot's assignment.

    The format::

        {"bandwidth": 100000000,                         # bytes/s, optional
         "workers": [{"name": "w0", "nthreads": 1}, ...],
         "data":    [{"key": "d0", "nbytes": 100000000, "on": ["w0"]}, ...],  # optional
         "tasks":   [{"key": "x-0", "prefix": "x", "duration": 1.0, "deps": ["d0"],
                      "worker": "w0", "state": "executing"}, ...]}

    ``duration`` is the prefix's known average (omitted: unknown); ``data`` are keys in
    memory with their size and holders; ``state`` is ``executing`` or ``ready``. The state
    is built through stimuli: tasks are placed with restrictions that are then lifted,
    the holders beyond the first are recorded directly, and each worker's heartbeat
    reports its executing tasks. Raises SnapshotError naming the bad field.
    """
    bandwidth, workers, data, tasks = _parse_snapshot(snapshot)
    state = SchedulerState(bandwidth=bandwidth)
    stealing = WorkStealing(state, interval=interval)
    for name, n in workers:
        state.handle(p.AddWorker(stimulus_id=f"snapshot-add-{name}", time=0.0, worker=name,
                                 nthreads=n))
    if data:
        # prefix "" cannot be a task's (keys are non-empty), so no estimate is touched
        state.handle(p.UpdateGraph(
            stimulus_id="snapshot-data", time=0.0, client="snapshot",
            tasks=tuple(p.TaskSpecMsg(key, prefix="", restrictions=(on[0],), nbytes=nbytes)
                        for key, nbytes, on in data),
            wanted=tuple(key for key, _, _ in data)))
        for key, nbytes, on in data:
            state.handle(p.TaskFinished(stimulus_id=f"snapshot-data-{key}", time=0.0,
                                        worker=on[0], key=key, nbytes=nbytes, duration=0.0))
            ts = state.tasks[key]
            for name in on[1:]:
                ws = state.workers[name]
                ts.who_has[ws] = None
                ws.has_what[ts] = None
                ws.nbytes += nbytes
    for _, prefix, duration, _, _, _ in tasks:
        if duration is not None and not state.estimator.is_known(prefix):
            state.estimator.observe(prefix, duration)
    state.handle(p.UpdateGraph(
        stimulus_id="snapshot-tasks", time=0.0, client="snapshot",
        tasks=tuple(p.TaskSpecMsg(key, deps=tuple(deps), prefix=prefix, duration=duration,
                                  restrictions=(worker,))
                    for key, prefix, duration, deps, worker, _ in tasks),
        wanted=tuple(t[0] for t in tasks)))
    executing: dict[str, str] = {}
    for key, _, _, _, worker, st in tasks:
        ts = state.tasks[key]
        assert ts.state == SchedulerTaskState.PROCESSING and ts.processing_on is state.workers[worker], ts
        ts.restrictions = ()  # placement imposed; balancing is free to move it
        if st == "executing":
            executing[key] = worker
    for name, _ in workers:
        running = {k: 0.0 for k, w in executing.items() if w == name}
        state.handle(p.Heartbeat(stimulus_id=f"snapshot-heartbeat-{name}", time=0.0,
                                 worker=name, executing=running))
    return LoadedSnapshot(state, stealing, executing, [w for w, _ in workers],
                          [t[0] for t in tasks])


def snapshot_of(state: SchedulerState) -> dict[str, Any]:
    """The snapshot (``load_snapshot``'s format) of ``state``'s assignment: every worker it
    knows; every task processing on one, in that worker's queue order, ``executing`` if the
    worker's last heartbeat said it runs, else ``ready``, with its prefix's current
    duration estimate; and the inputs of those tasks with their size and holders.

    What the format has no place for is left out: tasks on no worker (waiting, queued,
    no-worker), results no processing task reads, a worker's status (a paused worker is
    written as any other), steals in flight and how long running tasks have run.
    ``load_snapshot(snapshot_of(state))`` has the same workers, queues, inputs and
    estimates."""
    workers = list(state.workers.values())
    known = {ws.name for ws in workers}
    duration = state.estimator.duration
    data: dict[str, dict[str, Any]] = {}
    tasks: list[dict[str, Any]] = []
    for ws in workers:
        running = 0
        for ts in ws.processing:
            deps: list[str] = []
            for dep in ts.dependencies:
                on = [holder.name for holder in dep.who_has if holder.name in known]
                if not on:  # not in memory: a processing task's inputs always are
                    continue
                deps.append(dep.key)
                if dep.key not in data:
                    data[dep.key] = {"key": dep.key, "nbytes": max(dep.nbytes, 0), "on": on}
            executing = ts.key in ws.executing and running < ws.nthreads
            running += executing
            task: dict[str, Any] = {"key": ts.key}
            if ts.prefix:
                task["prefix"] = ts.prefix
            task.update(duration=duration(ts.prefix), deps=deps, worker=ws.name,
                        state="executing" if executing else "ready")
            tasks.append(task)
    return {"bandwidth": state.bandwidth,
            "workers": [{"name": ws.name, "nthreads": ws.nthreads} for ws in workers],
            "data": list(data.values()), "tasks": tasks}


def balance_snapshot(snapshot: dict[str, Any], rounds: int = 1) -> dict[str, list[str]]:
    """Run ``rounds`` balancing rounds on a snapshot, each steal answered by its victim
    (ready tasks are released, executing ones refuse); return ``{worker: sorted keys}``."""
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise SnapshotError(f"rounds: must be an integer >= 1, got {rounds!r}")
    loaded = load_snapshot(snapshot)
    state = loaded.state
    t = 0.0
    for r in range(rounds):
        t += loaded.stealing.interval
        out = state.handle(p.Tick(stimulus_id=f"snapshot-round-{r}", time=t))
        for msg in out:
            if isinstance(msg, p.StealRequest):
                answer = WorkerTaskState.EXECUTING \
                    if loaded.executing.get(msg.key) == msg.worker else WorkerTaskState.RELEASED
                state.handle(p.StealResponse(
                    stimulus_id=f"snapshot-answer-{msg.steal_id}", time=t, worker=msg.worker,
                    key=msg.key, steal_id=msg.steal_id, state=answer))
    wanted = set(loaded.task_keys)
    return {name: sorted(ts.key for ts in state.workers[name].processing if ts.key in wanted)
            for name in loaded.workers}


