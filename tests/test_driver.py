"""The one driver loop (squall.core.driver): record, handle, validate, dispatch, in order."""

from __future__ import annotations

from typing import Any

import pytest

from squall.core import protocol as p
from squall.core.driver import SchedulerDriver, StimulusDriver, WorkerDriver


class Script:
    """A state machine that answers each stimulus with the instructions it was given."""

    def __init__(self, log: list[Any], *instructions: Any) -> None:
        self.log = log
        self.instructions = list(instructions)

    def handle(self, stimulus: Any) -> list[Any]:
        self.log.append(("handle", stimulus.stimulus_id))
        return list(self.instructions)


class Checker:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def after_stimulus(self, stimulus: Any) -> None:
        self.log.append(("validate", stimulus.stimulus_id))


class Worker(WorkerDriver):
    """Every kind of instruction a worker carries out, logged."""

    __slots__ = ("log",)
    log: list[Any]

    def execute(self, ins: p.Execute) -> None:
        self.log.append(("execute", ins.key))

    def gather(self, ins: p.GatherDep) -> None:
        self.log.append(("gather", ins.keys))

    def release(self, ins: p.ReleaseData) -> None:
        self.log.append(("release", ins.keys))

    def send_to_scheduler(self, ins: Any) -> None:
        self.log.append(("send", type(ins).__name__))


def _worker(log: list[Any], *instructions: Any) -> Worker:
    w = Worker("w", Script(log, *instructions), Checker(log))  # type: ignore[arg-type]
    w.log = log
    w.recorders.append(lambda target, msg: log.append(("record", target, msg.stimulus_id)))
    return w


def _stimulus(sid: str = "s1") -> p.ExecuteSuccess:
    return p.ExecuteSuccess(stimulus_id=sid, time=1.0, key="x", nbytes=1, duration=0.1)


def test_a_stimulus_is_recorded_handled_validated_then_each_instruction_dispatched() -> None:
    log: list[Any] = []
    w = _worker(log,
                p.Execute(stimulus_id="s1", worker="w", key="a"),
                p.TaskFinished(stimulus_id="s1", time=1.0, worker="w", key="x", nbytes=1,
                               duration=0.1),
                p.GatherDep(stimulus_id="s1", worker="w", holder="v", keys=("b",), nbytes=1),
                p.ReleaseData(stimulus_id="s1", worker="w", keys=("c",)))
    w.stimulate(_stimulus())
    assert log == [("record", "w", "s1"), ("handle", "s1"), ("validate", "s1"),
                   ("execute", "a"), ("send", "TaskFinished"), ("gather", ("b",)),
                   ("release", ("c",))]


def test_a_stimulus_the_validator_rejects_dispatches_nothing() -> None:
    log: list[Any] = []
    w = _worker(log, p.Execute(stimulus_id="s1", worker="w", key="a"))

    class Violation(AssertionError):
        pass

    def reject(stimulus: Any) -> None:
        raise Violation(stimulus.stimulus_id)

    w.validator.after_stimulus = reject  # type: ignore[method-assign, union-attr]
    with pytest.raises(Violation):
        w.stimulate(_stimulus())
    assert ("execute", "a") not in log


def test_an_instruction_with_no_route_is_an_error_that_names_it() -> None:
    w = _worker([], p.KeyInMemory(stimulus_id="s1", client="c", key="x", holders=("w",),
                                  nbytes=1))
    with pytest.raises(TypeError, match="Worker has no route for the instruction KeyInMemory"):
        w.stimulate(_stimulus())


def test_a_driver_that_ignores_instructions_only_handles_and_validates() -> None:
    """As replay does: recorded stimuli in, the instructions left alone."""

    class Replayed(StimulusDriver[Any]):
        __slots__ = ()

        def unrouted(self, instruction: Any) -> None:
            pass

    log: list[Any] = []
    d = Replayed("scheduler", Script(log, p.ComputeTask(
        stimulus_id="s1", time=1.0, worker="w", key="a", prefix="a", priority=(0, 0),
        duration=0.1)), Checker(log))
    d.stimulate(_stimulus())
    assert log == [("handle", "s1"), ("validate", "s1")]


def test_every_kind_of_instruction_must_have_its_method() -> None:
    class Incomplete(SchedulerDriver):
        __slots__ = ()

        def send_to_worker(self, ins: Any) -> None:
            pass

    with pytest.raises(TypeError, match="report_erred"):
        Incomplete("scheduler", Script([]))  # type: ignore[abstract, arg-type]
