"""Every message squall's state machines exchange, defined once.

The same msgspec Structs are the wire format (msgpack over ZeroMQ), the trace format
(JSON Lines) and the inputs and outputs of ``SchedulerState.handle`` and
``WorkerState.handle``. A *stimulus* is something a state machine receives; an
*instruction* is something it asks its runtime to do. A scheduler's instruction to a
worker (``ComputeTask``) is that worker's stimulus, so most messages are both.

Every message carries the ``stimulus_id`` of the event that caused it; stimuli also
carry ``time``, the only clock the state machines ever read.
"""

from __future__ import annotations

from typing import Any

import msgspec


# gc=False: messages hold only strings, numbers and tuples or dicts of them, so they can
# never be part of a reference cycle; untracked, they are cheaper to create and free.
class Message(msgspec.Struct, tag_field="op", frozen=True, kw_only=True, omit_defaults=True,
              gc=False):
    """Base of every message. ``op`` (the tag) names the type on the wire and in traces."""

    stimulus_id: str


class TaskSpecMsg(msgspec.Struct, frozen=True, omit_defaults=True, array_like=True, gc=False):
    """What the scheduler needs to know of one task of a submitted graph."""

    key: str
    deps: tuple[str, ...] = ()
    prefix: str = ""
    duration: float | None = None  # the user's hint, in seconds; None: unknown
    nbytes: int | None = None  # expected output size hint
    priority: int = 0
    restrictions: tuple[str, ...] = ()  # worker names allowed to run it; () = any
    has_run_spec: bool = False  # real mode: a cloudpickled body travels beside the header


# ---------------------------------------------------------------- client -> scheduler


class UpdateGraph(Message, tag="update-graph", frozen=True):
    time: float
    client: str
    tasks: tuple[TaskSpecMsg, ...]
    wanted: tuple[str, ...]  # keys whose results the client wants


class ClientReleasesKeys(Message, tag="client-releases-keys", frozen=True):
    time: float
    client: str
    keys: tuple[str, ...]


# ---------------------------------------------------------------- cluster membership


class AddWorker(Message, tag="add-worker", frozen=True):
    time: float
    worker: str
    nthreads: int = 1
    bandwidth: float | None = None  # bytes/s the worker reports, if known


class RemoveWorker(Message, tag="remove-worker", frozen=True):
    time: float
    worker: str
    reason: str = "closed"  # "closed" (graceful), "died", "heartbeat-timeout"


# ---------------------------------------------------------------- worker -> scheduler


class TaskFinished(Message, tag="task-finished", frozen=True):
    time: float
    worker: str
    key: str
    nbytes: int
    duration: float  # measured compute time
    run_id: int = 0  # the ComputeTask it answers (0: not said)


class TaskErred(Message, tag="task-erred", frozen=True):
    time: float
    worker: str
    key: str
    exception: str  # one-line repr of the exception
    traceback: str = ""
    run_id: int = 0  # the ComputeTask it answers (0: not said)


class MissingData(Message, tag="missing-data", frozen=True):
    """A worker could not fetch ``key`` from ``holder``: the scheduler's who_has is stale."""

    time: float
    worker: str
    key: str
    holder: str


class Heartbeat(Message, tag="heartbeat", frozen=True):
    time: float
    worker: str
    executing: dict[str, float] = {}  # key -> seconds it has been executing so far


class StealResponse(Message, tag="steal-response", frozen=True):
    time: float
    worker: str
    key: str
    steal_id: str
    state: str  # the victim's state of the task when it answered ("released" = given up)


class Tick(Message, tag="tick", frozen=True):
    """Time passes: periodic work (stealing, heartbeat timeouts) happens here."""

    time: float


class SkewEstimates(Message, tag="skew-estimates", frozen=True):
    """Chaos: multiply the scheduler's duration estimates (all, or of one prefix)."""

    time: float
    factor: float
    prefix: str | None = None


# ---------------------------------------------------------------- scheduler -> worker


class DepInfo(msgspec.Struct, frozen=True, array_like=True, gc=False):
    key: str
    holders: tuple[str, ...]
    nbytes: int


