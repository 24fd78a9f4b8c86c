"""``squall run storm --runtime dask``: the storm scenario on dask.distributed.

    python benchmarks/dask_storm.py [--seed N] [--no-plain]

The standard ``storm`` (2,000 mixed tasks on 4 dask workers x 2 threads with work stealing;
two SIGKILLs with replacements, a SIGSTOP pause, slow links through the built-in Toxiproxy
proxies, a worker cut off from the scheduler and healed, two skewed prefixes) run on an
unmodified dask ``LocalCluster`` of worker processes, with squall's strict mode on (its
``DaskValidator``) and a trace written: is every key right, how many violations, the
wall time and makespan. Then the same run with strict mode off, side by side: what
squall's checks cost on this workload.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import msgspec

from squall.core.outcome import Outcome, format_violation
from squall.scenarios.library import named_scenario
from squall.scenarios.runner import run_scenario


def _row(label: str, out: Outcome) -> None:
    keys = "every key right" if out.results_ok else f"WRONG {len(out.wrong)}: {out.wrong[:3]}"
    print(f"  {label:<22} {keys:<16} violations {len(out.violations):2d}  "
          f"wall {out.wall_time:6.2f} s  makespan {out.makespan:6.2f} s  "
          f"stimuli {out.n_stimuli:5d}  checks {out.invariant_checks:7d}  "
          f"faults {sum(out.faults.values()):2d}  steals {out.steals}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-plain", action="store_true", help="skip the run without checks")
    args = ap.parse_args()
    import distributed

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, distributed {distributed.__version__}")
    storm = msgspec.structs.replace(named_scenario("storm"), seed=args.seed, runtime="dask")
    print(f"storm on dask: {storm.describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        strict = run_scenario(storm, trace=Path(tmp) / "storm-dask.jsonl")
        _row("strict mode, traced", strict)
        for v in strict.violations[:3]:
            print("    " + format_violation(v).replace("\n", "\n    "))
        if not args.no_plain:
            plain = run_scenario(storm, validate=False)
            _row("plain dask", plain)
            print(f"  strict / plain: wall {strict.wall_time / plain.wall_time:.2f}x, "
                  f"makespan {strict.makespan / plain.makespan:.2f}x")


if __name__ == "__main__":
    main()
