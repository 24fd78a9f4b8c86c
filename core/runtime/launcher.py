"""The launcher: a small process that starts the scheduler and worker processes.

Why a separate process: worker processes are forked (fast start-up, and
multiprocessing-logging needs the fork start method), and forking is only safe from a
process that holds no ZeroMQ context and runs no other thread. The launcher is forked
from the user's process before that process opens any socket for the cluster, and does
nothing but fork, watch and signal: it holds no socket, no thread, no state machine.

It watches its children's process sentinels: when a worker process ends it tells the
scheduler at once ("died NAME PID" on the scheduler's control pipe; the scheduler then
feeds ``RemoveWorker(reason="died")`` to its state machine), tells the parent, and starts
a new incarnation under the same name. Heartbeat timeouts catch what this cannot (a
frozen worker, a worker on another machine).

Lifetime: the launcher ends when its parent does, however the parent ends (the end of
its command pipe; on Linux also the kernel's parent-death signal, see
``squall.core.lifeline``), and the scheduler and the workers end with the launcher, a
worker paused with SIGSTOP too.

Logs: with fork, the children inherit the parent's root handlers as wrapped by
multiprocessing-logging (``install_mp_handler``), whose queue carries every record to the
parent's handlers. Where fork is unavailable, processes are spawned instead and the
standard library's ``QueueHandler`` (in the children) and ``QueueListener`` (in the
parent, feeding the root handlers it had when the cluster started) do the same job.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from squall.core.lifeline import die_with_parent

if TYPE_CHECKING:
    from squall.core.runtime.transport import Keys

log = logging.getLogger("squall.launcher")

RESTART_AFTER = 1.0  # a worker that lived less than this is restarted with a back-off
STOP_GRACE = 3.0  # seconds children get to exit after "stop" before SIGKILL
# Exit status of a worker the scheduler told to rejoin (it reconnected after a cut, or was
# declared dead): the launcher starts a new incarnation under its name, restart or not.
REJOIN_EXIT = 75


@dataclass(frozen=True)
class ClusterConfig:
    workers: int = 2
    threads: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    keys_dir: str | None = None
    # The cluster's CURVE key pair, handed to the children in memory (LocalCluster makes
    # one per cluster unless told otherwise); None with keys_dir: read from there.
    keys: Keys | None = None
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float | None = 5.0
    allowed_failures: int = 3
    validate: bool = False
    stealing: bool = False
    restart: bool = True
    record_to: str | None = None
    register_timeout: float = 10.0
    gather_timeout: float = 10.0
    # Chaos (LocalCluster(proxy=True)): each worker name's data port, fixed so that the
    # proxies leading to it exist before its process does, and the proxies' API.
    data_ports: tuple[tuple[str, int], ...] = ()
    proxy_api: str | None = None
    proxy_prefix: str = ""
    # The moment (time.monotonic(), the machine's one monotonic clock) every process of the
    # cluster counts its time from, so that the times of all their stimuli -- a worker
    # started again included -- are on one clock; None: each process its own.
    origin: float | None = None


def default_start_method() -> str:
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class LogForwarding:
    """Log records of the cluster's processes reach this process's root handlers."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.queue: Any = None
        self._listener: logging.handlers.QueueListener | None = None
        self._installed = False
        root = logging.getLogger()
        if method == "fork":
            import multiprocessing_logging as mpl

            if not any(isinstance(h, mpl.MultiProcessingHandler) for h in root.handlers):
                mpl.install_mp_handler(root)
                self._installed = True
        else:
            self.queue = multiprocessing.get_context(method).Queue()
            self._listener = logging.handlers.QueueListener(
                self.queue, *root.handlers, respect_handler_level=True)
            self._listener.start()

    def close(self) -> None:
        if self._installed:
            import multiprocessing_logging as mpl

            root = logging.getLogger()
            wrapped = [h for h in root.handlers if isinstance(h, mpl.MultiProcessingHandler)]
            mpl.uninstall_mp_handler(root)
            # Their threads drain what is left and end within 0.2 s; nobody needs to wait.
            for h in wrapped:
                h._is_closed = True
            self._installed = False
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


def child_logging(log_queue: Any) -> None:
    """In a spawned child: send every record to the parent's QueueListener."""
    if log_queue is not None:
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(logging.handlers.QueueHandler(log_queue))


# ------------------------------------------------------------------ child processes


def _close_all(conns: list[Any]) -> None:
    """Inherited ends of other processes' pipes: closed, so every pipe's end is seen."""
    for c in conns:
        try:
            c.close()
        except OSError:
            pass


