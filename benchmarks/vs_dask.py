"""squall's real cluster against dask.distributed, side by side in one run.

Both run 2 worker processes x 1 thread on this machine, driven through their client APIs
with the same code (submit, map, gather):

- map:   5,000 independent no-op tasks
- chain: 2,000 tasks, each depending on the previous one
- tree:  a tree reduction over 4,096 leaves (8,191 tasks)
- start-up and shutdown of the cluster (with a connected client)

Each figure is the best of ``--repeat`` runs. Prints tasks per second and squall/dask for
each workload (for start-up: dask's time / squall's time, so above 1 means squall is
faster everywhere). Needs the ``bench`` extra: ``pip install -e .[bench]``.

    python benchmarks/vs_dask.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

WORKERS = 2
THREADS = 1


def noop(x: Any) -> Any:
    return x


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def run_map(client: Any, n: int) -> int:
    futures = client.map(noop, range(n))
    assert client.gather(futures) == list(range(n))
    return n


def run_chain(client: Any, n: int) -> int:
    x = client.submit(inc, 0)
    for _ in range(n - 1):
        x = client.submit(inc, x)
    assert x.result() == n
    return n


def run_tree(client: Any, leaves: int) -> int:
    level = client.map(noop, range(leaves))
    n = leaves
    while len(level) > 1:
        level = [client.submit(add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
        n += len(level)
    assert level[0].result() == leaves * (leaves - 1) // 2
    return n


def best_rate(fn: Callable[[Any, int], int], client: Any, size: int, repeat: int) -> float:
    """Tasks per second, best of ``repeat`` runs."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        n = fn(client, size)
        best = max(best, n / (time.perf_counter() - start))
    return best


def squall_cluster() -> tuple[Any, Any]:
    from squall.core.runtime.client import Client
    from squall.core.runtime.cluster import LocalCluster

    cluster = LocalCluster(workers=WORKERS, threads=THREADS, validate=False)
    return cluster, Client(cluster)


def dask_cluster() -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=THREADS, processes=True,
                           dashboard_address=None)
    return cluster, Client(cluster)


def best_startup(make: Callable[[], tuple[Any, Any]], repeat: int) -> float:
    """Seconds from nothing to a cluster with a connected client, and back, best of n."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        cluster, client = make()
        client.close()
        cluster.close()
        best = min(best, time.perf_counter() - start)
    return best


def measure(make: Callable[[], tuple[Any, Any]], sizes: dict[str, int],
            repeat: int) -> dict[str, float]:
    out = {"startup": best_startup(make, repeat)}
    cluster, client = make()
    try:
        run_map(client, 200)  # warm up: functions shipped, connections open
        out["map"] = best_rate(run_map, client, sizes["map"], repeat)
        out["chain"] = best_rate(run_chain, client, sizes["chain"], repeat)
        out["tree"] = best_rate(run_tree, client, sizes["tree"], repeat)
    finally:
        client.close()
        cluster.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    args = parser.parse_args()
    try:
        import distributed
    except ImportError:
        sys.exit("vs_dask: error: dask.distributed is not installed "
                 "(pip install -e .[bench])")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    sizes = {"map": 5000, "chain": 2000, "tree": 4096}
    if args.quick:
        sizes = {"map": 1000, "chain": 400, "tree": 512}
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, "
          f"dask.distributed {distributed.__version__}; {WORKERS} worker processes x "
          f"{THREADS} thread; best of {args.repeat}")
    squall = measure(squall_cluster, sizes, args.repeat)
    dask = measure(dask_cluster, sizes, args.repeat)
    print(f"{'workload':<34}{'squall':>12}{'dask':>12}{'squall/dask':>13}")
    labels = {"map": f"map, {sizes['map']:,} no-op tasks",
              "chain": f"chain of {sizes['chain']:,} tasks",
              "tree": f"tree reduction, {sizes['tree']:,} leaves"}
    for name, label in labels.items():
        print(f"{label:<34}{squall[name]:>10,.0f}/s{dask[name]:>10,.0f}/s"
              f"{squall[name] / dask[name]:>12.1f}x")
    print(f"{'start-up + shutdown':<34}{squall['startup']:>11.3f}s{dask['startup']:>11.3f}s"
          f"{dask['startup'] / squall['startup']:>12.1f}x")


if __name__ == "__main__":
    main()
