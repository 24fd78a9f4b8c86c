"""dask.distributed as a squall ``Target``: ``DaskTarget`` starts a ``DaskCluster``.

A ``DaskCluster`` is a ``distributed.LocalCluster`` on loopback: the scheduler runs in
this process (on the cluster's event-loop thread), each worker in a process of its own
under a ``Nanny``, plus a ``distributed.Client``. Its fault surface:

- ``kill_worker(name)``: SIGKILL the worker's process. The worker stays dead: its nanny
  is told first not to restart it (squall's reference runtime does the same); the
  scheduler learns of the death from the broken connection, as after a crash.
  ``add_worker(name)`` starts a new incarnation under the name.
- ``pause_worker(name, seconds)``: SIGSTOP, then SIGCONT from a timer thread that the
  cluster's ``close`` cancels (the worker is continued then).
- ``set_link(src, dst, latency=, jitter=, bandwidth=, down=)``, with ``network=True``:
  every connection a worker opens goes through a proxy of squall's built-in
  Toxiproxy-compatible server (or TOXIPROXY_URL's): its connection to the scheduler
  (the worker is given its proxy as the scheduler's address; its nanny connects
  directly), and each connection to a peer (the worker's ``PeerRoutes`` plugin dials
  the proxy of that pair). So every directed link ``wN->scheduler``, ``scheduler->wN``,
  ``wA->wB`` can be slowed or cut alone. Connections the scheduler or the client open to
  a worker (the scheduler's ``gather``, say) are direct.
- ``skew_estimates(factor, prefix)``: multiplies dask's duration estimate of that
  prefix (or of all) by ``factor``, from now on: the one function dask's placement,
  occupancy and stealing read (``SchedulerState._get_prefix_duration``, which reads the
  per-prefix ``duration_average``) is wrapped on the scheduler. As in squall, a new skew
  of the same prefix replaces the old one.
- ``add_worker(name=None, threads=None)``: a new worker (``wN`` by default) with its own
  threads; it waits until the scheduler has forgotten a dead incarnation of that name
  and until the new one has registered. In network mode a name keeps its port, so its
  proxies stay.

Worker names: the shape's ``w0..wN-1`` are the dask workers' ``name``. Every fault is
appended to ``faults`` with its time on the cluster's clock (``now()``: seconds since the
first graph was submitted -- as a scenario's faults are timed -- and before that, since the
cluster started).

Strict mode (``validate=True``): squall's ``DaskValidator``
(``squall.targets.dask.hooks``) is attached to the scheduler and its worker plugin
registered, before any worker starts; ``check(final=)`` runs its full checks at
quiescence; ``violations`` lists what it found. ``compute(graph)`` submits a squall
``TaskGraph`` with real bodies as one dask graph and gives a future per key.

Every process started here dies with this one, however it dies: dask's worker processes
watch their parent's pipe, and ask the kernel to SIGKILL them when it dies (a paused
worker cannot watch); the built-in proxy server watches its parent's pipe too.

Authentication: dask's workers unpickle what they are sent, so whoever may connect may run
code as this user. A ``DaskCluster`` speaks mutual TLS (``tls://``) with a certificate
and key made for it in memory (``distributed.security.Security.temporary()``, which needs
the ``cryptography`` package): its scheduler, nannies, workers and ``client`` hold them
(``security``); a connection that cannot prove it holds them -- a ``Client`` given only
the address, or another cluster's -- is refused at the TLS handshake. The proxies of
network mode carry the TLS bytes through untouched (dask checks the certificate, not the
host name). ``insecure=True`` is dask's own unauthenticated ``tcp://`` cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from squall.chaos.injectors import links_between
from squall.core.view import ClusterShape, ClusterView, FaultSurface, Recorder

if TYPE_CHECKING:
    from squall.core.graph import TaskGraph
    from squall.core.outcome import TargetReplay, Violation

DASK = "dask"  # the runtime: dask's own processes on this machine
HOST = "127.0.0.1"
LOGGER = "squall.targets.dask"  # dask's log records, while a cluster runs, and its workers'
logging.getLogger(LOGGER).addHandler(logging.NullHandler())  # quiet unless logging is set up


class DaskClusterError(RuntimeError):
    """The dask cluster could not start or do what was asked; one line says why."""


class FaultRecord(NamedTuple):
    time: float  # the cluster's clock: seconds since the first graph was submitted
    kind: str  # the fault-surface method: "kill_worker", "set_link", ...
    target: str  # the worker, or the link "src->dst"
    params: dict[str, Any]


class DaskTarget:
    """dask.distributed, unmodified: see the module docstring."""

    name = "dask"
    runtimes: tuple[str, ...] = (DASK,)

    def start(self, runtime: str, shape: ClusterShape, *, seed: int = 0,
              validate: bool = True, record: bool = False,
              network: bool = False) -> DaskCluster:
        """A ``DaskCluster`` of ``shape`` (dask is not seeded: ``seed`` is unused). Its
        scheduler's stimuli can always be logged (``record`` is not needed); ``network``
        (or links in the shape) routes the workers' connections through proxies."""
        if runtime not in self.runtimes:
            raise ValueError(f"target {self.name!r} has no runtime {runtime!r}; "
                             f"it offers: {', '.join(self.runtimes)}")
        cluster = DaskCluster.from_shape(shape, validate=validate,
                                         network=network or bool(shape.links))
        try:
            for link in shape.links:
                for src, dst in links_between(link.worker):
                    cluster.set_link(src, dst, latency=link.latency, jitter=link.jitter,
                                     bandwidth=link.bandwidth)
        except BaseException:
            cluster.close()
            raise
        cluster.faults.clear()  # the starting links are the cluster's shape, not faults
        return cluster

    def view(self, cluster: FaultSurface) -> ClusterView | None:
        """None: dask's state is not squall's; the ``DaskValidator`` reads it instead."""
        return None

    def replay(self, stimuli: Iterable[tuple[int, str, Mapping[str, Any]]], *,
               validate: bool = True) -> TargetReplay:
        """The workers' side of a dask trace, replayed through dask's own ``WorkerState``
        (``squall.targets.dask.replay``); the scheduler's side is not replayed."""
        from squall.targets.dask.replay import replay_records

        return replay_records(stimuli, validate=validate)

    def log_stimuli(self, cluster: FaultSurface, recorder: Recorder) -> None:
        """``recorder("scheduler", DaskStimulus)`` for every stimulus dask's scheduler
        receives from now on, and ``recorder(worker name, DaskWorkerStimulus)`` for every
        one a worker handles; called on the scheduler's event-loop thread."""
        if not isinstance(cluster, DaskCluster):
            raise TypeError(f"not a cluster of the dask target: {cluster!r}")
        cluster.log_stimuli(recorder)


