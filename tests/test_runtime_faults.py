"""Faults of squall's own real runtime: a scheduler that dies, freezes or restarts, a
worker paused past its heartbeat timeout, nonsense durations on the command line and
forged registrations.

Real-process tests are marked ``real`` and run in the xdist group "real", serially, as in
test_real_cluster.py. They wait on conditions with deadlines (a log line, a membership, an
error), never on a clock, and each checks at its end that no process it started is left.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from squall.core import protocol as p
from squall.core.lifeline import StderrLines, descendants, wait_gone
from squall.core.runtime import transport as net
from squall.core.runtime.client import Client, SchedulerLost
from squall.core.runtime.cluster import LocalCluster
from squall.core.runtime.scheduler_server import (
    MAX_NTHREADS,
    SchedulerServer,
    registration_problem,
)
from squall.core.runtime.worker_server import RegistrationError, WorkerServer

TIMEOUT = 30.0  # a deadline for what must happen, never a measure of how fast


def inc(x: int) -> int:
    return x + 1


def nap(x: int) -> int:
    time.sleep(0.05)  # the task body's own work (not a wait): the kill lands mid-run
    return x


# ------------------------------------------------------------------ processes


@pytest.fixture
def no_process_left() -> Iterator[None]:
    """Fails the test if a process it started outlives it (waiting, with a deadline, for
    those that are on their way out)."""
    before = descendants()
    yield
    left = wait_gone(lambda: descendants() - before, TIMEOUT)
    assert not left, f"processes left behind: {sorted(left)}"


class Proc:
    """A ``squall`` command in a process of its own (its tasks can call builtins, not this
    module's functions, which it cannot import); its stderr lines are collected by a
    thread, and ``wait_for`` waits until one matches."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from squall.cli.main import main; main()", *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        self.stderr = StderrLines(self.proc.stderr)
        self.lines = self.stderr.lines

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        found = self.stderr.first(predicate, TIMEOUT)
        assert found is not None, f"{what}: not seen; stderr was:\n" + "\n".join(self.lines)
        return found

    def count(self, predicate: Callable[[str], bool]) -> int:
        return self.stderr.count(predicate)

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.join(TIMEOUT)


def _free_port() -> int:
    """A free port below the ephemeral range, so that a worker reconnecting while nobody
    listens there can never be handed it as its own source port (a self-connection)."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    rng = random.Random()
    while True:
        port = rng.randrange(20000, min(low, 32768))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def _scheduler(address: str, *options: str) -> Proc:
    proc = Proc("scheduler", "--listen", address, "--insecure", *options)
    proc.wait_for(lambda x: f"listening at {address}" in x, "the scheduler listening")
    return proc


# ------------------------------------------------------------------ 1. the client


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_client_waiting_on_a_killed_scheduler_raises_scheduler_lost(no_process_left: None) -> None:
    with LocalCluster(workers=2, threads=1) as cluster, Client(cluster) as client:
        futures = client.map(nap, range(40))
        done = 0
        for _ in client.as_completed(futures, TIMEOUT):
            done += 1
            if done == 4:
                break
        os.kill(cluster.scheduler_pid, signal.SIGKILL)
        # The deadline only turns a hang into a failure: what must come is SchedulerLost.
        with pytest.raises(SchedulerLost, match=f"lost the scheduler at {cluster.address}"):
            client.gather(futures, TIMEOUT)
        assert isinstance(SchedulerLost("x"), ConnectionError)
        # Every later call says the same, at once.
        pending = [f for f in futures if f.status == "pending"]
        assert pending
        with pytest.raises(SchedulerLost):
            client.submit(inc, 1)
        with pytest.raises(SchedulerLost):
            client.info()
        with pytest.raises(SchedulerLost):
            pending[0].exception(TIMEOUT)  # not taken for the task's own exception
        with pytest.raises(SchedulerLost):
            list(client.as_completed(pending, TIMEOUT))


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_client_of_a_frozen_scheduler_raises_scheduler_lost(no_process_left: None) -> None:
    with LocalCluster(workers=1, threads=1) as cluster:
        client = Client(cluster, scheduler_timeout=0.5)
        try:
            assert client.submit(inc, 1).result(TIMEOUT) == 2
            os.kill(cluster.scheduler_pid, signal.SIGSTOP)  # alive, silent
            try:
                with pytest.raises(SchedulerLost, match=cluster.address):
                    client.submit(nap, 1).result(TIMEOUT)
            finally:
                os.kill(cluster.scheduler_pid, signal.SIGCONT)
        finally:
            client.close()


# ------------------------------------------------------------------ 2. standalone workers


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_standalone_worker_outlives_its_scheduler_and_rejoins_a_restarted_one(
        no_process_left: None) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    first = _scheduler(address)
    worker = Proc("worker", address, "--name", "wa", "--heartbeat-interval", "0.1",
                  "--insecure")
    second: Proc | None = None
    try:
        with Client(address) as client:
            client.wait_until(lambda: "wa" in client.workers, TIMEOUT, "wa registered")
            assert client.submit(abs, -1).result(TIMEOUT) == 1
            first.stop(signal.SIGKILL)
            with pytest.raises(SchedulerLost, match=address):
                client.gather([client.submit(abs, -2)], TIMEOUT)
        # The worker says so while the scheduler is still gone, not when it is back.
        worker.wait_for(lambda x: f"lost the scheduler at {address}" in x,
                        "the worker logging the lost scheduler")
        # Its retries are logged at attempts 1, 2, 4, ...
        worker.wait_for(lambda x: "has not accepted it yet (attempt 2," in x,
                        "the worker still trying")
        second = _scheduler(address)
        with Client(address) as client:
            client.wait_until(lambda: "wa" in client.workers, TIMEOUT, "wa rejoined")
            assert client.gather(client.map(abs, range(-9, 1)), TIMEOUT) == list(
                range(9, -1, -1))
        worker.wait_for(lambda x: "rejoined the scheduler" in x and "incarnation 1" in x,
                        "the worker rejoined as a new incarnation")
        assert worker.proc.poll() is None
        # A bounded log: a line at the loss, a few while waiting, one at the rejoin; the
        # new scheduler heard nothing from the old connection (nothing queued up).
        assert worker.count(lambda x: "WARNING" in x) <= 6, worker.lines
        assert second.count(lambda x: "dropped a message" in x) == 0, second.lines
    finally:
        worker.stop()
        first.stop()
        if second is not None:
            second.stop()
    assert worker.proc.returncode == 0


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_standalone_worker_paused_past_the_heartbeat_timeout_rejoins(
        no_process_left: None) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = _scheduler(address, "--heartbeat-timeout", "0.5")
    worker = Proc("worker", address, "--name", "wb", "--heartbeat-interval", "0.1",
                  "--insecure")
    try:
        with Client(address) as client:
            client.wait_until(lambda: "wb" in client.workers, TIMEOUT, "wb registered")
            old = client.workers["wb"]
            worker.proc.send_signal(signal.SIGSTOP)
            try:
                client.wait_until(lambda: "wb" not in client.workers, TIMEOUT,
                                  "wb declared dead")
            finally:
                worker.proc.send_signal(signal.SIGCONT)
            # Back as a new incarnation (a new data socket), in the same process.
            client.wait_until(lambda: client.workers.get("wb") not in (None, old), TIMEOUT,
                              "wb rejoined")
            assert client.submit(abs, -42).result(TIMEOUT) == 42
        assert worker.proc.poll() is None
        worker.wait_for(lambda x: "rejoined the scheduler" in x, "the rejoin logged")
    finally:
        worker.stop()
        scheduler.stop()
    assert worker.proc.returncode == 0


def test_cli_refuses_non_positive_durations_in_one_line(
        run_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    # Invalid addresses as well: were the flag accepted, the command would fail on the
    # address (another message) instead of starting a server.
    for argv, flag in [
        (["scheduler", "--listen", "tcp://nowhere", "--heartbeat-timeout", "-1"],
         "--heartbeat-timeout"),
        (["scheduler", "--listen", "tcp://nowhere", "--heartbeat-timeout", "0"],
         "--heartbeat-timeout"),
        (["scheduler", "--listen", "tcp://nowhere", "--heartbeat-timeout", "nan"],
         "--heartbeat-timeout"),
        (["worker", "tcp://nowhere", "--heartbeat-interval", "0"], "--heartbeat-interval"),
        (["worker", "tcp://nowhere", "--heartbeat-interval", "-0.5"], "--heartbeat-interval"),
        (["worker", "tcp://nowhere", "--register-timeout", "0"], "--register-timeout"),
    ]:
        code, out, err = run_cli(argv)
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"squall: error: {flag} must be a positive number"), err


def test_servers_refuse_non_positive_durations() -> None:
    for value in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="heartbeat_timeout"):
            SchedulerServer(heartbeat_timeout=value)
        with pytest.raises(ValueError, match="heartbeat_interval"):
            WorkerServer("tcp://127.0.0.1:1", heartbeat_interval=value)
        with pytest.raises(ValueError, match="heartbeat_interval"):
            LocalCluster(workers=0, heartbeat_interval=value)  # refused before any process
        with pytest.raises(ValueError, match="heartbeat_timeout"):
            LocalCluster(workers=0, heartbeat_timeout=value)
    SchedulerServer(heartbeat_timeout=None)  # no timeout at all is allowed


def _forged(**fields: object) -> p.RegisterWorker:
    base: dict[str, object] = {"stimulus_id": "", "worker": "forged", "nthreads": 1,
                               "address": "tcp://127.0.0.1:9", "pid": 1, "incarnation": 0}
    base.update(fields)
    return p.RegisterWorker(**base)  # type: ignore[arg-type]


ABSURD = {
    "nthreads 10^12": _forged(nthreads=10**12),
    "nthreads 0": _forged(nthreads=0),
    "nthreads -3": _forged(nthreads=-3),
    "name too long": _forged(worker="w" * 100_000),
    "name empty": _forged(worker=""),
    "name unprintable": _forged(worker="w\n0 registered"),
    "name reserved": _forged(worker="scheduler"),
    "pid -1": _forged(pid=-1),
    "incarnation -1": _forged(incarnation=-1),
    "address not tcp": _forged(address="ipc:///tmp/x"),
    "address too long": _forged(address="tcp://" + "h" * 10_000 + ":9"),
    "address port 0": _forged(address="tcp://127.0.0.1:0"),
}


def test_absurd_registrations_are_refused_in_process() -> None:
    server = SchedulerServer(max_nthreads=64)
    for i, (what, msg) in enumerate(ABSURD.items()):
        assert registration_problem(msg), what
        before = server.drops.count
        server._on_message(f"id-{i}".encode(), net.pack([msg]))
        assert server.drops.count == before + 1, what
        assert not server.workers and not server.state.workers, what
    assert "between 1 and 64" in registration_problem(_forged(nthreads=65), 64)
    assert registration_problem(_forged(nthreads=MAX_NTHREADS)) == ""
    assert registration_problem(_forged(address="tcp://[::1]:9")) == ""
    server._on_message(b"good", net.pack([_forged(nthreads=64)]))
    assert set(server.state.workers) == {"forged"}


def test_queued_reports_of_an_unknown_connection_are_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    server = SchedulerServer()
    beat = net.pack([p.Heartbeat(stimulus_id="h", time=0.0, worker="w0")])
    with caplog.at_level(logging.WARNING, logger="squall.scheduler"):
        for _ in range(100):
            server._on_message(b"old-connection", beat)
    assert server.drops.count == 100
    assert len([r for r in caplog.records if "dropped a message" in r.getMessage()]) == 1


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_scheduler_answers_a_forged_registration_with_a_refusal(no_process_left: None) -> None:
    with LocalCluster(workers=0) as cluster, Client(cluster) as client:
        ctx = zmq.Context()
        sockets: list[zmq.Socket] = []  # type: ignore[type-arg]
        greedy = WorkerServer(cluster.address, name="greedy", nthreads=MAX_NTHREADS + 1,
                              keys=cluster.keys)
        try:
            for what, msg in ABSURD.items():
                forger = net.make_socket(ctx, zmq.DEALER, keys=cluster.keys)
                sockets.append(forger)
                forger.connect(cluster.address)
                forger.send_multipart(net.pack([msg]))
                assert forger.poll(int(TIMEOUT * 1000)), f"{what}: no answer"
                answer, _ = net.unpack(forger.recv_multipart())
                assert [type(m) for m in answer] == [p.CloseWorker], what
                assert answer[0].reason.startswith("registration refused: "), what
                assert not answer[0].rejoin
            info = client.info()
            assert info.workers == {} and info.dropped >= len(ABSURD) and not info.halted
            # A real worker asking for too many threads hears why, in one line.
            with pytest.raises(RegistrationError, match=f"nthreads must be between 1 and "
                                                        f"{MAX_NTHREADS}, got {MAX_NTHREADS + 1}"):
                greedy.start()
            cluster.add_worker()  # still serving, and a sane worker still joins
            assert client.gather([client.submit(inc, 2)], TIMEOUT) == [3]
        finally:
            greedy._close()  # (started, were it accepted)
            for sock in sockets:
                sock.close(0)
            ctx.term()
