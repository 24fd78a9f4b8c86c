"""dask.distributed 2026.8.0: a confirmed steal opens a slot on the victim, but the
scheduler does not hand it a queued task until some other stimulus does.

    python findings/dask_steal_queue_slot.py

Two workers x 1 thread (worker-saturation 1.1: two slots each). Worker 0 processes two
'slow' tasks (estimated 10 s: one runs, one waits); 100 root-ish 'q' tasks (estimated
1 ms; the first two take 5 s) fill worker 1's two slots and the other 98 are queued. Work stealing moves the
waiting 'slow' task from worker 0 to worker 1 (its occupancy is lower): worker 0 now has
a free slot while 98 tasks are queued, and keeps it until the next task finishes
(about 3.8 s here). Prints the moments the state changes; exits 1 if the gap was seen.
"""

import sys
import time

import dask
from distributed import Client, LocalCluster
from distributed.scheduler import _task_slots_available


def sleep(seconds: float, i: int) -> int:
    time.sleep(seconds)
    return i


def main() -> int:
    durations = {"slow": "10s", "q": "1ms"}  # the estimates dask starts from
    with dask.config.set({"distributed.scheduler.default-task-durations": durations}), \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        s = cluster.scheduler
        a = sorted(s.workers)[0]
        slow = [client.submit(sleep, 5, i, key=f"slow-{i}", workers=[a],
                              allow_other_workers=True) for i in range(2)]
        deadline = time.monotonic() + 30
        while len(s.workers[a].processing) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        qs = client.map(sleep, [5] * 2 + [0.01] * 98, range(100),
                        key=[f"q-{i}" for i in range(100)])
        t0 = time.monotonic()
        seen: tuple[bool, int] | None = None
        gap = since = 0.0
        while time.monotonic() - t0 < 12:
            free = {ws.name: _task_slots_available(ws, s.WORKER_SATURATION)
                    for ws in list(s.running)}
            steals = s.extensions["stealing"].count
            state = (len(s.queued) > 0 and any(n > 0 for n in free.values()), steals)
            if state != seen:
                now = time.monotonic() - t0
                print(f"t={now:6.3f} s  queued={len(s.queued):3d}  free slots={free}  "
                      f"steals={steals}")
                if seen is not None and seen[0] and not state[0]:
                    gap = max(gap, now - since)
                if state[0] and (seen is None or not seen[0]):
                    since = now
                seen = state
            time.sleep(0.01)  # sampling the scheduler's state, this script's only clock
        client.gather(slow + qs)
    print(f"longest time a worker had a free slot while tasks were queued: {gap:.2f} s")
    return 1 if gap > 0.5 else 0


if __name__ == "__main__":
    sys.exit(main())
