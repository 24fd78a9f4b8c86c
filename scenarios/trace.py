"""Traces: a run as JSON Lines, enough to replay it without processes.

Every line is one tagged object (``k`` names its kind):

- ``header``   first line: format version, squall version, seed, the scenario;
- ``worker``   a worker incarnation starts (name, incarnation number, threads);
- ``s``        a stimulus delivered to ``t`` (``scheduler`` or a worker name) of
               incarnation ``i``, with ``c`` the receiver's transition count before it
               and ``m`` the message (its ``time``: when it was sent, or made);
- ``digest``   after ``n`` stimuli: ``d`` a digest of the scheduler's and workers' state,
               ``s`` (format 2) the stream digest: a hash of every byte of the trace
               before it (header, stimuli, faults, worker starts, digests: times and
               all), so an edited line makes the next digest differ;
- ``ts``       a stimulus another target's state machine received (``t``: its receiver;
               ``m``: the target's own record, tagged ``target``: ``{"target": "dask",
               ...}``); a trace of the reference scheduler has none;
- ``outcome``  the last line: the outcome, its violations, where the run stopped, the
               final state and stream digests, and (format 2, simulator) ``quiet``:
               whether nothing was in flight when the end-of-run checks ran.

Faults are recorded as ``s`` lines to target ``chaos`` carrying a ``FaultInjected``.
There is no wall-clock time anywhere in a trace: the same scenario and seed give the
same bytes. A real-mode trace carries the same digests, computed in the parent process
as it writes the trace, from fresh state machines fed the lines in the order written.
Format 1 (no stream digests, no ``quiet``) is still read. Lines are buffered and encoded
with msgspec, so recording costs little.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import msgspec

from squall.chaos.injectors import describe_call, surface_methods
from squall.core import protocol as p
from squall.core.outcome import Outcome
from squall.core.scheduler import SchedulerState
from squall.core.worker import WorkerState
from squall.scenarios.limits import MAX_LINE_BYTES, MAX_NAME, cannot_write, limit, name_problem
from squall.scenarios.model import Scenario

# 2: digests carry the stream digest ``s``, the outcome line ``stream`` and ``quiet``, and
# real-mode traces have digests (format 1 is still read; its times are not covered).
FORMAT_VERSION = 2
DIGEST_EVERY = 1000  # stimuli between two state digests
SCHEDULER = "scheduler"
CHAOS = "chaos"
_FLUSH_BYTES = 1 << 20


class TraceError(ValueError):
    """A trace that cannot be read: one line naming the file and the line number."""


class Header(msgspec.Struct, tag="header", tag_field="k", frozen=True):
    format: int
    squall: str
    seed: int
    scenario: Scenario
    digest_every: int = DIGEST_EVERY


class WorkerStart(msgspec.Struct, tag="worker", tag_field="k", frozen=True):
    name: str
    i: int  # incarnation: unique per cluster
    threads: int


class Stim(msgspec.Struct, tag="s", tag_field="k", frozen=True):
    t: str  # target: "scheduler", a worker name, or "chaos"
    c: int  # the target's transition count before this stimulus
    m: p.AnyMessage
    i: int = 0  # the worker incarnation (0 for the scheduler and chaos)


class TargetStim(msgspec.Struct, tag="ts", tag_field="k", frozen=True):
    t: str  # the receiver: "scheduler" or a worker name
    m: dict[str, Any]  # the target's record of the stimulus, tagged with the target's name


class Digest(msgspec.Struct, tag="digest", tag_field="k", frozen=True):
    n: int  # stimuli so far
    d: str  # state digest
    s: str = ""  # stream digest of every byte before it (format 2)


class End(msgspec.Struct, tag="outcome", tag_field="k", frozen=True, omit_defaults=True):
    outcome: Outcome
    # where a violation struck: "stimulus", "end", "stuck", or "done"; "budget": the run
    # stopped at its time budget with its work still progressing (no violation, not judged)
    phase: str = "done"
    digest: str = ""  # state digest at the end
    n: int = 0  # stimuli recorded
    stream: str = ""  # stream digest of every byte before it (format 2)
    # Nothing in flight when the end-of-run checks ran (agreement and liveness run only
    # then); None: not known (format 1, real mode).
    quiet: bool | None = None


TraceLine = Header | WorkerStart | Stim | TargetStim | Digest | End

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(TraceLine)


def squall_version() -> str:
    try:
        return metadata.version("squall")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def stream_hasher() -> Any:
    """A new stream digest (SHA-256: hardware-accelerated here)."""
    return hashlib.sha256()


def stream_hex(hasher: Any) -> str:
    """The stream digest as a trace writes it."""
    return str(hasher.hexdigest()[:32])


def state_digest(sched: SchedulerState, workers: Iterator[WorkerState] | list[WorkerState]) -> str:
    """A cheap, deterministic fingerprint of the state machines.

    Counts and sizes only (tasks known and unrunnable, per-worker processing/has_what
    sizes and bytes, transition counters), so it costs O(workers), not O(tasks); the
    transition counters make almost any divergence show up at once.
    """
    parts: list[Any] = [sched.transition_counter, sched.stale_reports, len(sched.tasks),
                        len(sched.unrunnable)]
    for ws in sched.workers.values():
        parts.append((ws.name, ws.incarnation, ws.status, len(ws.processing), len(ws.has_what),
                      ws.nbytes))
    for wst in workers:
        parts.append((wst.name, wst.transition_counter, len(wst.tasks), wst.nbytes,
                      len(wst.executing)))
    return hashlib.blake2b(_encoder.encode(parts), digest_size=8).hexdigest()


class TraceWriter:
    """Writes a trace line by line into a buffer, flushed to ``path`` in large writes."""

    def __init__(self, path: str | Path, scenario: Scenario, *,
                 digest_every: int = DIGEST_EVERY) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise cannot_write(self.path, e, "trace") from None
        self._buf = bytearray()
        self.digest_every = digest_every
        self.n = 0
        self._heads: dict[str, bytes] = {}  # target -> the start of its stimulus lines
        self._stream = stream_hasher()
        self._hashed = 0  # the bytes at the start of the buffer the stream digest has seen
        self.write(Header(format=FORMAT_VERSION, squall=squall_version(), seed=scenario.seed,
                          scenario=scenario, digest_every=digest_every))

    def write(self, line: Any) -> None:
        buf = self._buf
        _encoder.encode_into(line, buf, -1)
        buf += b"\n"
        if len(buf) > _FLUSH_BYTES:
            self._flush()

    def _hash_pending(self) -> None:
        """What is written is hashed in large pieces: when a digest is wanted, and before
        the buffer is written out."""
        buf = self._buf
        if self._hashed < len(buf):
            with memoryview(buf) as view, view[self._hashed:] as pending:
                self._stream.update(pending)
            self._hashed = len(buf)

    def stream_digest(self) -> str:
        """The stream digest of every byte written so far (what a ``Digest`` line's ``s``
        and the outcome's ``stream`` hold: the digest of the trace before them)."""
        self._hash_pending()
        return stream_hex(self._stream)

    def stimulus(self, target: str, incarnation: int, counter: int, msg: Any) -> None:
        """One ``Stim`` line, its envelope written by hand: the hot path of recording."""
        self.n += 1
        head = self._heads.get(target)
        if head is None:
            head = self._heads[target] = b'{"k":"s","t":' + _encoder.encode(target) + b',"i":'
        buf = self._buf
        buf += head + b'%d,"c":%d,"m":' % (incarnation, counter)
        _encoder.encode_into(msg, buf, -1)
        buf += b"}\n"
        if len(buf) > _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Write the buffer out; OutputError (naming the path) if it cannot be written."""
        self._hash_pending()
        try:
            self._file.write(self._buf)
        except OSError as e:
            self._buf.clear()
            with contextlib.suppress(OSError):
                self._file.close()
            raise cannot_write(self.path, e, "trace") from None
        self._buf.clear()
        self._hashed = 0

    def close(self) -> None:
        if self._file.closed:
            return
        self._hash_pending()
        try:
            try:
                self._file.write(self._buf)
            finally:
                self._buf.clear()
                self._file.close()
        except OSError as e:
            raise cannot_write(self.path, e, "trace") from None


def read_trace(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, line)``; TraceError names the file and line of any problem.

    Checks the header first (a newer format version is refused) and that the trace ends
    with an outcome line (a truncated trace is refused when its end is reached). Lines are
    read one at a time, each at most ``SQUALL_MAX_LINE_BYTES`` long (a longer one is
    refused unread), and a worker's name may not exceed ``SQUALL_MAX_NAME`` characters
    (``squall.scenarios.limits``).
    """
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise TraceError(f"cannot read trace {str(path)!r}: {e.strerror}") from None
    cap = limit(MAX_LINE_BYTES)
    names = limit(MAX_NAME)
    with f:
        lineno = 0
        last: Any = None
        while raw := f.readline(cap + 1):  # a line is read up to the limit, never beyond
            lineno += 1
            if not raw.endswith(b"\n"):
                if len(raw) > cap:
                    raise TraceError(f"{path}: line {lineno}: longer than {cap:,} bytes, the "
                                     f"line limit (set {MAX_LINE_BYTES} to raise it)")
                raise TraceError(f"{path}: line {lineno}: truncated line (the trace was cut "
                                 "short)")
            if lineno == 1:
                last = _read_header(path, raw)
                _check_name(path, lineno, "scenario name", last.scenario.name, names)
                yield lineno, last
                continue
            if isinstance(last, End):
                raise TraceError(f"{path}: line {lineno}: unexpected line after the outcome")
            try:
                last = _decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                raise TraceError(f"{path}: line {lineno}: corrupt: "
                                 f"{str(e).splitlines()[0]}") from None
            kind = type(last)
            if kind is Stim or kind is TargetStim:
                if len(last.t) > names:
                    _check_name(path, lineno, "receiver", last.t, names)
            elif kind is WorkerStart:
                _check_name(path, lineno, "worker name", last.name, names)
            elif kind is Header:
                raise TraceError(f"{path}: line {lineno}: a second header")
            yield lineno, last
        if lineno == 0:
            raise TraceError(f"{path}: line 1: empty file, not a squall trace")
        if not isinstance(last, End):
            raise TraceError(f"{path}: line {lineno}: trace ends without an outcome line "
                             "(truncated?)")


def _check_name(path: Path, lineno: int, what: str, name: str, cap: int) -> None:
    """TraceError if ``name`` is over the name limit (``cap``, checked first: the cheap
    part) or holds a control character."""
    why = name_problem(name) if len(name) > cap or name else None
    if why is not None:
        raise TraceError(f"{path}: line {lineno}: {what} {why}")


def _read_header(path: Path, raw: bytes) -> Header:
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise TraceError(f"{path}: line 1: not a squall trace: {str(e).splitlines()[0]}") from None
    if not isinstance(obj, dict) or obj.get("k") != "header":
        raise TraceError(f"{path}: line 1: not a squall trace (no header line)")
    version = obj.get("format")
    if not isinstance(version, int):
        raise TraceError(f"{path}: line 1: header has no integer 'format' version")
    if version > FORMAT_VERSION:
        raise TraceError(f"{path}: line 1: trace format version {version} is newer than this "
                         f"squall reads ({FORMAT_VERSION}); upgrade squall")
    try:
        return msgspec.convert(obj, Header)
    except msgspec.ValidationError as e:
        raise TraceError(f"{path}: line 1: bad header: {str(e).splitlines()[0]}") from None


def read_header(path: str | Path) -> Header:
    """Only the header (first line) of a trace."""
    for _, line in read_trace_prefix(path, 1):
        return line
    raise TraceError(f"{path}: line 1: empty file, not a squall trace")


def read_trace_prefix(path: str | Path, n: int) -> Iterator[tuple[int, Any]]:
    it = read_trace(path)
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


class SimRecorder:
    """Records a SimCluster's run into a TraceWriter.

    Hooks the cluster's ``recorders`` (every stimulus delivered) and wraps its fault
    surface on the instance, so every fault (and every worker that joins) is recorded at
    the moment it happens, in order with the stimuli. Attach it before scheduling faults
    with ``at``: a bound method captured earlier bypasses the wrapper.
    """

    def __init__(self, cluster: Any, writer: TraceWriter) -> None:
        self.cluster = cluster
        self.writer = writer
        self._seen = 0  # incarnations written so far (cluster.all_workers is append-only)
        self._faults = 0
        self._every = writer.digest_every
        cluster.recorders.append(self._on_stimulus)
        for name in surface_methods():
            setattr(cluster, name, self._wrap(name, getattr(cluster, name)))
        self._sync_workers()

    def _sync_workers(self) -> None:
        all_workers = self.cluster.all_workers
        while self._seen < len(all_workers):
            sw = all_workers[self._seen]
            self.writer.write(WorkerStart(name=sw.name, i=sw.incarnation,
                                          threads=sw.state.nthreads))
            self._seen += 1

    def digest(self) -> str:
        c = self.cluster
        return state_digest(c.scheduler, [sw.state for sw in c.workers.values()])

    def _on_stimulus(self, target: str, msg: Any) -> None:
        c = self.cluster
        if len(c.all_workers) != self._seen:
            self._sync_workers()
        w = self.writer
        if w.n and w.n % self._every == 0:
            w.write(Digest(n=w.n, d=self.digest(), s=w.stream_digest()))
        if target == SCHEDULER:
            w.stimulus(target, 0, c.scheduler.transition_counter, msg)
        else:
            sw = c.workers[target]
            w.stimulus(target, sw.incarnation, sw.state.transition_counter, msg)

    def _wrap(self, kind: str, method: Any) -> Any:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self._faults += 1
            target, params = describe_call(kind, args, kwargs)
            self.writer.write(Stim(t=CHAOS, c=0, m=p.FaultInjected(
                stimulus_id=f"fault-{self._faults}", time=self.cluster.now, kind=kind,
                target=target, params=params)))
            try:
                return method(*args, **kwargs)
            finally:
                self._sync_workers()

        return recorded

    def finish(self, outcome: Outcome, phase: str) -> None:
        """Write the outcome line (wall time and trace path left out: they vary) and close.
        ``quiet``: whether nothing was in flight, as the end-of-run checks saw it (replay
        runs agreement and liveness only then, as they did)."""
        self._sync_workers()
        recorded = msgspec.structs.replace(outcome, wall_time=0.0, trace_path="")
        pending = getattr(self.cluster, "pending", None)
        w = self.writer
        w.write(End(outcome=recorded, phase=phase, digest=self.digest(), n=w.n,
                    stream=w.stream_digest(), quiet=None if pending is None else pending == 0))
        w.close()
