"""Bad input and unwritable outputs: bounded, refused in one line, with the documented
exit codes (2: bad input or an output not written), and never a traceback.

Covers the issue "reliability and security": limits on what a scenario, a trace or a
command line may ask for (``squall.scenarios.limits``), scenario names that could escape
``squall-traces/``, faults at workers that never exist, outputs that cannot be written,
and a reader of the output that goes away (``| head``).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from squall.mutants.catalog import CATALOG
from squall.scenarios.model import (
    ClusterShape,
    Generated,
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_to_json,
)
from squall.scenarios.runner import check_runnable, run_scenario

TREE = {"workload": {"type": "generated", "name": "tree", "tasks": 8},
        "cluster": {"workers": 2}}


def scenario_file(tmp_path: Path, file: str = "s.json", **fields: Any) -> Path:
    path = tmp_path / file
    path.write_text(json.dumps({**TREE, **fields}))
    return path


def one_line_error(err: str, *parts: str) -> None:
    """``err`` is one ``squall...: error: ...`` line naming every one of ``parts``."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], err
    for part in parts:
        assert part in lines[0], (part, lines[0])


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    """A small simulated run's trace (it replays: exit 0)."""
    path = tmp_path / "t.jsonl"
    out = run_scenario(Scenario(workload=Generated(name="tree", tasks=64),
                                cluster=ClusterShape(workers=2)), trace=path)
    assert out.ok, out.violations
    return path


# ------------------------------------------------------------------ limits


@pytest.mark.parametrize(("fields", "named"), [
    ({"workload": {"type": "generated", "name": "tree", "tasks": 10**9}},
     ["workload.tasks", "SQUALL_MAX_TASKS"]),
    ({"cluster": {"workers": 10**9}}, ["cluster.workers", "SQUALL_MAX_WORKERS"]),
    ({"cluster": {"threads": 10**9}}, ["cluster.threads", "SQUALL_MAX_THREADS"]),
    ({"runtime": "real", "cluster": {"threads": 10**9}},
     ["cluster.threads", "SQUALL_MAX_THREADS"]),
    ({"runtime": "real", "cluster": {"workers": 65}}, ["cluster.workers",
                                                       "SQUALL_MAX_PROCESSES"]),
    ({"runtime": "real", "cluster": {"workers": 60},
      "chaos": [{"kind": "join", "at": 0.1}] * 5}, ["SQUALL_MAX_PROCESSES"]),
    ({"workload": {"type": "generated", "name": "random-dag", "tasks": 10,
                   "params": {"prefixes": 10**9}}},
     ["workload.params.prefixes", "SQUALL_MAX_TASKS"]),
    ({"chaos": [{"kind": "join", "at": 0.1, "threads": 10**9}]},
     ["chaos[0].threads", "SQUALL_MAX_THREADS"]),
    ({"workload": {"type": "graph", "tasks": [["k" * 300]]}},
     ["workload.tasks[0]", "SQUALL_MAX_NAME"]),
    ({"chaos": [{"kind": "kill", "at": 0.1, "worker": "w" * 300}]},
     ["chaos[0].worker", "SQUALL_MAX_NAME"]),
])
def test_a_scenario_over_a_default_limit_is_refused_naming_the_field(
        tmp_path: Path, fields: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario(scenario_file(tmp_path, **fields))
    message = str(e.value)
    assert "\n" not in message and len(message) < 400
    for part in named:
        assert part in message


def test_real_worker_processes_are_capped_when_the_runtime_is_overridden(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUALL_MAX_PROCESSES", "2")
    sc = Scenario(workload=Generated(name="tree", tasks=4), cluster=ClusterShape(workers=3))
    check_runnable(sc)  # the simulator starts no processes
    with pytest.raises(ScenarioError, match="3 worker processes.*SQUALL_MAX_PROCESSES"):
        check_runnable(msgspec.structs.replace(sc, runtime="real"))


@pytest.mark.parametrize(("var", "fields", "field"), [
    ("SQUALL_MAX_TASKS", {"workload": {"type": "generated", "name": "tree", "tasks": 9}},
     "workload.tasks"),
    ("SQUALL_MAX_WORKERS", {"cluster": {"workers": 9}}, "cluster.workers"),
    ("SQUALL_MAX_THREADS", {"cluster": {"threads": 9}}, "cluster.threads"),
    ("SQUALL_MAX_NAME", {"name": "n" * 9}, "name"),
])
def test_each_limit_is_overridden_by_its_environment_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli,
        var: str, fields: dict[str, Any], field: str) -> None:
    monkeypatch.chdir(tmp_path)
    path = scenario_file(tmp_path, **fields)
    assert run_cli(["run", str(path), "--no-trace"])[0] == 0
    monkeypatch.setenv(var, "8")
    code, _, err = run_cli(["run", str(path), "--no-trace"])
    assert code == 2
    one_line_error(err, str(path), field, var)


def test_a_limit_that_is_not_a_positive_integer_is_bad_input(
        monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    monkeypatch.setenv("SQUALL_MAX_TASKS", "lots")
    code, _, err = run_cli(["sim", "--tasks", "10"])
    assert code == 2
    one_line_error(err, "SQUALL_MAX_TASKS", "positive integer")


def test_sim_refuses_counts_over_the_limits(monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    monkeypatch.setenv("SQUALL_MAX_TASKS", "10")
    monkeypatch.setenv("SQUALL_MAX_THREADS", "2")
    code, _, err = run_cli(["sim", "--workload", "independent", "--tasks", "11"])
    assert code == 2
    one_line_error(err, "--tasks", "SQUALL_MAX_TASKS")
    code, _, err = run_cli(["sim", "--workload", "independent", "--tasks", "10",
                            "--threads", "3"])
    assert code == 2
    one_line_error(err, "--threads", "SQUALL_MAX_THREADS")


@pytest.mark.parametrize("argv", [
    ["explore"], ["mutants", "--mutant", CATALOG[0].name, "--no-baseline"]])
def test_jobs_are_capped_by_the_process_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              run_cli, argv: list[str]) -> None:
    monkeypatch.setenv("SQUALL_MAX_PROCESSES", "1")
    code, _, err = run_cli([*argv, "--jobs", "2", "--budget", "0.1",
                            "--out", str(tmp_path / "out")])
    assert code == 2
    one_line_error(err, "--jobs", "SQUALL_MAX_PROCESSES")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "next_check"), [
    (["explore"], ["--batches", "0"]),
    (["mutants", "--mutant", CATALOG[0].name, "--no-baseline"], ["--replays", "0"])])
