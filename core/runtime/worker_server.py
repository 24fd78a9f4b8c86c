"""The worker process: ``WorkerState`` behind ZeroMQ sockets, with a thread pool.

The loop thread owns every socket and the state machine. It feeds stimuli (compute, free
and steal requests from the scheduler; finished executions; arrived transfers) to
``WorkerState.handle`` with the time read here from a monotonic clock, and carries out
the instructions: ``Execute`` goes to a pool of ``nthreads`` threads, ``GatherDep``
becomes a ``GetData`` sent straight to the peer holding the data (never through the
scheduler), ``ReleaseData`` drops stored values, and the rest goes to the scheduler.

Values are kept twice: as the object (inputs of local tasks) and as the pickled bytes
(served to peers and clients without pickling again). A result is pickled when it is
produced, in the task's thread, so a result that cannot be pickled fails its task with
an error that names it, and the cluster goes on. Values fetched from peers are unpickled
only when a task needs them, in that task's thread.

A worker started by hand (``squall worker``: ``serve_standalone``) outlives its
scheduler. It pings the scheduler (``transport.keepalive``) and watches the connection;
when the scheduler dies, stops answering, or declares it dead, it logs so at once and
starts again in the same process as a new incarnation (clean: nothing it held is kept),
registering with a growing wait between attempts and a log line at attempts 1, 2, 4, 8,
... until the scheduler -- the same one or a new one on the same address -- accepts it.
Under a launcher (``LocalCluster``) the launcher does this instead: the worker exits
with ``REJOIN_EXIT`` and a new process takes its name.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import traceback
from collections import deque
from typing import Any

import msgspec
import zmq

from squall.core import protocol as p
from squall.core.driver import WorkerDriver
from squall.core.protocol import ProtocolError
from squall.core.runtime import transport as net
from squall.core.worker import WorkerState, WorkerTaskState, WTask
from squall.invariants import WorkerValidator

log = logging.getLogger("squall.worker")

_LAZY = object()  # a value that arrived from a peer and has not been unpickled yet
FLUSH_DELAY = 0.002  # seconds reports may wait to travel together while tasks are queued
REJOIN_FIRST_WAIT = 0.5  # seconds a rejoining worker waits for its first answer ...
REJOIN_MAX_WAIT = 10.0  # ... doubled after each attempt, up to this


class RegistrationError(RuntimeError):
    """The scheduler did not accept this worker (unreachable, or refused by CURVE)."""


class WorkerServer(WorkerDriver):
    """``WorkerServer(scheduler_address, name=..., nthreads=...).start()`` then ``serve()``.

    The one driver loop (``WorkerDriver``) around its ``WorkerState``: every stimulus is
    recorded, handled and validated in strict mode; ``execute`` hands a task to the pool,
    ``gather`` asks the peer, ``release`` drops values, and reports wait in the outbox for
    ``_flush``."""

    validator: WorkerValidator | None

    def __init__(
        self,
        scheduler: str,
        *,
        name: str | None = None,
        nthreads: int = 1,
        listen: str | None = None,
        keys: net.Keys | None = None,
        heartbeat_interval: float = 0.5,
        register_timeout: float = 10.0,
        gather_timeout: float = 10.0,
        validate: bool = False,
        control: Any = None,
        record_to: str | None = None,
        incarnation: int = 0,
        proxy_api: str | None = None,
        proxy_prefix: str = "",
        reconnect: bool = False,
        origin: float | None = None,
    ) -> None:
        for what, value in (("heartbeat_interval", heartbeat_interval),
                            ("register_timeout", register_timeout),
                            ("gather_timeout", gather_timeout)):
            if not 0 < value < math.inf:
                raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
        if nthreads < 1:
            raise ValueError(f"nthreads must be >= 1, got {nthreads!r}")
        host, _ = net.parse_address(scheduler)
        if listen is None:
            listen = net.format_address(net.local_ip_towards(host), 0)
        self.listen_host, self.listen_port = net.check_listen(listen, keys)
        self.scheduler_address = scheduler
        name = name or f"{os.uname().nodename}-{os.getpid()}"
        super().__init__(name, WorkerState(name, nthreads))
        self.nthreads = nthreads
        self.keys = keys
        self.heartbeat_interval = heartbeat_interval
        self.register_timeout = register_timeout
        self.gather_timeout = gather_timeout
        self.control = control  # a multiprocessing Connection from the launcher, or None
        self.record_to = record_to
        self.incarnation = incarnation
        # Chaos in real mode: every connection this worker opens goes through the proxy
        # named for it on this Toxiproxy API (see squall.chaos.network).
        self.proxy_api = proxy_api
        self.proxy_prefix = proxy_prefix
        self._routes: dict[str, str] = {}  # peer -> the proxy address to reach it through
        self.rejoin = False  # told by the scheduler to start again as a new incarnation
        # Standalone (serve_standalone): ping the scheduler, end this incarnation when its
        # connection closes, and rejoin with retries; under a launcher, none of this.
        self.reconnect = reconnect
        self._watch: net.LinkWatch | None = None
        self.state.observers.append(self._on_transition)
        self.data: dict[str, Any] = {}
        if validate:
            self.validator = WorkerValidator(self.state, data=self.data)
        self.address = ""
        self.blobs: dict[str, bytes] = {}
        self.drops = net.Drops(log, f"worker {self.name}")
        self.addresses: dict[str, str] = {}
        self.halted = ""
        self._full_checked = 0
        self._first_batch: list[bytes] | None = None
        self._bodies: dict[str, tuple[str, bytes]] = {}  # key -> (function token, args)
        self._func_bytes: dict[str, bytes] = {}
        self._funcs: dict[str, Any] = {}  # token -> function, unpickled once
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        # Pool threads write to the wake pipe; it is closed under this lock so that a
        # thread finishing a task after this incarnation ended writes to no other file.
        self._wake_lock = threading.Lock()
        self._err_blobs: dict[str, bytes] = {}
        self._outbox: list[Any] = []
        self._out_frames: list[bytes] = []
        self._outbox_since = 0.0
        self._records: list[bytes] = []
        self._stimuli: deque[Any] = deque()
        self._gathers: dict[str, tuple[tuple[str, ...], float]] = {}  # holder -> keys, deadline
        self._gather_tries: dict[str, int] = {}  # holder -> times the request was resent
        self._peer_socks: dict[str, zmq.Socket[Any]] = {}
        self._sock_peer: dict[zmq.Socket[Any], str] = {}
        self._sid = 0
        # The clock its stimuli are stamped with: the cluster's (``origin``, a
        # time.monotonic() of the machine's one monotonic clock, so that a worker started
        # later, or started again, counts from the same moment as the scheduler), else its own.
        self._t0 = time.monotonic() if origin is None else origin
        self._stopping = False
        self._ctx: zmq.Context[Any] | None = None
        self._sched: zmq.Socket[Any] | None = None
        self._data_sock: zmq.Socket[Any] | None = None
        self._push: zmq.Socket[Any] | None = None
        self._auth: Any = None
        self._poller = zmq.Poller()

    # ------------------------------------------------------------------ life cycle

    def now(self) -> float:
        return time.monotonic() - self._t0

    def start(self, retry: bool = False) -> None:
        """Open the sockets, register with the scheduler and start the threads.

        The scheduler has ``register_timeout`` s to accept, else RegistrationError; with
        ``retry`` (a rejoin), attempts go on, with growing waits, until it accepts. A
        refusal (the scheduler's answer says why) is a RegistrationError either way."""
        self._ctx = ctx = zmq.Context()
        if self.keys is not None:
            self._auth = net.start_authenticator(ctx, self.keys)
        self._data_sock = net.make_socket(ctx, zmq.ROUTER, keys=self.keys, server=True)
        try:
            net.bind(self._data_sock, self.listen_host, self.listen_port)
        except zmq.ZMQError as e:
            self._close()
            raise net.AddressError(
                f"cannot listen on {net.format_address(self.listen_host, self.listen_port)}: "
                f"{e}") from None
        self.address = self._data_sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.record_to is not None:
            self._push = net.make_socket(ctx, zmq.PUSH, linger_ms=5000)
            self._push.connect(self.record_to)
            self.recorders.append(self._record)
        self._connect_scheduler()
        try:
            if retry:
                self._register_until_accepted()
            elif not self._register(self.register_timeout):
                raise RegistrationError(
                    f"worker {self.name}: the scheduler at {self.scheduler_address} did not "
                    f"accept its registration within {self.register_timeout:g} s "
                    "(not running, or refused: wrong CURVE key?)")
        except BaseException:  # refused, no answer, or interrupted while waiting
            self._close()
            raise
        for i in range(self.nthreads):
            t = threading.Thread(target=self._executor, name=f"squall-exec-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _connect_scheduler(self) -> None:
        assert self._ctx is not None
        self._sched = net.make_socket(self._ctx, zmq.DEALER, keys=self.keys)
        if self.reconnect:
            net.keepalive(self._sched)
            self._watch = net.LinkWatch(self._sched)
        net.connect(self._sched, self._route("scheduler", self.scheduler_address))

    def _disconnect_scheduler(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sched is not None:
            self._sched.close(0)
            self._sched = None

    def _register_until_accepted(self) -> None:
        """Register again and again, on a fresh connection each time (so no stale
        registration queues up), waiting longer each time; log at attempts 1, 2, 4, ..."""
        wait = REJOIN_FIRST_WAIT
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            if self._register(wait):
                log.warning("worker %s: rejoined the scheduler at %s as incarnation %d "
                            "(%d attempt(s), %.1f s)", self.name, self.scheduler_address,
                            self.incarnation, attempt, time.monotonic() - started)
                return
            if attempt & (attempt - 1) == 0:
                log.warning("worker %s: the scheduler at %s has not accepted it yet (attempt "
                            "%d, %.1f s); trying again, at most every %g s", self.name,
                            self.scheduler_address, attempt, time.monotonic() - started,
                            REJOIN_MAX_WAIT)
            self._disconnect_scheduler()
            self._connect_scheduler()
            wait = min(2 * wait, REJOIN_MAX_WAIT)

    def _register(self, timeout: float) -> bool:
        """Send the registration; True when the scheduler accepted it within ``timeout``
        s, False when no answer came, RegistrationError when it refused."""
        sched = self._sched
        assert sched is not None
        sched.send_multipart(net.pack([p.RegisterWorker(
            stimulus_id="", worker=self.name, nthreads=self.nthreads, address=self.address,
            pid=os.getpid(), incarnation=self.incarnation)]))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sched.poll(net.ms(left)):
                return False
            parts = sched.recv_multipart()
            try:
                msgs, _ = net.unpack(parts)
            except ProtocolError as e:
                self.drops("scheduler", str(e))
                continue
            for msg in msgs:
                if type(msg) is p.Membership:
                    # The same batch may already hold work (placed when we joined): it is
                    # handled first thing by serve().
                    self._first_batch = parts
                    log.info("worker %s registered with %s; serving data at %s", self.name,
                             self.scheduler_address, self.address)
                    return True
                if type(msg) is p.CloseWorker:
                    raise RegistrationError(f"worker {self.name}: the scheduler at "
                                            f"{self.scheduler_address} said: {msg.reason}")

    def stop(self) -> None:
        self._stopping = True

    def serve(self) -> None:
        """Run the loop until stop(), CloseWorker, "stop" on the control pipe, or its end."""
        if self._sched is None:
            self.start()
        sched, data_sock = self._sched, self._data_sock
        assert sched is not None and data_sock is not None
        poller = self._poller
        poller.register(sched, zmq.POLLIN)
        poller.register(data_sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        control_fd = self.control.fileno() if self.control is not None else None
        if control_fd is not None:
            poller.register(control_fd, zmq.POLLIN)
        watch = self._watch
        if watch is not None:
            poller.register(watch.monitor, zmq.POLLIN)
        next_heartbeat = time.monotonic() + self.heartbeat_interval
        try:
            if self._first_batch is not None:
                self._from_scheduler(self._first_batch)
                self._first_batch = None
            while not self._stopping:
                wait = next_heartbeat - time.monotonic()
                if self._outbox:
                    wait = min(wait, self._outbox_since + FLUSH_DELAY - time.monotonic())
                if self._gathers:
                    wait = min(wait, min(d for _, d in self._gathers.values()) - self.now())
                events = dict(poller.poll(net.ms(wait)))
                if events:
                    if self._wake_r in events:
                        self._collect_results()
                    if sched in events:
                        self._drain_scheduler(sched)
                    if data_sock in events:
                        self._serve_data(data_sock)
                    for sock in list(self._sock_peer):
                        if sock in events:
                            self._drain_peer(sock)
                    if control_fd is not None and control_fd in events:
                        self._read_control()
                    if watch is not None and watch.monitor in events and watch.read():
                        self._lost_scheduler()
                if self._gathers:
                    self._expire_gathers()
                if time.monotonic() >= next_heartbeat:
                    next_heartbeat = time.monotonic() + self.heartbeat_interval
                    if not self.halted and not self._stopping:
                        self._to_scheduler(self.state.heartbeat(self.now(),
                                                                self._new_sid("heartbeat")))
                        self._quiescent_check()
                self._flush()
        finally:
            self._close()

    def _lost_scheduler(self) -> None:
        """Standalone: the connection to the scheduler closed. Whatever this incarnation
        holds is unknown to any scheduler from now on: it ends, and a new one rejoins."""
        if self._stopping:
            return
        log.warning("worker %s: lost the scheduler at %s (its connection closed: it died, "
                    "or did not answer for %g s); rejoining as a new incarnation when it is "
                    "back", self.name, self.scheduler_address, net.PING_TIMEOUT)
        self.rejoin = True
        self._stopping = True

    def _close(self) -> None:
        for _ in self._threads:
            self._work.put(None)
        if self._ctx is None:
            return
        if self.rejoin:
            # Reports of an incarnation the scheduler forgot (or that lost its
            # scheduler): nobody would apply them.
            self._outbox = []
            self._out_frames = []
        if self._sched is not None:
            self._flush(force=True)
        if self._push is not None:
            self._push.send_multipart([b"eof", self.name.encode()])
        if self._auth is not None:
            self._auth.stop()
        self._disconnect_scheduler()
        for sock in [self._data_sock, *self._peer_socks.values()]:
            if sock is not None:
                sock.close(0)
        if self._push is not None:
            self._push.close(5000)
        self._ctx.term()
        self._ctx = None
        with self._wake_lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = -1

    # ------------------------------------------------------------------ the state machine

    def _new_sid(self, kind: str) -> str:
        self._sid += 1
        return f"{self.name}-{kind}-{self._sid}"

    def _handle(self, msg: Any) -> None:
        """Feed one stimulus through the driver loop. One arriving while the instructions
        of another are dispatched (a transfer that fails at once) waits its turn."""
        self._stimuli.append(msg)
        if len(self._stimuli) > 1:
            return  # called while dispatching: the outer loop below takes it
        while self._stimuli:
            stim = self._stimuli[0]
            self._handle_one(stim)
            self._stimuli.popleft()

    def _handle_one(self, msg: Any) -> None:
        if self.halted:
            return
        try:
            self.stimulate(msg)
        except Exception as e:  # an invariant violation, an impossible transition, a bug
            self._halt(e, traceback.format_exc())

    # The driver's dispatch.

    def release(self, ins: p.ReleaseData) -> None:
        for key in ins.keys:
            self.data.pop(key, None)
            self.blobs.pop(key, None)

    def send_to_scheduler(self, ins: Any) -> None:
        if type(ins) is p.TaskErred:  # the exception, pickled in the task's thread, first
            blob = self._err_blobs.pop(ins.key, None)
            if blob is not None:
                self._to_scheduler(p.Payload(stimulus_id="", key=ins.key), blob)
        self._to_scheduler(ins)

    def _halt(self, exc: BaseException, tb: str) -> None:
        self.halted = f"{type(exc).__name__}: {exc}"
        log.error("worker %s halted: %s\n%s", self.name, self.halted, tb)
        blob = net.exception_blob(exc)
        if blob is not None:
            self._to_scheduler(p.Payload(stimulus_id="", key=""), blob)
        self._to_scheduler(p.Halted(stimulus_id="", where=self.name, reason=self.halted,
                                    traceback=tb))
        self._flush(force=True)

    def _quiescent_check(self) -> None:
        """Strict mode: the full check, when nothing runs or travels and something
        happened since the last one."""
        state = self.state
        if self.validator is None or state.executing or state.in_flight or \
                state.transition_counter == self._full_checked:
            return
        self._full_checked = state.transition_counter
        try:
            self.validator.check_full()
        except Exception as e:  # a violation: the run halts
            self._halt(e, traceback.format_exc())

    def _on_transition(self, state: WorkerState, ts: WTask, start: str, finish: str,
                       sid: str) -> None:
        if finish == WorkerTaskState.RELEASED:
            self._bodies.pop(ts.key, None)

    # ------------------------------------------------------------------ scheduler messages

    def _drain_scheduler(self, sched: zmq.Socket[Any]) -> None:
        while True:
            try:
                parts = sched.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._from_scheduler(parts)

    def _from_scheduler(self, parts: list[bytes]) -> None:
        try:
            msgs, frames = net.unpack(parts)
        except ProtocolError as e:
            self.drops("scheduler", str(e))
            return
        pairs = net.split_frames(msgs, frames) if frames else [(m, frames) for m in msgs]
        now = self.now()
        specs: dict[str, tuple[str, bytes]] = {}
        # Membership first: a batch may hold work that names peers only the membership at
        # its end announces (a worker that just joined gets both at once), and a fetch
        # from a peer not known yet would fail at once and have the data counted as lost.
        for msg, _ in pairs:
            if type(msg) is p.Membership:
                self._membership(msg)
        for msg, fr in pairs:
            t = type(msg)
            if t is p.ComputeTask or t is p.FreeKeys or t is p.StealRequest:
                if msg.worker != self.name:
                    self.drops("scheduler", f"{t.__name__} for worker {msg.worker!r}")
                    continue
                if t is p.ComputeTask and msg.key in specs:
                    # Bound here, not when RunSpecs arrived: the same batch may compute,
                    # free (which drops the body) and compute a key again.
                    self._bodies[msg.key] = specs[msg.key]
                self._handle(_retime(msg, now))
            elif t is p.RunSpecs:
                nf = len(msg.funcs)
                for token, blob in zip(msg.funcs, fr[:nf], strict=True):
                    self._func_bytes[token] = blob
                for key, token, blob in zip(msg.keys, msg.func_of, fr[nf:], strict=True):
                    specs[key] = (token, blob)
            elif t is p.Membership:
                pass  # handled above
            elif t is p.CloseWorker:
                log.warning("worker %s: told to close: %s%s", self.name, msg.reason,
                            "; rejoining as a new incarnation"
                            if msg.rejoin and self.reconnect else "")
                self._stopping = True
                self.rejoin = self.rejoin or msg.rejoin
            else:
                self.drops("scheduler", f"{t.__name__} is not for a worker")

    def _membership(self, msg: p.Membership) -> None:
        old = self.addresses
        self.addresses = dict(msg.workers)
        for holder, address in old.items():
            if self.addresses.get(holder) != address:
                self._drop_peer(holder, "left the cluster")

    def _read_control(self) -> None:
        """From the launcher: "stop" (or the pipe's end: the launcher is gone)."""
        try:
            while self.control.poll(0):
                if self.control.recv_bytes() == b"stop":
                    self._stopping = True
        except (EOFError, OSError):
            self._stopping = True

    # ------------------------------------------------------------------ execution

    def execute(self, ins: p.Execute) -> None:
        """To the pool (its end is collected by _collect_results)."""
        key = ins.key
        body = self._bodies.pop(key, None)
        if body is None or body[0] not in self._func_bytes:
            self._done.put((key, False, None, f"RuntimeError: worker {self.name} has no body "
                            f"for task {key!r}", "", 0.0))
            os.write(self._wake_w, b"x")
            return
        self._work.put((key, body[0], body[1]))

    def _executor(self) -> None:
        """A pool thread: run bodies, pickle results, hand them to the loop."""
        work, done = self._work, self._done
        while True:
            item = work.get()
            if item is None:
                return
            done.put(self._run(*item))
            with self._wake_lock:
                if self._wake_w < 0:
                    return  # this incarnation ended while the task ran
                try:
                    os.write(self._wake_w, b"x")
                except OSError:
                    return  # closing

    def _run(self, key: str, token: str, body: bytes) -> tuple[Any, ...]:
        start = time.perf_counter()
        try:
            func = self._funcs.get(token)
            if func is None:
                func = self._funcs[token] = net.loads(self._func_bytes[token])
            args, kwargs, refs = net.loads(body)
            if refs:
                values = {k: self._input(k) for k in refs}
                args = net.substitute(args, values)
                kwargs = net.substitute(kwargs, values)
        except Exception as e:
            return self._failure(key, e, start, f"could not load the body of task {key!r}")
        try:
            value = func(*args, **kwargs)
        except BaseException as e:  # the task's own error, whatever it is, is its result
            return self._failure(key, e, start)
        duration = time.perf_counter() - start
        try:
            blob = net.dumps(value)
        except Exception as e:
            return self._failure(key, e, start, f"the result of task {key!r} cannot be pickled")
        return (key, True, value, blob, duration)

    def _input(self, key: str) -> Any:
        value = self.data[key]
        if value is _LAZY:
            value = net.loads(self.blobs[key])
            self.data[key] = value
        return value

    def _failure(self, key: str, exc: BaseException, start: float,
                 context: str = "") -> tuple[Any, ...]:
        duration = time.perf_counter() - start
        tb = exc.__traceback__
        if tb is not None and not context:
            tb = tb.tb_next  # hide this module's frame: the user's code comes first
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        line = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else \
            type(exc).__name__
        if context:
            line = f"{context}: {line}"
            exc = net.SerializationError(line)
        return (key, False, net.exception_blob(exc), line, text, duration)

    def _collect_results(self) -> None:
        try:
            os.read(self._wake_r, 65536)
        except BlockingIOError:
            pass
        done = self._done
        while True:
            try:
                item = done.get_nowait()
            except queue.Empty:
                return
            key, ok = item[0], item[1]
            if ok:
                _, _, value, blob, duration = item
                self.data[key] = value
                self.blobs[key] = blob
                self._handle(p.ExecuteSuccess(stimulus_id=self._new_sid("execute"),
                                              time=self.now(), key=key, nbytes=len(blob),
                                              duration=duration))
                ts = self.state.tasks.get(key)
                if ts is None or ts.state != "memory":
                    self.data.pop(key, None)
                    self.blobs.pop(key, None)
            else:
                _, _, blob, line, text, duration = item
                if blob is not None:
                    self._err_blobs[key] = blob
                self._handle(p.ExecuteFailure(stimulus_id=self._new_sid("execute"),
                                              time=self.now(), key=key, exception=line,
                                              traceback=text))
                self._err_blobs.pop(key, None)

    # ------------------------------------------------------------------ transfers

    def _route(self, peer: str, address: str) -> str:
        """Where to connect to reach ``peer`` at ``address``: its proxy, in chaos mode."""
        if self.proxy_api is None:
            return address
        route = self._routes.get(peer)
        if route is None:
            from squall.chaos.network import SEP, lookup_route

            try:
                found = lookup_route(self.proxy_api, f"{self.proxy_prefix}{self.name}{SEP}{peer}")
            except OSError as e:
                log.warning("worker %s: no proxy route to %s (%s): connecting directly",
                            self.name, peer, e)
                found = None
            if found is None:
                return address
            route = self._routes[peer] = f"tcp://{found}"
        return route

    def _peer(self, holder: str) -> zmq.Socket[Any] | None:
        sock = self._peer_socks.get(holder)
        if sock is None:
            address = self.addresses.get(holder)
            if address is None:
                return None
            assert self._ctx is not None
            sock = net.make_socket(self._ctx, zmq.DEALER, keys=self.keys)
            net.connect(sock, self._route(holder, address))
            self._peer_socks[holder] = sock
            self._sock_peer[sock] = holder
            self._poller.register(sock, zmq.POLLIN)
        return sock

    def _drop_peer(self, holder: str, why: str) -> None:
        sock = self._peer_socks.pop(holder, None)
        if sock is not None:
            del self._sock_peer[sock]
            self._poller.unregister(sock)
            sock.close(0)
        pending = self._gathers.pop(holder, None)
        self._gather_tries.pop(holder, None)
        if pending is not None:
            log.info("worker %s: transfer from %s failed: %s", self.name, holder, why)
            self._handle(p.GatherDepFailure(stimulus_id=self._new_sid("gather"),
                                            time=self.now(), holder=holder, keys=pending[0]))

    def gather(self, ins: p.GatherDep) -> None:
        """A GetData straight to the peer; its reply is read by _drain_peer."""
        sock = self._peer(ins.holder)
        if sock is None:
            self._handle(p.GatherDepFailure(stimulus_id=self._new_sid("gather"),
                                            time=self.now(), holder=ins.holder, keys=ins.keys))
            return
        self._gathers[ins.holder] = (ins.keys, self.now() + self.gather_timeout)
        sock.send_multipart(net.pack([p.GetData(stimulus_id="", requester=self.name,
                                                keys=ins.keys)]))

    def _expire_gathers(self) -> None:
        now = self.now()
        for holder, (keys, deadline) in list(self._gathers.items()):
            if now < deadline:
                continue
            if holder not in self.addresses:
                self._drop_peer(holder, f"no answer within {self.gather_timeout:g} s")
                continue
            # The peer is still a member: the link is slow or cut, which alone never makes
            # data count as lost. Ask again on a fresh connection, waiting longer each time;
            # only its removal from the cluster (a membership change) fails the transfer.
            tries = self._gather_tries.get(holder, 0) + 1
            sock = self._peer_socks.pop(holder, None)
            if sock is not None:
                del self._sock_peer[sock]
                self._poller.unregister(sock)
                sock.close(0)
            sock = self._peer(holder)
            if sock is None:
                self._drop_peer(holder, "no address")
                continue
            log.info("worker %s: no answer from %s; asking again (%d)", self.name, holder, tries)
            self._gather_tries[holder] = tries
            self._gathers[holder] = (keys, now + self.gather_timeout * 2 ** min(tries, 4))
            sock.send_multipart(net.pack([p.GetData(stimulus_id="", requester=self.name,
                                                    keys=keys)]))

    def _drain_peer(self, sock: zmq.Socket[Any]) -> None:
        holder = self._sock_peer[sock]
        while True:
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msgs, frames = net.unpack(parts)
                if len(msgs) != 1 or type(msgs[0]) is not p.DataReply:
                    raise ProtocolError(f"expected one data reply, got {len(msgs)} message(s)")
            except ProtocolError as e:
                self.drops(f"peer {holder}", str(e))
                continue
            reply = msgs[0]
            pending = self._gathers.pop(holder, None)
            self._gather_tries.pop(holder, None)
            if pending is None:
                self.drops(f"peer {holder}", "a data reply nobody waits for")
                continue
            received: dict[str, int] = {}
            wanted = set(pending[0])
            for key, blob in zip(reply.keys, frames, strict=True):
                if key in wanted and key not in self.blobs:
                    self.data[key] = _LAZY
                    self.blobs[key] = blob
                received[key] = len(blob)
            missing = tuple(k for k in pending[0] if k not in received)
            sid = self._new_sid("gather")
            if missing:
                self._handle(p.GatherDepFailure(stimulus_id=sid, time=self.now(), holder=holder,
                                                keys=missing, nbytes=received))
            else:
                self._handle(p.GatherDepSuccess(stimulus_id=sid, time=self.now(), holder=holder,
                                                nbytes=received))
            tasks = self.state.tasks
            for key in received:  # arrived but not kept by the state machine: drop
                ts = tasks.get(key)
                if ts is None or ts.state != "memory":
                    self.data.pop(key, None)
                    self.blobs.pop(key, None)

    def _serve_data(self, sock: zmq.Socket[Any]) -> None:
        blobs = self.blobs
        while True:
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ident = parts[0]
            try:
                msgs, _ = net.unpack(parts[1:])
            except ProtocolError as e:
                self.drops(net.peer_label(ident), str(e))
                continue
            for msg in msgs:
                if type(msg) is not p.GetData:
                    self.drops(net.peer_label(ident), f"{type(msg).__name__} on the data socket")
                    continue
                present = [k for k in msg.keys if k in blobs]
                missing = tuple(k for k in msg.keys if k not in blobs)
                reply = p.DataReply(stimulus_id="", worker=self.name, keys=tuple(present),
                                    missing=missing)
                sock.send_multipart([ident, *net.pack([reply], [blobs[k] for k in present])])

    # ------------------------------------------------------------------ to the scheduler

    def _to_scheduler(self, msg: Any, frame: bytes | None = None) -> None:
        if not self._outbox:
            self._outbox_since = time.monotonic()
        self._outbox.append(msg)
        if frame is not None:
            self._out_frames.append(frame)

    def _flush(self, force: bool = False) -> None:
        if self._records:
            assert self._push is not None
            self._push.send_multipart(self._records)
            self._records = []
        if not self._outbox:
            return
        # While tasks queue behind busy threads, reports wait a moment to travel together.
        state = self.state
        busy = bool(state.ready) and len(state.executing) >= self.nthreads
        if busy and not force and len(self._outbox) < 1000 and \
                time.monotonic() - self._outbox_since < FLUSH_DELAY:
            return
        assert self._sched is not None
        self._sched.send_multipart(net.pack(self._outbox, self._out_frames))
        self._outbox = []
        self._out_frames = []

    def _record(self, target: str, msg: Any) -> None:
        self._records.append(net.encode_record(target, self.incarnation,
                                               self.state.transition_counter, msg))


def _retime(msg: Any, now: float) -> Any:
    """A message takes the time it is received at: that is "now" for its receiver."""
    return msgspec.structs.replace(msg, time=now)


def serve_standalone(scheduler: str, *, name: str | None = None, **options: Any) -> None:
    """Run a worker started by hand until it is interrupted, told to close for good, or
    refused: ``squall worker``. It outlives its scheduler: when the scheduler's connection
    closes (it died or stopped answering) or the scheduler declares it dead, the worker
    logs it at once and starts again in this process as a new incarnation, registering
    with retries until the scheduler (restarted on the same address, or back) accepts it.

    The first registration has ``register_timeout`` s (a wrong address fails at once);
    ``options`` are those of ``WorkerServer``."""
    name = name or f"{os.uname().nodename}-{os.getpid()}"
    incarnation = int(options.pop("incarnation", 0))
    retry = False
    while True:
        server = WorkerServer(scheduler, name=name, incarnation=incarnation, reconnect=True,
                              **options)
        server.start(retry=retry)
        server.serve()
        if not server.rejoin:
            return
        incarnation += 1
        retry = True
