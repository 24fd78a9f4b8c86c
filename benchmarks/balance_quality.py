"""Balance quality: work stealing on vs off, side by side, in the simulator.

    python benchmarks/balance_quality.py [--quick]

Prints, for each figure in BENCHMARKS.md ("Work stealing"):

1. makespan / lower bound (max(total work / total threads, longest task)) for
   independent tasks whose duration hints are wrong by 10x either way for some prefixes;
2. the share of a worker joining halfway through 1,000 equal tasks (tasks it ran after
   joining / mean of the others' over the same time);
3. the fraction of trivial (1 ms) tasks with a 1 MiB shared input that were stolen;
4. the wall time of one balancing round at 100 and 1,000 workers (half saturated), and
   at 1,000 workers with 10x more tasks per victim.

Makespans are virtual seconds; only (4) is wall time.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from typing import Any

from squall.core import protocol as p
from squall.core.graph import TaskGraph, TaskSpec
from squall.core.sim import SimCluster
from squall.core.snapshot import load_snapshot
from squall.scenarios.workloads import independent, skewed_durations

MiB = 1 << 20


def lower_bound(graph: TaskGraph, threads: int) -> float:
    """For independent tasks the critical path is the longest task."""
    work = [s.actual_duration for s in graph]
    return max(sum(work) / threads, max(work))


def prefix_blocks(n: int, seed: int = 0, wrong_by: float = 10.0) -> TaskGraph:
    """Three prefixes submitted one block after another, hinted 10x too long, 10x too
    short and right; actual run times exponential around each prefix's mean."""
    rng = random.Random(f"blocks:{seed}")
    g = TaskGraph()
    i = 0
    for name, factor in (("over", wrong_by), ("under", 1 / wrong_by), ("right", 1.0)):
        mean = rng.uniform(0.05, 0.2)
        for _ in range(n // 3):
            g.add_spec(TaskSpec(f"{name}-{i}", duration=mean * factor,
                                sim_duration=rng.expovariate(1 / mean), nbytes=100))
            i += 1
    return g


def two_prefixes(n: int, seed: int = 0) -> TaskGraph:
    rng = random.Random(f"two:{seed}")
    return TaskGraph(TaskSpec(f"{'ab'[i % 2]}-{i}", duration=0.1,
                              sim_duration=rng.uniform(0.05, 0.15), nbytes=100)
                     for i in range(n))


def run(graph: TaskGraph, workers: int, stealing: bool, *,
        skew: tuple[tuple[str, float], ...] = (), seed: int = 0) -> Any:
    c = SimCluster(workers=workers, seed=seed, stealing=stealing)
    for prefix, factor in skew:  # before submission: placement sees the skew too
        c.scheduler.estimator.skew(factor, prefix)
    out = c.run(graph)
    assert out.results_ok and not out.runs, (out.wrong, out.runs)
    return out


def list_schedule(graph: TaskGraph, threads: int) -> float:
    """Makespan of online list scheduling: each task, in order, to the first free thread.
    What a dispatcher that knows nothing of durations but never leaves a thread idle
    while work waits would reach (no transfer or protocol delays)."""
    free = [0.0] * threads
    for spec in graph:
        heapq.heappush(free, heapq.heappop(free) + spec.actual_duration)
    return max(free)


def wrong_estimates(quick: bool) -> None:
    print("1. independent tasks, hints wrong by 10x for some prefixes: makespan / lower bound")
    print("   (list = online list scheduling with no delays, for reference)")
    print(f"   {'workload':<34} {'tasks':>5} {'workers':>7} {'off':>6} {'on':>6} {'list':>6} "
          f"{'steals':>6}")
    sizes = ((48, 8), (240, 8), (1200, 32)) if quick else ((48, 8), (240, 8), (1200, 8),
                                                           (1200, 32), (4800, 32))
    worst: dict[bool, float] = {}
    for n, w in sizes:
        cases = [
            ("interleaved prefixes", skewed_durations(n, seed=3), ()),
            ("prefix blocks, exponential times", prefix_blocks(n, seed=1), ()),
            ("skewed all run: a x10, b x0.1", two_prefixes(n), (("a", 10.0), ("b", 0.1))),
        ]
        for label, g, skew in cases:
            bound = lower_bound(g, w)
            off = run(g, w, False, skew=skew)
            on = run(g, w, True, skew=skew)
            few = n // w < 10
            worst[few] = max(worst.get(few, 0.0), on.makespan / bound)
            print(f"   {label:<34} {n:>5} {w:>7} {off.makespan / bound:>6.3f} "
                  f"{on.makespan / bound:>6.3f} {list_schedule(g, w) / bound:>6.3f} "
                  f"{on.steals:>6}")
    print(f"   worst ratio with stealing: {worst[False]:.3f} with >= 10 tasks per worker "
          f"(target <= 1.3); {worst[True]:.3f} with 6 per worker")


def late_joiner(quick: bool) -> None:
    print("2. a worker joins halfway through 1,000 equal tasks on 4 workers: its share")
    print(f"   {'task':>6} {'share off':>10} {'share on':>9} {'makespan off':>13} "
          f"{'makespan on':>12} {'ideal':>7}")
    for d in ((0.1,) if quick else (1.0, 0.1, 0.01)):
        row = []
        for stealing in (False, True):
            c = SimCluster(workers=4, seed=0, stealing=stealing)
            half = 1000 * d / 4 / 2
            done: dict[str, int] = {}

            def count(target: str, msg: Any, c: SimCluster = c, half: float = half,
                      done: dict[str, int] = done) -> None:
                if isinstance(msg, p.ExecuteSuccess) and c.now > half:
                    done[target] = done.get(target, 0) + 1

            c.recorders.append(count)
            c.at(half, c.add_worker)
            out = c.run(independent(1000, duration=d))
            assert out.results_ok and not out.runs
            others = [v for k, v in done.items() if k != "w4"]
            row.append((done.get("w4", 0) / (sum(others) / len(others)), out.makespan))
        ideal = 1000 * d / 4 / 2 + 500 * d / 5
        print(f"   {d:>5g}s {row[0][0]:>10.2f} {row[1][0]:>9.2f} {row[0][1]:>13.2f} "
              f"{row[1][1]:>12.2f} {ideal:>7.2f}")
    print("   target: share within 0.7 .. 1.3 with stealing")


def trivial_tasks() -> None:
    print("3. 1,000 trivial tasks (0.5-1.5 ms) reading one 1 MiB input, 4 workers")
    print(f"   {'start':<36} {'stolen off':>10} {'stolen on':>10} {'ratio off':>10} "
          f"{'ratio on':>9}")
    g = TaskGraph([TaskSpec("input-0", duration=0.01, sim_duration=0.01, nbytes=MiB)]
                  + [TaskSpec(f"tiny-{i}", deps=("input-0",), duration=0.001,
                              sim_duration=0.001 * (0.5 + (i % 11) / 10), nbytes=10)
                     for i in range(1000)])
    for label, late in (("4 workers from the start", False), ("2 workers, 2 more at 20 ms", True)):
        row = []
        for stealing in (False, True):
            c = SimCluster(workers=2 if late else 4, seed=0, stealing=stealing)
            if late:
                c.at(0.02, c.add_worker)
                c.at(0.02, c.add_worker)
            out = c.run(g)
            assert out.results_ok and not out.runs
            bound = max(sum(s.actual_duration for s in g) / 4, 0.01)
            row.append((out.steals / 1000, out.makespan / bound))
        print(f"   {label:<36} {row[0][0]:>10.1%} {row[1][0]:>10.1%} {row[0][1]:>10.2f} "
              f"{row[1][1]:>9.2f}")
    print("   target: <= 1% stolen")


def round_time(workers: int, per_victim: int, repeats: int) -> tuple[float, int]:
    """Median wall seconds of one round: half the workers saturated, half idle. Every
    steal is refused, so each round starts from the same state."""
    snap = {"workers": [{"name": f"w{i}", "nthreads": 1} for i in range(workers)],
            "tasks": [{"key": f"x{i}-{j}", "prefix": "x", "duration": 1.0, "worker": f"w{i}",
                       "state": "executing" if j == 0 else "ready"}
                      for i in range(workers // 2) for j in range(per_victim)]}
    loaded = load_snapshot(snap)
    state = loaded.state
    times = []
    steals = 0
    t = 0.0
    for r in range(repeats):
        t += loaded.stealing.interval
        start = time.perf_counter()
        out = state.handle(p.Tick(stimulus_id=f"round-{r}", time=t))
        times.append(time.perf_counter() - start)
        requests = [m for m in out if isinstance(m, p.StealRequest)]
        steals = len(requests)
        for m in requests:
            state.handle(p.StealResponse(stimulus_id=f"no-{m.steal_id}", time=t, worker=m.worker,
                                         key=m.key, steal_id=m.steal_id, state="executing"))
        assert not loaded.stealing.in_flight
    return statistics.median(times), steals


def round_cost(quick: bool) -> None:
    print("4. wall time of one balancing round (half the workers saturated, half idle)")
    print(f"   {'workers':>7} {'tasks/victim':>12} {'tasks':>7} {'steals':>7} {'round ms':>9} "
          f"{'us/saturated':>13}")
    repeats = 5 if quick else 15
    results = {}
    for workers, per in ((100, 20), (1000, 20), (1000, 200)):
        seconds, steals = round_time(workers, per, repeats)
        results[(workers, per)] = seconds
        print(f"   {workers:>7} {per:>12} {workers // 2 * per:>7} {steals:>7} "
              f"{seconds * 1e3:>9.2f} {seconds / (workers // 2) * 1e6:>13.1f}")
    print(f"   1000 vs 100 workers: x{results[(1000, 20)] / results[(100, 20)]:.1f} "
          f"(10x the saturated workers); 10x tasks per victim: "
          f"x{results[(1000, 200)] / results[(1000, 20)]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    args = ap.parse_args()
    wrong_estimates(args.quick)
    print()
    late_joiner(args.quick)
    print()
    trivial_tasks()
    print()
    round_cost(args.quick)


if __name__ == "__main__":
    main()
