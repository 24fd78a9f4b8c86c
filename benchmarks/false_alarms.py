"""False alarms: explore every scenario space with no bug planted; every violation (or
wrong result) found is a false alarm of the checks, or a real bug of the reference
scheduler, to be looked at.

    python benchmarks/false_alarms.py [--budget 60] [--seeds 0-4] [--jobs 2]
                                      [--space NAME ...] [--out DIR]

For each space (every named one of SCENARIO_SPACES, then "all", the swarm of them that
``squall explore`` searches by default) and each seed, ``explore`` runs for ``--budget``
seconds without stopping at a failure (``keep_going``): failing scenarios are counted,
not shrunk. It prints "N violations in M scenarios" per space (and per seed), the runs
that stopped at their time budget with their work still progressing (slow, not stuck:
not counted), and, for a space with a failure, the first failing scenario, written to
``--out`` as a scenario file (``squall run FILE --trace T`` runs it again, ``squall
explore --scenario-space NAME --seed S`` finds and shrinks it). Exit status 0 when no
space found anything.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from squall.scenarios.explore import explore
from squall.scenarios.strategies import SCENARIO_SPACES, SWARM


def seeds(text: str) -> list[int]:
    """"0-4" or "0,2,7" (or a mix)."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds of exploration per space and seed")
    ap.add_argument("--seeds", type=seeds, default=seeds("0-4"),
                    help="exploration seeds: 0-4 (default), or 0,3,5")
    ap.add_argument("--jobs", type=int, default=2, help="processes per exploration")
    ap.add_argument("--space", action="append", default=[],
                    help=f"only these spaces (repeatable; default: every one, then {SWARM!r})")
    ap.add_argument("--out", default="/tmp/squall-false-alarms",
                    help="where the first failing scenario of a space is written")
    args = ap.parse_args()
    spaces = args.space or [*SCENARIO_SPACES, SWARM]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, load average "
          f"{', '.join(f'{x:.2f}' for x in load)}; {args.budget:g} s per space and seed, "
          f"seeds {args.seeds}, {args.jobs} job(s)")
    started = time.monotonic()
    total_failures = total_scenarios = 0
    rows: list[tuple[str, int, int, int]] = []
    for space in spaces:
        failures = scenarios = over = 0
        first = ""
        for seed in args.seeds:
            result = explore(budget=args.budget, seed=seed, jobs=args.jobs, space=space,
                             out_dir=out / space, keep_going=True)
            s = result.stats
            failures += s.failures
            scenarios += s.scenarios
            over += s.over_budget
            print(f"  {space:10} seed {seed}: {s.failures} violations in {s.scenarios} "
                  f"scenarios ({result.rate:.1f}/s)"
                  + (f", {s.over_budget} over their time budget" if s.over_budget else "")
                  + (f"; first: {s.first_failure}" if s.failures else ""),
                  file=sys.stderr, flush=True)
            if s.failures and not first:
                first = s.first_failure
                path = out / f"{space}-seed{seed}.json"
                path.write_text(s.first_failure_scenario + "\n", encoding="utf-8")
                print(f"    first failing scenario ({s.first_failure}): {path}",
                      file=sys.stderr, flush=True)
        rows.append((space, failures, scenarios, over))
        total_failures += failures
        total_scenarios += scenarios
    print(f"\n{'space':10} {'violations':>10} {'scenarios':>10} {'over budget':>11}")
    for space, failures, scenarios, over in rows:
        print(f"{space:10} {failures:10d} {scenarios:10d} {over:11d}   "
              f"{failures} violations in {scenarios} scenarios")
    print(f"\nall spaces: {total_failures} violations in {total_scenarios} scenarios; "
          f"wall time {time.monotonic() - started:.0f} s")
    return 0 if total_failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