class ComputeTask(Message, tag="compute-task", frozen=True):
    time: float
    worker: str
    key: str
    prefix: str
    priority: tuple[int, int]
    duration: float  # the scheduler's estimate, for the worker's own bookkeeping
    deps: tuple[DepInfo, ...] = ()
    # Numbers this assignment; the worker's report echoes it, so that a report of an
    # earlier assignment of the key to the same worker is not taken for this one's.
    run_id: int = 0


class FreeKeys(Message, tag="free-keys", frozen=True):
    time: float
    worker: str
    keys: tuple[str, ...]


class StealRequest(Message, tag="steal-request", frozen=True):
    time: float
    worker: str  # the victim
    key: str
    steal_id: str


# ---------------------------------------------------------------- scheduler -> client


class KeyInMemory(Message, tag="key-in-memory", frozen=True):
    client: str
    key: str
    holders: tuple[str, ...]
    nbytes: int


class KeyErred(Message, tag="key-erred", frozen=True):
    client: str
    key: str
    exception: str
    traceback: str = ""
    blame: str = ""  # the key whose failure erred this one


class KeyLost(Message, tag="key-lost", frozen=True):
    """The data of a key the client wants was lost (its holders died); it is being
    recomputed, and a KeyInMemory follows when it is back."""

    client: str
    key: str


# ---------------------------------------------------------------- worker <-> its runtime


class Execute(Message, tag="execute", frozen=True):
    """Worker -> runtime: run the body of ``key`` now."""

    worker: str
    key: str


class ExecuteSuccess(Message, tag="execute-success", frozen=True):
    time: float
    key: str
    nbytes: int
    duration: float


class ExecuteFailure(Message, tag="execute-failure", frozen=True):
    time: float
    key: str
    exception: str
    traceback: str = ""


class GatherDep(Message, tag="gather-dep", frozen=True):
    """Worker -> runtime: fetch ``keys`` from peer ``holder``."""

    worker: str
    holder: str
    keys: tuple[str, ...]
    nbytes: int


class GatherDepSuccess(Message, tag="gather-dep-success", frozen=True):
    time: float
    holder: str
    nbytes: dict[str, int]  # key -> bytes received


class GatherDepFailure(Message, tag="gather-dep-failure", frozen=True):
    """The peer was unreachable, or did not have some keys (``missing``)."""

    time: float
    holder: str
    keys: tuple[str, ...]
    missing: tuple[str, ...] = ()
    nbytes: dict[str, int] = {}  # keys that did arrive


class ReleaseData(Message, tag="release-data", frozen=True):
    """Worker -> runtime: drop the stored values of ``keys``."""

    worker: str
    keys: tuple[str, ...]


# ---------------------------------------------------------------- chaos (recorded in traces)


class FaultInjected(Message, tag="fault", frozen=True):
    """A fault the chaos schedule injected, recorded in the trace with its time."""

    time: float
    kind: str
    target: str = ""
    params: dict[str, Any] = {}



# ---------------------------------------------------------------- real mode: the wire only
# These never reach a state machine: the real runtime (core/net.py) uses them for
# membership, task bodies and data. Messages that carry cloudpickle frames say how many
# follow the header (see ``net.frame_count``).


class RegisterWorker(Message, tag="register-worker", frozen=True):
    """Worker -> scheduler, first message: who it is and where it serves its data."""

    worker: str
    nthreads: int
    address: str  # the worker's data socket (peers and clients fetch values there)
    pid: int = 0
    incarnation: int = 0  # set by a launcher that restarts workers under the same name


class RegisterClient(Message, tag="register-client", frozen=True):
    client: str


class Membership(Message, tag="membership", frozen=True):
    """Scheduler -> workers and clients: the live workers and their data addresses. The
    first one a peer receives accepts its registration."""

    workers: dict[str, str]


class RunSpecs(Message, tag="run-specs", frozen=True):
    """Task bodies in the frames after the header: one cloudpickled function per token of
    ``funcs``, then the pickled arguments of each of ``keys``, which calls the function
    whose token is at the same index of ``func_of``."""

    funcs: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    func_of: tuple[str, ...] = ()