def _keys(config: ClusterConfig) -> Any:
    if config.keys is not None:
        return config.keys
    if config.keys_dir is None:
        return None
    from squall.core.runtime.transport import load_keys

    return load_keys(config.keys_dir)


def scheduler_main(config: ClusterConfig, control: Any, report: Any, inherited: list[Any],
                   log_queue: Any) -> None:
    die_with_parent()  # the launcher forks from its only thread
    _close_all(inherited)
    child_logging(log_queue)
    from squall.core.runtime.scheduler_server import SchedulerServer

    try:
        server = SchedulerServer(
            f"tcp://{config.host}:{config.port}", keys=_keys(config),
            allowed_failures=config.allowed_failures,
            heartbeat_timeout=config.heartbeat_timeout, validate=config.validate,
            stealing=config.stealing, control=control, record_to=config.record_to,
            origin=config.origin)
        address = server.bind()
    except Exception as e:  # reported to the user as one line by LocalCluster
        report.send(("error", f"scheduler: {type(e).__name__}: {e}".splitlines()[0]))
        return
    report.send(("ok", address))
    report.close()
    server.serve()


def worker_main(config: ClusterConfig, address: str, name: str, incarnation: int,
                control: Any, inherited: list[Any], log_queue: Any, port: int = 0) -> None:
    die_with_parent()  # even paused (SIGSTOP), it cannot outlive the launcher
    _close_all(inherited)
    child_logging(log_queue)
    from squall.core.runtime.worker_server import RegistrationError, WorkerServer

    server = WorkerServer(
        address, name=name, nthreads=config.threads, listen=f"tcp://{config.host}:{port}",
        keys=_keys(config), heartbeat_interval=config.heartbeat_interval,
        register_timeout=config.register_timeout, gather_timeout=config.gather_timeout,
        validate=config.validate, control=control, record_to=config.record_to,
        incarnation=incarnation, proxy_api=config.proxy_api, proxy_prefix=config.proxy_prefix,
        origin=config.origin)
    try:
        server.start()
    except RegistrationError as e:
        log.error("%s", e)
        raise SystemExit(3) from None
    server.serve()
    if server.rejoin:
        raise SystemExit(REJOIN_EXIT)  # the launcher starts it again, clean


# ------------------------------------------------------------------ the launcher


class _Child:
    __slots__ = ("kind", "name", "proc", "control", "started", "incarnation", "quick_deaths")

    def __init__(self, kind: str, name: str, proc: Any, control: Any, incarnation: int) -> None:
        self.kind = kind
        self.name = name
        self.proc = proc
        self.control = control  # our end of its control pipe
        self.started = time.monotonic()
        self.incarnation = incarnation
        self.quick_deaths = 0


