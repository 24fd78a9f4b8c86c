"""The one driver loop: record, handle, validate, dispatch.

Whatever runs a pure state machine -- the simulator's scheduler and workers, the scheduler
and worker processes, replay -- does the same with every stimulus, in this order:

1. **record** it: every recorder gets ``(receiver name, stimulus)`` before it is handled,
   so a recorder (the stream digest, a trace) sees the state the stimulus arrives in;
2. **handle** it: ``instructions = state.handle(stimulus)``;
3. **validate**: strict mode's ``validator.after_stimulus(stimulus)`` checks what the
   stimulus touched (an ``InvariantViolation`` propagates to the caller);
4. **dispatch** the instructions, in order, each to the method named for its kind.

``StimulusDriver.stimulate`` is that loop. ``SchedulerDriver`` and ``WorkerDriver`` name
the kinds of instruction each side's state machine emits, as methods the runtime
implements: the scheduler sends work to workers and reports keys to clients; a worker
executes, gathers, releases and reports to the scheduler. A runtime that sends in batches
puts instructions into outboxes there and flushes them when it chooses. Replay feeds
recorded stimuli and dispatches nothing (every instruction is unrouted, and ignored): what
the instructions led to is in the trace already.

Each driver resolves its dispatch table (instruction type -> bound method) once, so an
instruction costs one dict lookup and one call: the simulator's hot path runs through
here. Pure: no I/O, no clock.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from squall.core import protocol as p
from squall.core.scheduler import SchedulerState
from squall.core.view import Recorder
from squall.core.worker import WorkerState


class StateMachine(Protocol):
    """A pure state machine: one stimulus in, its instructions out, in order."""

    def handle(self, stimulus: Any) -> list[Any]: ...


class StimulusValidator(Protocol):
    """Strict mode's hook: called after every stimulus the state machine handled."""

    def after_stimulus(self, stimulus: Any) -> None: ...


S = TypeVar("S", bound=StateMachine)


class StimulusDriver(Generic[S], metaclass=ABCMeta):
    """Drives ``state``: ``stimulate(stimulus)`` records, handles, validates, dispatches.

    ``name``: the receiver, as recorders see it ("scheduler" or the worker's name).
    ``recorders``: called with ``(name, stimulus)`` before each stimulus is handled.
    ``validator``: strict mode for this state machine, or None.

    A subclass maps instruction types to the names of its methods in ``DISPATCH``; a
    message of the protocol not there goes to ``unrouted`` (an error unless overridden).
    """

    __slots__ = ("name", "state", "validator", "recorders", "_dispatch_table")

    DISPATCH: ClassVar[dict[type, str]] = {}

    def __init__(self, name: str, state: S, validator: StimulusValidator | None = None) -> None:
        self.name = name
        self.state = state
        self.validator = validator
        self.recorders: list[Recorder] = []
        # Every message type has an entry (so dispatch is one lookup, and no KeyError
        # raised inside a method is ever taken for a missing route).
        table: dict[type, Callable[[Any], None]] = dict.fromkeys(_message_types(),
                                                                 self.unrouted)
        for kind, method in self.DISPATCH.items():
            table[kind] = getattr(self, method)
        self._dispatch_table = table

    def stimulate(self, stimulus: Any) -> None:
        """Record ``stimulus``, hand it to the state machine, validate, then dispatch each
        instruction, in order, to the method for its kind."""
        for record in self.recorders:
            record(self.name, stimulus)
        instructions = self.state.handle(stimulus)
        validator = self.validator
        if validator is not None:
            validator.after_stimulus(stimulus)
        if instructions:
            table = self._dispatch_table
            for ins in instructions:
                table[type(ins)](ins)

    def unrouted(self, instruction: Any) -> None:
        raise TypeError(f"{type(self).__name__} has no route for the instruction "
                        f"{type(instruction).__name__}")


def _message_types() -> list[type]:
    """Every message type of the protocol (subclasses of ``Message``, at any depth)."""
    found: list[type] = []
    todo: list[type] = [p.Message]
    while todo:
        subclasses: list[type] = todo.pop().__subclasses__()
        found.extend(subclasses)
        todo.extend(subclasses)
    return found


class SchedulerDriver(StimulusDriver[SchedulerState]):
    """Drives a ``SchedulerState``: work goes to workers, results are reported to clients."""

    __slots__ = ()

    DISPATCH: ClassVar[dict[type, str]] = {
        p.ComputeTask: "compute",
        p.FreeKeys: "send_to_worker",
        p.StealRequest: "send_to_worker",
        p.KeyInMemory: "report_in_memory",
        p.KeyErred: "report_erred",
        p.KeyLost: "report_lost",
    }

    def compute(self, ins: p.ComputeTask) -> None:
        """Run a task on ``ins.worker`` (a runtime that ships task bodies attaches one)."""
        self.send_to_worker(ins)

    @abstractmethod
    def send_to_worker(self, ins: Any) -> None:
        """Send ``ins`` to the worker it names (``ins.worker``)."""

    @abstractmethod
    def report_in_memory(self, ins: p.KeyInMemory) -> None:
        """Tell ``ins.client`` that ``ins.key`` is in memory on ``ins.holders``."""

    @abstractmethod
    def report_erred(self, ins: p.KeyErred) -> None:
        """Tell ``ins.client`` that ``ins.key`` erred (blaming ``ins.blame``)."""

    @abstractmethod
    def report_lost(self, ins: p.KeyLost) -> None:
        """Tell ``ins.client`` that ``ins.key``, reported in memory, is lost again."""


class WorkerDriver(StimulusDriver[WorkerState]):
    """Drives a ``WorkerState``: execute, gather from peers, release data, tell the
    scheduler."""

    __slots__ = ()

    DISPATCH: ClassVar[dict[type, str]] = {
        p.Execute: "execute",
        p.GatherDep: "gather",
        p.ReleaseData: "release",
        p.TaskFinished: "send_to_scheduler",
        p.TaskErred: "send_to_scheduler",
        p.MissingData: "send_to_scheduler",
        p.StealResponse: "send_to_scheduler",
    }

    @abstractmethod
    def execute(self, ins: p.Execute) -> None:
        """Start running ``ins.key``; its end comes back as ExecuteSuccess/Failure."""

    @abstractmethod
    def gather(self, ins: p.GatherDep) -> None:
        """Fetch ``ins.keys`` from ``ins.holder``; the answer comes back as
        GatherDepSuccess/Failure."""

    @abstractmethod
    def release(self, ins: p.ReleaseData) -> None:
        """Drop the stored values of ``ins.keys``."""

    @abstractmethod
    def send_to_scheduler(self, ins: Any) -> None:
        """Send ``ins`` (a report: finished, erred, missing data, steal response)."""
