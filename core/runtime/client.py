"""The client API of the real cluster: submit work, get futures, gather results.

``Client(cluster_or_address)`` talks to the scheduler over a DEALER socket and fetches
results straight from the workers that hold them (never through the scheduler). It has
no thread of its own: the sockets are serviced by whichever user call is waiting
(``result``, ``gather``, ``as_completed``...), under a lock, so a Client may be shared by
threads. A ``Future`` dropped by the garbage collector is released at the client's next
call; ``release()`` releases at once.

Task bodies travel as cloudpickle frames: each distinct function is pickled once per
client and sent by reference (a content token) alongside each task's pickled arguments;
arguments that are plain builtin data use the standard library's pickle, which is exact
and fast. A function or argument that cannot be pickled is refused at submission with a
``GraphError`` naming the key.

The connection to the scheduler is watched: ZeroMQ pings the scheduler every second
(``transport.keepalive``; its I/O thread answers, however busy its loop is) and a
monitor reports the connection's end. When the scheduler's process dies, or it does not
answer for ``scheduler_timeout`` s, every call waiting on it -- and every later one --
raises ``SchedulerLost`` naming its address: what this client submitted is gone with it.

Authentication: ``Client(cluster)`` uses a ``LocalCluster``'s own CURVE keys;
``Client(address, keys=DIR)`` those of a scheduler started by hand (the directory
``squall scheduler`` printed, or gave with ``--keys``). A scheduler that refuses the
handshake (no keys, or another cluster's) makes the constructor raise ``Refused`` at once,
saying which; one that does not answer at all, ``ConnectionError`` after ``timeout`` s.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError
from typing import Any

import zmq

from squall.core import protocol as p
from squall.core.graph import GraphError, TaskGraph, key_prefix
from squall.core.protocol import ProtocolError
from squall.core.runtime import transport as net

GATHER_CHUNK = 5000  # keys asked of one worker in one request
# Handshakes the scheduler closed in a row, without a reason, before the client takes it
# as a refusal (a CURVE server cannot even read a client that holds another server key).
HANDSHAKE_CUTS = 3


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` of a re-raised remote exception: the worker's traceback."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text


class RemoteError(RuntimeError):
    """A task raised an exception that could not be sent back as itself."""


class KilledWorker(RuntimeError):
    """A task was running on a worker that died, more often than ``allowed_failures``."""


class SchedulerLost(ConnectionError):
    """The connection to the scheduler closed: its process died, it stopped answering
    pings, or the link was cut. The scheduler's record of this client (its keys, its
    registration) is gone; a new ``Client`` must start again."""


class Refused(ConnectionRefusedError):
    """The scheduler refused this client's handshake: it requires the cluster's CURVE keys
    and this client has none or others (or the other way round); the message says which."""


class ClusterHalted(RuntimeError):
    """The run was stopped by a state machine error (strict mode: an invariant violation
    that could not travel as itself)."""


class _KeyState:
    __slots__ = ("key", "status", "holders", "value", "has_value", "exception", "traceback",
                 "blob", "refs", "requested")

    def __init__(self, key: str) -> None:
        self.key = key
        self.status = "pending"  # pending, finished, error, lost
        self.holders: tuple[str, ...] = ()
        self.value: Any = None
        self.has_value = False
        self.exception = ""
        self.traceback = ""
        self.blob: bytes | None = None
        self.refs = 0  # Future objects alive for this key
        self.requested: str | None = None  # the worker asked for the value


class Future:
    """A handle on one key's result. Futures for the same key share their state."""

    __slots__ = ("key", "_client", "_state", "_released", "__weakref__")

    def __init__(self, key: str, client: Client, state: _KeyState) -> None:
        self.key = key
        self._client = client
        self._state = state
        self._released = False
        state.refs += 1

    @property
    def status(self) -> str:
        return "released" if self._released else self._state.status

    def done(self) -> bool:
        self._client._pump_now()
        return self._state.status != "pending"

    def result(self, timeout: float | None = None) -> Any:
        """The value (fetched from the worker holding it), or the task's exception raised
        with its remote traceback as ``__cause__``. TimeoutError after ``timeout`` s."""
        return self._client._results([self], timeout)[0]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except (TimeoutError, SchedulerLost):
            raise
        except BaseException as e:  # the task's exception is the answer here
            return e
        return None

    def release(self) -> None:
        """Tell the scheduler this handle no longer needs the key."""
        if not self._released:
            self._released = True
            self._client._release([self.key], now=True)

    def __del__(self) -> None:
        try:
            if not self._released:
                self._released = True
                self._client._dropped.append(self.key)  # list.append: safe from any thread
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"<Future {self.key!r} {self.status}>"


