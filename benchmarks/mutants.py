"""Bug-finding power: explore with each planted bug (squall.mutants.catalog) on, then as
long with none, and print the figures BENCHMARKS.md records.

    python benchmarks/mutants.py [--budget 60] [--jobs 2] [--json mutants.json]
    python benchmarks/mutants.py --space all   # every mutant in the default (swarm) space

Per mutant: the seconds of exploration until the first failing scenario (against the
60 s target), the shrunk trace's length in stimuli (against 30, with how many of them are
clock ticks and heartbeats), the replays that reproduced the same failure, and whether
the shrunk scenario passes with the mutant off. Then the baseline: scenarios explored per
space with no mutant, and the violations found (the target is none).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from squall.mutants.catalog import CATALOG, mutant
from squall.mutants.measure import run_mutants

SECONDS, STIMULI = 60.0, 30


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per mutant")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replays", type=int, default=5)
    ap.add_argument("--mutant", action="append", default=[], help="only these (repeatable)")
    ap.add_argument("--out", default="/tmp/squall-mutants-bench")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    ap.add_argument("--space", default=None,
                    help="explore every mutant (and the baseline) in this scenario space "
                         "instead of its own, e.g. 'all': the default of squall explore")
    args = ap.parse_args()
    chosen = [mutant(n) for n in args.mutant] if args.mutant else list(CATALOG)
    where = f"space {args.space!r}" if args.space else "each in its own space"
    print(f"python {platform.python_version()}, {len(chosen)} mutants, budget {args.budget:g} s "
          f"each, {args.jobs} job(s), seed {args.seed}, {where}")
    started = time.monotonic()
    results, base, summary = run_mutants(
        chosen, budget=args.budget, jobs=args.jobs, seed=args.seed, out_dir=args.out,
        replays=args.replays, say=lambda line: print(line, file=sys.stderr, flush=True),
        require_stimuli=STIMULI, space=args.space)
    wall = time.monotonic() - started

    print(f"\n{'mutant':31} {'first (s)':>9} {'/60 s':>6} {'stimuli':>7} {'/30':>5} "
          f"{'ticks+hb':>8} {'replays':>7}  caught by")
    for r in results:
        if not r.detected:
            print(f"{r.mutant:31} {'NOT CAUGHT':>9}  ({r.caught_by or 'nothing'})")
            continue
        first = r.first_failure or 0.0
        print(f"{r.mutant:31} {first:9.1f} {first / SECONDS:6.3f} {r.stimuli:7d} "
              f"{(r.stimuli or 0) / STIMULI:5.2f} {r.housekeeping:8d} "
              f"{r.replays_same:3d}/{r.replays:<3d}  {r.caught_by}")
    print(f"\n{'baseline space':16} {'scenarios':>9} {'violations':>10}")
    for b in base:
        print(f"{b.space:16} {b.scenarios:9d} {b.violations:10d}"
              + (f"  {b.caught_by}: {b.trace}" if b.violations else ""))
    n = summary["mutants"]
    print(f"\ndetected {summary['detected']}/{n}; within {SECONDS:g} s: "
          f"{summary['detected_within_seconds']}/{n} (slowest "
          f"{summary['slowest_first_failure']:.1f} s = "
          f"{summary['slowest_first_failure'] / SECONDS:.3f} of the target)")
    print(f"shrunk to <= {STIMULI} stimuli: {summary['shrunk_within_stimuli']}/{n} (largest "
          f"{summary['largest_shrunk_trace']} = {summary['largest_shrunk_trace'] / STIMULI:.2f}"
          f" of the target)")
    print(f"replayed to the same failure every time: {summary['replay_same_always']}/{n}")
    print(f"false alarms with no mutant: {summary['false_alarms']} in "
          f"{summary['baseline_scenarios']} scenarios over {len(base)} spaces")
    print(f"wall time {wall:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"mutants": [vars(r) for r in results], "baseline": [vars(b) for b in base],
                       "summary": summary}, fh, indent=2)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
