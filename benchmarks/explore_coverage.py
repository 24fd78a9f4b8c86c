"""What exploration reaches: line and branch coverage of the pure core by `squall explore`.

    python benchmarks/explore_coverage.py [--budget SECONDS] [--seed N] [--space NAME]
                                          [--missing]

Runs the default exploration (`squall explore`'s space "all", one job, in this process so
coverage.py sees it; failures are counted and exploration goes on) under coverage.py with
branch measurement, then prints, per file of the core's state machines, the lines and
branches reached, and with --missing the lines never reached. Tracing slows the run
(about 2x here), so it explores fewer scenarios than the same budget without it: the
figure is a lower bound for `squall explore --budget SECONDS`.

Needs coverage.py (`pip install 'squall[bench]'`).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"
# The state machines exploration is meant to reach, and what they share.
FILES = ("scheduler.py", "worker.py", "stealing.py", "estimates.py", "graph.py",
         "driver.py", "sim/cluster.py")


def _ranges(lines: list[int]) -> str:
    """[3, 4, 5, 9] -> "3-5, 9"."""
    out: list[str] = []
    for n in sorted(lines):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--space", default="all")
    ap.add_argument("--missing", action="store_true", help="list the lines never reached")
    args = ap.parse_args()
    try:
        import coverage
    except ImportError:
        raise SystemExit("explore_coverage: needs coverage.py: pip install 'squall[bench]'") from None

    cov = coverage.Coverage(branch=True, include=[str(CORE / f) for f in FILES],
                            data_file=None)
    cov.start()
    # imported under coverage: the lines run at import (definitions) count as reached
    from squall.scenarios.explore import explore

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        result = explore(budget=args.budget, seed=args.seed, jobs=1, space=args.space,
                         out_dir=out, keep_going=True)
    elapsed = time.monotonic() - started
    cov.stop()

    s = result.stats
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    print(f"squall explore --budget {args.budget:g} --seed {args.seed} "
          f"--scenario-space {args.space}, under coverage.py: {s.scenarios} scenarios in "
          f"{elapsed:.1f} s, {s.transitions} transitions, {s.failures} failing (counted)")
    print(f"{'file':<18} {'lines':>14} {'branches':>16}")
    total = [0, 0, 0, 0]
    for name in FILES:
        path = str(CORE / name)
        analysis = cov._analyze(path)  # noqa: SLF001 (coverage.py's per-file numbers)
        nums = analysis.numbers
        lines_hit = nums.n_statements - nums.n_missing
        br_hit = nums.n_branches - nums.n_missing_branches
        total[0] += lines_hit
        total[1] += nums.n_statements
        total[2] += br_hit
        total[3] += nums.n_branches
        print(f"core/{name:<13} {lines_hit:>5}/{nums.n_statements:<5} "
              f"{100 * lines_hit / max(1, nums.n_statements):5.1f}%"
              f" {br_hit:>5}/{nums.n_branches:<5} "
              f"{100 * br_hit / max(1, nums.n_branches):5.1f}%")
        if args.missing and analysis.missing:
            print(f"    never reached: {_ranges(sorted(analysis.missing))}")
    print(f"{'all of them':<18} {total[0]:>5}/{total[1]:<5} "
          f"{100 * total[0] / max(1, total[1]):5.1f}% {total[2]:>5}/{total[3]:<5} "
          f"{100 * total[2] / max(1, total[3]):5.1f}%")


if __name__ == "__main__":
    main()
