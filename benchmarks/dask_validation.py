"""What validation costs on dask.distributed: printed as ratios measured side by side in one
run.

Two workloads on a dask ``LocalCluster`` of 2 worker processes x 1 thread: a map of
``--tasks`` no-op tasks (5,000) and a chain of ``--chain`` tasks (1,000, one graph), three
ways, each on a fresh cluster, the three alternated ``--repeat`` times (best wall time of
each):

- plain dask;
- dask's own validation: ``distributed.scheduler.validate`` and ``distributed.worker.validate``
  set before the cluster starts (and ``validate=True`` for the nannies, which otherwise
  start their workers with validation off);
- squall's ``DaskValidator`` attached (scheduler and worker plugin), incremental checks
  after every stimulus, and a full check at quiescence after each workload (not timed).

Target: squall's checks cost at most 1.5x plain dask. The squall runs must end with zero
violations and a nonzero check count.

    python benchmarks/dask_validation.py [--tasks 5000] [--chain 1000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from dataclasses import dataclass, field

from squall.targets.dask import require_dask

PLAIN, DASK, SQUALL = "plain dask", "dask validate", "squall"
MODES = (PLAIN, DASK, SQUALL)


def noop(x: int) -> int:
    return x


def inc(x: int) -> int:
    return x + 1


def _validating(dask_worker: object) -> bool:
    return bool(dask_worker.state.validate)  # type: ignore[attr-defined]


@dataclass
class Run:
    map_s: float
    chain_s: float
    cpu_s: float = 0.0  # CPU time of this process (scheduler and client) over both
    checks: int = 0
    violations: list[str] = field(default_factory=list)


def one(mode: str, tasks: int, chain: int) -> Run:
    import dask
    from distributed import Client, LocalCluster

    from squall.targets.dask.hooks import DaskValidator

    config = {"distributed.scheduler.validate": mode == DASK,
              "distributed.worker.validate": mode == DASK}
    # A Nanny passes its own ``validate`` (default False) to its worker: say it too.
    extra = {"validate": True} if mode == DASK else {}
    with dask.config.set(config), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0", **extra) as cluster, \
            Client(cluster) as client:
        validator = None
        if mode == SQUALL:
            validator = DaskValidator.attach(cluster.scheduler)
            client.register_plugin(validator.worker_plugin())
        if mode == DASK:  # dask's validation is on where it runs
            assert cluster.scheduler.validate and all(client.run(_validating).values())
        client.run(noop, 0)  # the workers are up
        cpu = time.process_time()
        t0 = time.perf_counter()
        futures = client.map(noop, range(tasks), pure=False)
        client.gather(futures)
        map_s = time.perf_counter() - t0
        del futures
        cpu = time.process_time() - cpu
        if validator is not None:
            validator.check_quiescent(client)
        graph: dict[str, object] = {"inc-0": (inc, 0)}
        for i in range(1, chain):
            graph[f"inc-{i}"] = (inc, f"inc-{i - 1}")
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = client.get(graph, f"inc-{chain - 1}")
        chain_s = time.perf_counter() - t0
        cpu += time.process_time() - cpu0
        if result != chain:
            raise SystemExit(f"dask_validation: the chain gave {result}, not {chain}")
        run = Run(map_s, chain_s, cpu)
        if validator is not None:
            validator.check_quiescent(client)
            run.checks = validator.checks
            run.violations = [f"{v.id}: {v.entity}: {v.detail}" for v in validator.violations]
            run.violations += validator.errors
            validator.detach()
        return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=5000, help="tasks in the map")
    ap.add_argument("--chain", type=int, default=1000, help="tasks in the chain")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each mode, alternated")
    args = ap.parse_args()
    version = require_dask()
    logging.getLogger("distributed").setLevel(logging.ERROR)  # the scheduler's chatter
    print(f"dask.distributed {version}, Python {platform.python_version()}, "
          f"{platform.machine()}; LocalCluster: 2 worker processes x 1 thread")
    runs: dict[str, list[Run]] = {m: [] for m in MODES}
    for r in range(args.repeat):
        for mode in MODES:
            run = one(mode, args.tasks, args.chain)
            runs[mode].append(run)
            print(f"  round {r + 1}  {mode:<14} map {run.map_s:7.2f} s   "
                  f"chain {run.chain_s:7.2f} s   scheduler CPU {run.cpu_s:6.2f} s" + (f"   {run.checks:,} checks, "
                                                   f"{len(run.violations)} violations"
                                                   if mode == SQUALL else ""))
    best = {m: (min(x.map_s for x in rs), min(x.chain_s for x in rs)) for m, rs in runs.items()}
    base_map, base_chain = best[PLAIN]
    print(f"\nbest of {args.repeat}, wall time (ratio to plain dask):")
    print(f"  {'':<14} {'map of ' + str(args.tasks):>20} {'chain of ' + str(args.chain):>20}")
    for mode in MODES:
        m, c = best[mode]
        print(f"  {mode:<14} {m:8.2f} s ({m / base_map:4.2f}x)   {c:8.2f} s ({c / base_chain:4.2f}x)")
    cpu = {m: min(x.cpu_s for x in rs) for m, rs in runs.items()}
    print("  CPU time of the scheduler's process, both workloads (best): " + ", ".join(
        f"{m} {cpu[m]:.2f} s ({cpu[m] / cpu[PLAIN]:.2f}x)" for m in MODES))
    squall = runs[SQUALL]
    worst = max(best[SQUALL][0] / base_map, best[SQUALL][1] / base_chain)
    print(f"\nsquall: {squall[-1].checks:,} invariant checks in the last run; violations: "
          f"{sum(len(x.violations) for x in squall)}; worst ratio {worst:.2f}x "
          f"(target <= 1.5x): {'met' if worst <= 1.5 else 'MISSED'}")
    for run in squall:
        for v in run.violations[:5]:
            print(f"  violation: {v}")
    if any(x.violations for x in squall) or not all(x.checks for x in squall):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
