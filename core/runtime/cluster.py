"""A real cluster on this machine: a scheduler process and N worker processes.

``LocalCluster(workers=N, threads=T)`` forks a small launcher process (see
``core/launcher.py``) before it opens any socket; the launcher forks the scheduler and the
workers and watches them. Each worker's name and pid are in ``cluster.workers``; the
fault surface (``kill_worker``, ``pause_worker``, ``add_worker``, ``skew_estimates``)
acts on the real processes with signals and messages.

Strict mode: ``validate=True`` runs the invariant validator inside the scheduler and
every worker; a violation halts the run and reaches every client as the exception the
validator raised. Recording: every stimulus the scheduler's and the workers' state
machines receive is streamed to this process and handed to ``recorders`` (callables of
``(target, stimulus)``, as in the simulator) so a real run can be written as a trace. They
are called in this process, by ``sync_records()`` and at ``close()`` (which waits for the
last record of every process that exited normally); ``raw_recorders`` also get the
worker incarnation and the receiver's transition count before the stimulus.

Authentication: every socket of the cluster authenticates its peers with ZeroMQ CURVE
(workers unpickle what they are sent, so nobody unauthenticated may send). By default a
cluster makes its own key pair, in memory: its processes get it when they are started,
``Client(cluster)`` gets it from the cluster object, and nothing is written anywhere; a
client given only the address is refused. ``keys=DIR`` (made with ``squall keys DIR``)
uses a key pair shared with machines elsewhere. ``insecure=True`` runs without keys (any
local user could then submit code to run as this user), on loopback only. Addresses
default to 127.0.0.1.

Network chaos: ``proxy=True`` (or a Toxiproxy URL; TOXIPROXY_URL is honoured) routes every
connection a worker opens -- to the scheduler, and to each peer it fetches from --
through a proxy of its own (``squall.chaos.network``), so ``set_link(src, dst, latency=,
jitter=, bandwidth=, down=)`` can slow or cut any link alone. Without a URL, squall's
built-in Toxiproxy-compatible server runs in a process of its own for the cluster's life.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import zmq

from squall.core import protocol as p
from squall.core.lifeline import forked_from_main_thread
from squall.core.runtime import transport as net
from squall.core.runtime.client import Client
from squall.core.runtime.launcher import (
    ClusterConfig,
    LogForwarding,
    default_start_method,
    launcher_main,
)


class ClusterError(RuntimeError):
    """The cluster could not start, or is not running; the message says why in one line."""


class WorkerProcess(NamedTuple):
    name: str
    pid: int
    incarnation: int


class LocalCluster:
    """``with LocalCluster(workers=2, threads=1) as cluster: Client(cluster)...``"""

    def __init__(
        self,
        workers: int = 2,
        threads: int = 1,
        *,
        validate: bool | None = None,
        host: str = "127.0.0.1",
        keys: str | net.Keys | None = None,
        insecure: bool = False,
        heartbeat_interval: float = 0.5,
        heartbeat_timeout: float | None = 5.0,
        allowed_failures: int = 3,
        restart: bool = True,
        stealing: bool = False,
        recorders: list[Callable[[str, Any], None]] | None = None,
        record: bool | None = None,
        forward_logs: bool = True,
        start_method: str | None = None,
        timeout: float = 10.0,
        gather_timeout: float = 10.0,
        proxy: bool | str = False,
    ) -> None:
        if workers < 0 or not 1 <= threads <= net.MAX_NTHREADS:
            raise ValueError(f"need workers >= 0 and 1 <= threads <= {net.MAX_NTHREADS}, "
                             f"got {workers}, {threads}")
        if not 0 < heartbeat_interval < math.inf:
            raise ValueError(f"heartbeat_interval must be a positive number of seconds, got "
                             f"{heartbeat_interval!r}")
        if heartbeat_timeout is not None and not 0 < heartbeat_timeout < math.inf:
            raise ValueError(f"heartbeat_timeout must be a positive number of seconds (or "
                             f"None: never), got {heartbeat_timeout!r}")
        if validate is None:
            validate = os.environ.get("SQUALL_VALIDATE", "") not in ("", "0")
        if validate:
            _check_validator_available()
        if insecure and keys is not None:
            raise ValueError("keys= and insecure=True exclude each other")
        if insecure:
            self.keys: net.Keys | None = None
        elif keys is None:
            self.keys = net.new_keys()  # this cluster's own, in memory
        else:
            self.keys = net.load_keys(keys) if isinstance(keys, str) else keys
        host = host.strip("[]")  # an IPv6 host with its brackets ("[::1]") or without
        net.check_listen(net.format_address(host, 0), self.keys)
        self.validate = validate
        self.timeout = timeout
        # Called here with (target, stimulus) for every stimulus a state machine received;
        # raw_recorders get (target, incarnation, transitions before it, stimulus).
        self.recorders: list[Callable[[str, Any], None]] = list(recorders or [])
        self.raw_recorders: list[Callable[[str, int, int, Any], None]] = []
        self.record = bool(recorders) if record is None else record
        self.address = ""
        self.scheduler_pid = 0
        self._exits: list[tuple[str, int, int | None]] = []
        self._workers: dict[str, WorkerProcess] = {}
        self._closed = False
        self._eofs: set[str] = set()
        self._tmp = tempfile.mkdtemp(prefix="squall-") if self.record else None
        record_to = f"ipc://{self._tmp}/records" if self._tmp is not None else None
        self.host = host
        self.network: Any = None  # squall.chaos.network.ProxyNetwork, with proxy=...
        self._proxy_server: Any = None
        self._ports: dict[str, int] = {}  # worker name -> fixed data port (proxy mode)
        self._names = workers  # the next "w<N>" a joining worker may take (proxy mode)
        port = 0
        if proxy:
            port = self._start_network(proxy, workers)
        self.config = ClusterConfig(
            workers=workers, threads=threads, host=host, keys=self.keys,
            heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout,
            allowed_failures=allowed_failures, validate=validate, stealing=stealing,
            restart=restart, record_to=record_to, register_timeout=timeout,
            gather_timeout=gather_timeout, port=port, data_ports=tuple(self._ports.items()),
            proxy_api=self.network.api_url if self.network is not None else None,
            proxy_prefix=self.network.prefix if self.network is not None else "",
            origin=time.monotonic())
        self.start_method = start_method or default_start_method()
        self._logs = LogForwarding(self.start_method) if forward_logs else None
        # Fork the launcher first: nothing of ZeroMQ exists in this process for it yet.
        ctx: Any = multiprocessing.get_context(self.start_method)
        self._conn, child_conn = ctx.Pipe()
        parent_end = self._conn if self.start_method == "fork" else None
        self._launcher = ctx.Process(
            target=launcher_main, name="squall-launcher",
            args=(self.config, child_conn, parent_end, self.start_method,
                  self._logs.queue if self._logs is not None else None,
                  forked_from_main_thread()))
        self._launcher.start()
        child_conn.close()
        self._finalizer = weakref.finalize(self, _stop_launcher, self._conn, self._launcher)
        self._ctx: zmq.Context[Any] | None = zmq.Context()
        self._pull: zmq.Socket[Any] | None = None
        self._client: Client | None = None
        try:
            if record_to is not None:
                self._pull = net.make_socket(self._ctx, zmq.PULL)
                self._pull.bind(record_to)
            self._wait_scheduler(time.monotonic() + timeout)
            self._client = Client(self.address, keys=self.keys, timeout=timeout,
                                  name=f"cluster-{os.getpid()}-{id(self):x}")
            self._client.wait_for_workers(workers, timeout)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ state

    @property
    def workers(self) -> dict[str, WorkerProcess]:
        """The live worker processes by name (as the launcher last reported them)."""
        self._poll_launcher(0)
        return dict(self._workers)

    @property
    def exits(self) -> list[tuple[str, int, int | None]]:
        """(name, pid, exit code) of every worker process that ended unasked, oldest first."""
        self._poll_launcher(0)
        return list(self._exits)

    def info(self) -> p.SchedulerInfo:
        """The scheduler's membership and counters (dropped messages, bytes, ...)."""
        return self._control().info(self.timeout)

    def wait_for_workers(self, n: int, timeout: float | None = None) -> dict[str, str]:
        return self._control().wait_for_workers(n, self.timeout if timeout is None else timeout)

    # ------------------------------------------------------------------ the fault surface

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` (SIGKILL) to a worker's process; returns its pid. The launcher
        notices, the scheduler reschedules its tasks, and a new incarnation starts."""
        proc = self.workers.get(name)
        if proc is None:
            raise ValueError(f"no live worker named {name!r}")
        os.kill(proc.pid, sig)
        return proc.pid

    def pause_worker(self, name: str, seconds: float) -> None:
        """SIGSTOP the worker for ``seconds`` (the launcher sends SIGCONT)."""
        if name not in self.workers:
            raise ValueError(f"no live worker named {name!r}")
        self._conn.send(("pause", name, seconds))

    def add_worker(self, name: str | None = None, threads: int | None = None) -> str:
        """Start one more worker (under ``name``, if given); wait until it registered. Its
        threads are the cluster's (``threads``, if given, must say the same)."""
        if threads is not None and threads != self.config.threads:
            raise ValueError(f"a worker of this cluster has {self.config.threads} threads, "
                             f"not {threads}")
        before = set(self._workers)
        if self.network is not None:
            # The proxies leading to and from a new name exist before its process does.
            if name is None:
                while f"w{self._names}" in self._ports:
                    self._names += 1
                name = f"w{self._names}"
            if name not in self._ports:
                self._add_endpoint(name)
            self._conn.send(("add", name, self._ports[name]))
        else:
            self._conn.send(("add", name))
        deadline = time.monotonic() + self.timeout
        while True:
            new = [n for n in self._workers if n not in before or n == name]
            if new:
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"no new worker started within {self.timeout:g} s")
            self._poll_launcher(max(0.0, deadline - time.monotonic()))
        started = new[0]
        client = self._control()
        try:
            client.wait_until(lambda: client.workers.get(started) is not None,
                              max(0.0, deadline - time.monotonic()),
                              f"the registration of worker {started!r}")
        except TimeoutError:
            raise ClusterError(f"worker {started!r} did not register within "
                               f"{self.timeout:g} s") from None
        return started

    def skew_estimates(self, factor: float, prefix: str | None = None) -> None:
        self._control().skew_estimates(factor, prefix)

    def set_link(self, src: str, dst: str, *, latency: float | None = None,
                 jitter: float | None = None, bandwidth: float | None = None,
                 down: bool | None = None) -> None:
        """Slow or cut the link(s) from ``src`` to ``dst`` (a worker, "scheduler" or "*"):
        latency and jitter in seconds, bandwidth in bytes/s, ``down`` cuts the connection
        (both ways). Needs ``LocalCluster(proxy=True)``."""
        if self.network is None:
            raise ClusterError("set_link needs the network proxy: LocalCluster(proxy=True)")
        try:
            self.network.set_link(src, dst, latency=latency, jitter=jitter,
                                  bandwidth=bandwidth, down=down)
        except OSError as e:
            raise ClusterError(f"set_link {src}->{dst}: the proxy API failed: {e}") from None

    def _start_network(self, proxy: bool | str, workers: int) -> int:
        """Proxy mode: the proxy server, the scheduler's port and a proxy for every link of
        the first workers. Returns the scheduler's port."""
        from squall.chaos import network as chaos_net
        from squall.chaos.toxiproxy import TOXIPROXY_URL_ENV

        url = proxy if isinstance(proxy, str) else os.environ.get(TOXIPROXY_URL_ENV)
        try:
            if not url:
                self._proxy_server = chaos_net.BuiltinServer(self.host)
                url = self._proxy_server.url
            self.network = chaos_net.ProxyNetwork(
                url, host=self.host, prefix=f"sq{os.getpid()}x{id(self) % 100000}-")
            port = chaos_net.free_port(self.host)
            self._taken = {port}
            self.network.add_endpoint("scheduler", f"{self.host}:{port}")
            for i in range(workers):
                self._add_endpoint(f"w{i}")
        except (OSError, RuntimeError, ValueError) as e:
            self._stop_network()
            raise ClusterError(f"network proxy: {str(e).splitlines()[0]}") from None
        return port

    def _add_endpoint(self, name: str) -> None:
        from squall.chaos.network import free_port

        port = free_port(self.host)
        while port in self._taken:
            port = free_port(self.host)
        self._taken.add(port)
        self._ports[name] = port
        self.network.add_endpoint(name, f"{self.host}:{port}")

    def _stop_network(self) -> None:
        if self.network is not None and self._proxy_server is None:
            self.network.close()  # a shared server keeps running: remove our proxies
        if self._proxy_server is not None:
            self._proxy_server.stop()
            self._proxy_server = None

    # ------------------------------------------------------------------ records

    def sync_records(self, timeout: float = 0.0) -> int:
        """Hand the stimuli recorded so far to the recorders; returns how many."""
        if self._pull is None:
            return 0
        n = 0
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if not self._pull.poll(net.ms(left)):
                return n
            parts = self._pull.recv_multipart()
            if parts[0] == b"eof":
                self._eofs.add(parts[1].decode())
                continue
            for data in parts:
                target, incarnation, count, msg = net.decode_record(data)
                n += 1
                for rec in self.recorders:
                    rec(target, msg)
                for raw in self.raw_recorders:
                    raw(target, incarnation, count, msg)

    # ------------------------------------------------------------------ life cycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            self._client.close()
        alive = set(self._workers)
        try:
            self._conn.send(("stop",))
        except OSError:
            pass
        self._launcher.join(10.0)
        if self._launcher.exitcode is None:
            self._launcher.kill()
            self._launcher.join()
        self._poll_launcher(0)
        alive &= set(self._workers)
        self._finalizer.detach()
        self._conn.close()
        if self._pull is not None:
            # Every process that exited normally sent an "eof" after its last record.
            expected = {"scheduler"} | alive
            deadline = time.monotonic() + 2.0
            while not expected <= self._eofs and time.monotonic() < deadline:
                self.sync_records(0.05)
            self._pull.close(0)
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self._logs is not None:
            self._logs.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._stop_network()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalCluster {self.address}: {len(self._workers)} workers>"

    # ------------------------------------------------------------------ internals

    def _control(self) -> Client:
        if self._closed or self._client is None:
            raise ClusterError("the cluster is closed")
        return self._client

    def _wait_scheduler(self, deadline: float) -> None:
        while not self.address:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterError(f"the scheduler did not start within {self.timeout:g} s")
            self._poll_launcher(left)
            if not self._launcher.is_alive() and not self.address:
                self._poll_launcher(0)
                if not self.address:
                    raise ClusterError("the launcher process exited before the scheduler "
                                       "started")

    def _poll_launcher(self, timeout: float) -> None:
        """Read what the launcher reported (waiting up to ``timeout`` s for the first)."""
        conn = self._conn
        try:
            if not conn.poll(timeout):
                return
            while True:
                msg = conn.recv()
                kind = msg[0]
                if kind == "scheduler":
                    self.address, self.scheduler_pid = msg[1], msg[2]
                elif kind == "worker":
                    self._workers[msg[1]] = WorkerProcess(msg[1], msg[2], msg[3])
                elif kind == "exited":
                    self._exits.append((msg[1], msg[2], msg[3]))
                    w = self._workers.get(msg[1])
                    if w is not None and w.pid == msg[2]:
                        del self._workers[msg[1]]
                elif kind == "error":
                    raise ClusterError(msg[1])
                elif kind == "refused":
                    raise ClusterError(msg[1])
                if not conn.poll(0):
                    return
        except (EOFError, OSError):
            return


def _stop_launcher(conn: Any, launcher: Any) -> None:
    """At exit or garbage collection of a cluster nobody closed."""
    try:
        conn.send(("stop",))
        launcher.join(5.0)
    except Exception:  # already gone
        pass


def _check_validator_available() -> None:
    """validate=True needs squall.invariants' validator (its own issue): fail here, in one
    line, rather than in every process."""
    try:
        from squall.invariants import SchedulerValidator, WorkerValidator  # noqa: F401
    except ImportError as e:
        raise ClusterError(f"validate=True needs the invariant validator: {e}") from None
