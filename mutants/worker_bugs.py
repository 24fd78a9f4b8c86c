"""The bugs planted in the worker (``WorkerState``): copies of its methods with ``# BUG``
lines.

This module reads the names the worker's module reads (``MEMORY`` is the worker's state
here), so that a copy is the production source but for its marked lines (see the
convention at the top of ``squall.mutants.catalog``).
"""

from __future__ import annotations

import heapq

from squall.core import protocol as p
from squall.core.worker import (
    CANCELLED,
    ERROR,
    EXECUTING,
    FETCH,
    FLIGHT,
    MEMORY,
    MISSING,
    READY,
    RELEASED,
    WAITING,
    WorkerState,
    WTask,
    _queued,
)
from squall.mutants.copies import copy_of


@copy_of(WorkerState._handle_steal_request)
def handle_steal_request_takes_executing(self, msg: p.StealRequest) -> None:
    ts = self.tasks.get(msg.key)
    # BUG: a task already executing is given up too (it goes on running, cancelled, while
    # the thief runs it again).
    if ts is not None and ts.runnable and ts.state in (WAITING, READY, EXECUTING):  # BUG
        ts.runnable = False
        self._release(ts)
        state = RELEASED
    elif ts is None or not ts.runnable:
        state = RELEASED if ts is None else ts.state
    else:
        state = ts.state
    self._out.append(p.StealResponse(
        stimulus_id=self._sid, time=self.time, worker=self.name, key=msg.key,
        steal_id=msg.steal_id, state=state))


def _release_if_in_memory(self: WorkerState, ts: WTask) -> None:
    if not ts.runnable and ts.state is MEMORY and self.tasks.get(ts.key) is ts:
        self._release(ts)


@copy_of(WorkerState._drop_inputs)
def drop_inputs_eagerly(self, ts: WTask) -> None:
    """After ts ran, inputs fetched only for it are dropped."""
    deps = list(ts.dependencies)
    for dts in deps:
        dts.dependents.pop(ts, None)
    ts.dependencies.clear()
    for dts in deps:
        # BUG: an input fetched here is dropped as soon as one task has used it, though
        # other tasks here still need it.
        _release_if_in_memory(self, dts)  # BUG


@copy_of(WorkerState._handle_compute_task)
def compute_task_resumes_nothing(self, msg: p.ComputeTask) -> None:
    ts = self.tasks.get(msg.key)
    if ts is None:
        ts = self.tasks[msg.key] = WTask(msg.key)
    ts.run_id = msg.run_id  # whatever happens below, its report answers this request
    if ts.state is CANCELLED:
        ts.runnable = True
        # BUG: the request is taken for a duplicate: the running body's result will be
        # dropped when it ends, and nobody computes the task.
        pass  # BUG
        return
    elif ts.state is MEMORY:
        ts.runnable = True
        self._out.append(p.TaskFinished(
            stimulus_id=self._sid, time=self.time, worker=self.name, key=ts.key,
            nbytes=ts.nbytes, duration=msg.duration, run_id=ts.run_id))
        return
    elif ts.runnable and ts.state in (WAITING, READY, EXECUTING, ERROR):
        return  # a duplicate request
    elif ts.state is FLIGHT:
        ts.runnable = True  # an input on its way: report it when it lands
        ts.discard = False
        self._compute_after_flight[ts.key] = msg
        return
    ts.runnable = True
    ts.prefix = msg.prefix
    ts.priority = msg.priority
    ts.duration = msg.duration
    for dep in msg.deps:
        dts = self.tasks.get(dep.key)
        if dts is None:
            dts = self.tasks[dep.key] = WTask(dep.key)
            dts.priority = msg.priority
            dts.nbytes = dep.nbytes
        ts.dependencies[dts] = None
        dts.dependents[ts] = None
        if dts.state is MEMORY:
            continue
        ts.waiting_for[dts] = None
        if dts.state in (RELEASED, MISSING):
            dts.who_has = list(dep.holders)
            dts.nbytes = dep.nbytes
            self._transition(dts, FETCH)
            heapq.heappush(self.to_fetch, _queued(dts))
        elif dts.state is FETCH:
            dts.who_has = list(dep.holders)
        elif dts.state is FLIGHT:
            dts.discard = False
    if ts.waiting_for:
        self._transition(ts, WAITING)
    else:
        self._transition(ts, READY)
        heapq.heappush(self.ready, _queued(ts))
