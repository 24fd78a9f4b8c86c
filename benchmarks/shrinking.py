"""Deterministic, minimal shrinking: each planted bug (squall.mutants.catalog) explored in
the default space, its failure shrunk by Hypothesis then minimized, twice -- the second
time with a CPU hog on the other core -- and the figures BENCHMARKS.md records.

    python benchmarks/shrinking.py [--batches 400] [--seed 0] [--json shrinking.json]

Per mutant (space "all", what ``squall explore`` searches by default; one job, and a bound
of batches rather than seconds, so that both runs find the same failure whatever the
load): the shrunk trace's length in stimuli after Hypothesis' shrink and after
``minimize`` (``squall.scenarios.minimize``, to a budget of candidate runs), the candidate
runs it spent, whether the result is 1-minimal (``redundant_parts`` is empty: no single
fault, client action, task or worker can go with the failure kept), and whether the second
run, under load, gave the same minimized scenario (the trace's name is the scenario's
content hash) and the same length.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from squall.mutants.catalog import CATALOG, mutant
from squall.mutants.measure import MutantResult, measure_mutant
from squall.scenarios.minimize import MAX_CANDIDATES

STIMULI = 30  # the target for a shrunk trace


def measure(chosen: list[Any], *, batches: int, seed: int, out: Path,
            label: str) -> list[MutantResult]:
    results = []
    for i, m in enumerate(chosen, 1):
        r = measure_mutant(m, budget=float("inf"), jobs=1, seed=seed, space="all",
                           out_dir=str(out), replays=1, max_batches=batches)
        results.append(r)
        print(f"[{label} {i}/{len(chosen)}] {m.name}: "
              + (f"{r.shrunk_stimuli} -> {r.stimuli} stimuli, {r.candidates} candidates, "
                 f"redundant {r.redundant}, {r.elapsed:.1f} s exploring" if r.detected
                 else f"NOT caught ({r.caught_by or 'nothing'})"),
              file=sys.stderr, flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=400,
                    help="batches of 25 scenarios explored at most per mutant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mutant", action="append", default=[], help="only these (repeatable)")
    ap.add_argument("--no-hog", action="store_true",
                    help="run the second measurement without the CPU hog")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()
    chosen = [mutant(n) for n in args.mutant] if args.mutant else list(CATALOG)
    print(f"python {platform.python_version()}, {len(chosen)} mutants, space 'all', seed "
          f"{args.seed}, 1 job, at most {args.batches} batches each, minimize budget "
          f"{MAX_CANDIDATES} candidate runs")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="squall-shrinking-") as tmp:
        first = measure(chosen, batches=args.batches, seed=args.seed, out=Path(tmp) / "1",
                        label="quiet")
        hog = None if args.no_hog else subprocess.Popen(
            [sys.executable, "-c", "while True: pass"])
        try:
            second = measure(chosen, batches=args.batches, seed=args.seed,
                             out=Path(tmp) / "2", label="hog" if hog else "again")
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    wall = time.monotonic() - started

    print(f"\n{'mutant':31} {'Hypothesis':>10} {'minimized':>9} {'candidates':>10} "
          f"{'1-minimal':>9} {'run 2':>5} {'same':>4}  caught by")
    small = minimal = same = 0
    rows = []
    for a, b in zip(first, second, strict=True):
        if not a.detected:
            print(f"{a.mutant:31} {'NOT CAUGHT':>10}  ({a.caught_by or 'nothing'})")
            rows.append({"mutant": a.mutant, "detected": False})
            continue
        one_minimal = a.redundant == []
        identical = (b.detected and Path(a.trace).name == Path(b.trace).name
                     and a.stimuli == b.stimuli and a.candidates == b.candidates)
        small += (a.stimuli or 0) <= STIMULI
        minimal += one_minimal
        same += identical
        print(f"{a.mutant:31} {a.shrunk_stimuli:10d} {a.stimuli:9d} {a.candidates:10d} "
              f"{'yes' if one_minimal else 'NO':>9} {b.stimuli if b.detected else '-':>5} "
              f"{'yes' if identical else 'NO':>4}  {a.caught_by}")
        rows.append({"mutant": a.mutant, "detected": True, "caught_by": a.caught_by,
                     "hypothesis": a.shrunk_stimuli, "minimized": a.stimuli,
                     "candidates": a.candidates, "redundant": a.redundant,
                     "second_run": b.stimuli, "identical": identical,
                     "scenario": a.scenario})
    n = len(chosen)
    print(f"\n{small} of {n} <= {STIMULI} stimuli, {minimal} of {n} 1-minimal, {same} of {n} "
          f"identical under load")
    print(f"wall time {wall:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"rows": rows, "small": small, "minimal": minimal, "identical": same},
                      fh, indent=2)
    return 0 if small == minimal == same == n else 1


if __name__ == "__main__":
    sys.exit(main())
