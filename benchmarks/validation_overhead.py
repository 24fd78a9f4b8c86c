"""What strict mode costs: printed as ratios measured side by side in one run.

1. Incremental strict mode against validation off: the random DAG (100,000 tasks by
   default) on 100 simulated workers, runs alternated, best of ``--repeat``. Target <= 3x.
2. A full check of a state with that many tasks (the scheduler's, then every worker's):
   best of ``--repeat``. Target < 1 s for the scheduler with 100,000 tasks.
3. Per-transition cost of strict mode at ``--small`` tasks against ``--tasks`` tasks:
   (time on - time off) / transitions. Target: a ratio near 1 (no growth with size).

Wall time is the figure; CPU time (process time) is printed beside it, since a shared
machine's other load inflates wall time but not CPU time.

    python benchmarks/validation_overhead.py [--tasks 100000] [--small 10000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
from dataclasses import dataclass

from squall.core.sim import SimCluster
from squall.invariants import SchedulerValidator, WorkerValidator
from squall.scenarios.workloads import make_workload


@dataclass
class Timing:
    wall: float
    cpu: float
    transitions: int
    checks: int


def run(n: int, workers: int, validate: bool, graph: object) -> tuple[Timing, SimCluster]:
    cluster = SimCluster(workers=workers, seed=0, validate=validate)
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = cluster.run(graph)  # type: ignore[arg-type]
    timing = Timing(time.perf_counter() - wall, time.process_time() - cpu,
                    outcome.transitions, outcome.invariant_checks)
    if not outcome.results_ok:
        raise SystemExit(f"validation_overhead: the {n}-task run gave wrong results")
    return timing, cluster


def best(timings: list[Timing]) -> Timing:
    return Timing(min(t.wall for t in timings), min(t.cpu for t in timings),
                  timings[0].transitions, timings[0].checks)


def overhead(n: int, workers: int, repeat: int) -> tuple[Timing, Timing, SimCluster]:
    graph = make_workload("random-dag", n)
    off: list[Timing] = []
    on: list[Timing] = []
    cluster = None
    for _ in range(repeat):
        off.append(run(n, workers, False, graph)[0])
        timing, cluster = run(n, workers, True, graph)
        on.append(timing)
    assert cluster is not None
    return best(off), best(on), cluster


def full_check(cluster: SimCluster, repeat: int) -> tuple[float, float, int]:
    """Seconds for a full check of the scheduler, and of all workers (best of repeat)."""
    state = cluster.scheduler
    sched = SchedulerValidator(state)
    workers = [WorkerValidator(sw.state, data=sw.data) for sw in cluster.workers.values()]
    sched_s, workers_s = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        assert sched.check_full(collect=True) == []
        sched_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        for wv in workers:
            assert wv.check_full(collect=True) == []
        workers_s.append(time.perf_counter() - t)
    return min(sched_s), min(workers_s), sum(len(sw.state.tasks) for sw in cluster.workers.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    print(f"machine: {platform.machine()}, Python {platform.python_version()}, "
          f"random-dag on {args.workers} simulated workers, best of {args.repeat}")
    small_off, small_on, _ = overhead(args.small, args.workers, args.repeat)
    big_off, big_on, cluster = overhead(args.tasks, args.workers, args.repeat)

    print(f"\n1. incremental strict mode, {args.tasks} tasks "
          f"({big_on.transitions} transitions, {big_on.checks} invariant checks):")
    print(f"   off {big_off.wall:7.2f} s wall {big_off.cpu:7.2f} s cpu")
    print(f"   on  {big_on.wall:7.2f} s wall {big_on.cpu:7.2f} s cpu")
    print(f"   ratio on/off: {big_on.wall / big_off.wall:.2f}x wall, "
          f"{big_on.cpu / big_off.cpu:.2f}x cpu   (target <= 3x)")

    sched_s, workers_s, wtasks = full_check(cluster, args.repeat)
    print(f"\n2. full check of the final state: scheduler with {len(cluster.scheduler.tasks)} "
          f"tasks {sched_s:.3f} s (target < 1 s); {len(cluster.workers)} workers holding "
          f"{wtasks} tasks {workers_s:.3f} s")

    per_small = (small_on.cpu - small_off.cpu) / small_on.transitions * 1e6
    per_big = (big_on.cpu - big_off.cpu) / big_on.transitions * 1e6
    wall_small = (small_on.wall - small_off.wall) / small_on.transitions * 1e6
    wall_big = (big_on.wall - big_off.wall) / big_on.transitions * 1e6
    print(f"\n3. strict-mode cost per transition: {args.small} tasks {per_small:.2f} us cpu "
          f"({wall_small:.2f} us wall), {args.tasks} tasks {per_big:.2f} us cpu "
          f"({wall_big:.2f} us wall)")
    print(f"   ratio {args.tasks}/{args.small}: {per_big / per_small:.2f}x cpu, "
          f"{wall_big / wall_small:.2f}x wall   (target: about 1, no growth with size)")
    base_small = small_off.cpu / small_off.transitions * 1e6
    base_big = big_off.cpu / big_off.transitions * 1e6
    print(f"   for scale, the simulator's own cost per transition: {base_small:.2f} us, then "
          f"{base_big:.2f} us ({base_big / base_small:.2f}x: a larger heap, not more work)")
    print(f"   ({args.small} tasks: off {small_off.wall:.2f} s, on {small_on.wall:.2f} s wall, "
          f"ratio {small_on.wall / small_off.wall:.2f}x)")


if __name__ == "__main__":
    main()