def test_jobs_are_capped_at_four_per_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         run_cli, argv: list[str],
                                         next_check: list[str]) -> None:
    """``explore --jobs 1000`` on 2 CPUs made a 2 s budget 19 s: more jobs than CPUs only
    share them, and the budget waits for each job's last batch."""
    from squall.scenarios import limits

    monkeypatch.setattr(limits, "usable_cpus", lambda: 1)
    monkeypatch.delenv("SQUALL_MAX_JOBS", raising=False)
    out = tmp_path / "out"
    code, _, err = run_cli([*argv, "--jobs", "5", "--budget", "0.1", "--out", str(out)])
    assert code == 2
    one_line_error(err, "--jobs", "5 jobs", "limit of 4 (4 per CPU, 1 CPU(s) here)",
                   "SQUALL_MAX_JOBS")
    assert not out.exists()
    # within the cap, or the cap raised: the jobs pass, the next check speaks
    for jobs, env in (("4", None), ("5", "5")):
        if env is not None:
            monkeypatch.setenv("SQUALL_MAX_JOBS", env)
        code, _, err = run_cli([*argv, "--jobs", jobs, "--budget", "0.1", *next_check,
                                "--out", str(out)])
        assert code == 2 and "--jobs" not in err
        one_line_error(err, next_check[0])


def test_a_scenario_file_over_the_size_limit_is_refused_unread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    monkeypatch.chdir(tmp_path)
    path = scenario_file(tmp_path, description="d" * 500)
    monkeypatch.setenv("SQUALL_MAX_LINE_BYTES", "200")
    code, _, err = run_cli(["run", str(path), "--no-trace"])
    assert code == 2
    one_line_error(err, str(path), "200 bytes", "SQUALL_MAX_LINE_BYTES")


