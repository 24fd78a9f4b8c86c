"""The faults of squall itself (issue 15, "reliability and security"), each one handled.

    python benchmarks/faults.py [--only ITEM ...]

Runs every defect the issue lists (items 1-9) the way a user met it: ``squall`` commands
in processes of their own (each the leader of a new session, so that whatever it starts
is found afterwards by its session id, reparented to init or not), or the public Python
API in this process. Each step has a deadline (a hang fails its case); the one timing
the issue itself sets is checked: a dead scheduler is said within 10 s. A case is
handled when the issue's expectation holds -- the documented exit code (2: bad input or
an output not written, 3: a replay that diverged, 143: SIGTERM), a one-line error naming
the problem and no traceback, an error raised within its bound, no process left behind.
After every case, whatever it started must be gone (its commands' sessions and this
process's descendants); a case that leaves one is not handled.

Prints a table of the cases (item, what, handled, seconds, what was seen), then
"N of N handled"; exits 1 if any case is not handled.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squall.core.lifeline import StderrLines, descendants, session_members, wait_gone

DEADLINE = 60.0  # the longest any step may take before the case counts as not handled
GONE = 30.0  # how long processes on their way out may take to go
BOUND = 10.0  # the issue's bound on detecting a dead scheduler
SQUALL = [sys.executable, "-m", "squall"]

TREE = {"workload": {"type": "generated", "name": "tree", "tasks": 8},
        "cluster": {"workers": 2}}


class NotHandled(Exception):
    """The case's expectation does not hold; the message says what was seen."""


def expect(condition: object, seen: str) -> None:
    if not condition:
        raise NotHandled(seen)


# ------------------------------------------------------------------ commands

SESSIONS: list[int] = []  # the sessions of the commands the current case started


@dataclass
class Done:
    code: int
    out: str
    err: str


