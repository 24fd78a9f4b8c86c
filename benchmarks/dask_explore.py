"""``squall explore --runtime dask``: exploration rate on dask.distributed, and the planted
dask bugs found by exploration, side by side in one run.

    python benchmarks/dask_explore.py [--budget SECONDS] [--bug-budget SECONDS] [--space S]

1. The same exploration (space, seed, budget) on clean dask twice: with one cluster kept and
   reset between scenarios of its shape (what ``squall explore --runtime dask`` does), and
   with a new cluster for every scenario. Prints scenarios/s of each and the ratio.
2. Every planted dask bug (``squall.mutants.dask_bugs``) under exploration alone, no
   hand-written scenario: found or not within ``--bug-budget`` seconds, time to the first
   failing run, the shrunk scenario's size and its trace's length.
3. For reference, the hand-written scenario of each bug (``squall mutants --target dask``):
   caught or not, and its trace's length.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from typing import Any

from squall.mutants.dask_bugs import DASK_CATALOG, run_bug
from squall.scenarios.target_explore import explore_on_target
from squall.scenarios.target_run import ClusterPool


class _NoReuse(ClusterPool):
    """A pool that never keeps a cluster: a new one for every scenario."""

    def put(self, cluster: Any) -> None:
        cluster.close()


def _rate(budget: float, space: str, reuse: bool) -> tuple[float, int, int, int]:
    import squall.scenarios.target_explore as te

    saved = te.ClusterPool
    te.ClusterPool = saved if reuse else _NoReuse  # type: ignore[misc]
    try:
        with tempfile.TemporaryDirectory() as out:
            r = explore_on_target(runtime="dask", budget=budget, space=space, out_dir=out)
    finally:
        te.ClusterPool = saved  # type: ignore[misc]
    if r.failure is not None:
        print(f"  (a failure on clean dask: {r.failure.violation})")
    return r.rate, r.stats.scenarios, r.clusters, r.reused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--bug-budget", type=float, default=90.0)
    ap.add_argument("--space", default="small")
    ap.add_argument("--no-bugs", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"1. exploration rate on clean dask, space {args.space}, {args.budget:g} s each")
    kept = _rate(args.budget, args.space, reuse=True)
    fresh = _rate(args.budget, args.space, reuse=False)
    for label, (rate, n, started, reused) in (("one cluster, reset", kept),
                                              ("a new cluster each", fresh)):
        print(f"  {label:<20} {rate:5.2f} scenarios/s  ({n} scenarios, {started} clusters "
              f"started, {reused} runs on a kept one)")
    print(f"  ratio (reuse / new each): {kept[0] / fresh[0]:.2f}x" if fresh[0] else "")
    if args.no_bugs:
        return
    print(f"2. planted bugs found by exploration alone ({args.space}, {args.bug_budget:g} s "
          "each, shrinking up to 30 s)")
    for bug in DASK_CATALOG:
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as out:
            r = explore_on_target(runtime="dask", budget=args.bug_budget, space=args.space,
                                  out_dir=out, job_context=bug.active, shrink_budget=30)
            f = r.failure
            if f is None or f.outcome is None:
                print(f"  {bug.name:<36} not found in {r.stats.scenarios} scenarios")
                continue
            found = r.stats.failed_at - started
            v = f.violation.invariant if f.violation else "wrong results"
            print(f"  {bug.name:<36} found after {found:5.1f} s by {v}; shrunk to "
                  f"{len(f.scenario.graph())} tasks, {len(f.scenario.chaos)} faults, "
                  f"{f.outcome.n_stimuli} stimuli")
    print("3. the hand-written scenarios (squall mutants --target dask)")
    with tempfile.TemporaryDirectory() as out:
        for bug in DASK_CATALOG:
            res = run_bug(bug, trace=os.path.join(out, f"{bug.name}.jsonl"))
            print(f"  {bug.name:<36} {'caught' if res.expected else 'MISSED'} by "
                  f"{res.caught_by}; trace {res.stimuli} stimuli")


if __name__ == "__main__":
    main()
