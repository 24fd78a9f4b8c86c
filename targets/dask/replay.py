"""Replaying a dask trace: the workers' side through dask's own ``WorkerState``.

A trace of the dask runtime holds, besides the scheduler's stimuli, every stimulus each
worker's state machine handled (``DaskWorkerStimulus``, tagged ``dask-worker``), with the
worker's transition count before it. ``replay_records`` builds a fresh
``distributed.worker_state_machine.WorkerState`` per worker incarnation (from its
``start`` record: address and threads), rebuilds each event with dask's own
``StateMachineEvent.from_dict`` and feeds it in. Before each stimulus the fresh machine's
transition count must equal the recorded one, so the first stimulus whose handling
differed is named; with ``validate`` squall's worker checks (``WorkerChecker``, the same as
in the live run) run after each one, so a worker-side violation recurs at its stimulus.

The scheduler's side is not replayed: dask's scheduler state machine runs only inside its
server, fed by comms and graph objects the trace does not hold (dask/distributed#5736);
the result says so, naming the first scheduler stimulus.

dask leaves task bodies, values and tracebacks out of its event records; a replayed
``compute-task`` gets a stand-in body (never run: replay runs no task).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from squall.core.outcome import TargetReplay
from squall.targets.dask import require_dask

require_dask()

from distributed.worker_state_machine import (  # noqa: E402
    ComputeTaskEvent,
    StateMachineEvent,
    WorkerState,
)

from squall.targets.dask.checker import WorkerChecker  # noqa: E402

WORKER_RECORD = "dask-worker"  # the tag of a worker's stimulus record
SCHEDULER_RECORD = "dask"  # the tag of a scheduler's


class _Replaying:
    """One worker incarnation's fresh state machine and its checker."""

    def __init__(self, address: str, start: Mapping[str, Any], counter: int,
                 validate: bool) -> None:
        self.checker: WorkerChecker | None = None
        self.state = WorkerState(
            address=address, nthreads=int(start.get("nthreads", 1)), threads={},
            validate=False, plugins={"squall": self},  # type: ignore[dict-item]
            resources=start.get("resources"),
            transfer_incoming_count_limit=int(start.get("transfer_incoming_count_limit",
                                                        9999)),
            transfer_incoming_bytes_limit=_limit(start.get("transfer_incoming_bytes_limit")),
            transfer_message_bytes_limit=_limit(start.get("transfer_message_bytes_limit")))
        self.state.transition_counter = counter  # where the live worker's count was
        if validate:
            self.checker = WorkerChecker(self.state, name=address)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        # called by WorkerState for each transition, as a WorkerPlugin would be
        if self.checker is not None:
            self.checker.note_transition(key, start, finish)


def replay_records(stimuli: Iterable[tuple[int, str, Mapping[str, Any]]], *,
                   validate: bool = True) -> TargetReplay:
    """Replay a dask trace's worker records (see the module docstring). A worker's sets
    iterate in the order of its string hashes: when the workers ran with a hash seed
    (``PYTHONHASHSEED``; dask's nanny sets one) other than this process's, the replay runs
    in a child process with theirs."""
    records = list(stimuli)
    seeds = {str(r.get("event", {}).get("hash_seed", "")) for _, _, r in records
             if r.get("target") == WORKER_RECORD and r.get("op") == "start"}
    seeds.discard("")
    if len(seeds) > 1:
        return TargetReplay(divergence="cannot replay: the workers ran with different hash "
                                       f"seeds ({', '.join(sorted(seeds))})")
    if seeds and not _hashes_like(seeds.pop()):
        return _in_child(records, validate, str(next(
            r["event"]["hash_seed"] for _, _, r in records
            if r.get("op") == "start" and r.get("event", {}).get("hash_seed"))))
    return _replay(records, validate)


def _hashes_like(seed: str) -> bool:
    """Whether this process hashes strings as a process with PYTHONHASHSEED=seed does."""
    return seed == "random" or os.environ.get("PYTHONHASHSEED") == seed


