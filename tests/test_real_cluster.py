"""The real cluster: scheduler and worker processes over ZeroMQ, and the client API.

Real-process tests are marked ``real`` and run in one xdist group, serially; they wait on
conditions with deadlines (a future's result, a log record's event), never on a clock.
The decoder fuzz at the top runs in-process, with no sockets.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.cli.main import main
from squall.core import protocol as p
from squall.core.graph import GraphError, TaskGraph
from squall.core.runtime import transport as net
from squall.core.runtime.client import Client, KilledWorker, RemoteTraceback
from squall.core.runtime.cluster import LocalCluster
from squall.core.runtime.launcher import REJOIN_EXIT
from squall.core.runtime.scheduler_server import SchedulerServer
from squall.core.runtime.worker_server import RegistrationError, WorkerServer
from squall.core.scheduler import SchedulerState, SchedulerTaskState
from squall.core.worker import WorkerState

TIMEOUT = 30.0


def inc(x: int) -> int:
    return x + 1


def add(*xs: int) -> int:
    return sum(xs)


def slow_add(*xs: int) -> int:
    time.sleep(0.01)  # the task body's own work (not a wait): a kill lands mid-run
    return sum(xs)


def fail(x: int) -> int:
    raise ValueError(f"bad input {x}")


def big(n: int) -> bytes:
    return hashlib.sha256(b"seed").digest() * (n // 32)


def digest_on(data: bytes) -> tuple[int, str]:
    return os.getpid(), hashlib.sha256(data).hexdigest()


def exit_once(marker: str) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker process dies mid-task
    return 42


def always_exit() -> None:
    os._exit(1)


def locked() -> threading.Lock:
    return threading.Lock()  # a result that cannot be pickled


# ------------------------------------------------------------------ fuzz, in-process

_CLIENT_ID = b"client-id"
_WORKER_ID = b"worker-id"
_STRANGER = b"stranger"

_valid_msgs = st.sampled_from([
    p.UpdateGraph(stimulus_id="g", time=0.0, client="c", tasks=(p.TaskSpecMsg("x-1"),),
                  wanted=("x-1",)),
    p.TaskFinished(stimulus_id="f", time=0.0, worker="w", key="x-1", nbytes=1, duration=0.1),
    p.RunSpecs(stimulus_id="", funcs=("t",), keys=("x-1",), func_of=("t",)),
    p.DataReply(stimulus_id="", worker="w", keys=("a", "b")),
    p.Heartbeat(stimulus_id="h", time=0.0, worker="w"),
])
_foreign_ops = st.text(min_size=1, max_size=12).filter(
    lambda s: s not in {"register-client", "register-worker"})


@st.composite
def bad_messages(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """(sender, frames): random bytes, truncated valid messages, wrong tags, messages a
    peer may not send, and anything at all from a peer that never registered."""
    kind = draw(st.sampled_from(["random", "truncated", "wrong-tag", "not-allowed",
                                 "frame-count", "unregistered"]))
    if kind == "random":
        header = draw(st.binary(max_size=64))
        return _CLIENT_ID, [header, *draw(st.lists(st.binary(max_size=8), max_size=3))]
    if kind == "truncated":
        data = net.pack([draw(_valid_msgs)])[0]
        return _CLIENT_ID, [data[:draw(st.integers(0, len(data) - 1))]]
    if kind == "wrong-tag":
        body = {"op": draw(_foreign_ops), "stimulus_id": "x", "time": 0.0}
        return draw(st.sampled_from([_CLIENT_ID, _WORKER_ID])), [
            msgspec.msgpack.encode([body])]
    if kind == "not-allowed":  # a worker's message from a client, and the reverse
        sender, msg = draw(st.sampled_from([
            (_CLIENT_ID, p.TaskFinished(stimulus_id="f", time=0.0, worker="w", key="x",
                                        nbytes=1, duration=0.1)),
            (_CLIENT_ID, p.Halted(stimulus_id="", where="w", reason="no")),
            (_WORKER_ID, p.UpdateGraph(stimulus_id="g", time=0.0, client="c", tasks=(),
                                       wanted=())),
            (_WORKER_ID, p.InfoRequest(stimulus_id="", client="c")),
        ]))
        return sender, net.pack([msg])
    if kind == "frame-count":  # a header announcing frames that did not come
        msg = p.RunSpecs(stimulus_id="", funcs=("t",), keys=("x-1",), func_of=("t",))
        return _CLIENT_ID, net.pack([msg], [b"only one"])
    return _STRANGER, net.pack([draw(_valid_msgs)])


def _fuzz_target() -> SchedulerServer:
    from squall.invariants import SchedulerValidator

    server = SchedulerServer()
    server.validator = SchedulerValidator(server.state)
    server._on_message(_CLIENT_ID, net.pack([p.RegisterClient(stimulus_id="", client="c")]))
    server._on_message(_WORKER_ID, net.pack([p.RegisterWorker(
        stimulus_id="", worker="w", nthreads=1, address="tcp://127.0.0.1:1")]))
    return server


def test_fuzzed_frames_are_counted_and_dropped_in_process() -> None:
    server = _fuzz_target()

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(bad_messages())
    def feed(message: tuple[bytes, list[bytes]]) -> None:
        # Each bad message is counted once (Hypothesis may replay an example, so compare
        # against the count just before it, not a running total).
        sender, frames = message
        before = server.drops.count
        server._on_message(sender, frames)
        assert server.drops.count == before + 1
        assert not server.halted
        assert server.state.tasks == {}
        assert set(server.workers) == {"w"} and set(server.clients) == {"c"}

    feed()
    server.validator.check_full()


def test_decoder_raises_only_protocol_errors() -> None:
    @settings(max_examples=500, deadline=None)
    @given(st.lists(st.binary(max_size=40), max_size=4))
    def decode(parts: list[bytes]) -> None:
        try:
            msgs, frames = net.unpack(parts)
        except p.ProtocolError:
            return
        assert len(frames) == sum(net.frame_count(m) for m in msgs)

    decode()


def test_cli_refuses_to_listen_beyond_loopback_without_keys(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: object) -> None:
    with pytest.raises(SystemExit) as e:
        main(["scheduler", "--listen", "tcp://0.0.0.0:8786"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("squall: error: tcp://0.0.0.0:8786 is not a loopback address")
    assert len(err.splitlines()) == 1
    keydir = f"{tmp_path}/keys"
    main(["keys", keydir])
    assert os.stat(f"{keydir}/squall.key_secret").st_mode & 0o077 == 0
    with pytest.raises(SystemExit) as e:
        main(["keys", keydir])
    assert e.value.code == 2
    assert "exists already" in capsys.readouterr().err


def test_worker_computes_a_key_it_was_fetching_when_the_transfer_fails() -> None:
    """Found by the real cluster: a worker fetching x from a peer that dies is asked to
    compute x (the scheduler recomputes the lost key there); the transfer then fails.
    It must compute x, not report x missing (the scheduler waits for it to compute)."""
    ws = WorkerState("w1")
    ws.handle(p.ComputeTask(stimulus_id="s1", time=0.0, worker="w1", key="y-0", prefix="y",
                            priority=(0, 2), duration=0.1,
                            deps=(p.DepInfo("x-0", ("w0",), 5),)))
    ws.handle(p.ComputeTask(stimulus_id="s2", time=0.1, worker="w1", key="x-0", prefix="x",
                            priority=(0, 1), duration=0.1))
    ws.handle(p.FreeKeys(stimulus_id="s2", time=0.1, worker="w1", keys=("y-0",)))
    out = ws.handle(p.GatherDepFailure(stimulus_id="s3", time=0.2, holder="w0",
                                       keys=("x-0",)))
    assert [type(m) for m in out] == [p.Execute] and out[0].key == "x-0"
    assert ws.tasks["x-0"].state == "executing" and ws.tasks["x-0"].runnable


# ------------------------------------------------------------------ real processes


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_submit_gather_round_trip() -> None:
    with LocalCluster(workers=2, threads=1) as cluster, Client(cluster) as client:
        assert set(cluster.workers) == {"w0", "w1"}
        assert all(w.pid > 0 and w.pid != os.getpid() for w in cluster.workers.values())
        f = client.submit(inc, 1)
        assert f.result(TIMEOUT) == 2
        g = client.submit(add, f, 10, key="add-1")  # a future as an argument: its value
        assert g.key == "add-1" and g.result(TIMEOUT) == 12
        futures = client.map(inc, range(100))
        assert client.gather(futures, TIMEOUT) == list(range(1, 101))
        done = {fut.key for fut in client.as_completed(futures, TIMEOUT)}
        assert done == {fut.key for fut in futures}
        graph = TaskGraph()
        graph.add("a-0", inc, 1)
        graph.add("b-0", inc, 2)
        graph.add("c-0", add, 100, deps=("a-0", "b-0"))  # add(100, a, b)
        out = client.compute(graph)
        assert {k: v.result(TIMEOUT) for k, v in out.items()} == {"a-0": 2, "b-0": 3,
                                                                 "c-0": 105}
        before = client.info().n_tasks
        for fut in futures:
            fut.release()
        assert client.info().n_tasks == before - 100
        assert client.info().dropped == 0


def _ipv6_loopback() -> bool:
    """Whether this machine can bind IPv6 loopback (::1)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize(("host", "proxy"), [("::1", False), ("[::1]", True)])
