"""Simulator figures for the core issue, measured side by side in one run.

    python benchmarks/sim_throughput.py [--quick]

1. Throughput: a 100,000-task random DAG on 100 simulated workers, validation off.
2. Placement cost: one decide_worker call at 10, 1,000 and 10,000 workers (ratio to 10).
3. Scale: 1,000,000 independent tasks on 1,000 workers: wall time and peak RSS
   (in a child process, so the RSS is its own).
4. Load balance without stealing: 10,000 equal independent tasks on 10 workers,
   makespan / (total work / total threads).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from typing import Any

from squall.core import protocol as p
from squall.core.scheduler import SchedulerState
from squall.core.sim import SimCluster
from squall.scenarios.workloads import independent, make_workload


def throughput_child(n: int, workers: int) -> None:
    graph = make_workload("random-dag", n, seed=0)
    start = time.perf_counter()
    outcome = SimCluster(workers=workers, seed=0, validate=False).run(graph)
    wall = time.perf_counter() - start
    assert outcome.results_ok
    print(json.dumps({"wall_s": wall, "tasks_per_s": n / wall}))


def throughput(n: int, workers: int, repeats: int = 3) -> dict[str, Any]:
    """``repeats`` runs, each in a fresh process (a run in a process that ran one before
    pays for the leftovers): every wall time, the best and the median."""
    walls = sorted(_child("--throughput-child", n, workers)["wall_s"] for _ in range(repeats))
    return {"tasks": n, "workers": workers, "walls_s": walls, "best_tasks_per_s": n / walls[0],
            "median_tasks_per_s": n / walls[len(walls) // 2]}


def _child(flag: str, *args: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, flag, *map(str, args)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def placement_cost(n_workers: int, decisions: int = 20_000, cold: bool = False) -> float:
    """Mean seconds per decide_worker on a loaded cluster of ``n_workers``. ``cold``: every
    decision recomputes the occupancies it looks at (as after a task finished and changed
    an estimate), instead of finding them remembered from the decision before."""
    s = SchedulerState()
    for i in range(n_workers):
        s.handle(p.AddWorker(stimulus_id=f"a{i}", time=0, worker=f"w{i}", nthreads=2))
    # Load every worker with queued work of a few prefixes and give it some data.
    tasks = [p.TaskSpecMsg(f"load{i % 4}-{i}", duration=0.1 * (1 + i % 4))
             for i in range(max(3 * n_workers, 300))]
    s.handle(p.UpdateGraph(stimulus_id="load", time=0, client="c", tasks=tuple(tasks),
                           wanted=tuple(t.key for t in tasks)))
    roots = [s.tasks[t.key] for t in tasks[:200]]
    held = [s.tasks[t.key] for t in tasks[:50]]
    for ts in held:  # pretend these finished, so dependents have holders
        ws = ts.processing_on
        s.handle(p.TaskFinished(stimulus_id=f"f{ts.key}", time=1, worker=ws.name, key=ts.key,
                                nbytes=10_000_000, duration=0.1))
    s.handle(p.UpdateGraph(stimulus_id="deps", time=1, client="c", wanted=(),
                           tasks=tuple(p.TaskSpecMsg(f"dep-{i}", deps=(held[i % 50].key,
                                                                    held[(i + 1) % 50].key))
                                       for i in range(200))))
    dep_tasks = [s.tasks[f"dep-{i}"] for i in range(200)]
    decide = s.decide_worker
    estimator = s.estimator
    start = time.perf_counter()
    for i in range(decisions):
        if cold:
            estimator.version += 1
        decide(roots[i % 200])
        if cold:
            estimator.version += 1
        decide(dep_tasks[i % 200])
    return (time.perf_counter() - start) / (2 * decisions)


def scale_child(n: int, workers: int) -> None:
    graph = independent(n, duration=0.01)
    start = time.perf_counter()
    outcome = SimCluster(workers=workers, seed=0, heartbeat_interval=None).run(graph)
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"ok": outcome.results_ok, "wall_s": wall, "peak_rss_bytes": rss,
                      "tasks_per_s": n / wall}))


def scale(n: int, workers: int) -> dict[str, Any]:
    return _child("--scale-child", n, workers)


def balance(n: int = 10_000, workers: int = 10, duration: float = 0.1) -> float:
    outcome = SimCluster(workers=workers, seed=0).run(independent(n, duration=duration))
    assert outcome.results_ok
    return outcome.makespan / (n * duration / workers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--scale-child", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--throughput-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        scale_child(*args.scale_child)
        return
    if args.throughput_child:
        throughput_child(*args.throughput_child)
        return
    q = args.quick
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {__import__('os').cpu_count()} cores")
    t = throughput(10_000 if q else 100_000, 100)
    print(f"throughput: {t['tasks']:,} task random DAG on {t['workers']} workers, "
          f"{len(t['walls_s'])} runs: {', '.join(f'{w:.2f}' for w in t['walls_s'])} s wall; "
          f"best {t['best_tasks_per_s']:,.0f} tasks/s, median {t['median_tasks_per_s']:,.0f} "
          "tasks/s (target >= 20,000)")
    for cold in (False, True):
        costs = {n: placement_cost(n, 2_000 if q else 20_000, cold) for n in (10, 1_000, 10_000)}
        for n, c in costs.items():
            print(f"placement ({'occupancies recomputed' if cold else 'occupancies remembered'}):"
                  f" {n:>6,} workers: {c * 1e6:.2f} us per decision, "
                  f"ratio to 10 workers {c / costs[10]:.2f} (target <= 1.5)")
    s = scale(100_000 if q else 1_000_000, 1_000)
    print(f"scale: {100_000 if q else 1_000_000:,} independent tasks on 1,000 workers: "
          f"{s['wall_s']:.1f} s wall, {s['tasks_per_s']:,.0f} tasks/s, peak RSS "
          f"{s['peak_rss_bytes'] / 2**30:.2f} GiB (target <= 4 GB), results ok: {s['ok']}")
    r = balance(1_000 if q else 10_000)
    print(f"balance without stealing: makespan / (work / threads) = {r:.4f} (target <= 1.05)")


if __name__ == "__main__":
    main()
