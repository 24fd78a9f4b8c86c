"""Scenario figures for the scenarios issue, measured side by side in one run.

    python benchmarks/explore_rate.py [--budget SECONDS] [--quick]

1. Exploration rate: small generated scenarios (up to 50 tasks, 4 workers, 3 faults)
   explored with strict mode on, in 1 process and in 2 (both cores): scenarios/s and
   the ratio between the two.
2. Replay: a run of at least 100,000 stimuli is recorded, then replayed; replay time
   against the simulated run's time, with strict mode on in both and off in both.
3. Tracing cost: the same run with and without a trace written, and the trace size per
   stimulus in bytes.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from squall.scenarios.explore import explore
from squall.scenarios.model import ClusterShape, Generated, Scenario
from squall.scenarios.replay import MATCH, replay_trace
from squall.scenarios.runner import run_scenario


def exploration_rate(budget: float, jobs: int, out: Path) -> tuple[float, int]:
    # keep_going: failures (open bugs) are counted, not shrunk, so the rate is that of
    # generating and checking scenarios
    result = explore(budget=budget, seed=1, jobs=jobs, space="small", out_dir=out,
                     keep_going=True)
    s = result.stats
    print(f"  {jobs} job(s): {s.scenarios} scenarios in {result.elapsed:.1f} s = "
          f"{result.rate:.1f} scenarios/s; {s.transitions} transitions, {s.checks} invariant "
          f"checks, {s.failures} failing scenarios counted")
    return result.rate, result.stats.scenarios


def big_scenario(tasks: int) -> Scenario:
    # many tiny tasks: about three scheduler stimuli and three worker stimuli per task
    return Scenario(name="replay-bench", workload=Generated(name="many-tiny", tasks=tasks),
                    cluster=ClusterShape(workers=8), seed=0)


def replay_figures(tasks: int, out: Path) -> None:
    sc = big_scenario(tasks)
    for strict in (False, True):
        label = "strict mode on " if strict else "strict mode off"
        t0 = time.perf_counter()
        plain = run_scenario(sc, validate=strict)
        sim_plain = time.perf_counter() - t0
        path = out / f"replay-{int(strict)}.jsonl"
        t0 = time.perf_counter()
        traced = run_scenario(sc, validate=strict, trace=path)
        sim_traced = time.perf_counter() - t0
        assert plain.ok and traced.ok, (plain.violations, traced.violations)
        t0 = time.perf_counter()
        result = replay_trace(path, validate=strict)
        replay_s = time.perf_counter() - t0
        assert result.verdict == MATCH, result.message
        size = os.path.getsize(path)
        print(f"  {label}: {traced.n_stimuli} stimuli; run {sim_plain:.2f} s, run with trace "
              f"{sim_traced:.2f} s (x{sim_traced / sim_plain:.2f}); replay {replay_s:.2f} s = "
              f"{replay_s / sim_plain:.2f} x the run; trace {size / 1e6:.1f} MB = "
              f"{size / traced.n_stimuli:.0f} bytes/stimulus")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per exploration run")
    ap.add_argument("--quick", action="store_true", help="short budget, smaller replay")
    args = ap.parse_args()
    budget = 5.0 if args.quick else args.budget
    tasks = 5_000 if args.quick else 34_000
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        print(f"1. exploration rate, space 'small', strict mode on, {budget:g} s each:")
        one, _ = exploration_rate(budget, 1, out)
        two, _ = exploration_rate(budget, 2, out)
        print(f"  2 jobs / 1 job: {two / one:.2f}x; target >= 20 scenarios/s with 2 jobs")
        print(f"2./3. replay and tracing, many-tiny x{tasks} on 8 workers:")
        replay_figures(tasks, out)


if __name__ == "__main__":
    main()