def test_a_snapshot_over_the_size_limit_is_refused_unread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    path = tmp_path / "snap.json"
    path.write_text(json.dumps({"workers": [], "tasks": [], "padding": "p" * 500}))
    monkeypatch.setenv("SQUALL_MAX_LINE_BYTES", "200")
    code, _, err = run_cli(["balance", str(path)])
    assert code == 2
    one_line_error(err, str(path), "200 bytes", "SQUALL_MAX_LINE_BYTES")


def test_a_trace_line_over_the_line_limit_is_refused_naming_the_line(
        trace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    longest = max(len(line) for line in trace.read_bytes().splitlines())
    monkeypatch.setenv("SQUALL_MAX_LINE_BYTES", str(longest - 1))
    page = tmp_path / "r.html"
    code, _, err = run_cli(["report", str(trace), "-o", str(page)])
    assert code == 2 and not page.exists()
    one_line_error(err, str(trace), "line ", "SQUALL_MAX_LINE_BYTES")
    code, _, err = run_cli(["replay", str(trace)])
    assert code == 2
    one_line_error(err, "SQUALL_MAX_LINE_BYTES")
    monkeypatch.setenv("SQUALL_MAX_LINE_BYTES", str(longest))  # exactly the limit: read
    assert run_cli(["replay", str(trace)])[0] == 0


def test_a_worker_name_in_a_trace_over_the_name_limit_is_refused(
        trace: Path, tmp_path: Path, run_cli) -> None:
    """A huge worker name made ``squall report`` grow without bound: it is refused at its
    line, before anything is drawn."""
    edited = tmp_path / "long-name.jsonl"
    edited.write_text(trace.read_text().replace('"w1"', '"' + "W" * 5000 + '"'))
    page = tmp_path / "r.html"
    code, _, err = run_cli(["report", str(edited), "-o", str(page)])
    assert code == 2 and not page.exists()
    one_line_error(err, str(edited), "worker name", "5,000 characters", "SQUALL_MAX_NAME")


def test_workers_0_is_bad_input_not_a_liveness_violation(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          run_cli) -> None:
    monkeypatch.chdir(tmp_path)
    path = scenario_file(tmp_path, cluster={"workers": 0})
    code, out, err = run_cli(["run", str(path), "--no-trace"])
    assert code == 2 and "liveness" not in out
    one_line_error(err, str(path), "cluster.workers")
    # ... unless a fault starts one: a cluster that scales up from nothing still runs
    joins = scenario_file(tmp_path, "j.json", cluster={"workers": 0},
                          chaos=[{"kind": "join", "at": 0.5}])
    assert run_cli(["run", str(joins), "--no-trace"])[0] == 0


# ------------------------------------------------------------------ names and paths


def test_a_scenario_name_cannot_write_its_trace_outside_squall_traces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = scenario_file(tmp_path, name="../../x/escaped")
    code, _, _ = run_cli(["run", str(path)])
    assert code == 0
    assert not (tmp_path / "x").exists()
    written = [p for p in tmp_path.rglob("*.trace.jsonl")]
    assert [p.parent for p in written] == [work / "squall-traces"], written
    assert ".." not in written[0].name and "/" not in written[0].name


def test_a_long_scenario_name_gives_a_bounded_trace_file_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    monkeypatch.chdir(tmp_path)
    names = ["n" * 250, "n" * 249 + "m"]  # under the name limit; too long for a file name
    for i, name in enumerate(names):
        path = scenario_file(tmp_path, f"{i}.json", name=name)
        assert run_cli(["run", str(path)])[0] == 0
    written = sorted((tmp_path / "squall-traces").glob("*.trace.jsonl"))
    assert len(written) == 2  # two names, two files
    assert all(len(p.name) < 120 for p in written)


@pytest.mark.parametrize(("name", "why"), [
    ("n" * 300, "300 characters"),
    ("a\x00b", "control character"),
    ("line\nbreak", "control character"),
], ids=["long", "nul", "newline"])
def test_a_bad_scenario_name_is_refused_at_load_naming_the_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli, name: str, why: str) -> None:
    monkeypatch.chdir(tmp_path)
    path = scenario_file(tmp_path, name=name)
    code, _, err = run_cli(["run", str(path)])
    assert code == 2 and not (tmp_path / "squall-traces").exists()
    one_line_error(err, str(path), "name:", why)


