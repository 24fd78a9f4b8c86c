"""What exploration reaches: line and branch coverage of the pure core by `squall explore`.

    python benchmarks/explore_coverage.py [--budget SECONDS | --scenarios N] [--seed N]
                                          [--space NAME] [--missing]

Runs the default exploration (`squall explore`'s space "all", one job, in this process so
coverage.py sees it; failures are counted and exploration goes on) under coverage.py with
branch measurement, then prints, per file of the core's state machines, the lines and
branches reached, and with --missing the lines never reached. Tracing slows the run
(about 2x here), so it explores fewer scenarios than the same budget without it: the
figure is a lower bound for `squall explore --budget SECONDS`. ``--scenarios N`` explores
a fixed number of scenarios instead (the first N of the seed's streams, whatever the
machine's speed or load: the same figure anywhere).

Two line figures per file: every line, and the lines a correct run can reach -- leaving
out the lines that run only when the core has a bug or is being debugged (``BUG_ONLY``:
the raises that report an impossible transition, a livelock or an unknown stimulus, and
``__repr__``/``story``/``states_count``, read when a violation is reported).

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


# Lines (coverage.py exclusion regexes) that a correct run never executes.
BUG_ONLY = (
    r"raise (InvalidTransition|InvalidWorkerTransition|LivelockError)\(",
    r"raise TypeError\(f\"\w+ cannot handle",
    r"def (__repr__|story|states_count)\(",
)


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
    ap.add_argument("--scenarios", type=int, default=0,
                    help="explore this many scenarios, whatever the time (0: --budget)")
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
    budget = args.budget if not args.scenarios else 1e9
    with tempfile.TemporaryDirectory() as out:
        result = explore(budget=budget, seed=args.seed, jobs=1, space=args.space,
                         out_dir=out, keep_going=True, max_scenarios=args.scenarios or None)
    elapsed = time.monotonic() - started
    cov.stop()

    s = result.stats
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    how = f"--budget {args.budget:g}" if not args.scenarios else f"(first {args.scenarios} scenarios)"
    print(f"squall explore {how} --seed {args.seed} --scenario-space {args.space}, under "
          f"coverage.py: {s.scenarios} scenarios in {elapsed:.1f} s, {s.transitions} "
          f"transitions, {s.failures} failing (counted)")
    full = _figures(cov, missing=args.missing)
    for regex in BUG_ONLY:
        cov.exclude(regex)
    reachable = _figures(cov, missing=False)
    print(f"{'file':<18} {'lines':>14} {'reachable lines':>21} {'branches':>16}")
    for name in FILES:
        (lh, ln, bh, bn, missed), (rh, rn, _, _, _) = full[name], reachable[name]
        print(f"core/{name:<13} {_pct(lh, ln)} {_pct(rh, rn):>21} {_pct(bh, bn):>16}")
        if missed:
            print(f"    never reached: {missed}")
    sums = [sum(f[name][i] for name in FILES) for f in (full, reachable) for i in (0, 1)]
    bsum = [sum(full[name][i] for name in FILES) for i in (2, 3)]
    print(f"{'all of them':<18} {_pct(sums[0], sums[1])} {_pct(sums[2], sums[3]):>21} "
          f"{_pct(bsum[0], bsum[1]):>16}")


def _pct(hit: int, n: int) -> str:
    return f"{hit:>5}/{n:<5} {100 * hit / max(1, n):5.1f}%"


def _figures(cov: object, *, missing: bool) -> dict[str, tuple[int, int, int, int, str]]:
    """file -> (lines reached, lines, branches reached, branches, lines never reached)."""
    out = {}
    for name in FILES:
        analysis = cov._analyze(str(CORE / name))  # type: ignore[attr-defined]  # noqa: SLF001
        nums = analysis.numbers
        out[name] = (nums.n_statements - nums.n_missing, nums.n_statements,
                     nums.n_branches - nums.n_missing_branches, nums.n_branches,
                     _ranges(sorted(analysis.missing)) if missing else "")
    return out

if __name__ == "__main__":
    main()
