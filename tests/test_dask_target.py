"""dask.distributed as squall's second target: scenarios, faults, traces, the fixture.

Real processes (marked ``real``: one after another). Each test waits on a condition with a
deadline -- dask's scheduler state, a process's state, a future's result -- never on a
clock.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from squall.chaos.injectors import (
    JoinWorker,
    KillWorker,
    PauseWorker,
    SkewEstimates,
    SlowNetwork,
)
from squall.scenarios.model import ClusterShape, Generated, Scenario, scenario_to_json
from squall.targets import runtime_names, target_for
from squall.targets.dask.cluster import DaskCluster, DaskTarget

pytest.importorskip("distributed")
pytestmark = pytest.mark.squall_real

TIMEOUT = 30.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)  # polling the condition, with a deadline


def process_state(pid: int) -> str:
    """The kernel's state letter of a process ("T": stopped), "" if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


def gone(pid: int) -> bool:
    return process_state(pid) in ("", "Z", "X")


def inc(x: int) -> int:
    return x + 1


def test_dask_is_a_target_with_a_runtime_of_its_own() -> None:
    assert "dask" in runtime_names()
    target = target_for("dask")
    assert isinstance(target, DaskTarget) and target.runtimes == ("dask",)
    with pytest.raises(ValueError, match="target 'dask' has no runtime 'sim'"):
        target.start("sim", ClusterShape())


def test_a_scenario_runs_on_dask_from_the_cli_with_every_key_right_and_a_trace(
        run_cli: Callable[[list[str]], tuple[int, str, str]], tmp_path: Path) -> None:
    scenario = Scenario(
        name="small", workload=Generated(name="tree", tasks=64, params={"duration": 0.01}),
        cluster=ClusterShape(workers=3, threads=1),
        chaos=(SkewEstimates(at=0.0, factor=10.0, prefix="leaf"),
               SlowNetwork(at=0.0, worker="w0", peer="w1", latency=0.01),
               KillWorker(at=0.1, worker="w2"), PauseWorker(at=0.1, worker="w1", seconds=0.2),
               JoinWorker(at=0.2, worker="w2")))
    path = tmp_path / "small.json"
    path.write_bytes(scenario_to_json(scenario))
    trace = tmp_path / "small.jsonl"
    code, out, err = run_cli(["run", str(path), "--runtime", "dask", "--trace", str(trace)])
    assert code == 0, out + err
    assert "all correct" in out and "127 of 127" in out
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert lines[0]["k"] == "header" and lines[0]["scenario"]["runtime"] == "dask"
    stimuli = [x["m"] for x in lines if x["k"] == "ts"]
    assert {m["target"] for m in stimuli} == {"dask", "dask-worker"}
    ops = {m["op"] for m in stimuli if m["target"] == "dask"}
    assert {"update-graph", "task-finished", "remove-worker", "register-worker"} <= ops
    # every worker's stimulus log, each incarnation from its start (w2 has two)
    starts = [(m["worker"], m["incarnation"]) for m in stimuli if m["op"] == "start"]
    assert sorted(w for w, _ in starts) == ["w0", "w1", "w2", "w2"]
    worker_ops = {m["op"] for m in stimuli if m["target"] == "dask-worker"}
    assert {"ComputeTaskEvent", "ExecuteSuccessEvent"} <= worker_ops
    faults = [x["m"]["kind"] for x in lines if x["k"] == "s" and x["t"] == "chaos"]
    assert faults == ["skew_estimates", "set_link", "set_link", "kill_worker",
                      "pause_worker", "add_worker"]
    end = lines[-1]
    assert end["k"] == "outcome" and end["outcome"]["results_ok"]
    assert not end["outcome"].get("violations") and end["n"] == len(stimuli)
    # the workers' side replays through dask's own WorkerState; the scheduler's cannot.
    # (Under a kill and a pause a worker's replay can still differ from its run: then the
    # first differing stimulus is named. See test_dask_replay.py for the verdicts.)
    code, out, err = run_cli(["replay", str(trace)])
    assert code in (0, 3), out + err
    if code == 0:
        assert "replay matches" in out and "not replayed: the scheduler's" in out
    else:
        assert "diverged at stimulus" in out