def _in_child(records: list[tuple[int, str, Mapping[str, Any]]], validate: bool,
              seed: str) -> TargetReplay:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    payload = msgspec.json.encode({"validate": validate, "records": records})
    done = subprocess.run([sys.executable, "-m", "squall.targets.dask.replay"], input=payload,
                          capture_output=True, env=env, check=False)
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the replay process failed (exit {done.returncode}): {last}")
    return msgspec.json.decode(done.stdout, type=TargetReplay)


def _replay(records: Iterable[tuple[int, str, Mapping[str, Any]]],
            validate: bool) -> TargetReplay:
    workers: dict[str, _Replaying] = {}  # incarnation -> its machine
    result = TargetReplay()
    first_scheduler = ""
    n_scheduler = 0
    missing_start: dict[str, int] = {}
    for lineno, receiver, record in records:
        tag = record.get("target")
        if tag == SCHEDULER_RECORD:
            n_scheduler += 1
            if not first_scheduler:
                first_scheduler = f"{record.get('op', '?')} (line {lineno})"
            continue
        if tag != WORKER_RECORD:
            continue
        result.recorded += 1
        incarnation = str(record.get("incarnation", ""))
        op = str(record.get("op", ""))
        if op == "start":
            start = record.get("event", {})
            if start.get("tasks"):
                result.divergence = (f"cannot replay worker {receiver} (line {lineno}): it "
                                     f"held {start['tasks']} tasks before its log started")
                return result
            workers[incarnation] = _Replaying(str(record.get("address", "")), start,
                                              int(record.get("c", 0)), validate)
            continue
        machine = workers.get(incarnation)
        if machine is None:
            missing_start[receiver] = missing_start.get(receiver, 0) + 1
            continue
        where = f"stimulus {record.get('stimulus_id', '')!r} ({op}, line {lineno}) to {receiver}"
        recorded_count = int(record.get("c", 0))
        if machine.state.transition_counter != recorded_count:
            result.divergence = (f"diverged at {where}: {machine.state.transition_counter} "
                                 f"transitions before it in replay, {recorded_count} recorded")
            return result
        try:
            ev = _event(record.get("event", {}))
        except (KeyError, TypeError, ValueError) as e:
            result.divergence = (f"diverged at {where}: dask cannot rebuild the event from "
                                 f"its record ({type(e).__name__}: {e})")
            return result
        checker = machine.checker
        if checker is not None:
            checker.note_stimulus(ev)
        try:
            machine.state.handle_stimulus(ev)
        except Exception as e:  # dask's own assertions: the state differs from the live one
            result.divergence = (f"diverged at {where}: dask raised {type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''} handling it")
            return result
        result.replayed += 1
        if checker is not None:
            checker.after_stimulus(ev)
            if checker.violations:
                result.violation = checker.violations[0].to_violation()
                return result
    notes = []
    if n_scheduler:
        notes.append(f"the scheduler's {n_scheduler} stimuli, from {first_scheduler}: dask's "
                     "scheduler state machine runs only inside its server "
                     "(dask/distributed#5736)")
    for name, n in sorted(missing_start.items()):
        notes.append(f"{n} stimuli of worker {name}: its start record is not in the trace")
    result.not_replayed = "; ".join(notes)
    return result


def _event(record: Mapping[str, Any]) -> StateMachineEvent:
    ev = StateMachineEvent.from_dict(dict(record))
    if isinstance(ev, ComputeTaskEvent) and ev.run_spec is None:
        ev.run_spec = ComputeTaskEvent.dummy_runspec(ev.key)  # a stand-in, never run
    return ev


def _limit(value: Any) -> float:
    return float("inf") if value is None else float(value)


def _child_main() -> None:
    """``python -m squall.targets.dask.replay``: records in on stdin, a TargetReplay out."""
    from squall.core.lifeline import die_with_parent

    die_with_parent()
    job = msgspec.json.decode(sys.stdin.buffer.read())
    records = [(int(n), str(t), r) for n, t, r in job["records"]]
    sys.stdout.buffer.write(msgspec.json.encode(_replay(records, bool(job["validate"]))))


if __name__ == "__main__":
    _child_main()