class Payload(Message, tag="payload", frozen=True):
    """One cloudpickle frame follows: the ``kind`` (an exception) belonging to ``key``."""

    key: str
    kind: str = "exception"


class GetData(Message, tag="get-data", frozen=True):
    """A worker or a client asks a worker's data socket for values."""

    requester: str
    keys: tuple[str, ...]


class DataReply(Message, tag="data", frozen=True):
    """One pickled value per key of ``keys`` follows; ``missing`` are not held there."""

    worker: str
    keys: tuple[str, ...]
    missing: tuple[str, ...] = ()


class CloseWorker(Message, tag="close-worker", frozen=True):
    """Scheduler -> worker: exit (e.g. it was declared dead and came back). ``rejoin``: the
    scheduler no longer knows this connection; start again clean, as a new incarnation."""

    worker: str
    reason: str = ""
    rejoin: bool = False


class Halted(Message, tag="halted", frozen=True):
    """The run stopped: a state machine raised (an invariant violation, an impossible
    transition) in ``where``. A Payload frame with the pickled exception may follow."""

    where: str  # "scheduler" or a worker name
    reason: str
    traceback: str = ""


class InfoRequest(Message, tag="info-request", frozen=True):
    client: str


class SchedulerInfo(Message, tag="scheduler-info", frozen=True):
    """Scheduler -> client: membership and the runtime's counters."""

    workers: dict[str, str]
    pids: dict[str, int] = {}
    n_tasks: int = 0
    n_stimuli: int = 0
    dropped: int = 0  # frames or messages rejected (undecodable, unknown peer, not allowed)
    refused: int = 0  # connections refused by CURVE authentication
    bytes_in: int = 0  # bytes of every frame received and sent, headers included
    bytes_out: int = 0
    halted: str = ""

SchedulerStimulus = (
    UpdateGraph
    | ClientReleasesKeys
    | AddWorker
    | RemoveWorker
    | TaskFinished
    | TaskErred
    | MissingData
    | Heartbeat
    | StealResponse
    | Tick
    | SkewEstimates
)
WorkerStimulus = (
    ComputeTask | FreeKeys | StealRequest | ExecuteSuccess | ExecuteFailure | GatherDepSuccess
    | GatherDepFailure
)
# What each state machine's handle() returns.
SchedulerInstruction = ComputeTask | FreeKeys | StealRequest | KeyInMemory | KeyErred | KeyLost
WorkerInstruction = (
    Execute | GatherDep | ReleaseData | TaskFinished | TaskErred | MissingData | StealResponse
)
AnyMessage = (
    SchedulerStimulus
    | ComputeTask
    | FreeKeys
    | StealRequest
    | KeyInMemory
    | KeyErred
    | KeyLost
    | Execute
    | ExecuteSuccess
    | ExecuteFailure
    | GatherDep
    | GatherDepSuccess
    | GatherDepFailure
    | ReleaseData
    | FaultInjected
    | RegisterWorker
    | RegisterClient
    | Membership
    | RunSpecs
    | Payload
    | GetData
    | DataReply
    | CloseWorker
    | Halted
    | InfoRequest
    | SchedulerInfo
)

_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(AnyMessage)
_json_encoder = msgspec.json.Encoder()
_json_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyMessage)


class ProtocolError(ValueError):
    """Bytes that are not a valid squall message."""


def encode(msg: Message) -> bytes:
    """msgpack bytes of one message (the wire format)."""
    return _msgpack_encoder.encode(msg)


def decode(data: bytes) -> Any:
    """Decode msgpack bytes into a message; raise ProtocolError with the reason."""
    try:
        return _msgpack_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ProtocolError(f"undecodable message: {e}") from None


def to_json(msg: Message) -> bytes:
    return _json_encoder.encode(msg)


def from_json(data: bytes | str) -> Any:
    try:
        return _json_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ProtocolError(f"undecodable message: {e}") from None
