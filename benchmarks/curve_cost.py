"""What authentication costs: squall's real cluster with its CURVE keys (the default) and
with ``insecure=True``, side by side in one run.

Both run 2 worker processes x 1 thread on this machine, driven through the client:

- map:   5,000 independent no-op tasks
- chain: 2,000 tasks, each depending on the previous one
- tree:  a tree reduction over 4,096 leaves (8,191 tasks)
- fetch: 20 results of 8 MB each gathered by the client (160 MB from the workers)
- start-up of the cluster with a connected client

The two modes alternate, a fresh cluster each run; each figure is the best of
``--repeat`` runs (seconds), then curve/insecure.

    python benchmarks/curve_cost.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from squall.core.runtime.client import Client
from squall.core.runtime.cluster import LocalCluster

MODES: dict[str, dict[str, Any]] = {"insecure": {"insecure": True}, "curve": {}}


def noop(x: Any) -> Any:
    return x


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def big(i: int) -> bytes:
    return bytes(8_000_000)


def workloads(client: Client) -> dict[str, float]:
    out = {}
    t = time.perf_counter()
    client.gather(client.map(noop, range(5000)), 120)
    out["map 5,000"] = time.perf_counter() - t
    t = time.perf_counter()
    f = client.submit(inc, 0)
    for _ in range(1999):
        f = client.submit(inc, f)
    f.result(120)
    out["chain 2,000"] = time.perf_counter() - t
    t = time.perf_counter()
    level = client.map(noop, range(4096))
    while len(level) > 1:
        level = [client.submit(add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
    level[0].result(120)
    out["tree 8,191"] = time.perf_counter() - t
    t = time.perf_counter()
    client.gather(client.map(big, range(20)), 120)
    out["fetch 160 MB"] = time.perf_counter() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    best: dict[str, dict[str, float]] = {m: {} for m in MODES}
    for _ in range(args.repeat):
        for mode, options in MODES.items():
            t = time.perf_counter()
            with LocalCluster(workers=2, threads=1, **options) as cluster, \
                    Client(cluster) as client:
                started = time.perf_counter() - t
                figures = workloads(client)
            figures["start-up"] = started
            for k, v in figures.items():
                best[mode][k] = min(best[mode].get(k, v), v)
    print(f"{'workload':<14} {'insecure s':>11} {'curve s':>9} {'curve/insecure':>15}")
    for k in best["curve"]:
        a, b = best["insecure"][k], best["curve"][k]
        print(f"{k:<14} {a:>11.3f} {b:>9.3f} {b / a:>15.2f}")


if __name__ == "__main__":
    main()