class Client:
    """``Client(LocalCluster | "tcp://HOST:PORT", keys=DIR)``."""

    def __init__(self, address: Any, *, keys: str | net.Keys | None = None,
                 timeout: float = 10.0, name: str | None = None,
                 scheduler_timeout: float = net.PING_TIMEOUT) -> None:
        if not 0 < scheduler_timeout < math.inf:
            raise ValueError(f"scheduler_timeout must be a positive number of seconds, got "
                             f"{scheduler_timeout!r}")
        if not isinstance(address, str):  # a cluster object: its address and keys
            keys = keys if keys is not None else getattr(address, "keys", None)
            address = address.address
        net.parse_address(address)
        self.address = address
        self.keys = net.load_keys(keys) if isinstance(keys, str) else keys
        self.name = name or f"client-{uuid.uuid4().hex[:12]}"
        self.workers: dict[str, str] = {}
        self._states: dict[str, _KeyState] = {}
        self._dropped: list[str] = []
        self._lock = threading.RLock()
        self._halted: BaseException | None = None
        self._lost: SchedulerLost | None = None
        self.scheduler_timeout = scheduler_timeout
        self._info: p.SchedulerInfo | None = None
        self._payload: bytes | None = None
        self._funcs: dict[int, tuple[Any, str, bytes]] = {}  # id(func) -> func, token, bytes
        self._n = itertools.count(1)
        self.drops = net.Drops(__import__("logging").getLogger("squall.client"), self.name)
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._data: dict[str, zmq.Socket[Any]] = {}  # worker -> DEALER to its data socket
        self._sock_worker: dict[zmq.Socket[Any], str] = {}
        self._poller = zmq.Poller()
        self._sock = net.make_socket(self._ctx, zmq.DEALER, keys=self.keys)
        net.keepalive(self._sock, min(net.PING_INTERVAL, scheduler_timeout / 2),
                      scheduler_timeout)
        self._watch = net.LinkWatch(self._sock)
        net.connect(self._sock, address)
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._watch.monitor, zmq.POLLIN)
        self._closed = False
        self._sock.send_multipart(net.pack([p.RegisterClient(stimulus_id="",
                                                             client=self.name)]))
        self._registered = False
        deadline = time.monotonic() + timeout
        while not self._registered:
            left = deadline - time.monotonic()
            if self._lost is not None:
                lost = self._lost
                self.close()
                raise lost
            if self._watch.refused or self._watch.cut >= HANDSHAKE_CUTS:
                why = self._watch.refusal_reason(f"the scheduler at {address}", self.keys)
                self.close()
                raise Refused(why)
            if left <= 0:
                self.close()
                raise ConnectionError(
                    f"the scheduler at {address} did not answer within {timeout:g} s "
                    "(not running, or refused: wrong CURVE key?)")
            self._pump(left)

    # ------------------------------------------------------------------ submitting

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None,
               **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker. Futures among the arguments (also inside
        lists, tuples and dicts) are dependencies: their values are passed instead."""
        if not callable(fn):
            raise TypeError(f"submit: {fn!r} is not callable")
        if key is None:
            key = f"{_name_of(fn)}-{uuid.uuid4().hex}"
        return self._submit(fn, [(key, args, kwargs)])[0]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            key: str | Sequence[str] | None = None) -> list[Future]:
        """``submit(fn, *items)`` for each tuple of items, sent as one graph. ``key`` is a
        prefix for the keys, or the list of keys."""
        if not callable(fn):
            raise TypeError(f"map: {fn!r} is not callable")
        argsets = list(zip(*iterables, strict=False))
        if key is None or isinstance(key, str):
            prefix = key or _name_of(fn)
            token = uuid.uuid4().hex[:16]
            keys = [f"{prefix}-{token}{i:06x}" for i in range(len(argsets))]
        else:
            keys = list(key)
            if len(keys) != len(argsets):
                raise GraphError(f"map: {len(keys)} keys for {len(argsets)} tasks")
            if len(set(keys)) != len(keys):
                raise GraphError("map: the list of keys repeats a key")
        return self._submit(fn, [(k, a, {}) for k, a in zip(keys, argsets, strict=True)])

    def compute(self, graph: TaskGraph, keys: Iterable[str] | None = None) -> dict[str, Future]:
        """Run a TaskGraph (values of ``deps`` are passed after ``args``); return futures
        of ``keys`` (default: every key of the graph)."""
        with self._lock:
            self._check_open()
            # Structure only: functions are pickled below, once each (graph.validate would
            # pickle every task's function again).
            for spec in graph:
                missing = [d for d in spec.deps if d not in graph and d not in self._states]
                if missing:
                    raise GraphError(f"task {spec.key!r} depends on missing key(s): {missing}")
            graph.topological_order()
            wanted = list(graph.tasks) if keys is None else list(keys)
            for k in wanted:
                if k not in graph and k not in self._states:
                    raise GraphError(f"compute: wanted key {k!r} is not in the graph")
            funcs: dict[str, bytes] = {}
            specs: list[p.TaskSpecMsg] = []
            spec_keys: list[str] = []
            func_of: list[str] = []
            bodies: list[bytes] = []
            for spec in graph:
                if spec.func is None:
                    raise GraphError(f"task {spec.key!r} has no function: the real cluster "
                                     "runs functions (simulated bodies run in SimCluster)")
                token, fbytes = self._function(spec.key, spec.func)
                funcs[token] = fbytes
                args = spec.args + tuple(net.Ref(d) for d in spec.deps)
                bodies.append(self._body(spec.key, args, spec.kwargs, spec.deps))
                spec_keys.append(spec.key)
                func_of.append(token)
                specs.append(spec.to_msg())
            futures = {k: self._future(k) for k in wanted}
            self._send_graph(funcs, specs, spec_keys, func_of, bodies, tuple(wanted))
            return futures

    def _submit(self, fn: Callable[..., Any], items: list[tuple[str, tuple[Any, ...],
                dict[str, Any]]]) -> list[Future]:
        with self._lock:
            self._check_open()
            token, fbytes = self._function(items[0][0] if items else "?", fn)
            specs: list[p.TaskSpecMsg] = []
            keys: list[str] = []
            bodies: list[bytes] = []
            seen = self._states
            for key, args, kwargs in items:
                if not isinstance(key, str) or not key:
                    raise GraphError(f"task key must be a non-empty string, got {key!r}")
                if key in seen:
                    continue  # submitted before and still held: the same task
                deps: dict[str, None] = {}
                if _may_hold_futures(args) or (kwargs and _may_hold_futures(kwargs.values())):
                    args, kwargs = _futures_to_refs(args, deps), _futures_to_refs(kwargs, deps)
                    for d in deps:
                        if d not in seen:
                            raise GraphError(f"task {key!r} depends on {d!r}, a released "
                                             "future or one of another client")
                bodies.append(self._body(key, args, kwargs, tuple(deps)))
                keys.append(key)
                specs.append(p.TaskSpecMsg(key=key, deps=tuple(deps), prefix=key_prefix(key),
                                           has_run_spec=True))
            futures = [self._future(k) for k, _, _ in items]
            if keys:
                self._send_graph({token: fbytes}, specs, keys, [token] * len(keys), bodies,
                                 tuple(keys))
            return futures

    def _function(self, key: str, fn: Any) -> tuple[str, bytes]:
        """Token and bytes of a function, pickled once per client."""
        cached = self._funcs.get(id(fn))
        if cached is not None and cached[0] is fn:
            return cached[1], cached[2]
        try:
            data = net.dumps(fn)
        except Exception as e:  # cloudpickle raises many types
            raise GraphError(f"task {key!r}: the function cannot be pickled: "
                             f"{type(e).__name__}: {e}".splitlines()[0]) from None
        token = hashlib.blake2b(data, digest_size=12).hexdigest()
        if len(self._funcs) > 1000:
            self._funcs.clear()
        self._funcs[id(fn)] = (fn, token, data)
        return token, data

    def _body(self, key: str, args: Any, kwargs: Any, refs: tuple[str, ...]) -> bytes:
        try:
            return net.dumps((args, kwargs, refs))
        except Exception as e:  # cloudpickle raises many types
            raise GraphError(f"task {key!r}: its arguments cannot be pickled: "
                             f"{type(e).__name__}: {e}".splitlines()[0]) from None

    def _future(self, key: str) -> Future:
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = _KeyState(key)
        return Future(key, self, st)

    def _send_graph(self, funcs: dict[str, bytes], specs: list[p.TaskSpecMsg],
                    keys: list[str], func_of: list[str], bodies: list[bytes],
                    wanted: tuple[str, ...]) -> None:
        run_specs = p.RunSpecs(stimulus_id="", funcs=tuple(funcs), keys=tuple(keys),
                               func_of=tuple(func_of))
        graph = p.UpdateGraph(stimulus_id=f"{self.name}-graph-{next(self._n)}", time=0.0,
                              client=self.name, tasks=tuple(specs), wanted=wanted)
        self._sock.send_multipart(net.pack([run_specs, graph], [*funcs.values(), *bodies]))

    # ------------------------------------------------------------------ results

    def gather(self, futures: Iterable[Future], timeout: float | None = None) -> list[Any]:
        """The results of ``futures``, in order (the first error is raised)."""
        return self._results(list(futures), timeout)

    def as_completed(self, futures: Iterable[Future],
                     timeout: float | None = None) -> Iterator[Future]:
        """Yield the futures as they finish (with a result or an error)."""
        pending = list(futures)
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            with self._lock:
                ready = [f for f in pending if f._state.status != "pending"]
                if not ready:
                    self._raise_if_halted()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"as_completed: {len(pending)} futures not done "
                                           f"within {timeout:g} s")
                    self._pump(0.5 if left is None else min(left, 0.5))
                    continue
            for f in ready:
                pending.remove(f)
                yield f

    def _results(self, futures: list[Future], timeout: float | None) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                self._release_dropped()
                ask: list[_KeyState] = []
                waiting = 0
                for f in futures:
                    st = f._state
                    if st.has_value:
                        continue
                    if f._released:
                        raise CancelledError(f"future {f.key!r} was released")
                    if st.status == "error":
                        raise self._exception(st)
                    if st.status == "lost":
                        raise CancelledError(f"key {f.key!r} was released before it finished")
                    if st.status == "finished" and st.requested is None:
                        ask.append(st)
                    waiting += 1
                if not waiting:
                    return [f._state.value for f in futures]
                self._raise_if_halted()
                if ask:
                    self._request(ask)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{waiting} result(s) not ready within {timeout:g} s")
                self._pump(1.0 if left is None else min(left, 1.0))

    def _exception(self, st: _KeyState) -> BaseException:
        exc: Any = None
        if st.blob is not None:
            try:
                exc = net.loads(st.blob)
            except Exception:  # e.g. the exception's class does not exist here
                exc = None
        if isinstance(exc, BaseException):
            if st.traceback:
                exc.__cause__ = RemoteTraceback(st.traceback)
            return exc  # type: ignore[no-any-return]
        text = st.exception or f"task {st.key!r} failed"
        if text.startswith("KilledWorker"):
            return KilledWorker(text)
        if text.startswith("GraphError: "):
            return GraphError(text[len("GraphError: "):])
        err = RemoteError(text)
        if st.traceback:
            err.__cause__ = RemoteTraceback(st.traceback)
        return err

    def _request(self, states: list[_KeyState]) -> None:
        """Ask the workers holding these keys for their values."""
        by_worker: dict[str, list[str]] = {}
        for st in states:
            holder = next((h for h in st.holders if h in self.workers), None)
            if holder is None:
                continue  # its holder is gone: the scheduler computes it again
            st.requested = holder
            by_worker.setdefault(holder, []).append(st.key)
        for worker, keys in by_worker.items():
            sock = self._data_socket(worker)
            for i in range(0, len(keys), GATHER_CHUNK):
                msg = p.GetData(stimulus_id="", requester=self.name,
                                keys=tuple(keys[i:i + GATHER_CHUNK]))
                sock.send_multipart(net.pack([msg]))

    def _data_socket(self, worker: str) -> zmq.Socket[Any]:
        sock = self._data.get(worker)
        if sock is None:
            sock = net.make_socket(self._ctx, zmq.DEALER, keys=self.keys)
            net.connect(sock, self.workers[worker])
            self._data[worker] = sock
            self._sock_worker[sock] = worker
            self._poller.register(sock, zmq.POLLIN)
        return sock

    def _drop_worker(self, worker: str) -> None:
        sock = self._data.pop(worker, None)
        if sock is not None:
            del self._sock_worker[sock]
            self._poller.unregister(sock)
            sock.close(0)
        for st in self._states.values():
            if st.requested == worker:
                st.requested = None
                st.holders = tuple(h for h in st.holders if h != worker)
                if not st.holders and st.status == "finished":
                    st.status = "pending"  # lost with its worker: computed again

    # ------------------------------------------------------------------ other calls

    def info(self, timeout: float = 10.0) -> p.SchedulerInfo:
        """The scheduler's membership and counters."""
        with self._lock:
            self._check_open()
            self._info = None
            self._sock.send_multipart(net.pack([p.InfoRequest(stimulus_id="",
                                                              client=self.name)]))
            deadline = time.monotonic() + timeout
            while self._info is None:
                self._raise_if_lost()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the scheduler did not answer within {timeout:g} s")
                self._pump(left)
            return self._info

    def wait_for_workers(self, n: int, timeout: float = 10.0) -> dict[str, str]:
        """Wait until at least ``n`` workers are registered; return their addresses."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.workers) < n:
                self._raise_if_lost()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.workers)} of {n} workers registered "
                                       f"within {timeout:g} s")
                self._pump(left)
            return dict(self.workers)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0,
                   what: str = "the condition") -> None:
        """Service the sockets (membership, results) until ``predicate()`` holds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                self._raise_if_lost()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{what} did not hold within {timeout:g} s")
                self._pump(min(left, 0.1))

    def skew_estimates(self, factor: float, prefix: str | None = None) -> None:
        """Chaos: multiply the scheduler's duration estimates (of one prefix, or all)."""
        with self._lock:
            self._check_open()
            self._sock.send_multipart(net.pack([p.SkewEstimates(
                stimulus_id=f"{self.name}-skew-{next(self._n)}", time=0.0, factor=factor,
                prefix=prefix)]))

    def close(self) -> None:
        """Release every key this client holds and close the sockets."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._states and self._registered and self._lost is None:
                self._sock.send_multipart(net.pack([p.ClientReleasesKeys(
                    stimulus_id=f"{self.name}-close", time=0.0, client=self.name,
                    keys=tuple(self._states))]))
            self._states.clear()
            self._watch.close()
            for sock in [*self._data.values(), self._sock]:
                sock.close(linger=200 if sock is self._sock and self._lost is None else 0)
            self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.name} at {self.address}: {len(self.workers)} workers>"

    # ------------------------------------------------------------------ releasing

    def _release(self, keys: list[str], now: bool) -> None:
        with self._lock:
            gone = []
            for key in keys:
                st = self._states.get(key)
                if st is None:
                    continue
                st.refs -= 1
                if st.refs <= 0:
                    del self._states[key]
                    gone.append(key)
            if gone and not self._closed and self._lost is None:
                self._sock.send_multipart(net.pack([p.ClientReleasesKeys(
                    stimulus_id=f"{self.name}-release-{next(self._n)}", time=0.0,
                    client=self.name, keys=tuple(gone))]))

    def _release_dropped(self) -> None:
        if self._dropped:
            keys, self._dropped[:] = list(self._dropped), []
            self._release(keys, now=False)

    # ------------------------------------------------------------------ input

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"client {self.name} is closed")
        self._raise_if_lost()
        self._release_dropped()

    def _raise_if_halted(self) -> None:
        if self._halted is not None:
            raise self._halted
        self._raise_if_lost()

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise self._lost

    def _scheduler_lost(self) -> None:
        """The connection to the scheduler closed: every waiting call raises from now on."""
        if self._lost is None:
            self._lost = SchedulerLost(
                f"lost the scheduler at {self.address}: its connection closed (the "
                f"scheduler died, or did not answer for {self.scheduler_timeout:g} s); what "
                f"client {self.name} submitted is gone with it")

    def _pump_now(self) -> None:
        with self._lock:
            if not self._closed:
                self._pump(0)

    def _pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for input, then handle all that is there."""
        events = dict(self._poller.poll(net.ms(timeout)))
        if not events:
            return
        if self._sock in events:
            while True:
                try:
                    parts = self._sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._from_scheduler(parts)
        for sock in list(self._sock_worker):
            if sock in events:
                self._from_worker(sock)
        # After the scheduler's messages: what it sent before it went is taken first.
        if self._watch.monitor in events and self._watch.read():
            self._scheduler_lost()

    def _from_scheduler(self, parts: list[bytes]) -> None:
        try:
            msgs, frames = net.unpack(parts)
        except ProtocolError as e:
            self.drops("scheduler", str(e))
            return
        pairs = net.split_frames(msgs, frames) if frames else [(m, frames) for m in msgs]
        states = self._states
        for msg, fr in pairs:
            t = type(msg)
            if t is p.KeyInMemory:
                st = states.get(msg.key)
                if st is not None:
                    st.status = "finished"
                    st.holders = msg.holders
            elif t is p.KeyErred:
                st = states.get(msg.key)
                if st is not None:
                    st.status = "error"
                    st.exception = msg.exception
                    st.traceback = msg.traceback
                    st.blob = self._payload
                self._payload = None
            elif t is p.KeyLost:
                st = states.get(msg.key)
                if st is not None and not st.has_value:
                    st.status = "pending"  # its holders died: the scheduler computes it again
                    st.holders = ()
            elif t is p.Payload:
                self._payload = fr[0]
            elif t is p.Membership:
                self._registered = True
                old = self.workers
                self.workers = dict(msg.workers)
                for w, address in old.items():
                    if self.workers.get(w) != address:
                        self._drop_worker(w)
            elif t is p.SchedulerInfo:
                self._info = msg
            elif t is p.Halted:
                self._halted = self._halted_error(msg, self._payload)
                self._payload = None
            else:
                self.drops("scheduler", f"{t.__name__} is not for a client")

    def _halted_error(self, msg: p.Halted, blob: bytes | None) -> BaseException:
        exc: Any = None
        if blob is not None:
            try:
                exc = net.loads(blob)
            except Exception:  # the violation's class may not be importable here
                exc = None
        if not isinstance(exc, BaseException):
            exc = ClusterHalted(f"run halted in {msg.where}: {msg.reason}")
        if msg.traceback:
            exc.__cause__ = RemoteTraceback(msg.traceback)
        return exc  # type: ignore[no-any-return]

    def _from_worker(self, sock: zmq.Socket[Any]) -> None:
        worker = self._sock_worker[sock]
        states = self._states
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
                self.drops(f"worker {worker}", str(e))
                continue
            reply = msgs[0]
            for key, blob in zip(reply.keys, frames, strict=True):
                st = states.get(key)
                if st is None or st.has_value:
                    continue
                try:
                    st.value = net.loads(blob)
                except Exception as e:  # e.g. a class that does not exist here
                    st.status = "error"
                    st.exception = (f"SerializationError: the result of {key!r} cannot be "
                                    f"unpickled here: {type(e).__name__}: {e}")
                    st.blob = net.dumps(net.SerializationError(st.exception))
                    continue
                st.has_value = True
                st.requested = None
            for key in reply.missing:
                st = states.get(key)
                if st is not None and st.requested == worker:
                    st.requested = None
                    st.holders = tuple(h for h in st.holders if h != worker)
                    if not st.holders:
                        st.status = "pending"  # the scheduler will report it again


def _name_of(fn: Any) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_")
    return name or "task"


_SCALAR_TYPES = frozenset({int, float, str, bytes, bool, type(None)})


def _may_hold_futures(values: Iterable[Any]) -> bool:
    return any(type(v) not in _SCALAR_TYPES for v in values)


def _futures_to_refs(obj: Any, deps: dict[str, None]) -> Any:
    """``obj`` with Futures replaced by Refs (inside tuples, lists and dicts)."""
    t = type(obj)
    if t is Future:
        deps[obj.key] = None
        return net.Ref(obj.key)
    if t is tuple or t is list:
        return t(_futures_to_refs(x, deps) for x in obj)
    if t is dict:
        return {k: _futures_to_refs(v, deps) for k, v in obj.items()}
    return obj
