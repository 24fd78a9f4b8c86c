"""Losing the scheduler: how long a waiting client takes to say so, and what is left.

    python benchmarks/scheduler_loss.py [--runs 5] [--futures 1000] [--workers 2]

Each run starts a ``LocalCluster`` (a launcher, a scheduler, N workers) and a ``Client``,
submits ``--futures`` tasks (5 ms each) and calls ``gather`` on all of them; while it
waits, another thread stops the scheduler:

- ``kill``: SIGKILL. Printed: the seconds from the signal to ``SchedulerLost`` raised in
  ``gather``, the processes of the cluster still alive at that moment, the seconds until
  every one of them has exited by itself (before ``close()``), and the descendants of this
  process left after ``close()``.
- ``freeze``: SIGSTOP (alive, silent), with the client's default ``scheduler_timeout``
  (5 s): the seconds to ``SchedulerLost``; then SIGCONT and ``close()``, and what is left.

Target: the error within 10 s, zero processes left.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import statistics
import threading
import time

from squall.core.lifeline import descendants
from squall.core.runtime.client import Client, SchedulerLost
from squall.core.runtime.cluster import LocalCluster


def task(x: int) -> int:
    time.sleep(0.005)
    return x


def one_run(kind: str, futures: int, workers: int) -> dict[str, float]:
    cluster = LocalCluster(workers=workers, threads=1)
    client = Client(cluster)
    pending = client.map(task, range(futures))
    hit: list[float] = []

    def strike() -> None:
        time.sleep(0.5)  # mid-run: some results are in, most are not
        hit.append(time.monotonic())
        os.kill(cluster.scheduler_pid, signal.SIGKILL if kind == "kill" else signal.SIGSTOP)

    striker = threading.Thread(target=strike)
    striker.start()
    error = ""
    try:
        client.gather(pending, timeout=60)
    except SchedulerLost as e:
        error = str(e)
    raised = time.monotonic()
    striker.join()
    if not error:
        raise SystemExit(f"{kind}: gather did not raise SchedulerLost")
    out = {"error_s": raised - hit[0], "alive_at_error": float(len(descendants()))}
    if kind == "kill":
        deadline = time.monotonic() + 30
        while descendants() and time.monotonic() < deadline:
            time.sleep(0.01)
        out["all_gone_s"] = time.monotonic() - hit[0]
    else:
        os.kill(cluster.scheduler_pid, signal.SIGCONT)
    client.close()
    cluster.close()
    out["left_after_close"] = float(len(descendants()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--futures", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    # The resumed scheduler of a freeze declares its workers dead: expected, not shown.
    logging.getLogger("squall").setLevel(logging.ERROR)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.futures} futures, {args.workers} workers")
    for kind in ("kill", "freeze"):
        rows = [one_run(kind, args.futures, args.workers) for _ in range(args.runs)]
        for i, r in enumerate(rows):
            extra = (f"  all exited by themselves after {r['all_gone_s']:.2f} s"
                     if "all_gone_s" in r else "")
            print(f"  {kind:<6} run {i}: SchedulerLost after {r['error_s']:.3f} s, "
                  f"{r['alive_at_error']:.0f} processes alive then,{extra}  "
                  f"left after close(): {r['left_after_close']:.0f}")
        errs = [r["error_s"] for r in rows]
        print(f"  {kind}: SchedulerLost after median {statistics.median(errs):.3f} s, "
              f"max {max(errs):.3f} s; processes left after close(): "
              f"{max(r['left_after_close'] for r in rows):.0f} at most")


if __name__ == "__main__":
    main()
