"""Exploration backends side by side in one run: ``--jobs 1``, ``--jobs 2``, ``--dask local:2``.

    python benchmarks/explore_backends.py [--budget SECONDS] [--seeds N] [--quick]

1. Rate: space 'small', strict mode on, failures counted not shrunk (``keep_going``), the
   same seed and budget: scenarios/s with 1 job, 2 jobs, and a dask LocalCluster of 2
   worker processes (started once, before; its start-up time is printed apart). Targets:
   dask local:2 within 10% of --jobs 2, and >= 1.8x --jobs 1.
2. A failure: a planted bug (``occupancy-drift``, caught in the first batch) explored with
   2 jobs and on the dask cluster, for several seeds: seconds from the failing run's end
   (in a job, on a worker) to its shrunk trace on this machine's disk; with Hypothesis'
   shrinking only (``--minimize 0``), and with the default ``--minimize`` (up to 5,000
   candidate runs; candidates judged one by one in this
   process with --jobs; with --dask, in parallel on the cluster when a run of the failure
   takes REMOTE_FROM or more, else here too); and minimizing alone, one by one vs on the
   cluster, for a failure whose runs take about a millisecond.
3. Cost per task on the dask cluster: a no-op task's round trip (submit, run, result, one
   at a time), the no-op tasks/s the scheduler sustains here (many in flight), and the
   per-batch overhead seen in (1). From them, a model: scenarios/s at 10, 100 and 1,000
   workers, and the batches per task (``--task-batches``) that keep the scheduler below
   half its capacity (dask's scheduler handles on the order of 1,000-5,000 tasks/s).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from squall.mutants.catalog import switched_on
from squall.mutants.examples import missing_data_with_fillers
from squall.scenarios.explore import BATCH, ExploreResult, explore
from squall.scenarios.explore_dask import dask_client, explore_on_dask

SECURITY: list[Any] = [None]  # the credentials of the cluster main() starts

BUG = "occupancy-drift"


def _noop(x: int) -> int:
    return x


def rate_line(name: str, r: ExploreResult) -> float:
    s = r.stats
    print(f"  {name:>14}: {s.scenarios} scenarios ({s.batches} batches) in {r.elapsed:.1f} s "
          f"= {r.rate:.1f} scenarios/s; {s.transitions} transitions, {s.checks} invariant "
          f"checks, {s.failures} failing scenarios counted")
    return r.rate


def rates(budget: float, address: str, out: Path) -> tuple[float, float, float, Any]:
    print(f"1. exploration rate, space 'small', strict mode on, {budget:g} s each:")
    one = explore(budget=budget, seed=1, jobs=1, space="small", out_dir=out, keep_going=True)
    two = explore(budget=budget, seed=1, jobs=2, space="small", out_dir=out, keep_going=True)
    dask = explore_on_dask(address=address, security=SECURITY[0], budget=budget, seed=1,
                           jobs=2, space="small", out_dir=out, keep_going=True)
    # the same batches, four to a task: a quarter of the scheduler round trips
    dask4 = explore_on_dask(address=address, security=SECURITY[0], budget=budget, seed=1,
                            jobs=2, space="small", out_dir=out, keep_going=True, per_task=4)
    r1, r2 = rate_line("--jobs 1", one), rate_line("--jobs 2", two)
    rd = rate_line("--dask local:2", dask)
    rd4 = rate_line("--dask local:2 --task-batches 4", dask4)
    print(f"  dask local:2 / jobs 2: {rd / r2:.2f}x (target >= 0.90); dask local:2 / jobs 1: "
          f"{rd / r1:.2f}x (target >= 1.8); jobs 2 / jobs 1: {r2 / r1:.2f}x")
    print(f"  with --task-batches 4: / jobs 2 {rd4 / r2:.2f}x, / jobs 1 {rd4 / r1:.2f}x")
    return r1, r2, rd, (one, two, dask)


def to_trace(seeds: int, address: str, out: Path) -> None:
    print(f"2. failure found -> shrunk trace on disk ({BUG}, space 'small', seeds 0..{seeds - 1}):")
    bug = partial(switched_on, BUG)
    from squall.scenarios.minimize import MAX_CANDIDATES

    for minimize in (0, MAX_CANDIDATES):
        rows: dict[str, list[float]] = {"--jobs 2": [], "--dask local:2": []}
        tried: dict[str, list[int]] = {"--jobs 2": [], "--dask local:2": []}
        for seed in range(seeds):
            for name in rows:
                d = out / f"fail-{name.strip('-').replace(' ', '')}-{seed}-{int(minimize)}"
                d.mkdir()
                if name == "--jobs 2":
                    r = explore(budget=120, seed=seed, jobs=2, space="small", out_dir=d,
                                job_context=bug, minimize_candidates=minimize)
                else:
                    r = explore_on_dask(address=address, security=SECURITY[0], budget=120,
                                        seed=seed, jobs=2,
                                        space="small", out_dir=d, job_context=bug,
                                        minimize_candidates=minimize)
                done = time.monotonic()
                assert r.failure is not None and Path(r.failure.trace_path).exists(), name
                rows[name].append(done - r.stats.failed_at)
                tried[name].append(r.minimized)
        what = "Hypothesis' shrinking only" if not minimize else f"and --minimize {minimize}"
        print(f"  {what}:")
        for name, secs in rows.items():
            extra = (f", {statistics.mean(tried[name]):.0f} candidates minimizing"
                     if minimize else "")
            print(f"    {name:>14}: median {statistics.median(secs):.2f} s (min "
                  f"{min(secs):.2f}, max {max(secs):.2f}){extra}")
        j, d = statistics.median(rows["--jobs 2"]), statistics.median(rows["--dask local:2"])
        print(f"    dask / jobs: {d / j:.2f}x")


def minimize_alone(client: Any) -> None:

    from squall.scenarios.explore import REMOTE_FROM, SameFailure
    from squall.scenarios.explore_dask import JudgeOnCluster
    from squall.scenarios.minimize import minimize
    from squall.scenarios.runner import run_scenario

    big = missing_data_with_fillers()
    bug = partial(switched_on, "missing-data-ignored")
    with bug():
        t0 = time.perf_counter()
        first = run_scenario(big, validate=True)
        run = time.perf_counter() - t0
    judge = SameFailure(first, bug)
    print(f"  minimize alone, a 12-task failure ({run * 1e3:.1f} ms a run; --minimize judges "
          f"on the cluster only from {REMOTE_FROM * 1e3:.0f} ms a run):")
    t0 = time.perf_counter()
    alone, _, n = minimize(big, first, judge)
    seq = time.perf_counter() - t0
    print(f"    {'one by one here':>22}: {seq:.2f} s, {n} candidates")
    for window in (2, 8):
        t0 = time.perf_counter()
        spread, _, m = minimize(big, first, judge, window=window,
                                judge_many=JudgeOnCluster(client, judge))
        d = time.perf_counter() - t0
        print(f"    {f'on dask, {window} at a time':>22}: {d:.2f} s, {m} candidates "
              f"({d / seq:.1f}x; the same result: {spread == alone})")


def overhead(client: Any, runs: Any) -> None:
    print("3. cost per task on the dask cluster, and a model of scale:")
    client.submit(_noop, -1, pure=False).result()  # warm
    lat = []
    for i in range(200):
        t0 = time.perf_counter()
        client.submit(_noop, i, pure=False).result()
        lat.append(time.perf_counter() - t0)
    n = 3000
    t0 = time.perf_counter()
    client.gather(client.map(_noop, range(n), pure=False))
    thr = n / (time.perf_counter() - t0)
    rt = statistics.median(lat)
    print(f"  no-op round trip (one at a time): median {rt * 1e3:.2f} ms; no-op throughput "
          f"(many in flight): {thr:,.0f} tasks/s (scheduler, client and 2 workers sharing "
          f"{os.cpu_count()} cores)")
    _, two, dask = runs
    # a batch's wall time per worker, both cores busy: --jobs 2 and dask local:2
    t_jobs = two.elapsed * 2 / max(1, two.stats.batches)
    t_dask = dask.elapsed * 2 / max(1, dask.stats.batches)
    over = t_dask - t_jobs
    print(f"  a batch of {BATCH} scenarios, both cores busy: {t_jobs * 1e3:.0f} ms per job "
          f"(--jobs 2), {t_dask * 1e3:.0f} ms per worker (dask local:2): dask's cost "
          f"{over * 1e3:+.1f} ms per batch ({over / t_jobs:+.1%}; the budget's tail included)")
    per_worker = BATCH / max(t_jobs, t_dask)  # scenarios/s a worker explores
    task = max(t_jobs, t_dask)
    print(f"  model: a worker explores {per_worker:.0f} scenarios/s, one task per "
          f"{task:.2f} s; workers add up until the scheduler saturates:")
    for capacity, what in ((thr, "measured here, sharing the cores"), (1000.0, "dask's low"),
                           (5000.0, "dask's high")):
        print(f"    a scheduler of {capacity:,.0f} tasks/s ({what}), kept below half of it:")
        for w in (10, 100, 1000):
            tasks = w / task  # tasks/s with one batch per task
            k = max(1, math.ceil(tasks / (capacity / 2)))
            print(f"      {w:>5} workers: {w * per_worker:>9,.0f} scenarios/s; {tasks:>7,.0f} "
                  f"tasks/s at 1 batch per task -> --task-batches {k} ({tasks / k:,.0f} tasks/s, "
                  f"{k * task:.1f} s per task)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per rate run")
    ap.add_argument("--seeds", type=int, default=5, help="failures timed per backend")
    ap.add_argument("--quick", action="store_true", help="5 s runs, 2 seeds")
    args = ap.parse_args()
    budget, seeds = (5.0, 2) if args.quick else (args.budget, args.seeds)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, dask_client("local", 2) as client:
        print(f"dask LocalCluster of 2 worker processes started in {time.monotonic() - t0:.1f} "
              f"s (not in the rates below)")
        address = client.scheduler.address
        SECURITY[0] = client.security  # the local cluster's own certificate (mutual TLS)
        *_, runs = rates(budget, address, Path(tmp))
        to_trace(seeds, address, Path(tmp))
        minimize_alone(client)
        overhead(client, runs)


if __name__ == "__main__":
    main()