# ------------------------------------------------------------------ faults at no worker


def test_a_kill_of_a_worker_that_never_exists_is_refused_at_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    monkeypatch.chdir(tmp_path)
    path = scenario_file(tmp_path, chaos=[{"kind": "pause", "at": 0.05, "worker": "w1"},
                                          {"kind": "kill", "at": 0.1, "worker": "w99"}])
    code, out, err = run_cli(["run", str(path), "--no-trace"])
    assert code == 2 and "kill 1" not in out
    one_line_error(err, str(path), "chaos[1]", "kill", "'w99'")


@pytest.mark.parametrize("fault", [
    {"kind": "partition", "at": 0.1, "worker": "w7"},
    {"kind": "slow-link", "at": 0.1, "worker": "w0", "peer": "w7", "latency": 0.01},
    {"kind": "pause", "at": 0.1, "worker": "w7"},
])
def test_any_fault_at_a_worker_that_never_exists_is_refused(tmp_path: Path, run_cli,
                                                             fault: dict[str, Any]) -> None:
    path = scenario_file(tmp_path, chaos=[fault])
    code, _, err = run_cli(["run", str(path), "--no-trace"])
    assert code == 2
    one_line_error(err, "chaos[0]", fault["kind"], "'w7'")


def test_a_worker_that_joins_before_the_fault_exists(tmp_path: Path, run_cli) -> None:
    """A join under a name, or under the next free ``wN``, makes the fault valid -- but
    only if it comes first."""
    slow = {"type": "generated", "name": "independent", "tasks": 8,
            "params": {"duration": 0.3}}  # still running when the kill strikes
    named = scenario_file(tmp_path, "a.json", workload=slow, chaos=[
        {"kind": "join", "at": 0.05, "worker": "extra"},
        {"kind": "kill", "at": 0.1, "worker": "extra"}])
    unnamed = scenario_file(tmp_path, "b.json", workload=slow, chaos=[
        {"kind": "join", "at": 0.05}, {"kind": "kill", "at": 0.1, "worker": "w2"}])
    for path in (named, unnamed):
        code, out, _ = run_cli(["run", str(path), "--no-trace"])
        assert code == 0 and "kill 1" in out
    late = scenario_file(tmp_path, "c.json", chaos=[
        {"kind": "kill", "at": 0.1, "worker": "w2"}, {"kind": "join", "at": 0.2}])
    code, _, err = run_cli(["run", str(late), "--no-trace"])
    assert code == 2
    one_line_error(err, "chaos[0]", "'w2'")


# ------------------------------------------------------------------ outputs not written


def not_a_directory(tmp_path: Path) -> Path:
    """A path under a regular file: nothing can be created there."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "out"


def test_a_trace_that_cannot_be_written_is_exit_2_naming_the_path(
        tmp_path: Path, run_cli) -> None:
    bad = not_a_directory(tmp_path) / "t.jsonl"
    path = scenario_file(tmp_path)
    code, _, err = run_cli(["run", str(path), "--trace", str(bad)])
    assert code == 2
    one_line_error(err, "cannot write trace", str(bad))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_device_for_the_trace_is_exit_2_naming_the_path(tmp_path: Path,
                                                                run_cli) -> None:
    code, _, err = run_cli(["run", str(scenario_file(tmp_path)), "--trace", "/dev/full"])
    assert code == 2
    one_line_error(err, "cannot write trace", "/dev/full")


def test_a_report_that_cannot_be_written_is_exit_2_naming_the_path(
        trace: Path, tmp_path: Path, run_cli) -> None:
    bad = not_a_directory(tmp_path)
    code, _, err = run_cli(["report", str(trace), "-o", str(bad / "r.html")])
    assert code == 2
    one_line_error(err, "cannot write report", str(bad / "r.html"))
    code, _, err = run_cli(["report", str(trace), "-o", str(tmp_path / "r.html"),
                            "--png", str(bad / "r.png")])
    assert code == 2
    one_line_error(err, "cannot write PNG", str(bad / "r.png"))


@pytest.mark.parametrize("argv", [
    ["mutants", "--mutant", CATALOG[0].name, "--budget", "0.1", "--no-baseline"],
    ["explore", "--budget", "0.1"],
])
def test_an_output_directory_that_cannot_be_made_is_refused_before_any_work(
        tmp_path: Path, run_cli, argv: list[str]) -> None:
    bad = not_a_directory(tmp_path)
    code, _, err = run_cli([*argv, "--out", str(bad)])
    assert code == 2
    one_line_error(err, "--out directory", str(bad))


def test_toxiproxy_refuses_a_port_out_of_range(run_cli) -> None:
    code, _, err = run_cli(["toxiproxy", "--port", "70000"])
    assert code == 2
    one_line_error(err, "--port", "70000")


# ------------------------------------------------------------------ a reader that goes away


class ClosedAfter(io.StringIO):
    """A text stdout whose reader goes away after ``keep`` characters (``| head -c``)."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError("write() argument must be str")
        if s and self.tell() + len(s) > self.keep:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(s)

    @property
    def buffer(self) -> Any:
        return ClosedBinary()


