"""Exploration beyond one machine (issue 18): shards, summaries and their merge, the dask
backend, the README's CI matrix and the Kubernetes manifest.

Coverage is compared on scenario digests under a count bound (``--batches``): what two
shards explore is exactly what one run with their jobs together explores, and a batch is
the same scenarios in a job, a fresh process, a shard or on a dask worker. The dask tests
start real processes (``squall_real``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

from squall.mutants.catalog import switched_on
from squall.mutants.examples import missing_data_with_fillers
from squall.scenarios.explore import explore, explore_batch, shard_streams
from squall.scenarios.explore_summary import (
    ExploreSummary,
    FailureRun,
    StreamRun,
    load_summary,
    write_summary,
)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120.0  # a deadline for what must happen, never a measure of how fast
BUG = "occupancy-drift"  # a planted bug exploration of "small" catches in its first batch


def one_line_error(err: str, *fragments: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("squall"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def digests_of(summary: Path | ExploreSummary) -> dict[int, list[str]]:
    s = load_summary(summary) if isinstance(summary, Path) else summary
    out = {}
    for run in s.streams:
        assert run.digests is not None
        out[run.stream] = run.digests
    return out


def explore_cli(run_cli: Any, *argv: str) -> tuple[int, str, str]:
    return run_cli(["explore", "--seed", "11", *argv])


# ------------------------------------------------------------------ streams and shards


def test_the_streams_of_shards_partition_those_of_one_run() -> None:
    assert shard_streams(3) == [0, 1, 2]
    assert shard_streams(1, 0, 2) + shard_streams(1, 1, 2) == [0, 1]
    four = shard_streams(2, 0, 2) + shard_streams(2, 1, 2)
    assert sorted(four) == shard_streams(4) and len(set(four)) == 4
    with pytest.raises(ValueError, match="shard"):
        shard_streams(1, 2, 2)


def test_two_shards_cover_exactly_one_run_with_their_jobs(tmp_path: Path, run_cli) -> None:
    code, out, err = explore_cli(run_cli, "--jobs", "2", "--batches", "2", "--digests",
                                 "--out", str(tmp_path / "whole"),
                                 "--summary", str(tmp_path / "whole" / "summary.json"))
    assert code == 0, out + err
    assert "streams:batches 0:2 1:2" in err
    for k in (0, 1):
        code, out, err = explore_cli(run_cli, "--shard", f"{k}/2", "--batches", "2",
                                     "--digests", "--out", str(tmp_path / f"shard-{k}"))
        assert code == 0, out + err
        assert f"shard {k}/2, streams:batches {k}:2" in err
    whole = load_summary(tmp_path / "whole" / "summary.json")
    shards = [load_summary(tmp_path / f"shard-{k}" / "summary.json") for k in (0, 1)]
    assert digests_of(whole) == {**digests_of(shards[0]), **digests_of(shards[1])}
    assert whole.scenarios == 2 * 2 * 25 == sum(s.scenarios for s in shards)
    code, out, err = run_cli(["explore", "merge", str(tmp_path / "shard-0"),
                              str(tmp_path / "shard-1"), "--json"])
    assert code == 0 and not err, err
    merged = json.loads(out)
    assert merged["missing"] == [] and merged["found"] == [0, 1]
    for field in ("scenarios", "transitions", "checks", "stimuli", "batches", "per_space"):
        assert merged[field] == getattr(whole, field), field
    assert sum(merged["per_space"].values()) == whole.scenarios
    assert set(merged["per_space"]) <= {"small", "calm", "stealing", "medium", "storm",
                                        "fragile", "restarts", "imbalance"}


def test_a_time_budget_ends_within_a_batch(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A job asks for the time before each scenario: the budget cuts the batch short (not
    counted as run) instead of waiting for its last scenario. A clock that moves one second
    each time it is read makes this exact."""
    import squall.scenarios.explore as ex

    now = [1000.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(ex.time, "monotonic", clock)
    result = explore(budget=12.0, seed=0, space="small", out_dir=tmp_path)
    assert result.failure is None
    assert result.stats.batches == 0
    assert 0 < result.stats.scenarios < ex.BATCH


def test_shards_with_jobs_cover_one_run_with_jobs_times_shards(tmp_path: Path) -> None:
    def run(jobs: int, shard: int = 0, shards: int = 1) -> dict[int, list[str]]:
        r = explore(budget=600, seed=5, jobs=jobs, space="small", shard=shard, shards=shards,
                    max_batches=1, digests=True, out_dir=tmp_path)
        assert r.failure is None and sorted(r.digests) == sorted(r.streams)
        return r.digests

    assert run(4) == {**run(2, 0, 2), **run(2, 1, 2)}


def test_a_batch_draws_the_same_scenarios_in_a_fresh_process(tmp_path: Path) -> None:
    # In this process many modules are loaded already, and batches ran before: Hypothesis'
    # pool of "local constants" (literals of the modules loaded) must not change a draw.
    explore_batch(2, 0, 0, "all")
    here: list[str] = []
    explore_batch(2, 3, 1, "all", digests=here)
    code = ("import json, sys\n"
            "from squall.scenarios.explore import explore_batch\n"
            "kept = []\n"
            "explore_batch(2, 3, 1, 'all', digests=kept)\n"
            "json.dump(kept, sys.stdout)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == here and len(here) == 25


# ------------------------------------------------------------------ summaries and merge


def summary(shard: int, shards: int = 2, seed: int = 11, **kw: Any) -> ExploreSummary:
    fields: dict[str, Any] = dict(
        seed=seed, space="all", shard=shard, shards=shards, jobs=1, backend="jobs",
        budget=None, max_batches=1, elapsed=1.0, scenarios=25, transitions=100, checks=1000,
        stimuli=50, over_budget=0, batches=1, per_space={"small": 25},
        streams=[StreamRun(stream=shard, batches=1, scenarios=25)])
    fields.update(kw)
    return ExploreSummary(**fields)


def test_merge_names_missing_shards_and_still_merges(tmp_path: Path, run_cli) -> None:
    for k in (0, 2):
        write_summary(summary(k, shards=4, streams=[StreamRun(stream=k, batches=1,
                                                              scenarios=25)]),
                      tmp_path / f"s{k}" / "summary.json")
    code, out, err = run_cli(["explore", "merge", str(tmp_path / "s0"), str(tmp_path / "s2")])
    assert code == 0
    assert "shards missing: 1, 3 (of 4)" in err
    assert "2 of 4 shards" in out and "50 scenarios" in out and "no failure" in out


def test_merge_reports_a_shards_failure_with_its_trace_and_exits_1(tmp_path: Path,
                                                                   run_cli) -> None:
    write_summary(summary(0), tmp_path / "a" / "summary.json")
    failed = summary(1, failures=[FailureRun(what="worker.occupancy-fresh",
                                             scenario='{"workload":{}}',
                                             trace="explore-abc.jsonl")])
    write_summary(failed, tmp_path / "b" / "summary.json")
    code, out, err = run_cli(["explore", "merge", str(tmp_path)])  # found at any depth
    assert code == 1, out + err
    assert "shard 1: worker.occupancy-fresh" in out
    assert f"trace: {tmp_path / 'b' / 'explore-abc.jsonl'}" in out  # beside its summary
    code, out, _ = run_cli(["explore", "merge", str(tmp_path), "--json"])
    assert code == 1 and json.loads(out)["failures"][0]["shard"] == 1


@pytest.mark.parametrize("case", ["same-shard", "other-seed", "other-shards", "not-json",
                                  "wrong-shape", "bad-shard", "foreign-stream", "no-file",
                                  "empty-folder"])
def test_bad_or_disagreeing_summaries_get_a_one_line_error(case: str, tmp_path: Path,
                                                           run_cli) -> None:
    a, b = tmp_path / "a.summary.json", tmp_path / "b.summary.json"
    write_summary(summary(0), a)
    paths = [str(a), str(b)]
    expected: tuple[str, ...]
    if case == "same-shard":
        write_summary(summary(0), b)
        expected = ("shard 0/2 twice", str(a), str(b))
    elif case == "other-seed":
        write_summary(summary(1, seed=12), b)
        expected = ("different searches", "seed", "11", "12")
    elif case == "other-shards":
        write_summary(summary(1, shards=3), b)
        expected = ("different searches", "shards")
    elif case == "not-json":
        b.write_text("{not json")
        expected = ("not an exploration summary", str(b))
    elif case == "wrong-shape":
        b.write_text(json.dumps({"seed": "eleven"}))
        expected = ("not an exploration summary", str(b), "seed")
    elif case == "bad-shard":
        b.write_bytes(msgspec.json.encode(summary(1)).replace(b'"shard":1', b'"shard":5'))
        expected = ("shard 5 of 2", str(b))
    elif case == "foreign-stream":
        write_summary(summary(1, streams=[StreamRun(stream=2, batches=1, scenarios=25)]), b)
        expected = ("stream 2", "shard 1/2", str(b))
    elif case == "no-file":
        expected = ("no such file or folder", str(b))
    else:
        (tmp_path / "empty").mkdir()
        paths = [str(a), str(tmp_path / "empty")]
        expected = ("no summary", "empty")
    code, _, err = run_cli(["explore", "merge", *paths])
    assert code == 2
    one_line_error(err, *expected)


@pytest.mark.parametrize("argv,fragment", [
    (["--shard", "2/2"], "0 <= K < N"),
    (["--shard", "0/0"], "0 <= K < N"),
    (["--shard", "1"], "--shard must be K/N"),
    (["--shard", "a/b"], "--shard must be K/N"),
    (["--shard", "-1/2"], "--shard must be K/N"),
    (["--batches", "0"], "--batches must be >= 1"),
    (["--minimize", "-1"], "--minimize must be >= 0"),
    (["--task-batches", "0", "--dask", "local:1"], "--task-batches must be >= 1"),
    (["--task-batches", "2"], "--task-batches: only with --dask"),
    (["--dask", "local:0"], "local:N needs N >= 1"),
    (["--dask", "scheduler:8786"], "is not a dask address"),
    (["--dask", "tcp://host:99999"], "is not a dask address"),
    (["--runtime", "dask", "--shard", "0/2"], "--shard: explores the simulator only"),
    (["--dask", "local:2", "--jobs", "100000"], "SQUALL_MAX_PROCESSES"),
])
def test_bad_shard_batches_and_dask_options_get_a_one_line_error(
        argv: list[str], fragment: str, tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(["explore", *argv, "--out", str(tmp_path / "out")])
    assert code == 2
    one_line_error(err, fragment)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_without_the_dask_extra_dask_says_what_to_install(
        tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    code, _, err = run_cli(["explore", "--dask", "local:2", "--batches", "1",
                            "--out", str(tmp_path)])
    assert code == 2
    one_line_error(err, "pip install 'squall[dask]'")


def test_a_scheduler_out_of_reach_gets_a_one_line_error(
        tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    import socket

    import squall.scenarios.explore_dask as explore_dask

    monkeypatch.setattr(explore_dask, "CONNECT_TIMEOUT", 1.0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run_cli(["explore", "--dask", f"tcp://127.0.0.1:{port}", "--batches", "1",
                            "--out", str(tmp_path)])
    assert code == 2
    one_line_error(err, "cannot reach the dask scheduler", f"tcp://127.0.0.1:{port}")


def test_a_summary_names_its_failure_and_the_trace_beside_it(tmp_path: Path,
                                                             run_cli) -> None:
    from squall.scenarios.explore_summary import summarize

    result = explore(budget=600, seed=0, space="small", max_batches=1, out_dir=tmp_path,
                     job_context=partial(switched_on, BUG))
    assert result.failure is not None
    s = summarize(result, seed=0, space="small", budget=None, max_batches=1,
                  summary_dir=tmp_path)
    [f] = s.failures
    assert f.what.startswith("worker.occupancy") and f.trace == Path(
        result.failure.trace_path).name
    assert s.streams == [StreamRun(stream=0, batches=0, scenarios=result.stats.scenarios)]
    write_summary(s, tmp_path / "summary.json")
    code, out, _ = run_cli(["explore", "merge", str(tmp_path / "summary.json")])
    assert code == 1 and f"trace: {result.failure.trace_path}" in out


# ------------------------------------------------------------------ README, Kubernetes


def readme_ci_matrix() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    ci = [b for b in blocks if "squall explore merge" in b]
    assert len(ci) == 1, "README's CI-matrix example not found"
    return dict(yaml.safe_load(ci[0]))


def test_the_readme_ci_matrix_runs_as_written(tmp_path: Path, run_cli,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ci = readme_ci_matrix()
    shards = ci["jobs"]["explore"]["strategy"]["matrix"]["shard"]
    runs = [step["run"] for step in ci["jobs"]["explore"]["steps"]
            if "squall" in step.get("run", "")]
    merges = [step["run"] for step in ci["jobs"]["merge"]["steps"]
              if "squall" in step.get("run", "")]
    assert len(runs) == 1 and len(merges) == 1
    assert f"--shard ${{{{ matrix.shard }}}}/{len(shards)}" in runs[0]
    monkeypatch.chdir(tmp_path)
    for k in shards:
        line = (runs[0].replace("${{ matrix.shard }}", str(k))
                .replace("${{ github.run_number }}", "42"))
        line = re.sub(r"--budget \S+", "--budget 1", line)  # a second, not half an hour
        argv = shlex.split(line)
        assert argv[:2] == ["squall", "explore"]
        code, out, err = run_cli(argv[1:])
        assert code == 0, out + err
    argv = shlex.split(merges[0])
    expanded = [x for a in argv[1:] for x in (sorted(glob.glob(a)) if "*" in a else [a])]
    code, out, err = run_cli(expanded)
    assert code == 0, out + err
    assert f"{len(shards)} of {len(shards)} shards, seed 42" in out and not err


def manifest() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    return dict(yaml.safe_load((ROOT / "deploy" / "explore-indexed-job.yaml").read_text()))


@pytest.mark.parametrize("version", ["1.29.0", None])
def test_the_kubernetes_manifest_is_a_valid_indexed_job(version: str | None) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    job = manifest()
    kv.validate(job, version or kv.latest_version(), strict=True)  # raises if invalid
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    n = spec["completions"]
    assert spec["parallelism"] == n
    command = " ".join(spec["template"]["spec"]["containers"][0]["args"])
    assert f'--shard "${{JOB_COMPLETION_INDEX}}/{n}"' in command


def test_the_kubernetes_pods_command_explores_its_shard(tmp_path: Path) -> None:
    job = manifest()
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c"]
    script = container["args"][0].replace("/results", str(tmp_path / "results"))
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}, "BUDGET": "1"}
    squall = Path(sys.executable).with_name("squall")
    if squall.exists():  # this interpreter's squall first
        env["PATH"] = f"{squall.parent}{os.pathsep}{env['PATH']}"
    n = job["spec"]["completions"]
    for k in (0, n - 1):
        done = subprocess.run(["sh", "-c", script], env={**env, "JOB_COMPLETION_INDEX": str(k)},
                              capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        s = load_summary(tmp_path / "results" / f"shard-{k}" / "summary.json")
        assert (s.shard, s.shards) == (k, n)
        assert [r.stream for r in s.streams] == shard_streams(2, k, n)


# ------------------------------------------------------------------ dask (real processes)


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_dask_explores_the_same_scenarios_as_jobs_and_shards(tmp_path: Path, run_cli) -> None:
    pytest.importorskip("distributed")
    code, out, err = explore_cli(run_cli, "--jobs", "2", "--batches", "2", "--digests",
                                 "--summary", str(tmp_path / "jobs.summary.json"),
                                 "--out", str(tmp_path / "jobs"))
    assert code == 0, out + err
    code, out, err = explore_cli(run_cli, "--dask", "local:2", "--jobs", "2", "--batches",
                                 "2", "--digests", "--out", str(tmp_path / "dask"),
                                 "--summary", str(tmp_path / "dask.summary.json"))
    assert code == 0, out + err
    assert "on dask local:2, 2 streams" in out
    jobs = load_summary(tmp_path / "jobs.summary.json")
    dask = load_summary(tmp_path / "dask.summary.json")
    assert dask.backend == "dask local:2"
    assert digests_of(dask) == digests_of(jobs)
    assert (dask.scenarios, dask.transitions, dask.checks, dask.per_space) == (
        jobs.scenarios, jobs.transitions, jobs.checks, jobs.per_space)
    # and a shard on dask, two batches per task (then one): the other half of the streams
    # of a --jobs 4 run
    code, out, err = explore_cli(run_cli, "--dask", "local:2", "--shard", "1/2", "--jobs",
                                 "2", "--batches", "3", "--task-batches", "2", "--digests",
                                 "--out", str(tmp_path / "dask-shard"))
    assert code == 0, out + err
    shard = load_summary(tmp_path / "dask-shard" / "summary.json")
    assert [(r.stream, r.batches) for r in shard.streams] == [(1, 3), (3, 3)]
    whole = explore(budget=600, seed=11, jobs=4, max_batches=3, digests=True,
                    out_dir=tmp_path)
    assert digests_of(shard) == {g: whole.digests[g] for g in (1, 3)}


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_a_failure_found_on_dask_is_shrunk_and_its_trace_written_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    import squall.scenarios.explore as explore_mod
    from squall.scenarios.explore_dask import explore_on_dask
    from squall.scenarios.replay import REPRODUCED, replay_trace

    # the candidates on the cluster, however fast the failure runs
    monkeypatch.setattr(explore_mod, "REMOTE_FROM", 0.0)
    bug = partial(switched_on, BUG)  # the workers switch it on themselves, by name
    (tmp_path / "jobs").mkdir()
    (tmp_path / "dask").mkdir()
    local = explore(budget=600, seed=0, space="small", max_batches=1, job_context=bug,
                    out_dir=tmp_path / "jobs")
    remote = explore_on_dask(address="local", workers=2, budget=None, seed=0, space="small",
                             max_batches=1, job_context=bug, out_dir=tmp_path / "dask")
    assert local.failure is not None and remote.failure is not None
    f = remote.failure
    assert f.violation is not None and f.violation.invariant in ("worker.occupancy-fresh",
                                                                  "worker.occupancy-non-negative")
    # the same batch, shrunk by Hypothesis on a worker and minimized on the cluster:
    # what one process finds and minimizes alone
    assert f.scenario == local.failure.scenario
    assert remote.minimized > 0
    trace = Path(f.trace_path)
    assert trace.parent == tmp_path / "dask" and trace.exists()
    with switched_on(BUG):
        assert replay_trace(trace).verdict == REPRODUCED
    assert replay_trace(trace).verdict != REPRODUCED  # the bug's, not squall's


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_minimize_judging_candidates_on_the_cluster_finds_what_it_finds_alone() -> None:
    pytest.importorskip("distributed")
    from squall.scenarios.explore import SameFailure
    from squall.scenarios.explore_dask import JudgeOnCluster, dask_client
    from squall.scenarios.minimize import minimize
    from squall.scenarios.runner import run_scenario

    # many rounds of minimizing
    big = missing_data_with_fillers()
    bug = partial(switched_on, "missing-data-ignored")
    with bug():
        first = run_scenario(big, validate=True)
    judge = SameFailure(first, bug)
    alone, out, alone_tried = minimize(big, first, judge)
    with dask_client("local", 2) as client:
        spread, spread_out, tried = minimize(big, first, judge, window=4,
                                             judge_many=JudgeOnCluster(client, judge))
    assert spread == alone and spread_out.n_stimuli == out.n_stimuli
    assert tried == alone_tried  # counted as if one by one
    assert len(alone.workload.tasks) < len(big.workload.tasks)  # type: ignore[union-attr]
    assert tried > 0


@contextlib.contextmanager
def hang_once(marker: str) -> Iterator[None]:
    """The first batch to start, on any worker, claims ``marker`` + ".claimed", tells its
    process id through the named pipe ``marker`` and hangs there until its worker is
    killed; every other batch runs as usual."""
    try:
        os.close(os.open(marker + ".claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        yield
        return
    with open(marker, "w") as pipe:  # (opens once the test reads)
        pipe.write(f"{os.getpid()}\n")
    threading.Event().wait()  # forever: SIGKILL ends it
    yield  # pragma: no cover


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
def test_the_local_dask_cluster_lets_in_only_holders_of_its_certificate() -> None:
    """Its workers unpickle what they are sent: a plain Client on the same machine (another
    user's, say) is refused."""
    pytest.importorskip("distributed")
    import gc

    from distributed import Client

    from squall.scenarios.explore_dask import dask_client

    with dask_client("local", 1) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert client.submit(abs, -3).result(TIMEOUT) == 3
        for attempt in (address, address.replace("tls://", "tcp://")):
            with pytest.raises((OSError, TypeError)):
                Client(attempt, timeout=10, set_as_default=False)
            gc.collect()  # (a failed Client's loop closes now, not inside the next start)
        # squall's own way in, as to any running cluster: without credentials, one line
        with pytest.raises(ConnectionError, match="speaks TLS"), dask_client(address):
            pass
        gc.collect()
        with dask_client(address, security=client.security) as again:
            assert again.submit(abs, -4).result(TIMEOUT) == 4


def test_a_batch_on_a_lost_dask_worker_is_run_again(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from squall.scenarios.explore_dask import explore_on_dask

    marker = tmp_path / "hung.pid"
    os.mkfifo(marker)
    killed: list[int] = []

    def kill_the_hung_worker() -> None:
        with open(marker) as pipe:  # blocks until the hung batch writes (or the test ends)
            line = pipe.readline()
        if line:
            os.kill(int(line), signal.SIGKILL)
            killed.append(int(line))

    killer = threading.Thread(target=kill_the_hung_worker, daemon=True)
    killer.start()
    try:
        result = explore_on_dask(address="local", workers=2, budget=None, seed=4, jobs=2,
                                 space="small", max_batches=2, digests=True,
                                 job_context=partial(hang_once, str(marker)), out_dir=tmp_path)
    finally:
        if killer.is_alive():  # no batch hung: the reader sees the pipe close empty
            with contextlib.suppress(OSError):
                os.close(os.open(marker, os.O_WRONLY | os.O_NONBLOCK))
        killer.join(TIMEOUT)
    assert killed, "no batch hung"
    assert result.stats.rescheduled >= 1
    assert result.failure is None and result.stats.batches == 4
    expected = explore(budget=600, seed=4, jobs=2, space="small", max_batches=2, digests=True,
                       out_dir=tmp_path)
    assert result.digests == expected.digests  # every batch, the hung one too, ran whole


@pytest.mark.squall_real
@pytest.mark.xdist_group("squall_real")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_squall_explore_on_a_local_dask_cluster_leaves_no_process(sig: int,
                                                                  tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from test_process_hygiene import EXIT, Command, descendants, wait_until

    def workers() -> int:  # dask's worker processes (multiprocessing's spawn)
        found = 0
        for pid in descendants(explore_run.sid):
            with contextlib.suppress(OSError):
                found += b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        return found

    explore_run = Command("explore", "--dask", "local:2", "--budget", "600", "--out",
                          str(tmp_path / "traces"), cwd=tmp_path)
    try:
        wait_until(lambda: workers() >= 2, "the two dask workers started")
        code = explore_run.finish(sig)
    finally:
        explore_run.cleanup()
    assert code == EXIT[sig], explore_run.lines[-5:]
