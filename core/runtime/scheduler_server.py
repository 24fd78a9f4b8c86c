"""The scheduler process: ``SchedulerState`` behind a ZeroMQ ROUTER socket.

One thread, one loop: drain every message that is waiting, feed the stimuli to
``SchedulerState.handle`` with the time read here from a monotonic clock (the state
machine reads none), route the instructions to the workers' and clients' outboxes, then
send each outbox as one multipart message. Batching comes for free under load and adds no
latency when idle.

The scheduler never unpickles anything: task bodies pass through as opaque frames (kept
until their task is forgotten, resent when a task is placed again) and exceptions are
stored as the bytes the worker sent. A message from a peer that has not registered, a
frame that fails to decode, or a message a peer of its kind may not send is logged with
the peer and the reason, counted and dropped; the loop goes on.

A registration is checked before it is accepted (``registration_problem``): a worker's
name, thread count, pid, incarnation and data address must be sane (at most
``max_nthreads`` threads, a name of at most ``MAX_NAME`` printable characters, a
tcp://HOST:PORT address), else the worker is answered with a ``CloseWorker`` saying why
and nothing of it is kept. What a connection the scheduler told to register again (or
declared dead) keeps sending is counted but logged once, so a worker whose reports
queued up while the link was down cannot flood the log.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from typing import Any

import msgspec
import zmq

from squall.core import protocol as p
from squall.core.driver import SchedulerDriver
from squall.core.protocol import ProtocolError
from squall.core.runtime import transport as net
from squall.core.scheduler import SchedulerState, SchedulerTaskState, TaskState
from squall.invariants import SchedulerValidator

log = logging.getLogger("squall.scheduler")

SCHEDULER = "scheduler"
DRAIN_LIMIT = 2000  # messages handled before the outboxes are flushed
MAX_NTHREADS = net.MAX_NTHREADS  # the default cap on the threads of one worker
MAX_NAME = net.MAX_NAME
MAX_ADDRESS = net.MAX_ADDRESS


class Peer:
    """A registered worker or client, and what is waiting to be sent to it."""

    __slots__ = ("ident", "kind", "name", "address", "pid", "incarnation", "ws", "msgs",
                 "frames", "spec_funcs", "spec_func_frames", "spec_keys", "spec_func_of",
                 "spec_frames", "sent_funcs")

    def __init__(self, ident: bytes, kind: str, name: str) -> None:
        self.ident = ident
        self.kind = kind  # "worker" or "client"
        self.name = name
        self.address = ""
        self.pid = 0
        self.incarnation = 0
        self.ws: Any = None  # the scheduler's WorkerInfo of this incarnation
        self.msgs: list[Any] = []
        self.frames: list[bytes] = []
        self.spec_funcs: list[str] = []
        self.spec_func_frames: list[bytes] = []
        self.spec_keys: list[str] = []
        self.spec_func_of: list[str] = []
        self.spec_frames: list[bytes] = []
        self.sent_funcs: set[str] = set()  # function tokens this worker has been sent


class SchedulerServer(SchedulerDriver):
    """``SchedulerServer(listen).bind()`` then ``serve()`` until ``stop()``.

    The one driver loop (``SchedulerDriver``) around its ``SchedulerState``: every
    stimulus is recorded, handled, validated in strict mode, and its instructions go to
    the outboxes of the workers and clients they name, sent by ``_flush``."""

    validator: SchedulerValidator | None

    def __init__(
        self,
        listen: str = "tcp://127.0.0.1:0",
        *,
        keys: net.Keys | None = None,
        allowed_failures: int = 3,
        heartbeat_timeout: float | None = 10.0,
        tick_interval: float | None = None,
        validate: bool = False,
        stealing: bool = False,
        control: Any = None,
        record_to: str | None = None,
        max_nthreads: int = MAX_NTHREADS,
        origin: float | None = None,
    ) -> None:
        if heartbeat_timeout is not None and not 0 < heartbeat_timeout < math.inf:
            raise ValueError(f"heartbeat_timeout must be a positive number of seconds (or "
                             f"None: never), got {heartbeat_timeout!r}")
        if tick_interval is not None and not 0 < tick_interval < math.inf:
            raise ValueError(f"tick_interval must be a positive number of seconds, got "
                             f"{tick_interval!r}")
        if max_nthreads < 1:
            raise ValueError(f"max_nthreads must be >= 1, got {max_nthreads!r}")
        self.max_nthreads = max_nthreads
        self.host, self.port = net.check_listen(listen, keys)
        self.keys = keys
        super().__init__(SCHEDULER, SchedulerState(allowed_failures=allowed_failures,
                                                   heartbeat_timeout=heartbeat_timeout))
        self.state.observers.append(self._on_transition)
        self.stealing: Any = None
        if stealing:
            from squall.core.stealing import WorkStealing

            self.stealing = WorkStealing(self.state)
        if tick_interval is None:
            tick_interval = 0.1 if heartbeat_timeout is None else min(
                1.0, max(0.05, heartbeat_timeout / 10))
        self.tick_interval = tick_interval
        self._ticking = heartbeat_timeout is not None or self.stealing is not None
        # self.recorders are called with (target, stimulus) for every stimulus handed to
        # the state machine, in this process (LocalCluster streams them to its parent
        # through record_to).
        if validate:
            self.validator = SchedulerValidator(self.state)
        self.control = control  # a multiprocessing Connection from the launcher, or None
        self.record_to = record_to
        self.address = ""
        self.peers: dict[bytes, Peer] = {}
        self.workers: dict[str, Peer] = {}
        self.clients: dict[str, Peer] = {}
        self.specs: dict[str, tuple[str, bytes]] = {}  # key -> (function token, arguments)
        self.funcs: dict[str, list[Any]] = {}  # token -> [function bytes, tasks using it]
        self.errors: dict[str, bytes] = {}  # key -> pickled exception its worker sent
        self.drops = net.Drops(log, SCHEDULER)
        self.refused = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.n_stimuli = 0
        self._full_checked = 0
        self.halted = ""
        self._halt_frames: list[bytes] = []
        self._halt_msg: p.Halted | None = None
        self._halt_payload: bytes | None = None  # a worker's pickled violation, until its Halted
        self._dirty: dict[Peer, None] = {}
        self._membership_changed = False
        self._sid = 0
        # its clock: from the cluster's ``origin`` (a time.monotonic() value, shared with
        # every worker of the cluster), else from now
        self._t0 = time.monotonic() if origin is None else origin
        self._stopping = False
        self._records: list[bytes] = []
        self._ctx: zmq.Context[Any] | None = None
        self._router: zmq.Socket[Any] | None = None
        self._monitor: zmq.Socket[Any] | None = None
        self._push: zmq.Socket[Any] | None = None
        self._auth: Any = None
        self._handlers: dict[str, dict[type, Callable[[Peer, Any, list[bytes]], None]]] = {
            "worker": {
                p.TaskFinished: self._from_worker,
                p.TaskErred: self._from_worker,
                p.MissingData: self._from_worker,
                p.Heartbeat: self._from_worker,
                p.StealResponse: self._from_worker,
                p.Payload: self._worker_payload,
                p.Halted: self._worker_halted,
            },
            "client": {
                p.RunSpecs: self._client_run_specs,
                p.UpdateGraph: self._client_update_graph,
                p.ClientReleasesKeys: self._client_releases,
                p.InfoRequest: self._client_info,
                p.SkewEstimates: self._client_skew,  # chaos acts through any client
            },
        }
        self._pending_specs: dict[str, tuple[str, bytes]] = {}
        self._pending_funcs: dict[str, bytes] = {}
        self._told: dict[bytes, None] = {}  # unknown connections told to rejoin

    # ------------------------------------------------------------------ life cycle

    def bind(self) -> str:
        """Bind the ROUTER socket; return the address peers connect to."""
        self._ctx = ctx = zmq.Context()
        if self.keys is not None:
            self._auth = net.start_authenticator(ctx, self.keys)
        self._router = net.make_socket(ctx, zmq.ROUTER, keys=self.keys, server=True)
        if self.keys is not None:
            self._monitor = self._router.get_monitor_socket(net.REFUSAL_EVENTS)
        try:
            net.bind(self._router, self.host, self.port)
        except zmq.ZMQError as e:
            raise net.AddressError(
                f"cannot listen on {net.format_address(self.host, self.port)}: {e}") from None
        self.address = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.record_to is not None:
            self._push = net.make_socket(ctx, zmq.PUSH, linger_ms=5000)
            self._push.connect(self.record_to)
            self.recorders.append(self._record)
        log.info("scheduler listening at %s%s", self.address,
                 " (CURVE)" if self.keys is not None else "")
        return self.address

    def stop(self) -> None:
        self._stopping = True

    def now(self) -> float:
        return time.monotonic() - self._t0

    def serve(self) -> None:
        """Run the loop until stop(), a "stop" on the control pipe, or its end."""
        if self._router is None:
            self.bind()
        router = self._router
        assert router is not None
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        control_fd = self.control.fileno() if self.control is not None else None
        if control_fd is not None:
            poller.register(control_fd, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        next_tick = time.monotonic() + self.tick_interval
        try:
            while not self._stopping:
                if self._ticking:
                    wait = max(0.0, next_tick - time.monotonic())
                    events = dict(poller.poll(net.ms(wait)))
                else:
                    events = dict(poller.poll(1000))
                if router in events:
                    self._drain(router)
                if control_fd is not None and control_fd in events:
                    self._read_control()
                if self._monitor is not None and self._monitor in events:
                    self._read_monitor()
                if self._ticking and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_interval
                    self._tick()
                self._flush()
        finally:
            self._close()

    def _close(self) -> None:
        self._flush()
        if self._push is not None:
            self._push.send_multipart([b"eof", SCHEDULER.encode()])
        if self._auth is not None:
            self._auth.stop()
        if self._monitor is not None:
            self._monitor.close(0)
        if self._ctx is not None:
            if self._router is not None:
                self._router.close(0)
            if self._push is not None:
                self._push.close(5000)
            self._ctx.term()
            self._ctx = None

    # ------------------------------------------------------------------ input

    def _drain(self, router: zmq.Socket[Any]) -> None:
        for _ in range(DRAIN_LIMIT):
            try:
                parts = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ident = parts[0]
            body = parts[1:]
            self.bytes_in += sum(len(x) for x in body)
            self._on_message(ident, body)

    def _on_message(self, ident: bytes, parts: list[bytes]) -> None:
        peer = self.peers.get(ident)
        label = peer.name if peer is not None else net.peer_label(ident)
        try:
            msgs, frames = net.unpack(parts)
        except ProtocolError as e:
            self.drops(label, str(e))
            return
        if peer is None:
            self._register(ident, msgs)
            return
        handlers = self._handlers[peer.kind]
        pairs = net.split_frames(msgs, frames) if frames else [(m, frames) for m in msgs]
        for msg, fr in pairs:
            h = handlers.get(type(msg))
            if h is None:
                self.drops(label, f"{type(msg).__name__} is not accepted from a {peer.kind}")
                continue
            h(peer, msg, fr)
        self._pending_specs.clear()
        self._pending_funcs.clear()

    def _read_control(self) -> None:
        """From the launcher: "stop", or "died NAME PID" when a worker process ended."""
        control = self.control
        try:
            while control.poll(0):
                words = control.recv_bytes().decode(errors="replace").split()
                if words == ["stop"]:
                    self._stopping = True
                elif len(words) == 3 and words[0] == "died" and words[2].isdigit():
                    peer = self.workers.get(words[1])
                    if peer is not None and peer.pid == int(words[2]):
                        log.warning("worker %s (pid %s) died", words[1], words[2])
                        self._remove_worker(peer, "died")
        except (EOFError, OSError):
            self._stopping = True  # the launcher is gone

    def _read_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        assert self._monitor is not None
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self.refused += 1
            # A refused peer retries its connection every few 100 ms: log sparingly.
            if self.refused <= 20 or self.refused % 1000 == 0:
                log.warning("scheduler: refused a connection on %s: CURVE handshake failed "
                            "(event %s; wrong key?) (%d refused so far)",
                            event.get("endpoint"), event.get("event"), self.refused)

    # ------------------------------------------------------------------ registration

    def _register(self, ident: bytes, msgs: list[Any]) -> None:
        label = net.peer_label(ident)
        first = msgs[0]
        if len(msgs) != 1 or type(first) not in (p.RegisterWorker, p.RegisterClient):
            # A connection told to register again, or declared dead, may have more queued
            # behind what it was told about: counted, not logged again.
            self.drops(label, f"{type(first).__name__} before registering",
                       quiet=ident in self._told)
            self._tell_unknown_worker(ident, msgs)
            return
        if type(first) is p.RegisterClient:
            if not _good_name(first.client) or first.client in self.clients:
                self.drops(label, f"client name {_short(first.client)} is empty, too long, "
                                  "unprintable or taken")
                return
            peer = Peer(ident, "client", first.client)
            self.peers[ident] = peer
            self.clients[peer.name] = peer
            self._send(peer, p.Membership(stimulus_id="", workers=self._addresses()))
            if self._halt_msg is not None:
                self._send(peer, self._halt_msg, self._halt_frames)
            log.info("client %s connected", peer.name)
            return
        problem = registration_problem(first, self.max_nthreads)
        if problem:
            self.drops(label, f"registration refused: {problem}")
            self._answer(ident, p.CloseWorker(stimulus_id="", worker=first.worker[:MAX_NAME],
                                              reason=f"registration refused: {problem}"))
            return
        old = self.workers.get(first.worker)
        if old is not None:
            self._send(old, p.CloseWorker(stimulus_id="", worker=old.name,
                                          reason="replaced by a new registration"))
            self._forget_peer(old)
        peer = Peer(ident, "worker", first.worker)
        peer.address = first.address
        peer.pid = first.pid
        peer.incarnation = first.incarnation
        self.peers[ident] = peer
        self.workers[peer.name] = peer
        self._handle(p.AddWorker(stimulus_id=self._new_sid("add-worker"), time=self.now(),
                                 worker=peer.name, nthreads=first.nthreads))
        peer.ws = self.state.workers.get(peer.name)
        self._membership_changed = True
        log.info("worker %s registered (pid %d, %d threads, data at %s)", peer.name, peer.pid,
                 first.nthreads, peer.address)

    def _tell_unknown_worker(self, ident: bytes, msgs: list[Any]) -> None:
        """A worker this scheduler does not know on this connection (it reconnected after a
        cut, or was declared dead) is told, once, to start again as a new incarnation: what
        it reports is never applied, and it comes back clean."""
        worker = next((m.worker for m in msgs if type(m) in _WORKER_REPORTS), None)
        if worker is None or ident in self._told:
            return
        self._mark_told(ident)
        self._answer(ident, p.CloseWorker(
            stimulus_id="", worker=worker, reason="unknown connection: register again",
            rejoin=True))

    def _mark_told(self, ident: bytes) -> None:
        if len(self._told) >= 1024:
            self._told.clear()  # bounded: a worker told twice closes once
        self._told[ident] = None

    def _answer(self, ident: bytes, msg: Any) -> None:
        """Send one message at once to a connection that is not (or no longer) a peer."""
        if self._router is None:
            return  # driven in-process (the decoder fuzz test): no socket to answer on
        self._router.send_multipart([ident, *net.pack([msg])])

    def _forget_peer(self, peer: Peer) -> None:
        self.peers.pop(peer.ident, None)
        if peer.kind == "worker":
            if self.workers.get(peer.name) is peer:
                del self.workers[peer.name]
            self._membership_changed = True
        elif self.clients.get(peer.name) is peer:
            del self.clients[peer.name]

    def _remove_worker(self, peer: Peer, reason: str) -> None:
        self._forget_peer(peer)
        if peer.ws is not None and self.state.workers.get(peer.name) is peer.ws:
            self._handle(p.RemoveWorker(stimulus_id=self._new_sid("remove-worker"),
                                        time=self.now(), worker=peer.name, reason=reason))

    def _addresses(self) -> dict[str, str]:
        return {name: w.address for name, w in self.workers.items()}

    # ------------------------------------------------------------------ stimuli

    def _new_sid(self, kind: str) -> str:
        self._sid += 1
        return f"{kind}-{self._sid}"

    def _handle(self, msg: Any) -> None:
        """Feed one stimulus through the driver loop: record, handle, validate, and put
        what it asks for into the outboxes."""
        if self.halted:
            return
        self.n_stimuli += 1
        try:
            self.stimulate(msg)
        except Exception as e:  # an invariant violation, an impossible transition, a bug
            self._halt(SCHEDULER, e, traceback.format_exc())

    def _tick(self) -> None:
        self._handle(p.Tick(stimulus_id=self._new_sid("tick"), time=self.now()))
        if self.validator is not None and self.n_stimuli != self._full_checked \
                and not self.halted and not any(ws.processing for ws in self.state.running):
            # Quiescent: the full check of every invariant on every entity.
            self._full_checked = self.n_stimuli
            try:
                self.validator.check_full()
            except Exception as e:  # a violation: the run halts
                self._halt(SCHEDULER, e, traceback.format_exc())
        # Workers the state machine declared dead (heartbeat timeout) are told to go.
        for peer in list(self.workers.values()):
            if peer.ws is not None and self.state.workers.get(peer.name) is not peer.ws:
                log.warning("worker %s missed its heartbeats: declared dead", peer.name)
                self._send(peer, p.CloseWorker(stimulus_id="", worker=peer.name,
                                               reason="declared dead (heartbeat timeout)",
                                               rejoin=True))
                self._forget_peer(peer)
                self._mark_told(peer.ident)  # what it sends before it hears: not logged

    def _from_worker(self, peer: Peer, msg: Any, frames: list[bytes]) -> None:
        if msg.worker != peer.name:
            self.drops(peer.name, f"{type(msg).__name__} names worker {msg.worker!r}")
            return
        self._handle(msgspec.structs.replace(msg, time=self.now()))

    def _worker_payload(self, peer: Peer, msg: p.Payload, frames: list[bytes]) -> None:
        # A payload belongs to the message after it: a task's error, or a halt (key "").
        if not msg.key:
            self._halt_payload = frames[0]
        elif msg.kind == "exception" and msg.key in self.state.tasks:
            self.errors[msg.key] = frames[0]

    def _worker_halted(self, peer: Peer, msg: p.Halted, frames: list[bytes]) -> None:
        self._halt_with(p.Halted(stimulus_id="", where=peer.name, reason=msg.reason,
                                 traceback=msg.traceback),
                        [self._halt_payload] if self._halt_payload is not None else [])
        self._halt_payload = None

    def _client_run_specs(self, peer: Peer, msg: p.RunSpecs, frames: list[bytes]) -> None:
        nf = len(msg.funcs)
        for token, blob in zip(msg.funcs, frames[:nf], strict=True):
            self._pending_funcs[token] = blob
        for key, token, blob in zip(msg.keys, msg.func_of, frames[nf:], strict=True):
            self._pending_specs[key] = (token, blob)

    def _client_update_graph(self, peer: Peer, msg: p.UpdateGraph, frames: list[bytes]) -> None:
        problem = self._check_graph(peer, msg)
        if problem:
            self.drops(peer.name, f"update-graph rejected: {problem}")
            for key in msg.wanted:
                self._send(peer, p.KeyErred(stimulus_id=msg.stimulus_id, client=peer.name,
                                            key=key, exception=f"GraphError: {problem}",
                                            blame=key))
            return
        for spec in msg.tasks:
            if spec.key in self.state.tasks or spec.key in self.specs:
                continue
            token, blob = self._pending_specs[spec.key]
            entry = self.funcs.get(token)
            if entry is None:
                entry = self.funcs[token] = [self._pending_funcs[token], 0]
            entry[1] += 1
            self.specs[spec.key] = (token, blob)
        self._handle(msgspec.structs.replace(msg, time=self.now()))

    def _check_graph(self, peer: Peer, msg: p.UpdateGraph) -> str:
        """Why this graph cannot be accepted ("" if it can): the state machine trusts its
        input, so a client's mistakes are caught here, naming the key."""
        if msg.client != peer.name:
            return f"sent by {peer.name!r} on behalf of {msg.client!r}"
        tasks = self.state.tasks
        new: dict[str, p.TaskSpecMsg] = {}
        for spec in msg.tasks:
            if spec.key in tasks or spec.key in new:
                continue
            new[spec.key] = spec
            if not spec.has_run_spec:
                return f"task {spec.key!r} has no function"
            body = self._pending_specs.get(spec.key)
            if body is None:
                return f"task {spec.key!r}: its body did not arrive"
            if body[0] not in self.funcs and body[0] not in self._pending_funcs:
                return f"task {spec.key!r}: unknown function token {body[0]!r}"
        for spec in new.values():
            for dep in spec.deps:
                if dep not in tasks and dep not in new:
                    return f"task {spec.key!r} depends on unknown key {dep!r}"
                if dep == spec.key:
                    return f"cycle: {spec.key!r} depends on itself"
        for key in msg.wanted:
            if key not in tasks and key not in new:
                return f"wanted key {key!r} is not in the graph"
        return _find_cycle(new)

    def _client_releases(self, peer: Peer, msg: p.ClientReleasesKeys,
                         frames: list[bytes]) -> None:
        if msg.client != peer.name:
            self.drops(peer.name, f"release on behalf of {msg.client!r}")
            return
        self._handle(msgspec.structs.replace(msg, time=self.now()))

    def _client_skew(self, peer: Peer, msg: p.SkewEstimates, frames: list[bytes]) -> None:
        if not msg.factor > 0:
            self.drops(peer.name, f"skew factor must be > 0, got {msg.factor}")
            return
        self._handle(msgspec.structs.replace(msg, time=self.now()))

    def _client_info(self, peer: Peer, msg: p.InfoRequest, frames: list[bytes]) -> None:
        self._send(peer, self.info())

    def info(self) -> p.SchedulerInfo:
        return p.SchedulerInfo(
            stimulus_id="", workers=self._addresses(),
            pids={name: w.pid for name, w in self.workers.items()},
            n_tasks=len(self.state.tasks), n_stimuli=self.n_stimuli, dropped=self.drops.count,
            refused=self.refused, bytes_in=self.bytes_in, bytes_out=self.bytes_out,
            halted=self.halted)

    def _on_transition(self, state: SchedulerState, ts: TaskState, start: str, finish: str,
                       sid: str) -> None:
        if finish == SchedulerTaskState.FORGOTTEN:
            spec = self.specs.pop(ts.key, None)
            if spec is not None:
                entry = self.funcs[spec[0]]
                entry[1] -= 1
                if entry[1] == 0:
                    del self.funcs[spec[0]]
            self.errors.pop(ts.key, None)

    # ------------------------------------------------------------------ halting

    def _halt(self, where: str, exc: BaseException, tb: str) -> None:
        blob = net.exception_blob(exc)
        frames = [blob] if blob is not None else []
        self._halt_with(p.Halted(stimulus_id="", where=where,
                                 reason=f"{type(exc).__name__}: {exc}", traceback=tb), frames)

    def _halt_with(self, msg: p.Halted, frames: list[bytes]) -> None:
        if self.halted:
            return
        self.halted = f"{msg.where}: {msg.reason}"
        log.error("run halted in %s: %s\n%s", msg.where, msg.reason, msg.traceback)
        self._halt_msg = msg
        self._halt_frames = frames[:1]
        for peer in self.clients.values():
            self._send(peer, msg, self._halt_frames)

    # ------------------------------------------------------------------ output

    def _send(self, peer: Peer, msg: Any, frames: list[bytes] | None = None) -> None:
        if frames:
            peer.msgs.append(p.Payload(stimulus_id="", key=getattr(msg, "key", ""),
                                       kind="exception"))
            peer.frames.extend(frames)
        peer.msgs.append(msg)
        self._dirty[peer] = None

    # The driver's dispatch: each instruction goes to the outbox of the peer it names
    # (gone peers are skipped); _flush sends the outboxes.

    def compute(self, ins: p.ComputeTask) -> None:
        """The task's body (and its function, the first time) travels with it."""
        peer = self.workers.get(ins.worker)
        if peer is None:
            return
        spec = self.specs.get(ins.key)
        if spec is None:  # cannot happen: every accepted task came with its body
            raise RuntimeError(f"no body for task {ins.key!r}")
        token, blob = spec
        if token not in peer.sent_funcs:
            peer.sent_funcs.add(token)
            peer.spec_funcs.append(token)
            peer.spec_func_frames.append(self.funcs[token][0])
        peer.spec_keys.append(ins.key)
        peer.spec_func_of.append(token)
        peer.spec_frames.append(blob)
        peer.msgs.append(ins)
        self._dirty[peer] = None

    def send_to_worker(self, ins: Any) -> None:
        peer = self.workers.get(ins.worker)
        if peer is not None:
            peer.msgs.append(ins)
            self._dirty[peer] = None

    def report_in_memory(self, ins: p.KeyInMemory | p.KeyLost) -> None:
        peer = self.clients.get(ins.client)
        if peer is not None:
            peer.msgs.append(ins)
            self._dirty[peer] = None

    report_lost = report_in_memory

    def report_erred(self, ins: p.KeyErred) -> None:
        """The exception the worker sent travels with it, as it was pickled there."""
        peer = self.clients.get(ins.client)
        if peer is not None:
            err = self.errors.get(ins.blame or ins.key)
            self._send(peer, ins, [err] if err is not None else None)

    def unrouted(self, instruction: Any) -> None:
        log.error("scheduler: no route for instruction %r", instruction)

    def _flush(self) -> None:
        if self._membership_changed:
            self._membership_changed = False
            m = p.Membership(stimulus_id="", workers=self._addresses())
            for peer in self.peers.values():
                self._send(peer, m)
        if self._records:
            assert self._push is not None
            self._push.send_multipart(self._records)
            self._records = []
        if not self._dirty:
            return
        router = self._router
        assert router is not None
        for peer in self._dirty:
            msgs = peer.msgs
            frames = peer.frames
            if peer.spec_keys:
                specs = p.RunSpecs(stimulus_id="", funcs=tuple(peer.spec_funcs),
                                   keys=tuple(peer.spec_keys), func_of=tuple(peer.spec_func_of))
                msgs = [specs, *msgs]
                frames = peer.spec_func_frames + peer.spec_frames + frames
                peer.spec_funcs = []
                peer.spec_func_frames = []
                peer.spec_keys = []
                peer.spec_func_of = []
                peer.spec_frames = []
            parts = net.pack(msgs, frames)
            self.bytes_out += sum(len(x) for x in parts)
            router.send_multipart([peer.ident, *parts])
            peer.msgs = []
            peer.frames = []
        self._dirty = {}

    def _record(self, target: str, msg: Any) -> None:
        self._records.append(net.encode_record(target, 0, self.state.transition_counter, msg))


