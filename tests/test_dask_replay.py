"""Replaying a dask trace: the workers' side through dask's own ``WorkerState``.

The records are built here as the live plugin builds them (dask's ``_to_dict`` of each
event, the worker's transition count before it), from a worker state machine driven
in-process; a planted worker bug shows that replay re-derives a worker-side violation
rather than trusting the recorded outcome. (A live cluster's trace is replayed in
test_dask_target.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest

pytest.importorskip("distributed")

from distributed.worker_state_machine import (  # noqa: E402
    ComputeTaskEvent,
    ExecuteSuccessEvent,
    WorkerState,
)

from squall.core.outcome import Outcome, Violation  # noqa: E402
from squall.scenarios.library import named_scenario  # noqa: E402
from squall.scenarios.replay import DIVERGED, MATCH, REPRODUCED, replay_trace  # noqa: E402
from squall.scenarios.trace import End, TargetStim, TraceWriter  # noqa: E402

ADDRESS = "tcp://127.0.0.1:40001"


def _records() -> list[dict[str, Any]]:
    """A worker computes x, then y from x: the records its stimulus log plugin sends."""
    ws = WorkerState(address=ADDRESS, nthreads=1, threads={}, validate=True)
    base = {"target": "dask-worker", "worker": "w0", "address": ADDRESS,
            "incarnation": "Worker-1"}
    out = [{**base, "op": "start", "event": {"nthreads": 1}}]
    events = [
        ComputeTaskEvent.dummy("x", stimulus_id="s1"),
        ExecuteSuccessEvent.dummy("x", 1, stimulus_id="s2"),
        ComputeTaskEvent.dummy("y", who_has={"x": [ADDRESS]}, stimulus_id="s3"),
        ExecuteSuccessEvent.dummy("y", 2, stimulus_id="s4"),
    ]
    for ev in events:
        c = ws.transition_counter
        ws.handle_stimulus(ev)
        record = json.loads(json.dumps(ev.to_loggable(handled=0.0)._to_dict(), default=str))
        out.append({**base, "op": type(ev).__name__, "stimulus_id": ev.stimulus_id, "c": c,
                    "event": record})
    return out


def _trace(path: Path, records: list[dict[str, Any]], violations: tuple[Violation, ...] = ()
           ) -> Path:
    scenario = msgspec.structs.replace(named_scenario("many-tiny"), runtime="dask")
    writer = TraceWriter(path, scenario)
    for r in records:
        writer.write(TargetStim(t=r["worker"], m=r))
    outcome = Outcome(results_ok=True, makespan=1.0, n_tasks=2, transitions=0, digest="",
                      violations=list(violations))
    writer.write(End(outcome=outcome, n=len(records)))
    writer.close()
    return path


def test_a_workers_log_replays_with_every_count_equal(tmp_path: Path) -> None:
    result = replay_trace(_trace(tmp_path / "t.jsonl", _records()))
    assert result.verdict == MATCH, result.message
    assert result.stimuli == 4 and "4 of 5 worker stimuli" in result.message


def test_a_worker_bug_is_re_derived_by_the_replay_not_read_from_the_outcome(
        tmp_path: Path) -> None:
    original = WorkerState._transition_to_memory

    def forgets_data(self: WorkerState, ts: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, ts, *args, **kwargs)
        self.data.pop(ts.key, None)  # the value is dropped: in memory without data
        return out

    clean = _trace(tmp_path / "clean.jsonl", _records())
    with mock.patch.object(WorkerState, "_transition_to_memory", forgets_data):
        found = replay_trace(clean)
    # the recording had no violation: the replay found one, so it diverges
    assert found.verdict == DIVERGED and found.violation is not None, found.message
    v = found.violation
    assert v.key == "x" and "replay raised" in found.message
    recorded = _trace(tmp_path / "bug.jsonl", _records(), (v,))
    with mock.patch.object(WorkerState, "_transition_to_memory", forgets_data):
        again = replay_trace(recorded)
    assert again.verdict == REPRODUCED and v.invariant in again.message


def test_a_worker_that_behaved_otherwise_is_named_at_its_first_differing_stimulus(
        tmp_path: Path) -> None:
    records = _records()
    records[3] = {**records[3], "c": records[3]["c"] + 1}  # the 3rd stimulus, forged
    result = replay_trace(_trace(tmp_path / "t.jsonl", records))
    assert result.verdict == DIVERGED
    assert "stimulus 's3'" in result.message and "line 5" in result.message  # (header: line 1)
    assert "transitions before it" in result.message


def test_a_violation_edited_into_the_outcome_is_not_reproduced(tmp_path: Path) -> None:
    edited = Violation(invariant="dask.worker.executing-has-thread", text="edited in",
                       entity="w0", key="x")
    result = replay_trace(_trace(tmp_path / "t.jsonl", _records(), (edited,)))
    assert result.verdict == DIVERGED and "was recorded but did not recur" in result.message