def test_the_fault_surface_acts_on_dask_processes() -> None:
    with DaskCluster(workers=2, threads=1, network=True) as cluster:
        client = cluster.client
        assert cluster.scheduler_workers() == {"w0": "running", "w1": "running"}

        # kill: the process dies, the scheduler forgets it, and it stays dead
        pid = cluster.kill_worker("w0")
        wait_until(lambda: gone(pid), "the killed process to end")
        wait_until(lambda: "w0" not in cluster.scheduler_workers(), "the scheduler to "
                   "forget w0")
        assert "w0" not in cluster.workers
        # add: a new incarnation under the name, on the same port (its proxies stay)
        assert cluster.add_worker("w0", threads=2) == "w0"
        assert cluster.scheduler_workers()["w0"] == "running"
        assert cluster.workers["w0"] != pid

        # skew: dask's estimate of that prefix, and only that one, is ten times larger
        assert client.submit(inc, 1, key="inc-1").result(TIMEOUT) == 2
        assert client.submit(inc, 2, key="dec-1").result(TIMEOUT) == 3

        def estimates() -> tuple[float, float]:
            s = cluster.scheduler
            return (s._get_prefix_duration(s.task_prefixes["inc"]),
                    s._get_prefix_duration(s.task_prefixes["dec"]))

        inc_before, dec_before = cluster._on_loop(estimates)
        cluster.skew_estimates(10.0, "inc")
        inc_after, dec_after = cluster._on_loop(estimates)
        assert inc_after == pytest.approx(10 * inc_before) and dec_after == dec_before

        # pause: SIGSTOP, then SIGCONT from the timer
        paused = cluster.workers["w1"]
        cluster.pause_worker("w1", 2.0)
        wait_until(lambda: process_state(paused) == "T", "w1 to be stopped")
        wait_until(lambda: process_state(paused) not in ("T", ""), "w1 to continue")

        # links: a peer's data comes through the proxy of that pair...
        a = client.submit(inc, 10, key="a-1", workers=[cluster.address_of("w0")])
        b = client.submit(inc, a, key="b-1", workers=[cluster.address_of("w1")])
        assert b.result(TIMEOUT) == 12
        cluster.set_link("w1", "w0", latency=0.01)
        routes = client.run(lambda dask_worker: dict(
            dask_worker.plugins["squall-peer-routes"].routes), workers=[cluster.address_of("w1")])
        (w1_routes,) = routes.values()
        proxy = cluster.network.listen("w1", "w0")
        assert w1_routes[cluster.address_of("w0")] == f"tls://{proxy}"  # TLS through it
        # ... and a worker cut off from the scheduler is removed by it
        cluster.set_link("w1", "scheduler", down=True)
        wait_until(lambda: "w1" not in cluster.scheduler_workers(), "w1 to be removed")
        cluster.set_link("w1", "scheduler", down=False)

        assert [f.kind for f in cluster.faults] == [
            "kill_worker", "add_worker", "skew_estimates", "pause_worker", "set_link",
            "set_link", "set_link"]
        assert not cluster.violations
        pids = list(cluster.workers.values())
    assert all(gone(pid) for pid in pids)


def _tls_without_a_certificate(address: str) -> str:
    """A TLS client that shows no certificate (and checks none) connects to ``address``
    and sends a few bytes: "refused: ..." if the peer ended the handshake or the
    connection, "served: ..." if it answered (a peer that waits fails on the deadline)."""
    host, _, port = address.rpartition("://")[2].rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"\0" * 8)
                data = tls.recv(1)  # (TLS 1.3: the server's alert arrives here)
        except ssl.SSLError as e:
            return f"refused: {e.reason or e}"
    return "refused: closed" if data == b"" else f"served: {data!r}"


def test_the_cluster_refuses_a_client_without_its_credentials() -> None:
    """Mutual TLS with the cluster's own in-memory certificate: dask's workers unpickle what
    they are sent, so only a holder of the cluster's credentials may connect."""
    import gc

    from distributed import Client
    from distributed.security import Security

    def refused(address: str, **options: object) -> BaseException:
        with pytest.raises((OSError, TypeError)) as e:
            Client(address, timeout=TIMEOUT, set_as_default=False, **options)
        # A Client that failed to start closes its event loop in its __del__: let it run
        # now, not inside the start of the next Client (dask deadlocks there).
        gc.collect()
        return e.value

    with DaskCluster(workers=1, threads=1, validate=False) as cluster:
        address = cluster.scheduler.address
        assert address.startswith("tls://") and cluster.security.require_encryption
        assert cluster.client.submit(inc, 1).result(TIMEOUT) == 2  # its own client: served
        # Only the address: dask's Client has no credentials to offer, and does not try.
        assert "TLS expects a `ssl_context`" in str(refused(address))
        # Plain TCP to the TLS port, or another cluster's certificate: the scheduler says no.
        assert isinstance(refused(address.replace("tls://", "tcp://")), OSError)
        other = refused(address, security=Security.temporary())
        assert "TLS certificate does not match" in str(other)
        # A TLS client with no certificate, at the scheduler and at a worker: no byte back.
        for peer in (address, cluster.address_of("w0")):
            assert peer is not None
            assert _tls_without_a_certificate(peer).startswith("refused: "), peer
        # With the cluster's security object: served.
        with Client(address, security=cluster.security, timeout=TIMEOUT,
                    set_as_default=False) as client:
            assert client.submit(inc, 2).result(TIMEOUT) == 3
    # insecure=True: dask's own unauthenticated cluster, and only when asked for.
    with DaskCluster(workers=1, threads=1, validate=False, insecure=True) as cluster:
        address = cluster.scheduler.address
        assert address.startswith("tcp://")
        with Client(address, timeout=TIMEOUT, set_as_default=False) as client:
            assert client.submit(inc, 3).result(TIMEOUT) == 4