# What only a registered worker sends: from an unknown connection, a worker that lost its
# registration (cut off, or declared dead).
_WORKER_REPORTS = (p.TaskFinished, p.TaskErred, p.MissingData, p.Heartbeat, p.StealResponse)


def registration_problem(msg: p.RegisterWorker, max_nthreads: int = MAX_NTHREADS) -> str:
    """Why a worker's registration cannot be accepted ("" if it can). The state machine
    trusts its input: absurd fields (a forged or broken worker) stop here."""
    if not _good_name(msg.worker):
        return (f"the worker name must be 1-{MAX_NAME} printable characters, got "
                f"{_short(msg.worker)}")
    if msg.worker == SCHEDULER:
        return f"the worker name {SCHEDULER!r} is reserved"
    if not 1 <= msg.nthreads <= max_nthreads:
        return f"nthreads must be between 1 and {max_nthreads}, got {msg.nthreads}"
    if msg.pid < 0:
        return f"pid must be >= 0, got {msg.pid}"
    if msg.incarnation < 0:
        return f"incarnation must be >= 0, got {msg.incarnation}"
    try:
        if len(msg.address) > MAX_ADDRESS:
            raise net.AddressError(f"address {_short(msg.address)} is too long")
        _, port = net.parse_address(msg.address)
        if port == 0:
            raise net.AddressError(f"address {msg.address!r}: port 0")
    except net.AddressError as e:
        return f"data {e}"
    return ""


def _good_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and name.isprintable()


def _short(text: str, limit: int = 40) -> str:
    """``repr`` of ``text``, cut to ``limit`` characters (an over-long name in a log)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} chars)"


def _find_cycle(new: dict[str, p.TaskSpecMsg]) -> str:
    """A cycle among newly submitted tasks, as a message ("" if there is none)."""
    indegree = {k: 0 for k in new}
    dependents: dict[str, list[str]] = {k: [] for k in new}
    for spec in new.values():
        for d in spec.deps:
            if d in new:
                indegree[spec.key] += 1
                dependents[d].append(spec.key)
    ready = [k for k, n in indegree.items() if n == 0]
    seen = 0
    while ready:
        k = ready.pop()
        seen += 1
        for d in dependents[k]:
            indegree[d] -= 1
            if indegree[d] == 0:
                ready.append(d)
    if seen == len(new):
        return ""
    stuck = sorted(k for k, n in indegree.items() if n > 0)
    return f"cycle among keys {stuck[:5]}"