def squall(*argv: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = DEADLINE) -> Done:
    """``squall ARGV`` to its end (a deadline, then it is killed and the case fails)."""
    proc = subprocess.Popen([*SQUALL, *argv], cwd=cwd, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    SESSIONS.append(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise NotHandled(f"`squall {' '.join(argv)[:60]}` still running after "
                         f"{timeout:g} s") from None
    return Done(proc.returncode, out, err)


def one_line_error(done: Done, code: int, *parts: str) -> str:
    """Exit ``code`` with one ``...: error: ...`` line on stderr naming every one of
    ``parts``, and no traceback; the line."""
    lines = done.err.strip().splitlines()
    expect(done.code == code, f"exit {done.code}, not {code}: {done.err.strip()[-200:]!r}")
    expect("Traceback" not in done.err, f"a traceback: {done.err.strip()[-200:]!r}")
    expect(len(lines) == 1 and ": error: " in lines[0], f"not one error line: {lines[:3]}")
    for part in parts:
        expect(part in lines[0], f"{part!r} not named: {lines[0]!r}")
    return lines[0]


class Server:
    """A ``squall`` command that runs until stopped; its stderr lines collected."""

    def __init__(self, *argv: str, cwd: Path) -> None:
        self.argv = argv
        self.proc = subprocess.Popen([*SQUALL, *argv], cwd=cwd, start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        SESSIONS.append(self.proc.pid)
        self.stderr = StderrLines(self.proc.stderr)
        self.lines = self.stderr.lines

    def wait_for(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        """The first stderr line matching ``pattern``, waiting for it (a deadline)."""
        line = self.stderr.first(lambda x: re.search(pattern, x), timeout)
        match = None if line is None else re.search(pattern, line)
        if match is None:
            raise NotHandled(f"`squall {self.argv[0]}`: {pattern!r} not seen within "
                             f"{timeout:g} s; last: {self.lines[-2:]}")
        return match

    def count(self, pattern: str) -> int:
        return self.stderr.count(lambda x: re.search(pattern, x))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``; the exit code (a deadline, then it is killed and the case fails)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise NotHandled(f"`squall {self.argv[0]}` did not exit within {DEADLINE:g} s "
                             f"of signal {signal.Signals(sig).name}") from None
        self.stderr.join(DEADLINE)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` (a /proc scan: nothing to block on) until it holds (a deadline)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise NotHandled(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)  # the polling interval of a condition, not a wait for it


def describe(pids: set[int]) -> str:
    out = []
    for pid in sorted(pids)[:4]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        out.append(f"{pid} ({cmd.strip()[:60]})")
    return ", ".join(out)


def scenario(tmp: Path, file: str = "s.json", **fields: Any) -> Path:
    path = tmp / file
    path.write_text(json.dumps({**TREE, **fields}))
    return path


def record(tmp: Path, file: str = "t.jsonl", **fields: Any) -> Path:
    """A small run's trace (``squall run``)."""
    trace = tmp / file
    done = squall("run", str(scenario(tmp, file + ".json", **fields)), "--trace", str(trace),
                  cwd=tmp)
    expect(done.code == 0 and trace.exists(), f"recording {file}: exit {done.code}")
    return trace


# ------------------------------------------------------------------ the cases

CASES: list[tuple[int, str, Callable[[Path], str]]] = []


def case(item: int, what: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    def register(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        CASES.append((item, what, fn))
        return fn
    return register


# -------------------------------- 1. a client hangs forever when the scheduler dies

ISSUE_1 = """\
import os,signal,time
from squall.core.runtime.cluster import LocalCluster
from squall.core.runtime.client import Client
c=LocalCluster(workers=2,threads=1);cl=Client(c)
g=cl.map(lambda x:(time.sleep(.5),x)[1],range(20));time.sleep(1)
os.kill(c.scheduler_pid,signal.SIGKILL);print(cl.gather(g))
"""


@case(1, "the issue's command: scheduler SIGKILLed under gather()")
def scheduler_killed_command(tmp: Path) -> str:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", ISSUE_1], cwd=tmp, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    SESSIONS.append(proc.pid)
    try:
        _, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise NotHandled(f"still waiting {DEADLINE:g} s later") from None
    # at most this long after the kill: the whole command but its own 1 s wait
    took = time.monotonic() - started - 1.0
    last = err.strip().splitlines()[-1] if err.strip() else ""
    expect(proc.returncode == 1 and "SchedulerLost: lost the scheduler at tcp://" in last,
           f"exit {proc.returncode}: {last!r}")
    expect(took < BOUND, f"the error {took:.1f} s after the kill")
    return (f"exit 1, `SchedulerLost: lost the scheduler at tcp://...` at most {took:.1f} s "
            "after the kill (start-up included)")


@case(1, "SIGKILL of the scheduler, a client in gather() on 1,000 futures")
def scheduler_killed_1000(tmp: Path) -> str:
    from scheduler_loss import one_run  # benchmarks/scheduler_loss.py

    try:
        r = one_run("kill", futures=1000, workers=2)
    except SystemExit as e:
        raise NotHandled(str(e)) from None
    expect(r["error_s"] < BOUND, f"SchedulerLost after {r['error_s']:.1f} s")
    expect(r["left_after_close"] == 0, f"{r['left_after_close']:.0f} processes left")
    return (f"SchedulerLost {r['error_s']:.3f} s after the kill; cluster gone by itself "
            f"{r['all_gone_s']:.2f} s after; 0 left")


@case(1, "standalone scheduler SIGKILLed: its client and worker say so")
def standalone_scheduler_killed(tmp: Path) -> str:
    from squall.chaos.network import free_port
    from squall.core.runtime.client import Client, SchedulerLost

    keys = str(tmp / "keys")  # not the scheduler's own: a SIGKILL leaves those on disk
    expect(squall("keys", keys, cwd=tmp).code == 0, "squall keys failed")
    address = f"tcp://127.0.0.1:{free_port()}"
    scheduler = Server("scheduler", "--listen", address, "--keys", keys, cwd=tmp)
    scheduler.wait_for(f"listening at {address}")
    worker = Server("worker", address, "--keys", keys, "--name", "wa", cwd=tmp)
    try:
        with Client(address, keys=keys, timeout=DEADLINE) as client:
            client.wait_until(lambda: "wa" in client.workers, DEADLINE, "wa registered")
            worker.wait_for("registered with")  # and told so: no longer joining
            futures = client.map(abs, range(-50, 0))
            killed = time.monotonic()
            scheduler.proc.kill()
            try:
                client.gather([*futures, client.submit(abs, -1)], DEADLINE)
                raise NotHandled("gather() returned after the kill")
            except SchedulerLost as e:
                raised = time.monotonic() - killed
                text = str(e)
        worker.wait_for(f"lost the scheduler at {address}", BOUND)
        logged = time.monotonic() - killed
        expect(raised < BOUND, f"SchedulerLost after {raised:.1f} s")
        expect(worker.proc.poll() is None, "the worker exited")
        code = worker.stop()
        expect(code == 143, f"the worker's SIGTERM exit {code}, not 143")
    finally:
        worker.kill()
        scheduler.kill()
    expect(text.startswith(f"lost the scheduler at {address}"), f"the client said {text!r}")
    return (f"the client's SchedulerLost after {raised:.3f} s, the worker's log line after "
            f"{logged:.2f} s; worker SIGTERM exit 143")


# -------------------------------- 2. SIGTERM (and SIGKILL) leave no orphans


def _stopped_leaves_nothing(tmp: Path, sig: int, argv: list[str], up: int,
                            what: str) -> str:
    cmd = Server(*argv, cwd=tmp)
    try:
        wait_until(lambda: len(descendants(cmd.proc.pid)) >= up, what)
        under = len(descendants(cmd.proc.pid))
        started = time.monotonic()
        code = cmd.stop(sig)
        left = wait_gone(lambda: session_members(cmd.proc.pid), GONE)
        took = time.monotonic() - started
    finally:
        cmd.kill()
    want = {signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}[signal.Signals(sig)]
    expect(not left, f"left behind: {describe(left)}")
    expect(code == want, f"exit {code}, not {want}: {cmd.lines[-2:]}")
    if sig == signal.SIGTERM:
        expect(cmd.lines and cmd.lines[-1] == "squall: terminated", f"last: {cmd.lines[-1:]}")
    return f"exit {code}; {under} processes under it, all gone {took:.2f} s after the signal"


STORM = ["run", "storm", "--runtime", "real", "--no-trace"]
EXPLORE = ["explore", "--budget", "60", "--jobs", "2"]


@case(2, "SIGTERM to `squall run storm` (proxy server, cluster of 4)")
def storm_sigterm(tmp: Path) -> str:
    return _stopped_leaves_nothing(tmp, signal.SIGTERM, STORM, 7, "the cluster and proxy up")


@case(2, "SIGKILL to `squall run storm`")
def storm_sigkill(tmp: Path) -> str:
    return _stopped_leaves_nothing(tmp, signal.SIGKILL, STORM, 7, "the cluster and proxy up")


@case(2, "SIGTERM to `squall explore --budget 60 --jobs 2`")
def explore_sigterm(tmp: Path) -> str:
    return _stopped_leaves_nothing(tmp, signal.SIGTERM, [*EXPLORE, "--out", str(tmp / "x")],
                                   2, "both jobs started")


@case(2, "SIGKILL to `squall explore --budget 60 --jobs 2`")
def explore_sigkill(tmp: Path) -> str:
    return _stopped_leaves_nothing(tmp, signal.SIGKILL, [*EXPLORE, "--out", str(tmp / "x")],
                                   2, "both jobs started")


# -------------------------------- 3. bounds on untrusted input


def _wait_rss(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int]:
    """(exit code, peak resident set in MB) of ``proc``, waiting for it (a deadline)."""
    fd = os.pidfd_open(proc.pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        proc.kill()
        proc.wait()
        raise NotHandled(f"still running after {timeout:g} s")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss // 1024


@case(3, "`squall report` of a trace line holding a 200 MB worker name")
def huge_worker_name(tmp: Path) -> str:
    lines = record(tmp).read_bytes().splitlines(keepends=True)
    i = next(i for i, x in enumerate(lines) if b'"w1"' in x)
    edited = tmp / "huge.jsonl"
    with open(edited, "wb") as f:
        f.writelines(lines[:i])
        before, after = lines[i].split(b'"w1"', 1)
        f.write(before + b'"')
        chunk = b"W" * (1 << 20)
        for _ in range(200):
            f.write(chunk)
        f.write(b'"' + after)
        f.writelines(lines[i + 1:])
    page = tmp / "r.html"
    proc = subprocess.Popen([*SQUALL, "report", str(edited), "-o", str(page)], cwd=tmp,
                            start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    SESSIONS.append(proc.pid)
    code, rss = _wait_rss(proc, DEADLINE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    edited.unlink()
    line = one_line_error(Done(code, "", err), 2, str(edited), "SQUALL_MAX_LINE_BYTES")
    expect(not page.exists(), "a report was written")
    expect(rss < 1024, f"peak memory {rss} MB")
    return f"exit 2, peak RSS {rss} MB: `{line[line.index('line '):line.index(' (')]}`"


@case(3, "scenario files asking for 10^9 tasks, workers, threads")
def billions(tmp: Path) -> str:
    seen = []
    for fields, field in [
        ({"workload": {"type": "generated", "name": "tree", "tasks": 10**9}},
         "workload.tasks"),
        ({"cluster": {"workers": 10**9}}, "cluster.workers"),
        ({"cluster": {"threads": 10**9}}, "cluster.threads"),
    ]:
        path = scenario(tmp, **fields)
        one_line_error(squall("run", str(path), "--no-trace", cwd=tmp), 2, str(path), field,
                       "SQUALL_MAX_")
        seen.append(field)
    return f"exit 2, one line each naming {', '.join(seen)} and its SQUALL_MAX_* variable"


@case(3, "real mode: threads 10^9, 65 worker processes")
def real_bounds(tmp: Path) -> str:
    for fields, parts in [
        ({"runtime": "real", "cluster": {"threads": 10**9}},
         ("cluster.threads", "SQUALL_MAX_THREADS")),
        ({"runtime": "real", "cluster": {"workers": 65}},
         ("cluster.workers", "SQUALL_MAX_PROCESSES")),
    ]:
        path = scenario(tmp, **fields)
        one_line_error(squall("run", str(path), "--no-trace", cwd=tmp), 2, str(path), *parts)
    return "exit 2 before any process starts, naming the field and SQUALL_MAX_THREADS / " \
           "SQUALL_MAX_PROCESSES"


# -------------------------------- 4. no one runs code on the cluster without its keys

ATTACK = """\
import os, sys
from squall.core.runtime.client import Client
print(Client(sys.argv[1], timeout=10).submit(os.getuid).result(10))
"""


@case(4, "a keyless client of `squall scheduler` (same user)")
def scheduler_refuses(tmp: Path) -> str:
    from squall.chaos.network import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    scheduler = Server("scheduler", "--listen", address, cwd=tmp)
    try:
        keys = Path(scheduler.wait_for(r"CURVE keys in (\S+) ").group(1))
        scheduler.wait_for(f"listening at {address}")
        expect(keys.stat().st_mode & 0o777 == 0o700, f"{keys} not 0700")
        attacker = subprocess.run([sys.executable, "-c", ATTACK, address], cwd=tmp,
                                  capture_output=True, text=True, timeout=DEADLINE)
        last = attacker.stderr.strip().splitlines()[-1] if attacker.stderr.strip() else ""
        expect(attacker.returncode != 0 and attacker.stdout == "",
               f"served: {attacker.stdout.strip()!r}")
        expect("Refused" in last and "CURVE keys" in last, f"{last!r}")
        code = scheduler.stop()
        expect(code == 143, f"the scheduler's SIGTERM exit {code}")
        expect(not keys.exists(), f"{keys} left on disk")
    finally:
        scheduler.kill()
    return "Refused at the handshake (\"requires the cluster's CURVE keys\"), nothing run; " \
           "keys 0700, removed at exit"


@case(4, "a keyless client of a LocalCluster (the API, `squall run`'s cluster)")
def local_cluster_refuses(tmp: Path) -> str:
    from squall.core.runtime.client import Client, Refused
    from squall.core.runtime.cluster import LocalCluster

    with LocalCluster(workers=1, threads=1) as cluster, Client(cluster) as client:
        expect(client.submit(abs, -3).result(DEADLINE) == 3, "its own client not served")
        try:
            Client(cluster.address, timeout=DEADLINE).close()
            raise NotHandled("a client with only the address was served")
        except Refused as e:
            text = str(e)
    expect("requires the cluster's CURVE keys" in text, f"refused saying {text!r}")
    return "Refused at the handshake; `Client(cluster)` (the keys in memory) served"


# -------------------------------- 5. path traversal


@case(5, "scenario name `../../../tmp/x/escaped`")
def traversal(tmp: Path) -> str:
    work = tmp / "a" / "b" / "work"
    work.mkdir(parents=True)
    outside = Path("/tmp/x/escaped")
    existed = outside.parent.exists()
    path = scenario(tmp, name="../../../tmp/x/escaped")
    done = squall("run", str(path), cwd=work)
    expect(done.code == 0, f"exit {done.code}: {done.err.strip()[-120:]}")
    written = sorted(p.relative_to(tmp) for p in tmp.rglob("*.trace.jsonl"))
    expect([p.parent for p in written] == [Path("a/b/work/squall-traces")],
           f"traces at {written}")
    expect(existed or not outside.parent.exists(), f"{outside.parent} created")
    expect(not (tmp / "a" / "tmp").exists() and not (tmp / "tmp").exists(),
           "a directory created on the way")
    return f"exit 0, trace at {written[0]}"


@case(5, "scenario names of 300 characters, with a NUL")
def bad_names(tmp: Path) -> str:
    for name, why in [("n" * 300, "300 characters"), ("a\x00b", "control character")]:
        path = scenario(tmp, name=name)
        one_line_error(squall("run", str(path), cwd=tmp), 2, str(path), "name:", why)
    expect(not (tmp / "squall-traces").exists(), "a trace written")
    return "exit 2 at load, one line naming `name:` and why"


# -------------------------------- 6. exit codes that tell the truth


@case(6, "unwritable outputs: --trace /proc/x, /dev/full; report, mutants -o /proc")
def unwritable(tmp: Path) -> str:
    path = scenario(tmp)
    one_line_error(squall("run", str(path), "--trace", "/proc/x", cwd=tmp), 2,
                   "cannot write trace", "/proc/x")
    one_line_error(squall("run", str(path), "--trace", "/dev/full", cwd=tmp), 2,
                   "cannot write trace", "/dev/full", "No space left")
    trace = record(tmp)
    one_line_error(squall("report", str(trace), "-o", "/proc/x.html", cwd=tmp), 2,
                   "cannot write report", "/proc/x.html")
    one_line_error(squall("mutants", "--out", "/proc/x", cwd=tmp), 2,
                   "--out directory", "/proc/x")
    return "exit 2, one line naming the path (4 commands)"


@case(6, "`squall toxiproxy --port 70000`")
def bad_port(tmp: Path) -> str:
    one_line_error(squall("toxiproxy", "--port", "70000", cwd=tmp), 2, "--port", "70000")
    return "exit 2, one line naming --port"


@case(6, "`squall replay X | head -1`")
def replay_into_head(tmp: Path) -> str:
    trace = record(tmp, workload={"type": "generated", "name": "many-tiny", "tasks": 2000})
    shell = f"{sys.executable} -m squall replay {trace} | head -1; " \
            "echo \"squall exit ${PIPESTATUS[0]}\" >&2"
    done = subprocess.run(["bash", "-c", shell], cwd=tmp, capture_output=True, text=True,
                          timeout=DEADLINE)
    expect(done.stdout.startswith("squall replay: replay matches"), f"{done.stdout!r}")
    expect(done.stderr.strip() == "squall exit 0", f"{done.stderr.strip()!r}")
    return "the first line through, exit 0 (the verdict: match), nothing on stderr"


@case(6, "`workers: 0`; a kill of worker w99 that never exists")
def bad_cluster(tmp: Path) -> str:
    path = scenario(tmp, cluster={"workers": 0})
    done = squall("run", str(path), "--no-trace", cwd=tmp)
    one_line_error(done, 2, str(path), "cluster.workers")
    expect("liveness" not in done.out, "reported as a liveness violation")
    path = scenario(tmp, chaos=[{"kind": "kill", "at": 0.1, "worker": "w99"}])
    line = one_line_error(squall("run", str(path), "--no-trace", cwd=tmp), 2, "chaos[0]",
                          "'w99'")
    named = line[line.index("chaos[0]"):line.index("'w99'") + 5]
    return f"exit 2 each, one line (`cluster.workers`; `{named}`)"


# -------------------------------- 7. standalone workers


@case(7, "the scheduler restarted on the same port: the worker rejoins")
def scheduler_restarted(tmp: Path) -> str:
    from squall.chaos.network import free_port
    from squall.core.runtime.client import Client

    keys = str(tmp / "keys")
    expect(squall("keys", keys, cwd=tmp).code == 0, "squall keys failed")
    address = f"tcp://127.0.0.1:{free_port()}"
    first = Server("scheduler", "--listen", address, "--keys", keys, cwd=tmp)
    second: Server | None = None
    worker = Server("worker", address, "--keys", keys, "--name", "wa", cwd=tmp)
    try:
        first.wait_for(f"listening at {address}")
        with Client(address, keys=keys, timeout=DEADLINE) as client:
            client.wait_until(lambda: "wa" in client.workers, DEADLINE, "wa registered")
        first.proc.kill()
        first.proc.wait()
        worker.wait_for(f"lost the scheduler at {address}")
        second = Server("scheduler", "--listen", address, "--keys", keys, cwd=tmp)
        second.wait_for(f"listening at {address}")
        with Client(address, keys=keys, timeout=DEADLINE) as client:
            client.wait_until(lambda: "wa" in client.workers, DEADLINE, "wa rejoined")
            expect(client.submit(abs, -2).result(DEADLINE) == 2, "not served")
        worker.wait_for(r"rejoined the scheduler.*incarnation 1")
        warnings = worker.count("WARNING")
        expect(worker.proc.poll() is None, f"the worker exited: {worker.lines[-2:]}")
        expect(warnings <= 6, f"{warnings} warnings")
        expect(worker.stop() == 143, "the worker's SIGTERM exit is not 143")
        expect(second.stop() == 143, "the scheduler's SIGTERM exit is not 143")
    finally:
        worker.kill()
        first.kill()
        if second is not None:
            second.kill()
    return f"rejoined as incarnation 1, {warnings} warnings logged, served"


@case(7, "a worker paused past the heartbeat timeout, then resumed")
def worker_paused(tmp: Path) -> str:
    from squall.chaos.network import free_port
    from squall.core.runtime.client import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    scheduler = Server("scheduler", "--listen", address, "--insecure",
                       "--heartbeat-timeout", "0.5", cwd=tmp)
    worker = Server("worker", address, "--insecure", "--name", "wb",
                    "--heartbeat-interval", "0.1", cwd=tmp)
    try:
        scheduler.wait_for(f"listening at {address}")
        with Client(address, timeout=DEADLINE) as client:
            client.wait_until(lambda: "wb" in client.workers, DEADLINE, "wb registered")
            old = client.workers["wb"]
            worker.proc.send_signal(signal.SIGSTOP)
            try:
                client.wait_until(lambda: "wb" not in client.workers, DEADLINE,
                                  "wb declared dead")
            finally:
                worker.proc.send_signal(signal.SIGCONT)
            client.wait_until(lambda: client.workers.get("wb") not in (None, old), DEADLINE,
                              "wb rejoined")
            expect(client.submit(abs, -4).result(DEADLINE) == 4, "not served")
        expect(worker.proc.poll() is None, "the worker exited")
        worker.wait_for("rejoined the scheduler")
        expect(worker.stop() == 143, "the worker's SIGTERM exit is not 143")
        scheduler.stop()
    finally:
        worker.kill()
        scheduler.kill()
    return "declared dead, rejoined as a new incarnation in the same process, served"


@case(7, "--heartbeat-timeout -1, --heartbeat-interval 0")
def bad_durations(tmp: Path) -> str:
    one_line_error(squall("scheduler", "--listen", "tcp://nowhere", "--heartbeat-timeout", "-1",
                          cwd=tmp), 2,
                   "--heartbeat-timeout must be a positive number")
    one_line_error(squall("worker", "tcp://127.0.0.1:9", "--heartbeat-interval", "0",
                          cwd=tmp), 2, "--heartbeat-interval must be a positive number")
    return "exit 2, one line each, before any socket"


@case(7, "a forged registration with nthreads 10^12")
def forged_registration(tmp: Path) -> str:
    import zmq

    from squall.core import protocol as p
    from squall.core.runtime import transport as net
    from squall.core.runtime.client import Client
    from squall.core.runtime.cluster import LocalCluster

    forged = p.RegisterWorker(stimulus_id="", worker="forged", nthreads=10**12,
                              address="tcp://127.0.0.1:9", pid=1, incarnation=0)
    with LocalCluster(workers=0) as cluster, Client(cluster) as client:
        ctx = zmq.Context()
        sock = net.make_socket(ctx, zmq.DEALER, keys=cluster.keys)
        try:
            sock.connect(cluster.address)
            sock.send_multipart(net.pack([forged]))
            expect(sock.poll(int(DEADLINE * 1000)), "no answer")
            answer, _ = net.unpack(sock.recv_multipart())
        finally:
            sock.close(0)
            ctx.term()
        expect([type(m) for m in answer] == [p.CloseWorker], f"answered {answer}")
        reason = answer[0].reason
        expect(reason.startswith("registration refused: "), reason)
        expect(client.info().workers == {}, "registered anyway")
    return f"answered `{reason}`; not registered"


# -------------------------------- 8. replay verdicts that cannot be fooled


def _lines(trace: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in trace.read_bytes().splitlines()]


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n"
                              for x in lines))
    return path


@case(8, "a violation edited into a trace's recorded outcome")
def edited_violation(tmp: Path) -> str:
    lines = _lines(record(tmp))
    lines[-1]["phase"] = "end"
    lines[-1]["outcome"]["results_ok"] = False
    lines[-1]["outcome"]["violations"] = [{"invariant": "e2e.no-result-lost",
                                           "text": "edited in", "entity": "task 't0-0'"}]
    done = squall("replay", str(_write(tmp / "edited.jsonl", lines)), cwd=tmp)
    expect(done.code == 3 and "not re-derived" in done.out,
           f"exit {done.code}: {done.out.strip()[:100]!r}")
    return "exit 3 (diverged): recorded but not re-derived"


@case(8, "a stimulus moved by +100 s, by -5 s")
def edited_time(tmp: Path) -> str:
    lines = _lines(record(tmp))
    i = next(i for i, x in enumerate(lines)
             if x["k"] == "s" and x["m"]["op"] == "task-finished")
    for shift in (100.0, -5.0):
        edited = json.loads(json.dumps(lines))
        edited[i]["m"]["time"] += shift
        done = squall("replay", str(_write(tmp / "edited.jsonl", edited)), cwd=tmp)
        first = done.out.splitlines()[0] if done.out else ""
        expect(done.code == 3 and f"line {i + 1}" in first,
               f"shift {shift:+g}: exit {done.code}: {first[:100]!r}")
    return f"exit 3 each, diverged at line {i + 1}"


@case(8, "a real-mode trace replayed: digests really checked")
def real_digests(tmp: Path) -> str:
    trace = record(tmp, runtime="real",
                   workload={"type": "generated", "name": "random-dag", "tasks": 60,
                             "params": {"mean_duration": 0.005}})
    digests = sum(x["k"] == "digest" for x in _lines(trace)) + 1
    done = squall("replay", str(trace), cwd=tmp)
    m = re.search(r"(\d+) digests checked", done.out)
    expect(done.code == 0 and m is not None, f"exit {done.code}: {done.out.strip()[:100]!r}")
    assert m is not None
    expect(int(m.group(1)) == digests and digests >= 1,
           f"{m.group(1)} digests checked of {digests}")
    return f"exit 0, {digests} digests checked (state and stream)"


# -------------------------------- 9. the toxiproxy server


def _http(port: int, method: str, path: str, body: bytes | None = None,
          chunked: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        if chunked:
            assert body is not None
            conn.request(method, path, body=iter([body[:7], body[7:]]), encode_chunked=True)
        else:
            conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@case(9, "toxiproxy: nested JSON, a 100k-character name, a chunked body")
def toxiproxy_http(tmp: Path) -> str:
    server = Server("toxiproxy", "--port", "0", cwd=tmp)
    try:
        port = int(server.wait_for(r"API on http://127\.0\.0\.1:(\d+)").group(1))
        status, body = _http(port, "POST", "/proxies", b"[" * 100_000 + b"]" * 100_000)
        expect(status == 400 and b"\n" not in body and b"nested too deeply" in body,
               f"nested: {status} {body[:80]!r}")
        long = json.dumps({"name": "x" * 100_000, "upstream": "127.0.0.1:9"}).encode()
        status, body = _http(port, "POST", "/proxies", long)
        expect(status == 400 and b"name" in body, f"long name: {status} {body[:80]!r}")
        expect(_http(port, "GET", "/proxies")[1] == b"{}", "the long name was created")
        chunk = json.dumps({"name": "chunked", "upstream": "127.0.0.1:9"}).encode()
        status, body = _http(port, "POST", "/proxies", chunk, chunked=True)
        expect(status == 201, f"chunked: {status} {body[:80]!r}")
        status, _ = _http(port, "DELETE", "/proxies/chunked")
        expect(status == 204, f"delete: {status}")
        code = server.stop()
        expect("Traceback" not in "\n".join(server.lines), "a traceback logged")
    finally:
        server.kill()
    return f"400, 400 (nothing created), 201 then 204; SIGTERM exit {code}"


# ------------------------------------------------------------------ running them


@dataclass
class Result:
    item: int
    what: str
    handled: bool
    seconds: float
    seen: str


def run_case(item: int, what: str, fn: Callable[[Path], str]) -> Result:
    SESSIONS.clear()
    before = descendants()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="squall-faults-") as tmp:
        try:
            seen, handled = fn(Path(tmp)), True
        except NotHandled as e:
            seen, handled = str(e), False
        except Exception as e:  # a crash of the case itself: not handled, and said so
            frame = traceback.extract_tb(e.__traceback__)[-1]
            seen, handled = f"{type(e).__name__}: {e} (line {frame.lineno})", False
        took = time.monotonic() - started
        sessions = list(SESSIONS)

        def left() -> set[int]:
            out = descendants() - before
            for sid in sessions:
                out |= session_members(sid)
            return out

        still = wait_gone(left, GONE)
        if still:
            seen, handled = f"left behind: {describe(still)}; {seen}", False
            for pid in still:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_gone(left, GONE)
    return Result(item, what, handled, took, seen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=int, nargs="*", help="the issue's items to run (1-9)")
    args = ap.parse_args()
    import logging

    logging.getLogger("squall").setLevel(logging.ERROR)  # the faults' own warnings
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    print("| item | case | handled | s | seen |")
    print("|---|---|---|---|---|")
    results = []
    started = time.monotonic()
    for item, what, fn in CASES:
        if args.only and item not in args.only:
            continue
        r = run_case(item, what, fn)
        results.append(r)
        cells = [str(r.item), r.what, "yes" if r.handled else "NO", f"{r.seconds:.2f}",
                 " ".join(r.seen.split())]
        print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |", flush=True)
    handled = sum(r.handled for r in results)
    print()
    print(f"{time.monotonic() - started:.0f} s in all")
    print(f"{handled} of {len(results)} handled")
    sys.exit(0 if handled == len(results) else 1)


if __name__ == "__main__":
    main()
