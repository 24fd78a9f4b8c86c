"""Process hygiene and local authentication (issue "reliability and security").

1. Every process squall starts dies with its parent, however the parent ends: SIGTERM
   (what a CI timeout sends; the command then exits 143 after a clean shutdown), SIGINT
   (exit 130) or SIGKILL. Each command runs as the leader of a new session, so whatever it
   started is found afterwards by its session id in /proc, reparented to init or not.
2. A cluster authenticates its members: a client without the cluster's CURVE keys is
   refused, one with them is served. Tested as the same user (authentication, not uid).

They wait on conditions with deadlines (a process count, an exit, a handshake event),
never on a clock.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from squall.core import lifeline
from squall.core import protocol as p
from squall.core.lifeline import descendants, proc_stat, session_members
from squall.core.runtime import transport as net
from squall.core.runtime.client import Client, Refused
from squall.core.runtime.cluster import LocalCluster

TIMEOUT = 60.0  # a deadline for what must happen, never a measure of how fast

# ------------------------------------------------------------------ waiting


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (a /proc scan: a process appearing has nothing to block on)
    until it holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)  # the polling interval of a condition, not a wait for it


def wait_gone(members: Callable[[], set[int]], what: str, timeout: float = TIMEOUT) -> None:
    """Wait until ``members()`` is empty (blocking on each one's exit), or fail at the
    deadline."""
    left = lifeline.wait_gone(members, timeout)
    if left:
        raise AssertionError(f"{what}: not within {timeout:g} s; left: {sorted(left)}")


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Command:
    """``squall ARGV`` as the leader of a session of its own; stderr in ``lines``."""

    def __init__(self, *argv: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "squall", *argv], cwd=cwd, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        self.sid = self.proc.pid
        self.stderr = lifeline.StderrLines(self.proc.stderr)
        self.lines = self.stderr.lines

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (waiting for it, with a deadline)."""
        line = self.stderr.first(lambda x: re.search(pattern, x), TIMEOUT)
        found = None if line is None else re.search(pattern, line)
        assert found is not None, f"{pattern!r} not seen; stderr:\n" + "\n".join(self.lines)
        return found

    def members(self) -> set[int]:
        return session_members(self.sid)

    def finish(self, sig: int) -> int:
        """Send ``sig`` to the command alone; its exit code once it and everything it
        started are gone (whatever is left after the deadline is killed, and fails)."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            pytest.fail(f"squall did not exit within {TIMEOUT:g} s of signal {sig}")
        self.stderr.join(TIMEOUT)
        try:
            wait_gone(self.members, "every process of the session gone")
        except AssertionError:
            left = self.members()
            _kill_all(left)
            pytest.fail(f"after signal {sig}, processes left behind: {sorted(left)}; "
                        "stderr:\n" + "\n".join(self.lines[-20:]))
        return code

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _kill_all(self.members())


EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}
SIGNALS = pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                                  ids=["SIGTERM", "SIGINT", "SIGKILL"])


# ------------------------------------------------------------------ 1. no orphans


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
@SIGNALS
def test_squall_run_with_network_faults_leaves_no_process(sig: int, tmp_path: Path) -> None:
    # storm: real processes, network faults (the proxy server runs), 4 workers
    run = Command("run", "storm", "--runtime", "real", "--no-trace", cwd=tmp_path)
    try:
        # the command, the proxy server, the launcher, the scheduler and 4 workers
        wait_until(lambda: len(descendants(run.sid)) >= 7, "the cluster and its proxy up")
        assert run.proc.poll() is None
        code = run.finish(sig)
    finally:
        run.cleanup()
    assert code == EXIT[sig], run.lines[-5:]
    if sig == signal.SIGTERM:
        assert run.lines[-1] == "squall: terminated"


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
@SIGNALS
def test_squall_explore_leaves_no_job(sig: int, tmp_path: Path) -> None:
    """SIGKILL just after the jobs are forked: a job that had not yet asked for the
    parent-death signal found itself reparented, and its parent's sentinel pipe still
    open (its sibling holds it too), and ran on (``squall.core.lifeline``)."""
    explore = Command("explore", "--budget", "600", "--jobs", "2", "--out",
                      str(tmp_path / "traces"), cwd=tmp_path)
    try:
        wait_until(lambda: len(descendants(explore.sid)) >= 2, "both jobs started")
        code = explore.finish(sig)
    finally:
        explore.cleanup()
    assert code == EXIT[sig], explore.lines[-5:]


def _late_child(go: int, report: int) -> None:
    """Asks for the parent-death signal only once told to (its parent is dead by then)."""
    os.read(go, 1)
    lifeline.die_with_parent()
    os.write(report, b"survived")


def _sibling() -> None:
    threading.Event().wait()  # alive, holding what it inherited, until the test kills it


def _middle(go: int, report: int, pids: int) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    late = ctx.Process(target=_late_child, args=(go, report))
    late.start()
    sibling = ctx.Process(target=_sibling)  # forked after it: holds its sentinel's pipe
    sibling.start()
    os.write(pids, f"{late.pid} {sibling.pid}\n".encode())
    threading.Event().wait()  # until killed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_child_whose_parent_died_before_it_asked_dies_at_once() -> None:
    """The race behind a job outliving a SIGKILLed ``squall explore``, made certain: the
    parent dies before its first child asks for the parent-death signal, while a second
    child forked after it still holds the write end of the first one's sentinel pipe."""
    go_r, go_w = os.pipe()
    report_r, report_w = os.pipe()
    pids_r, pids_w = os.pipe()
    os.set_blocking(report_r, False)
    middle = os.fork()
    if middle == 0:
        try:
            _middle(go_r, report_w, pids_w)
        finally:
            os._exit(1)
    try:
        assert select.select([pids_r], [], [], TIMEOUT)[0], "the children not started"
        with os.fdopen(pids_r) as f:
            late, sibling = (int(x) for x in f.readline().split())
    finally:
        os.kill(middle, signal.SIGKILL)
        assert os.waitpid(middle, 0)[0] == middle  # dead and reaped: its pid names no one
    try:
        os.write(go_w, b"g")
        assert lifeline.wait_gone(lambda: {late} if lifeline.alive(late) else set(),
                                  TIMEOUT) == set(), "the child neither died nor went on"
        try:
            said = os.read(report_r, 64)
        except BlockingIOError:
            said = b""
        assert said == b"", "the child of a dead parent ran on"
        assert lifeline.alive(sibling)  # (it never asked: only the test ends it)
    finally:
        _kill_all({pid for pid in (late, sibling) if lifeline.alive(pid)})
        lifeline.wait_gone(lambda: {x for x in (late, sibling) if lifeline.alive(x)}, TIMEOUT)
        for fd in (go_r, go_w, report_r, report_w, pids_w):
            os.close(fd)


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_scheduler_and_a_paused_worker_die_with_a_killed_launcher() -> None:
    """A worker paused with SIGSTOP cannot see its launcher's pipe close; it still dies."""
    cluster = LocalCluster(workers=2, threads=1)
    launcher = cluster._launcher.pid
    assert launcher is not None
    children = descendants(launcher)
    try:
        assert len(children) == 3  # the scheduler and two workers
        paused = cluster.workers["w0"].pid
        cluster.pause_worker("w0", 3600)
        wait_until(lambda: (proc_stat(paused) or ("?",))[0] == "T", "w0 stopped")
        os.kill(launcher, signal.SIGKILL)
        wait_gone(lambda: {pid for pid in children if (proc_stat(pid) or "Z")[0] not in "ZX"},
                  "the launcher's children gone")
    finally:
        _kill_all({pid for pid in children if proc_stat(pid) is not None})
        cluster.close()


def test_sigterm_is_handled_like_ctrl_c_in_process(
        run_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    """In-process: the handler is installed for the command only, then restored."""
    before = signal.getsignal(signal.SIGTERM)
    from squall.cli import signals

    with signals.sigterm_as_interrupt() as term:
        assert signal.getsignal(signal.SIGTERM) is signals._raise_terminated
        with pytest.raises(signals.Terminated):
            signal.raise_signal(signal.SIGTERM)  # its handler runs before this returns
        assert term.received
    assert signal.getsignal(signal.SIGTERM) == before
    code, _, _ = run_cli(["scenarios"])
    assert code == 0 and signal.getsignal(signal.SIGTERM) == before


class _Swallows:
    """Raises SIGTERM's Terminated where Python cannot let it out (a __del__)."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)


def test_a_sigterm_lost_where_python_cannot_raise_comes_again() -> None:
    """An at-fork hook, a __del__: the Terminated raised there is reported as unraisable
    and lost; it must come again where the main thread goes next."""
    from squall.cli import signals

    with signals.sigterm_as_interrupt() as term:
        # A process forked meanwhile has SIGTERM's default action, not the handler.
        assert signal.getsignal(signal.SIGTERM) is signals._raise_terminated
        pid = os.fork()
        if pid == 0:
            os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 1)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        with pytest.raises(signals.Terminated):
            _Swallows()  # its __del__ runs here, and the Terminated is lost there...
            threading.Event().wait(TIMEOUT)  # ...then raised in this wait, its deadline
        assert term.received


def test_an_authenticator_whose_stop_was_interrupted_stops_again_at_once() -> None:
    """A SIGTERM raised in the authenticator's stop() -- after it told its thread to end,
    while it joined it -- left a ``squall worker`` that was rejoining its scheduler hung at
    exit: the stop() run by the authenticator's __del__ sent to a pipe nobody read any
    more. Here the interrupted stop is replayed step by step; the next stop() must
    return."""
    ctx = zmq.Context()
    auth = net.start_authenticator(ctx, net.new_keys())
    auth.pipe.send(b"TERMINATE")  # what stop() did before the signal came...
    auth.thread.join(TIMEOUT)  # ...and its thread ended meanwhile, closing its end
    assert not auth.thread.is_alive()
    # Once ZeroMQ has seen that end close, a send would block (no peer: not writable).
    wait_until(lambda: not auth.pipe.get(zmq.EVENTS) & zmq.POLLOUT, "the pipe's peer gone")
    stopping = threading.Thread(target=auth.stop, daemon=True)
    stopping.start()
    stopping.join(TIMEOUT)  # a deadline: were it to block, it would block forever
    assert not stopping.is_alive(), "stop() blocked on the pipe of a thread that ended"
    assert auth.pipe is None and auth.zap_socket is None
    auth.stop()  # and again (its __del__ does): nothing to do
    ctx.term()


# ------------------------------------------------------------------ 2. authentication


def _refused_handshake(address: str, keys: net.Keys | None) -> int:
    """Connect a raw DEALER (no keys, or ``keys``) and send a registration; return the
    handshake-failure event the peer's refusal caused (waiting for it, with a deadline)."""
    from zmq.utils.monitor import recv_monitor_message

    ctx = zmq.Context()
    sock = net.make_socket(ctx, zmq.DEALER, keys=keys)
    monitor = sock.get_monitor_socket(net.REFUSAL_EVENTS | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        sock.connect(address)
        sock.send_multipart(net.pack([p.RegisterClient(stimulus_id="", client="intruder")]))
        while True:
            assert monitor.poll(int(TIMEOUT * 1000)), "no handshake outcome"
            event = recv_monitor_message(monitor)["event"]
            assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, f"{address} let it in"
            if event & net.REFUSAL_EVENTS:
                assert not sock.poll(0)  # and nothing came back
                return int(event)
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)
        ctx.term()


def _whoami() -> int:
    return os.getpid()


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_local_cluster_refuses_a_client_without_its_keys() -> None:
    with LocalCluster(workers=1, threads=1) as cluster, Client(cluster) as client:
        assert cluster.keys is not None and cluster.keys.directory == ""  # in memory only
        assert "secret" not in repr(cluster.keys)
        # With the keys (from the cluster object): served.
        assert client.submit(_whoami).result(TIMEOUT) == cluster.workers["w0"].pid
        # Only the address: refused at the handshake, at once, saying why.
        with pytest.raises(Refused, match="requires the cluster's CURVE keys"):
            Client(cluster.address, timeout=TIMEOUT)
        # Another cluster's keys: refused too.
        with pytest.raises(Refused, match="not the cluster's"):
            Client(cluster.address, keys=net.new_keys(), timeout=TIMEOUT)
        # Raw sockets see no answer: the scheduler and the worker's data socket refuse the
        # handshake, so no byte of theirs reaches anything that unpickles.
        worker_data = client.workers["w0"]
        for address in (cluster.address, worker_data):
            for keys in (None, net.new_keys()):
                assert _refused_handshake(address, keys) & net.REFUSAL_EVENTS
        info = client.info()
        assert info.refused >= 3 and info.dropped == 0 and set(info.workers) == {"w0"}
        assert client.submit(abs, -7).result(TIMEOUT) == 7  # members still served


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_local_cluster_insecure_is_explicit() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        LocalCluster(workers=0, keys=net.new_keys(), insecure=True)
    with LocalCluster(workers=1, insecure=True) as cluster, Client(cluster.address) as client:
        assert cluster.keys is None
        assert client.submit(abs, -1).result(TIMEOUT) == 1


def test_key_files_are_private_from_the_start(tmp_path: Path) -> None:
    secret = net.create_keys(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o700
    assert secret.stat().st_mode & 0o077 == 0
    assert net.load_keys(tmp_path / "k").secret  # type: ignore[arg-type]


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_standalone_scheduler_makes_private_keys_and_refuses_clients_without_them(
        tmp_path: Path) -> None:
    from squall.chaos.network import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    scheduler = Command("scheduler", "--listen", address, cwd=tmp_path)
    worker: Command | None = None
    try:
        keys = Path(scheduler.wait_for(r"CURVE keys in (\S+) ").group(1))
        scheduler.wait_for(f"listening at {address}")
        assert keys.stat().st_mode & 0o777 == 0o700
        assert (keys / "squall.key_secret").stat().st_mode & 0o077 == 0
        # A worker must say which: the scheduler's keys, or --insecure.
        bare = subprocess.run([sys.executable, "-m", "squall", "worker", address],
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert bare.returncode == 2 and "--keys DIR" in bare.stderr
        worker = Command("worker", address, "--keys", str(keys), "--name", "wk", cwd=tmp_path)
        with Client(address, keys=str(keys), timeout=TIMEOUT) as client:
            client.wait_until(lambda: "wk" in client.workers, TIMEOUT, "wk registered")
            assert client.submit(abs, -5).result(TIMEOUT) == 5
            with pytest.raises(Refused, match="requires the cluster's CURVE keys"):
                Client(address, timeout=TIMEOUT)
        assert worker.finish(signal.SIGTERM) == 143
        assert scheduler.finish(signal.SIGTERM) == 143
        assert not keys.exists()  # removed at exit
    finally:
        scheduler.cleanup()
        if worker is not None:
            worker.cleanup()