@pytest.mark.squall_dask_cluster(workers=2, threads=2)
def test_the_fixture_gives_a_validated_cluster_with_its_fault_surface(
        squall_dask_cluster: DaskCluster) -> None:
    cluster = squall_dask_cluster
    assert cluster.validator is not None and cluster.scheduler_workers().keys() == {"w0", "w1"}
    # authenticated: its client holds the cluster's TLS credentials
    assert cluster.scheduler.address.startswith("tls://")
    assert cluster.client.security is cluster.security
    futures = cluster.client.map(inc, range(50))
    cluster.kill_worker("w1")
    assert sum(cluster.client.gather(futures)) == sum(range(1, 51))
    assert cluster.faults[0].kind == "kill_worker"


def worker_name(*inputs: object) -> str:
    """The name of the dask worker that runs it (its inputs are only for the order)."""
    from distributed import get_worker

    return str(get_worker().name)


@pytest.mark.squall_dask_cluster(workers=2, threads=1)
def test_restricted_tasks_run_only_on_their_workers_on_dask(
        squall_dask_cluster: DaskCluster) -> None:
    from squall.core.graph import TaskGraph, TaskSpec

    graph = TaskGraph([
        TaskSpec("a-0", func=worker_name, restrictions=("w1",)),
        TaskSpec("b-1", deps=("a-0",), func=worker_name, restrictions=("w0",)),
        TaskSpec("c-2", deps=("b-1",), func=worker_name),
    ])
    futures = squall_dask_cluster.compute(graph)
    assert [futures[k].result(timeout=TIMEOUT) for k in ("a-0", "b-1")] == ["w1", "w0"]
    assert futures["c-2"].result(timeout=TIMEOUT) in ("w0", "w1")
    assert squall_dask_cluster.violations == []


def test_a_violation_fails_a_fixture_test_with_its_invariant_and_a_trace(
        tmp_path: Path) -> None:
    (tmp_path / "test_broken.py").write_text(textwrap.dedent("""
        def test_broken(squall_dask_cluster):
            cluster = squall_dask_cluster
            assert cluster.client.submit(sum, [1, 2]).result(30) == 3

            def corrupt():  # the scheduler miscounts a worker's bytes: a planted bug
                next(iter(cluster.scheduler.workers.values())).nbytes += 1000

            cluster._on_loop(corrupt)
    """))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_broken.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "invariant worker.nbytes-sum violated" in done.stdout
    traces = list((tmp_path / "squall-traces").glob("test_broken-dask.trace.jsonl"))
    assert traces and f"trace: {traces[0]}" in done.stdout
    last = json.loads(traces[0].read_text().splitlines()[-1])
    assert last["outcome"]["violations"][0]["invariant"] == "worker.nbytes-sum"


def test_every_process_dies_with_the_parent_even_by_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import sys
        from squall.targets.dask.cluster import DaskCluster

        if __name__ == "__main__":  # (dask spawns its workers: they import this module)
            cluster = DaskCluster(workers=2, threads=1, network=True)
            pids = list(cluster.workers.values()) + [cluster._proxy_server.process.pid]
            cluster.pause_worker("w0", 60.0)  # a stopped worker must go too
            print(" ".join(map(str, pids)), flush=True)
            sys.stdin.read()
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert len(pids) == 3 and not any(gone(pid) for pid in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(TIMEOUT)
        wait_until(lambda: all(gone(pid) for pid in pids), "the children to end")
    finally:
        if parent.poll() is None:
            parent.kill()
