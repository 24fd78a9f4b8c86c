"""Chaos figures: the storm scenario in both runtimes, and what the proxies cost.

    python benchmarks/chaos_storm.py [--seed N]

1. ``storm`` (2,000 mixed tasks, 4 workers x 2 threads, strict mode on, two kills with
   replacements, a pause, slow links, a cut past the heartbeat timeout and its heal, two
   skews) in the simulator and on real processes: wall time, makespan, transitions and
   invariant checks, and the real/simulated makespan ratio.
2. The same workload with no fault, on real processes, with every connection through a
   Toxiproxy proxy (no toxic) and without: the makespan ratio is what routing a cluster
   through the built-in proxy costs. Then the same for 5,000 1 ms tasks (``many-tiny``),
   where the scheduler's messages, not the task bodies, take the time.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import msgspec

from squall.chaos.injectors import SlowNetwork
from squall.core.outcome import Outcome
from squall.scenarios.library import named_scenario
from squall.scenarios.runner import run_scenario


def _row(label: str, out: Outcome) -> None:
    status = "ok" if out.ok else f"FAILED {out.violations[:1]} {out.wrong[:3]}"
    print(f"  {label:<34} wall {out.wall_time:6.2f} s  makespan {out.makespan:7.2f} s  "
          f"transitions {out.transitions:6d}  checks {out.invariant_checks:7d}  "
          f"faults {sum(out.faults.values()):2d}  {status}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    storm = msgspec.structs.replace(named_scenario("storm"), seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        print("1. storm, strict mode on, trace written")
        sim = run_scenario(msgspec.structs.replace(storm, runtime="sim"),
                           trace=Path(tmp) / "sim.jsonl")
        _row("simulator", sim)
        real = run_scenario(storm, trace=Path(tmp) / "real.jsonl")
        _row("real processes", real)
        print(f"  real / simulated makespan: {real.makespan / sim.makespan:.2f}x; "
              f"real wall time {real.wall_time:.1f} s")
        print("2. the same workload, no fault, real processes, strict mode on")
        calm = msgspec.structs.replace(storm, chaos=())
        # A zero-latency slow-link: every connection through a proxy, no toxic on it.
        proxied = msgspec.structs.replace(storm, chaos=(SlowNetwork(at=0.0, latency=0.0),))
        direct = run_scenario(calm, trace=Path(tmp) / "direct.jsonl")
        _row("direct connections", direct)
        via = run_scenario(proxied, trace=Path(tmp) / "proxied.jsonl")
        _row("every connection through a proxy", via)
        print(f"  proxied / direct makespan: {via.makespan / direct.makespan:.2f}x")
        tiny = msgspec.structs.replace(named_scenario("many-tiny"), runtime="real")
        direct = run_scenario(tiny, trace=Path(tmp) / "tiny-direct.jsonl")
        _row("many-tiny, direct", direct)
        via = run_scenario(msgspec.structs.replace(
            tiny, chaos=(SlowNetwork(at=0.0, latency=0.0),)), trace=Path(tmp) / "tiny.jsonl")
        _row("many-tiny, through proxies", via)
        print(f"  proxied / direct makespan: {via.makespan / direct.makespan:.2f}x")


if __name__ == "__main__":
    main()