class DaskCluster:
    """``with DaskCluster(workers=2, threads=1) as cluster: cluster.client.submit(...)``;
    see the module docstring."""

    def __init__(self, workers: int = 2, threads: int = 1, *, validate: bool = True,
                 network: bool = False, stealing: bool = True, allowed_failures: int = 3,
                 heartbeat_interval: float | None = None,
                 heartbeat_timeout: float | None = None, timeout: float = 30.0,
                 memory_manager: bool = True, insecure: bool = False) -> None:
        if workers < 0 or threads < 1:
            raise ValueError(f"need workers >= 0 and threads >= 1, got {workers}, {threads}")
        from squall.targets.dask import require_dask

        require_dask()
        import dask
        from distributed import Client, LocalCluster

        # Before any process starts: the cluster's credentials, in memory (see the module
        # docstring), or none at all.
        self.security, self.protocol = cluster_security(insecure)

        self.threads = threads
        self.timeout = timeout
        self.heartbeat_interval = heartbeat_interval
        self.started = time.monotonic()
        self.faults: list[FaultRecord] = []
        self.validator: Any = None  # squall.targets.dask.hooks.DaskValidator
        self.network: Any = None  # squall.chaos.network.ProxyNetwork, in network mode
        self._proxy_server: Any = None
        self._api_url = ""
        self._ports: dict[str, int] = {}  # worker name -> its fixed port (network mode)
        self._names = 0  # the next "wN" a worker without a name may take
        self._timers: dict[int, threading.Timer] = {}  # paused pid -> its SIGCONT
        self._timers_lock = threading.Lock()
        self._stimuli: Any = None  # squall.targets.dask.stimuli.SchedulerStimuli
        self._skew: dict[str | None, float] = {}  # prefix (None: all) -> factor
        self._closed = False
        self._logs: logging.Handler | None = None
        self._submitted = False  # a graph was: the clock starts then
        self._worker_log = False  # the workers' stimulus log plugin is registered
        self._announce = False  # after a reset: its start records are to be sent again
        self._base_transitions = 0  # the counts when the cluster was last reset
        self._base_steals = 0
        self._fits: tuple[Any, ...] | None = None  # set by from_shape: what it can be reused for
        self.refused = ""  # why the last reset could not reuse the cluster
        self.cluster: Any = None
        self.client: Any = None
        config: dict[str, Any] = {
            "distributed.scheduler.allowed-failures": allowed_failures,
            "distributed.scheduler.work-stealing": stealing,
            # dask's active memory manager (on by default) drops and copies replicas on
            # its own schedule; off, a scenario's replicas stay as its stimuli left them
            "distributed.scheduler.active-memory-manager.start": memory_manager,
        }
        self._default_ttl = dask.config.get("distributed.scheduler.worker-ttl")
        if heartbeat_timeout is not None:
            config["distributed.scheduler.worker-ttl"] = f"{heartbeat_timeout}s"
        try:
            with dask.config.set(config):
                self.cluster = LocalCluster(
                    n_workers=0, processes=True, host=HOST, scheduler_port=0,
                    dashboard_address=f"{HOST}:0", protocol=self.protocol,
                    security=self.security, silence_logs=logging.CRITICAL)
            self._finalizer = weakref.finalize(self, _close_quietly, self.cluster)
            if not logging.getLogger("distributed").propagate:
                self._logs = _Forward()
                logging.getLogger("distributed").addHandler(self._logs)
            self.scheduler = self.cluster.scheduler
            self.client = Client(self.cluster, security=self.security,
                                 set_as_default=False)
            if network:
                self._start_network()
            if validate:
                self._attach_validator()
            names = [f"w{i}" for i in range(workers)]
            self._names = workers
            for name in names:
                self._add_spec(name, threads)
            self._on_loop(self.cluster._correct_state)
            self._wait_until(lambda: all(self._registered(n) for n in names),
                             f"{workers} workers to register")
        except BaseException as e:
            self.close()
            if isinstance(e, DaskClusterError) or not isinstance(e, Exception):
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            raise DaskClusterError(f"the dask cluster did not start: {type(e).__name__}: "
                                   f"{first}") from None

    @classmethod
    def from_shape(cls, shape: ClusterShape, *, validate: bool = True,
                   network: bool = False) -> DaskCluster:
        """A cluster of a squall ``ClusterShape`` (the simulator's ``tick_interval`` and
        ``max_time`` do not apply; ``heartbeat_timeout`` is dask's worker TTL, which dask
        keeps at least 10 heartbeat intervals long)."""
        cluster = cls(shape.workers, shape.threads, validate=validate, network=network,
                      stealing=shape.stealing, allowed_failures=shape.allowed_failures,
                      heartbeat_interval=shape.heartbeat_interval,
                      heartbeat_timeout=shape.heartbeat_timeout)
        cluster._fits = _fit(shape, validate, network)
        return cluster

    # ------------------------------------------------------------------ what runs where

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` (a function or a coroutine function) on the cluster's event loop;
        its result."""

        async def call() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            return result

        return self.cluster.sync(call)

    def _wait_until(self, condition: Callable[[], bool], what: str,
                    timeout: float | None = None) -> None:
        """Wait (on the event loop, where the scheduler's state changes) until
        ``condition()``; DaskClusterError after ``timeout``."""
        limit = self.timeout if timeout is None else timeout

        async def wait() -> bool:
            deadline = time.monotonic() + limit
            while not condition():
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.005)
            return True

        if not self._on_loop(wait):
            raise DaskClusterError(f"timed out after {limit:g} s waiting for {what}")

    def _registered(self, name: str) -> bool:
        """Whether a running worker named ``name`` is in the scheduler (on the loop)."""
        return any(ws.name == name and ws.status.name == "running"
                   for ws in self.scheduler.workers.values())

    def _known(self, name: str) -> bool:
        return any(ws.name == name for ws in self.scheduler.workers.values())

    # ------------------------------------------------------------------ workers

    def _add_spec(self, name: str, threads: int) -> None:
        from squall.targets.dask.routing import DieWithParent, PeerRoutes, SquallNanny

        options: dict[str, Any] = {"nthreads": threads, "name": name, "memory_limit": 0,
                                   "silence_logs": logging.CRITICAL, "host": HOST,
                                   "dashboard_address": f"{HOST}:0",
                                   "protocol": self.protocol, "security": self.security,
                                   "plugins": {DieWithParent()}}
        if self.heartbeat_interval is not None:
            options["heartbeat_interval"] = f"{self.heartbeat_interval}s"
        if self.network is not None:
            if name not in self._ports:
                self._add_endpoint(name)
            options["worker_port"] = self._ports[name]
            options["scheduler_via"] = self.protocol + self.network.listen(name, "scheduler")
            options["plugins"].add(PeerRoutes(self._api_url, self.network.prefix, name))
        self.cluster.worker_spec[name] = {"cls": SquallNanny, "options": options}

    def _nanny(self, name: str) -> Any:
        nanny = self.cluster.workers.get(name) if self.cluster is not None else None
        if nanny is None or nanny.status.name != "running" or not nanny.pid:
            raise ValueError(f"no live worker named {name!r}")
        return nanny

    @property
    def workers(self) -> dict[str, int]:
        """The live workers: name -> pid of the worker process."""
        out = {}
        for name, nanny in list(self.cluster.workers.items()):
            pid = nanny.pid
            if nanny.status.name == "running" and pid:
                out[name] = pid
        return out

    def scheduler_workers(self) -> dict[str, str]:
        """The workers dask's scheduler knows now: name -> status ("running", "paused",
        ...)."""
        def read() -> dict[str, str]:
            return {str(ws.name): ws.status.name for ws in self.scheduler.workers.values()}

        result: dict[str, str] = self._on_loop(read)
        return result

    def address_of(self, name: str) -> str | None:
        """The address the scheduler knows the live worker ``name`` by."""
        def find() -> str | None:
            for ws in self.scheduler.workers.values():
                if ws.name == name:
                    return str(ws.address)
            return None

        result: str | None = self._on_loop(find)
        return result

    # ------------------------------------------------------------------ the fault surface

    def now(self) -> float:
        """The cluster's clock (see the module docstring)."""
        return time.monotonic() - self.started

    def _fault(self, kind: str, target: str, params: dict[str, Any]) -> None:
        self.faults.append(FaultRecord(round(self.now(), 6), kind, target, params))

    def kill_worker(self, name: str) -> int:
        """SIGKILL the worker's process; it stays dead. Returns its pid."""
        nanny = self._nanny(name)
        pid = int(nanny.pid)
        self._on_loop(nanny.close_gracefully, "squall-kill")  # its nanny must not restart it
        self._fault("kill_worker", name, {})
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return pid

    def pause_worker(self, name: str, seconds: float) -> None:
        """SIGSTOP the worker's process, SIGCONT ``seconds`` later."""
        if not seconds > 0:
            raise ValueError(f"pause: seconds must be > 0, got {seconds}")
        pid = int(self._nanny(name).pid)
        self._fault("pause_worker", name, {"seconds": seconds})
        timer = threading.Timer(seconds, self._resume, (pid,))
        timer.daemon = True
        with self._timers_lock:
            old = self._timers.pop(pid, None)
            if old is not None:
                old.cancel()
            self._timers[pid] = timer
        os.kill(pid, signal.SIGSTOP)
        timer.start()

    def _resume(self, pid: int) -> None:
        with self._timers_lock:
            self._timers.pop(pid, None)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    def set_link(self, src: str, dst: str, *, latency: float | None = None,
                 jitter: float | None = None, bandwidth: float | None = None,
                 down: bool | None = None) -> None:
        """Slow or cut the link(s) from ``src`` to ``dst`` (a worker, "scheduler" or "*"):
        latency and jitter in seconds, bandwidth in bytes/s, ``down`` cuts it (both
        ways). Needs ``network=True``."""
        if self.network is None:
            raise DaskClusterError("set_link needs the network proxy: start the dask "
                                   "cluster with network=True")
        params = {k: v for k, v in (("latency", latency), ("jitter", jitter),
                                    ("bandwidth", bandwidth), ("down", down)) if v is not None}
        self._fault("set_link", f"{src}->{dst}", params)
        try:
            self.network.set_link(src, dst, latency=latency, jitter=jitter,
                                  bandwidth=bandwidth, down=down)
        except OSError as e:
            raise DaskClusterError(f"set_link {src}->{dst}: the proxy API failed: {e}") from None

    def skew_estimates(self, factor: float, prefix: str | None = None) -> None:
        """dask's duration estimate of ``prefix`` (None: every prefix) times ``factor``."""
        if not factor > 0:
            raise ValueError(f"skew factor must be > 0, got {factor}")
        self._fault("skew_estimates", "", {"factor": factor, **(
            {"prefix": prefix} if prefix is not None else {})})
        self._on_loop(self._set_skew, factor, prefix)

    def _set_skew(self, factor: float, prefix: str | None) -> None:
        """On the loop: the wrapper of dask's estimate function, installed once."""
        skew = self._skew
        skew[prefix] = factor
        scheduler = self.scheduler
        if "_get_prefix_duration" in vars(scheduler):
            return
        estimate = scheduler._get_prefix_duration

        def skewed(tp: Any) -> float:
            return float(estimate(tp)) * skew.get(None, 1.0) * skew.get(tp.name, 1.0)

        scheduler._get_prefix_duration = skewed

    def add_worker(self, name: str | None = None, threads: int | None = None) -> str:
        """Start a worker (``name``: a new incarnation of that name; default a new ``wN``)
        with ``threads`` (default: the cluster's); wait until it registered. ValueError if
        a worker of that name is alive."""
        if name is None:
            taken = set(self.cluster.worker_spec) | set(self.cluster.workers)
            while f"w{self._names}" in taken:
                self._names += 1
            name = f"w{self._names}"
        if name in self.workers:
            raise ValueError(f"worker {name!r} is alive")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._fault("add_worker", name, {"threads": threads} if threads is not None else {})
        joining = name
        self._wait_until(lambda: not self._known(joining),
                         f"the scheduler to forget the dead worker {name!r}")
        self._on_loop(self._forget_nanny, name)
        self._add_spec(name, threads or self.threads)
        self._on_loop(self.cluster._correct_state)
        self._wait_until(lambda: self._registered(joining),
                         f"worker {name!r} to register")
        return name

    async def _forget_nanny(self, name: str) -> None:
        old = self.cluster.workers.pop(name, None)
        if old is not None:
            await old.close(reason="squall-replaced")

    # ------------------------------------------------------------------ network

    def _start_network(self) -> None:
        from squall.chaos import network as chaos_net
        from squall.chaos.toxiproxy import TOXIPROXY_URL_ENV

        url = os.environ.get(TOXIPROXY_URL_ENV)
        try:
            if not url:
                self._proxy_server = chaos_net.BuiltinServer(HOST)
                url = self._proxy_server.url
            self._api_url = url
            self.network = chaos_net.ProxyNetwork(
                url, host=HOST, prefix=f"dask{os.getpid()}x{id(self) % 100000}-")
            address = self.scheduler.address.rpartition("://")[2]
            self.network.add_endpoint("scheduler", address)
        except (OSError, RuntimeError, ValueError) as e:
            raise DaskClusterError(f"network proxy: {str(e).splitlines()[0]}") from None

    def _add_endpoint(self, name: str) -> None:
        from squall.chaos.network import free_port

        taken = set(self._ports.values())
        port = free_port(HOST)
        while port in taken:
            port = free_port(HOST)
        self._ports[name] = port
        self.network.add_endpoint(name, f"{HOST}:{port}")

    # ------------------------------------------------------------------ strict mode

    def _attach_validator(self) -> None:
        from squall.targets.dask.hooks import DaskValidator

        self.validator = self._on_loop(DaskValidator.attach, self.scheduler)
        self.client.register_plugin(self.validator.worker_plugin())

    def check(self, final: bool = False) -> None:
        """The validator's full checks, the cluster being quiescent (a no-op without
        strict mode)."""
        if self.validator is not None:
            self.validator.check_quiescent(self.client)

    def pulse(self) -> Any:
        """What changes while the cluster moves, or None while it visibly works (a body
        runs, data is in flight): equal pulses some time apart mean nothing moves. (A
        paused worker answers when it is continued.)"""
        from squall.targets.dask.hooks import DaskValidator

        validator = self.validator or DaskValidator(self.scheduler)
        return validator.pulse(self.client)

    @property
    def violations(self) -> Sequence[Violation]:
        """What strict mode found so far, first first."""
        if self.validator is None:
            return []
        return [v.to_violation() for v in self.validator.violations]

    @property
    def invariant_checks(self) -> int:
        return int(self.validator.checks) if self.validator is not None else 0

    @property
    def transitions(self) -> int:
        """The scheduler's transitions since the cluster started (or was reset)."""
        return int(self.scheduler.transition_counter) - self._base_transitions

    @property
    def steals(self) -> int:
        """Tasks dask's work stealing moved since the cluster started (or was reset)."""
        return self._steal_count() - self._base_steals

    def _steal_count(self) -> int:
        stealing = self.scheduler.extensions.get("stealing")
        return int(getattr(stealing, "count", 0)) if stealing is not None else 0

    # ------------------------------------------------------------------ reuse

    def reset(self, shape: ClusterShape, *, validate: bool, network: bool,
              timeout: float | None = None) -> bool:
        """Make the cluster ready for another scenario: every key released, exactly the
        workers ``w0..`` of ``shape`` running (one killed is started again, one too many
        retired), every worker empty, a fresh validator, no recorders, the clock and the
        counts from zero. False (the cluster is left as it is: close it) when it cannot be
        reused: it was started for another kind of cluster (what dask reads of a shape
        besides its worker count: threads, stealing, retries, heartbeats, starting links;
        strict mode; network mode), a fault changed a link, a worker's threads or is still
        pausing one, or it does not settle. What dask learned stays (its per-prefix
        duration averages), as on a long-lived cluster."""
        self.refused = _refusal(self, shape, validate, network)
        if self.refused:
            return False
        limit = self.timeout if timeout is None else timeout
        try:
            self.client.cancel(list(self.client.futures), force=True)
            self._wait_until(lambda: not self.scheduler.tasks, "every key to be released",
                             limit)
            self._scale_to(shape.workers, limit)
            self._wait_empty_workers(limit)
            self._on_loop(self._configure, shape)
        except Exception as e:  # it does not settle: start anew
            self.refused = f"it did not settle: {type(e).__name__}: {e}".splitlines()[0]
            return False

        def restart_clock() -> None:
            self._skew.clear()  # the skew wrapper stays, a no-op
            if self._stimuli is not None:
                self._stimuli.recorders.clear()
            self._base_transitions = int(self.scheduler.transition_counter)
            self._base_steals = self._steal_count()

        self._on_loop(restart_clock)
        self._announce = self._worker_log  # the next recording needs start records
        if self.validator is not None:
            self.validator.reset(self.client)
        self.faults.clear()
        self._submitted = False
        self.started = time.monotonic()
        return True

    def _configure(self, shape: ClusterShape) -> None:
        """(On the loop) the scheduler's retries and worker TTL as ``shape`` asks (dask
        reads both at start; the TTL check is a periodic callback of that period)."""
        from dask.utils import parse_timedelta
        from tornado.ioloop import PeriodicCallback

        s = self.scheduler
        s.allowed_failures = shape.allowed_failures
        ttl = (parse_timedelta(f"{shape.heartbeat_timeout}s") if shape.heartbeat_timeout
               else parse_timedelta(self._default_ttl))
        if ttl == s.worker_ttl:
            return
        s.worker_ttl = ttl
        old = s.periodic_callbacks.pop("worker-ttl", None)
        if old is not None:
            old.stop()
        if ttl:
            pc = PeriodicCallback(s.check_worker_ttl, ttl * 1000)
            s.periodic_callbacks["worker-ttl"] = pc
            pc.start()

    def _scale_to(self, workers: int, limit: float) -> None:
        """Exactly the workers ``w0..w{workers-1}`` running: a missing one (killed) starts
        as a new incarnation, any other is retired."""
        wanted = [f"w{i}" for i in range(workers)]
        extra = [n for n in list(self.cluster.worker_spec) if n not in wanted]
        for name in extra:
            del self.cluster.worker_spec[name]
        live = self.workers
        missing = [n for n in wanted if n not in live]
        for name in missing:
            self._wait_until(lambda n=name: not self._known(n),  # type: ignore[misc]
                             f"the scheduler to forget the dead worker {name!r}", limit)
            self._on_loop(self._forget_nanny, name)
            self._add_spec(name, self.threads)
        if extra or missing:
            self._on_loop(self.cluster._correct_state)
        self._wait_until(lambda: len(self.scheduler.workers) == len(wanted)
                         and all(self._registered(n) for n in wanted),
                         f"workers {', '.join(wanted)} to be running", limit)

    def _wait_empty_workers(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while any(self.client.run(_held_tasks).values()):
            if time.monotonic() > deadline:
                raise DaskClusterError(f"timed out after {limit:g} s waiting for the "
                                       "workers to forget every task")
            self.client.run(_noop)  # a round trip: the workers handle what is queued

    # ------------------------------------------------------------------ running graphs

    def compute(self, graph: TaskGraph) -> Mapping[str, Any]:
        """Submit every task of ``graph`` (real bodies: ``func(*args, *input values)``) as
        one dask graph; a ``distributed.Future`` per key, in the graph's order. The first
        submission starts the cluster's clock."""
        from dask._task_spec import Task, TaskRef

        dsk = {}
        for spec in graph:
            if spec.func is None:
                raise ValueError(f"task {spec.key!r} has no body to run on dask "
                                 "(squall.scenarios.real.real_graph gives simulated tasks one)")
            dsk[spec.key] = Task(spec.key, spec.func, *spec.args,
                                 *(TaskRef(d) for d in spec.deps), **spec.kwargs)
        keys = list(dsk)
        if not self._submitted:
            self._submitted = True
            self.started = time.monotonic()
        if any(spec.restrictions for spec in graph):
            return self._submit_restricted(graph)
        futures = self.client.get(dsk, keys, sync=False)
        return dict(zip(keys, futures, strict=True))

    def _submit_restricted(self, graph: TaskGraph) -> dict[str, Any]:
        """A graph with restricted tasks, submitted task by task in dependency order: a
        graph submitted whole takes one set of worker restrictions for all its tasks, a
        submitted task its own (dask takes worker names for addresses)."""
        futures: dict[str, Any] = {}
        for key in graph.topological_order():
            spec = graph.tasks[key]
            futures[key] = self.client.submit(
                _call, spec.func, spec.args, spec.kwargs, *(futures[d] for d in spec.deps),
                key=key, pure=False, workers=list(spec.restrictions) or None,
                allow_other_workers=False)
        return {spec.key: futures[spec.key] for spec in graph}

    def log_stimuli(self, recorder: Recorder) -> None:
        """``recorder("scheduler", DaskStimulus)`` for every stimulus the scheduler receives
        from now on, and ``recorder(worker name, DaskWorkerStimulus)`` for every one a
        worker's state machine handles, as its record arrives (see
        ``squall.targets.dask.stimuli``)."""
        from squall.targets.dask.stimuli import SchedulerStimuli

        def attach() -> None:
            if self._stimuli is None:
                self._stimuli = SchedulerStimuli(self.scheduler, self.now)
            self._stimuli.recorders.append(recorder)

        self._on_loop(attach)
        from squall.targets.dask import routing

        if not self._worker_log:
            self._worker_log = True
            self.client.register_plugin(routing.WorkerStimulusLog())
        elif self._announce:  # a reused cluster: each worker's log starts over
            self._announce = False
            self.client.run(routing.announce_stimulus_log)

    # ------------------------------------------------------------------ life cycle

    def close(self) -> None:
        """Stop everything this cluster started (paused workers are continued first)."""
        if self._closed:
            return
        self._closed = True
        with self._timers_lock:
            paused = list(self._timers.items())
            self._timers.clear()
        for pid, timer in paused:
            timer.cancel()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if self.validator is not None and self.cluster is not None:
            with contextlib.suppress(Exception):
                self._on_loop(self.validator.detach)
        if self.client is not None:
            with contextlib.suppress(Exception):
                self._log_worker_logs()
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            # The workers first, while their scheduler still answers: no worker then
            # fails a heartbeat to a scheduler that is gone.
            with contextlib.suppress(Exception):
                self._on_loop(self._close_workers)
            self._finalizer.detach()
            _close_quietly(self.cluster)
        if self.network is not None and self._proxy_server is None:
            with contextlib.suppress(Exception):
                self.network.close()  # a shared server keeps running: remove our proxies
        if self._proxy_server is not None:
            self._proxy_server.stop()
            self._proxy_server = None
        if self._logs is not None:
            logging.getLogger("distributed").removeHandler(self._logs)

    def _log_worker_logs(self) -> None:
        """The live workers' log records (kept in each worker: its stderr is silenced),
        into this process's logging, under ``squall.targets.dask.workers``."""
        log = logging.getLogger(f"{LOGGER}.workers")
        if not log.isEnabledFor(logging.INFO):
            return
        names = {ws.address: ws.name for ws in list(self.scheduler.workers.values())}
        for address, records in self.client.get_worker_logs().items():
            for level, message in records:
                log.log(logging.getLevelName(level), "%s: %s", names.get(address, address),
                        message)

    async def _close_workers(self) -> None:
        nannies = list(self.cluster.workers.values())
        await asyncio.gather(*(n.close(reason="squall-close") for n in nannies),
                             return_exceptions=True)

    def __enter__(self) -> DaskCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cluster_security(insecure: bool = False) -> tuple[Any, str]:
    """(``distributed.security.Security``, protocol) of a new cluster: a certificate and
    key of its own, in memory, and ``tls://``; with ``insecure``, none and ``tcp://``."""
    from distributed.security import Security

    from squall.targets.dask import INSTALL, DaskUnavailable

    if insecure:
        return Security(), "tcp://"
    try:
        return Security.temporary(), "tls://"
    except ImportError:  # (an ImportError: what to install, as for distributed itself)
        raise DaskUnavailable("the dask cluster's TLS needs the cryptography package: "
                              f"{INSTALL}") from None


def _refusal(cluster: DaskCluster, shape: ClusterShape, validate: bool, network: bool) -> str:
    """Why ``cluster`` cannot be reset for ``shape`` ("" if it can)."""
    if cluster._closed:
        return "it is closed"
    if cluster._timers:
        return "a worker is still paused"
    wanted = _fit(shape, validate, network)
    fits = cluster._fits
    if fits is not None and fits[-1] and not wanted[-1]:
        # proxies with no toxic pass everything: a network-mode cluster serves either
        wanted = (*wanted[:-1], True)
    if fits != wanted:
        names = ("threads", "stealing", "heartbeat interval", "links", "strict mode",
                 "network mode")
        differ = [n for n, a, b in zip(names, cluster._fits or (), wanted, strict=False)
                  if a != b]
        return f"another kind of cluster ({', '.join(differ) or 'unknown'})"
    for f in cluster.faults:
        if f.kind == "set_link":
            return "a link was changed"
        if f.kind == "add_worker" and f.params:
            return "a worker joined with other threads"
    return ""


def _fit(shape: ClusterShape, validate: bool, network: bool) -> tuple[Any, ...]:
    """What a cluster started for ``shape`` in these modes is, but for what ``reset`` sets
    anew (its worker count, retries and worker TTL): a scenario with the same can reuse it."""
    links = tuple((link.worker, link.latency, link.jitter, link.bandwidth)
                  for link in shape.links)
    return (shape.threads, shape.stealing, shape.heartbeat_interval, links, validate,
            network or bool(links))


def _held_tasks(dask_worker: Any) -> int:
    """(On a worker) how many tasks its state machine still knows."""
    return len(dask_worker.state.tasks)


def _noop() -> None:
    return None


class _Forward(logging.Handler):
    """dask's log records (its logger does not propagate) into squall's logger, so they
    reach whatever handlers this process set up (``squall run``: the .log file)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(LOGGER).handle(record)


def _close_quietly(cluster: Any) -> None:
    with contextlib.suppress(Exception):
        cluster.close(timeout=10)


def _call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *inputs: Any) -> Any:
    """A task's body as a graph runs it: ``func(*args, *input values, **kwargs)``."""
    return func(*args, *inputs, **kwargs)