class Launcher:
    """Runs in the launcher process: ``Launcher(...).run()``."""

    def __init__(self, config: ClusterConfig, conn: Any, method: str, log_queue: Any) -> None:
        self.config = config
        self.conn = conn
        self.method = method
        self.ctx: Any = multiprocessing.get_context(method)
        self.log_queue = log_queue
        self.address = ""
        self.scheduler: _Child | None = None
        self.workers: dict[str, _Child] = {}
        self.incarnations = 0
        self.stopping = False
        self._restarts: dict[str, tuple[float, int]] = {}  # name -> (when, quick deaths)
        self._resume: list[tuple[float, int]] = []  # (when, pid) to SIGCONT
        self._names = 0
        self.ports = dict(config.data_ports)  # worker name -> its fixed data port

    def _inherited(self, own: Any) -> list[Any]:
        """What a forked child must close: the parent's pipe and others' control pipes."""
        if self.method != "fork":
            return []
        out = [self.conn, own]
        if self.scheduler is not None:
            out.append(self.scheduler.control)
        out.extend(c.control for c in self.workers.values())
        return out

    def run(self) -> None:
        if not self._start_scheduler():
            return
        for _ in range(self.config.workers):
            self._start_worker(None)
        while True:
            now = time.monotonic()
            timeouts = [t for t, _ in self._restarts.values()] + [t for t, _ in self._resume]
            timeout = max(0.0, min(timeouts) - now) if timeouts else None
            waitables = [self.conn] + [c.proc.sentinel for c in self._children()]
            ready = multiprocessing.connection.wait(waitables, timeout)
            if self.conn in ready:
                try:
                    while self.conn.poll(0):
                        self._command(self.conn.recv())
                except (EOFError, OSError):
                    self.stopping = True  # the parent is gone
            for child in self._children():
                if child.proc.sentinel in ready:
                    self._exited(child)
            if self.stopping:
                self._stop()
                return
            self._due()

    def _children(self) -> list[_Child]:
        out = list(self.workers.values())
        if self.scheduler is not None:
            out.append(self.scheduler)
        return out

    def _send(self, msg: tuple[Any, ...]) -> None:
        try:
            self.conn.send(msg)
        except OSError:
            self.stopping = True

    def _start_scheduler(self) -> bool:
        control_r, control_w = self.ctx.Pipe(duplex=False)
        report_r, report_w = self.ctx.Pipe(duplex=False)
        inherited = self._inherited(control_w) + ([report_r] if self.method == "fork" else [])
        proc = self.ctx.Process(target=scheduler_main, name="squall-scheduler", daemon=True,
                                args=(self.config, control_r, report_w, inherited,
                                      self.log_queue))
        proc.start()
        control_r.close()
        report_w.close()
        try:
            if not report_r.poll(30.0):
                raise EOFError
            status, value = report_r.recv()
        except (EOFError, OSError):
            status, value = "error", "scheduler: exited before it was listening"
        report_r.close()
        if status != "ok":
            proc.kill()
            proc.join()
            self._send(("error", value))
            return False
        self.address = value
        self.scheduler = _Child("scheduler", "scheduler", proc, control_w, 0)
        self._send(("scheduler", value, proc.pid))
        return True

    def _start_worker(self, name: str | None, quick_deaths: int = 0) -> None:
        if name is None:
            while f"w{self._names}" in self.workers:
                self._names += 1
            name = f"w{self._names}"
            self._names += 1
        self.incarnations += 1
        control_r, control_w = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=worker_main, name=f"squall-worker-{name}", daemon=True,
                                args=(self.config, self.address, name, self.incarnations,
                                      control_r, self._inherited(control_w), self.log_queue,
                                      self.ports.get(name, 0)))
        proc.start()
        control_r.close()
        child = _Child("worker", name, proc, control_w, self.incarnations)
        child.quick_deaths = quick_deaths
        self.workers[name] = child
        self._send(("worker", name, proc.pid, self.incarnations))

    def _command(self, cmd: tuple[Any, ...]) -> None:
        kind = cmd[0]
        if kind == "stop":
            self.stopping = True
        elif kind == "add":
            name = cmd[1]
            if name is not None and name in self.workers:
                self._send(("refused", f"worker {name!r} is alive"))
            else:
                if len(cmd) > 2 and cmd[2]:
                    self.ports[name] = int(cmd[2])
                self._start_worker(name)
        elif kind == "pause":
            child = self.workers.get(cmd[1])
            if child is not None and child.proc.pid is not None:
                os.kill(child.proc.pid, signal.SIGSTOP)
                self._resume.append((time.monotonic() + float(cmd[2]), child.proc.pid))

    def _exited(self, child: _Child) -> None:
        child.proc.join()
        code = child.proc.exitcode
        child.control.close()
        if child.kind == "scheduler":
            self.scheduler = None
            if not self.stopping:
                self._send(("scheduler-exited", code))
                self.stopping = True
            return
        del self.workers[child.name]
        if self.stopping:
            return
        # The parent first: when a client hears of the death, the parent knows of it too.
        self._send(("exited", child.name, child.proc.pid, code))
        if self.scheduler is not None:
            try:
                self.scheduler.control.send_bytes(f"died {child.name} {child.proc.pid}".encode())
            except OSError:
                pass
        if self.config.restart or code == REJOIN_EXIT:
            quick = child.quick_deaths + 1 if time.monotonic() - child.started < RESTART_AFTER \
                else 0
            delay = 0.0 if quick <= 1 else min(5.0, 0.1 * 2 ** quick)
            self._restarts[child.name] = (time.monotonic() + delay, quick)

    def _due(self) -> None:
        now = time.monotonic()
        for name, (when, quick) in list(self._restarts.items()):
            if when <= now:
                del self._restarts[name]
                if name not in self.workers:
                    self._start_worker(name, quick)
        for when, pid in list(self._resume):
            if when <= now:
                self._resume.remove((when, pid))
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def _stop(self) -> None:
        children = self._children()
        for _, pid in self._resume:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for c in children:
            try:
                c.control.send_bytes(b"stop")
            except OSError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        for c in children:
            c.proc.join(max(0.0, deadline - time.monotonic()))
            if c.proc.exitcode is None:
                c.proc.kill()
                c.proc.join()
        self._send(("stopped",))


def launcher_main(config: ClusterConfig, conn: Any, parent_end: Any, method: str,
                  log_queue: Any, lifeline: bool = False) -> None:
    if lifeline:  # the parent forked us from its main thread (see squall.core.lifeline)
        die_with_parent()
    if parent_end is not None:
        parent_end.close()  # so that the parent's death shows as the end of our pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    Launcher(config, conn, method, log_queue).run()