def test_a_cluster_on_ipv6_loopback_serves_a_client(host: str, proxy: bool) -> None:
    """Scheduler, workers' data sockets and client on [::1] (ZeroMQ's IPv6 is off unless
    a socket asks), the host written with or without brackets, with the built-in proxy
    on every link or without: the sum's inputs move worker to worker over it."""
    with LocalCluster(workers=2, threads=1, host=host, proxy=proxy) as cluster:
        assert cluster.address.startswith("tcp://[::1]:")
        with Client(cluster.address, keys=cluster.keys, timeout=TIMEOUT) as client:
            futures = client.map(inc, range(10))
            assert client.submit(add, *futures).result(TIMEOUT) == 55
            assert all(a.startswith("tcp://[::1]:") for a in client.workers.values())


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_the_readme_example_of_a_clients_keys_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """README's ``Client(..., keys=...)`` example, as README shows it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S)
              if "Client(cluster.address, keys=keys)" in b]
    assert len(blocks) == 1, "README has one example of a Client's keys="
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme_example"})
    assert "requires the cluster's CURVE keys" in capsys.readouterr().out


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_tasks_waiting_for_a_worker_run_on_the_first_that_joins() -> None:
    # The new worker's first batch holds both its acceptance and the tasks placed on it.
    with LocalCluster(workers=0) as cluster, Client(cluster) as client:
        futures = client.map(inc, range(10))
        assert cluster.add_worker() == "w0"
        assert client.gather(futures, TIMEOUT) == list(range(1, 11))


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_task_errors_come_back_with_the_remote_traceback() -> None:
    with LocalCluster(workers=2, threads=1) as cluster, Client(cluster) as client:
        f = client.submit(fail, 7)
        with pytest.raises(ValueError, match="bad input 7") as e:
            f.result(TIMEOUT)
        assert isinstance(e.value.__cause__, RemoteTraceback)
        assert "in fail" in e.value.__cause__.text  # the worker's own frames
        # A dependent of a failed task fails with the same exception.
        g = client.submit(inc, f)
        with pytest.raises(ValueError, match="bad input 7"):
            g.result(TIMEOUT)
        # Refused at submission: the function cannot be pickled.
        lock = threading.Lock()
        with pytest.raises(GraphError, match="cannot be pickled"):
            client.submit(lambda: lock.acquire(), key="bad-fn")
        # A result that cannot be pickled fails its task, naming it.
        with pytest.raises(net.SerializationError, match="the result of task 'locked-1'"):
            client.submit(locked, key="locked-1").result(TIMEOUT)
        # The cluster goes on.
        assert client.submit(inc, 41).result(TIMEOUT) == 42


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_dependency_travels_peer_to_peer_not_through_the_scheduler() -> None:
    size = 4 << 20
    with LocalCluster(workers=2, threads=1) as cluster, Client(cluster) as client:
        graph = TaskGraph()
        graph.add("big-0", big, size, restrictions=("w0",))
        graph.add("use-0", digest_on, deps=("big-0",), restrictions=("w1",))
        pid, digest = client.compute(graph, keys=["use-0"])["use-0"].result(TIMEOUT)
        assert pid == cluster.workers["w1"].pid  # it ran on w1, and big-0 on w0
        assert digest == hashlib.sha256(big(size)).hexdigest()
        info = client.info()
        # 4 MiB went from w0 to w1; the scheduler saw headers only.
        assert info.bytes_in + info.bytes_out < size // 8, info


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_worker_sigkilled_mid_run_all_keys_right() -> None:
    with LocalCluster(workers=2, threads=1, allowed_failures=3) as cluster, \
            Client(cluster) as client:
        graph = TaskGraph()
        level = []
        for i in range(64):
            graph.add(f"leaf-{i}", slow_add, i)
            level.append(f"leaf-{i}")
        depth = 0
        while len(level) > 1:
            depth += 1
            nxt = []
            for j in range(0, len(level), 2):
                key = f"sum{depth}-{j // 2}"
                graph.add(key, slow_add, deps=tuple(level[j:j + 2]))
                nxt.append(key)
            level = nxt
        futures = client.compute(graph)
        finished = 0
        for _ in client.as_completed(futures.values(), TIMEOUT):
            finished += 1
            if finished == 20:  # mid-run: data on both workers, tasks queued on both
                victim = cluster.kill_worker("w0")
                break
        assert futures[level[0]].result(TIMEOUT) == sum(range(64))
        assert client.gather(futures.values(), TIMEOUT) == [
            _expected(graph, k) for k in futures]
        assert any(pid == victim for _, pid, _ in cluster.exits)


def _expected(graph: TaskGraph, key: str) -> int:
    spec = graph[key]
    return sum(spec.args) + sum(_expected(graph, d) for d in spec.deps)


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_worker_death_inside_a_task_is_recovered_up_to_allowed_failures(tmp_path: object) -> None:
    with LocalCluster(workers=2, threads=1, allowed_failures=1) as cluster, \
            Client(cluster) as client:
        # Dies once: run again elsewhere, and succeeds.
        assert client.submit(exit_once, f"{tmp_path}/marker").result(TIMEOUT) == 42
        # Dies every time: after allowed_failures deaths the task errs.
        with pytest.raises(KilledWorker, match="allowed_failures=1"):
            client.submit(always_exit).result(TIMEOUT)
        client.wait_for_workers(2, TIMEOUT)  # restarted under the same names
        assert client.submit(inc, 1).result(TIMEOUT) == 2
        assert len(cluster.exits) >= 3


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_a_frozen_worker_is_declared_dead_after_the_heartbeat_timeout() -> None:
    with LocalCluster(workers=2, threads=1, heartbeat_interval=0.05,
                      heartbeat_timeout=0.3) as cluster, Client(cluster) as client:
        old = cluster.workers["w0"]
        address = client.workers["w0"]
        cluster.pause_worker("w0", 1.0)  # SIGSTOP: alive, silent
        client.wait_until(lambda: client.workers.get("w0") != address, TIMEOUT,
                          "w0 dropped from the membership")
        # Its tasks go elsewhere meanwhile.
        assert client.gather(client.map(inc, range(20)), TIMEOUT) == list(range(1, 21))
        # Resumed, it is told to rejoin; the launcher starts a new incarnation.
        client.wait_until(lambda: any(pid == old.pid for _, pid, _ in cluster.exits),
                          TIMEOUT, "the frozen w0 exited")
        assert next(code for _, pid, code in cluster.exits if pid == old.pid) == REJOIN_EXIT
        client.wait_until(lambda: "w0" in client.workers, TIMEOUT, "w0 came back")
        assert cluster.workers["w0"].incarnation > old.incarnation


def _raw_socket(ctx: zmq.Context, address: str,  # type: ignore[type-arg]
                keys: net.Keys | None) -> zmq.Socket:  # type: ignore[type-arg]
    s = net.make_socket(ctx, zmq.DEALER, keys=keys)
    s.connect(address)
    return s


def _ask_info(sock: zmq.Socket, name: str) -> p.SchedulerInfo:  # type: ignore[type-arg]
    """Ask over this connection: the answer comes after everything it sent before."""
    sock.send_multipart(net.pack([p.InfoRequest(stimulus_id="", client=name)]))
    while True:
        assert sock.poll(TIMEOUT * 1000), "the scheduler stopped answering"
        msgs, _ = net.unpack(sock.recv_multipart())
        for m in msgs:
            if type(m) is p.SchedulerInfo:
                return m


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_fuzzed_frames_are_rejected_while_the_scheduler_keeps_serving() -> None:
    with LocalCluster(workers=1, threads=1, validate=True) as cluster, \
            Client(cluster) as client:
        ctx = zmq.Context()
        stranger = _raw_socket(ctx, cluster.address, cluster.keys)
        fuzzer = _raw_socket(ctx, cluster.address, cluster.keys)
        fuzzer.send_multipart(net.pack([p.RegisterClient(stimulus_id="", client="fuzzer")]))
        assert fuzzer.poll(TIMEOUT * 1000)
        fuzzer.recv_multipart()  # membership: registered
        before = _ask_info(fuzzer, "fuzzer").dropped
        sent = 0

        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(bad_messages())
        def send(message: tuple[bytes, list[bytes]]) -> None:
            nonlocal sent
            sender, frames = message
            if sender == _WORKER_ID:
                return  # no registered worker socket here; workers are fuzzed in-process
            (stranger if sender == _STRANGER else fuzzer).send_multipart(frames)
            sent += 1

        send()
        stranger.send_multipart(net.pack([p.RegisterClient(stimulus_id="", client="late")]))
        _ask_info(stranger, "late")
        info = _ask_info(fuzzer, "fuzzer")
        assert info.dropped - before == sent and not info.halted
        assert client.submit(inc, 1).result(TIMEOUT) == 2  # still serving, state intact
        stranger.close(0)
        fuzzer.close(0)
        ctx.term()


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_curve_scheduler_refuses_a_worker_with_the_wrong_key(tmp_path: object) -> None:
    good, bad = f"{tmp_path}/good", f"{tmp_path}/bad"
    net.create_keys(good)
    net.create_keys(bad)
    with LocalCluster(workers=1, threads=1, keys=good) as cluster, Client(cluster) as client:
        assert client.submit(inc, 1).result(TIMEOUT) == 2  # members with the key work
        intruder = WorkerServer(cluster.address, name="intruder", keys=net.load_keys(bad),
                                register_timeout=0.5)
        with pytest.raises(RegistrationError, match="did not accept"):
            intruder.start()
        with pytest.raises(ConnectionError):
            Client(cluster.address, keys=bad, timeout=0.5)
        # Knowing the scheduler's public key is not enough: its own key pair must be the
        # cluster's (checked by the ZAP handler).
        ctx = zmq.Context()
        sneak = ctx.socket(zmq.DEALER)
        sneak.linger = 0
        wrong = net.load_keys(bad)
        sneak.curve_serverkey = net.load_keys(good).public
        sneak.curve_publickey, sneak.curve_secretkey = wrong.public, wrong.secret
        sneak.connect(cluster.address)
        sneak.send_multipart(net.pack([p.RegisterClient(stimulus_id="", client="sneak")]))
        assert not sneak.poll(500)
        sneak.close()
        ctx.term()
        info = client.info()
        assert set(info.workers) == {"w0"}
        assert info.refused >= 3


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_worker_logs_reach_the_parent() -> None:
    seen = threading.Event()
    records: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "hello from the task" in record.getMessage():
                records.append(record)
                seen.set()

    root = logging.getLogger()
    handler = Catch(level=logging.WARNING)
    root.addHandler(handler)
    try:
        with LocalCluster(workers=1, threads=1) as cluster, Client(cluster) as client:
            pid = client.submit(_log_hello).result(TIMEOUT)
            assert seen.wait(TIMEOUT)
            assert pid == cluster.workers["w0"].pid
            assert records[0].process == pid and records[0].processName == "squall-worker-w0"
    finally:
        root.removeHandler(handler)


def _log_hello() -> int:
    logging.getLogger("user.task").warning("hello from the task")
    return os.getpid()


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_strict_mode_violation_reaches_the_client_as_invariant_violation() -> None:
    from squall.invariants import InvariantViolation

    with LocalCluster(workers=0, validate=True) as cluster, Client(cluster) as client:
        # A worker that lies: it reports a negative size for the task it was given.
        ctx = zmq.Context()
        liar = _raw_socket(ctx, cluster.address, cluster.keys)
        liar.send_multipart(net.pack([p.RegisterWorker(
            stimulus_id="", worker="liar", nthreads=1, address="tcp://127.0.0.1:9")]))
        f = client.submit(inc, 1, key="inc-1")
        key = None
        while key is None:
            assert liar.poll(TIMEOUT * 1000)
            msgs, _ = net.unpack(liar.recv_multipart())
            key = next((m.key for m in msgs if type(m) is p.ComputeTask), None)
        liar.send_multipart(net.pack([p.TaskFinished(
            stimulus_id="lie", time=0.0, worker="liar", key=key, nbytes=-5, duration=0.1)]))
        with pytest.raises(InvariantViolation) as e:
            f.result(TIMEOUT)
        assert e.value.id == "task.nbytes-known-in-memory"
        assert e.value.recent  # the trace tail came along
        assert client.info().halted.startswith("scheduler: InvariantViolation")
        liar.close(0)
        ctx.term()


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_a_violation_inside_a_worker_halts_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from squall.invariants import InvariantViolation

    original = WorkerState._handle_execute_success

    def drifting(self: WorkerState, msg: p.ExecuteSuccess) -> None:
        original(self, msg)
        self.nbytes += 1  # an injected bug: the worker's byte count drifts

    # Worker processes are forked from here: they inherit the bug.
    monkeypatch.setattr(WorkerState, "_handle_execute_success", drifting)
    with LocalCluster(workers=1, validate=True) as cluster, Client(cluster) as client:
        with pytest.raises(InvariantViolation) as e:
            client.submit(inc, 1).result(TIMEOUT)
        assert e.value.id == "wstate.nbytes-sum"
        assert client.info().halted.startswith("w0: InvariantViolation")


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_recorded_real_run_replays_into_fresh_state_machines() -> None:
    records: list[tuple[str, int, int, object]] = []
    with LocalCluster(workers=2, threads=1, record=True) as cluster:
        cluster.raw_recorders.append(lambda t, i, c, m: records.append((t, i, c, m)))
        with Client(cluster) as client:
            graph = TaskGraph()
            for i in range(8):
                graph.add(f"leaf-{i}", inc, i)
            graph.add("total-0", add, deps=tuple(f"leaf-{i}" for i in range(8)))
            assert client.compute(graph)["total-0"].result(TIMEOUT) == sum(range(1, 9))
    sched = SchedulerState(heartbeat_timeout=5.0)
    moves: list[tuple[str, str]] = []
    sched.observers.append(lambda s, ts, a, b, sid: moves.append((ts.key, b)))
    workers: dict[tuple[str, int], WorkerState] = {}
    for target, incarnation, count, msg in records:
        if target == "scheduler":
            assert sched.transition_counter == count, msg
            sched.handle(msg)
        else:
            ws = workers.setdefault((target, incarnation), WorkerState(target, 1))
            assert ws.transition_counter == count, msg
            ws.handle(msg)
    assert any(type(m) is p.UpdateGraph for t, _, _, m in records if t == "scheduler")
    assert {t for t, _, _, _ in records} >= {"scheduler", "w0", "w1"}
    assert ("total-0", SchedulerTaskState.MEMORY) in moves