class ClosedBinary(io.BytesIO):
    def write(self, b: Any) -> int:
        if b:
            raise BrokenPipeError(32, "Broken pipe")
        return 0


def test_replay_into_a_closed_pipe_exits_with_its_verdict_quietly(
        trace: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    """``squall replay X | head -1``: the first line gets through, the rest is dropped,
    and the exit code is the verdict's (0: the replay matches), not 1 ("reproduced")."""
    stdout = ClosedAfter(keep=len("squall replay: ") + 5)
    monkeypatch.setattr(sys, "stdout", stdout)
    code, _, err = run_cli(["replay", str(trace)])
    assert (code, err) == (0, "")
    assert sys.stdout is stdout  # put back as it was


def test_bytes_into_a_closed_pipe_exit_quietly(monkeypatch: pytest.MonkeyPatch,
                                               run_cli) -> None:
    monkeypatch.setattr(sys, "stdout", ClosedAfter(keep=0))
    code, _, err = run_cli(["scenarios", "--json"])  # JSON written as bytes
    assert (code, err) == (0, "")


class Full(io.StringIO):
    """A text stdout on a full disk (``> /dev/full``)."""

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError("write() argument must be str")
        if s:
            raise OSError(28, "No space left on device")
        return 0


@pytest.mark.parametrize("argv", [["scenarios"], ["invariants"]])
def test_standard_output_that_cannot_be_written_is_exit_2(
        monkeypatch: pytest.MonkeyPatch, run_cli, argv: list[str]) -> None:
    monkeypatch.setattr(sys, "stdout", Full())
    code, _, err = run_cli(argv)
    assert code == 2
    one_line_error(err, "cannot write standard output", "No space left on device")


# ------------------------------------------------------------------ real mode's trace


def test_the_outcome_line_is_found_without_reading_the_whole_trace() -> None:
    """Real mode rewrites a trace's last line once the run is replayed: it finds it from
    the end, not by reading a trace that may be large."""
    from squall.scenarios.real import _last_line_start

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n: int | None = -1) -> bytes:
            data = super().read(n)
            self.read_bytes += len(data)
            return data

    body = b'{"k":"s"}\n' * 100_000
    f = Counting(body + b'{"k":"outcome"}\n')
    assert _last_line_start(f) == len(body)
    assert f.read_bytes <= 1 << 16
    for data in (b"", b"one\n", b"a\nb\n\n", b"a\nno-newline"):
        want = data.rstrip(b"\n").rfind(b"\n") + 1
        assert _last_line_start(io.BytesIO(data), chunk=2) == want


def test_scenarios_written_by_squall_still_load(tmp_path: Path) -> None:
    """Nothing valid is lost: every standard scenario round-trips through a file."""
    from squall.scenarios.library import all_scenarios

    for name, sc in all_scenarios().items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(scenario_to_json(sc))
        assert load_scenario(path) == sc
