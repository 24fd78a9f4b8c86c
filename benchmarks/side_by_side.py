"""This work tree against an earlier commit, side by side in one run.

    python benchmarks/side_by_side.py --base REV [--runs 3] [--tasks 100000]

For a change that must not cost speed or change behaviour (a refactoring):

1. Throughput: the 100,000-task random DAG on 100 simulated workers (validation off), as
   in sim_throughput.py, run alternately by the two trees in fresh processes; the median
   of each and their ratio.
2. Behaviour: the stream digests of 21 seeded simulator runs (every workload, plain and
   with stealing and faults, and the storm scenario), compared one by one.

The base commit is checked out into a temporary git worktree; each tree is imported from
its own source (a temporary ``squall`` namespace of links to its folders, laid out as its
pyproject.toml maps them), never from what is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

WORKLOADS = ("random-dag", "chain", "tree", "fan-out-fan-in", "independent", "many-tiny",
             "few-long", "skewed-durations", "large-outputs", "mixed")

# Run in a child process, against whichever tree is first on its path. Only public APIs
# that both trees have: SimCluster(...).at/run, make_workload, run_scenario.
CHILD = r"""
import json, sys, time
mode, n = sys.argv[1], int(sys.argv[2])
import squall.core
import os
assert os.path.realpath(squall.core.__file__).startswith(sys.argv[3]), squall.core.__file__
from squall.core.sim import SimCluster
from squall.scenarios.workloads import make_workload
if mode == "throughput":
    graph = make_workload("random-dag", n, seed=0)
    start = time.perf_counter()
    outcome = SimCluster(workers=100, seed=0, validate=False).run(graph)
    wall = time.perf_counter() - start
    assert outcome.results_ok
    print(json.dumps({"wall_s": wall}))
else:
    from squall.scenarios.library import named_scenario
    from squall.scenarios.runner import run_scenario
    digests = {}
    for i, name in enumerate(json.loads(sys.argv[4])):
        for chaos in (False, True):
            c = SimCluster(workers=4, threads=2, seed=i, stealing=chaos, validate=False)
            if chaos:
                c.at(0.05, c.kill_worker, "w1")
                c.at(0.1, c.pause_worker, "w2", 0.5)
                c.at(0.2, c.skew_estimates, 5.0, None)
            digests[f"{name}{' +chaos+stealing' if chaos else ''}"] = c.run(
                make_workload(name, n, seed=i)).digest
    import msgspec
    storm = msgspec.structs.replace(named_scenario("storm"), runtime="sim")
    outcome = run_scenario(storm, validate=False)
    digests["storm scenario"] = outcome.digest
    print(json.dumps(digests))
"""


def namespace(tree: Path, into: Path) -> Path:
    """A folder holding ``squall/<package>`` links to ``tree``'s package folders."""
    config = tomllib.loads((tree / "pyproject.toml").read_text())
    dirs: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    for package, folder in dirs.items():
        parts = package.split(".")
        link = into.joinpath(*parts)
        if link.exists():  # a subpackage inside a folder already linked
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(tree / folder, target_is_directory=True)
    return into


def child(ns: Path, tree: Path, mode: str, n: int) -> Any:
    env = {**os.environ, "PYTHONPATH": str(ns), "SQUALL_VALIDATE": "0"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(n), str(tree),
                          json.dumps(WORKLOADS)],
                         capture_output=True, text=True, env=env, cwd=ns)
    if out.returncode != 0:
        sys.exit(f"side_by_side: the {mode} run of {tree} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the commit to compare against")
    ap.add_argument("--runs", type=int, default=3, help="throughput runs per tree")
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--digest-tasks", type=int, default=300)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="squall-side-by-side-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(base_tree), args.base], check=True)
        try:
            trees = {"base": base_tree.resolve(), "this": ROOT}
            spaces = {name: namespace(tree, Path(tmp) / f"ns-{name}")
                      for name, tree in trees.items()}
            digests = {name: child(spaces[name], trees[name], "digests", args.digest_tasks)
                       for name in trees}
            same = [k for k in digests["base"] if digests["this"].get(k) == digests["base"][k]]
            differ = sorted(set(digests["base"]) - set(same))
            print(f"stream digests: {len(same)} of {len(digests['base'])} seeded runs "
                  f"byte-identical{'; differ: ' + ', '.join(differ) if differ else ''}")
            walls: dict[str, list[float]] = {"base": [], "this": []}
            for _ in range(args.runs):
                for name in ("base", "this"):  # alternate: the machine's phases hit both
                    walls[name].append(child(spaces[name], trees[name], "throughput",
                                             args.tasks)["wall_s"])
            rate = {k: args.tasks / statistics.median(v) for k, v in walls.items()}
            for name in ("base", "this"):
                print(f"throughput ({name}, {args.base if name == 'base' else 'work tree'}): "
                      f"{', '.join(f'{w:.2f}' for w in walls[name])} s wall, median "
                      f"{rate[name]:,.0f} tasks/s")
            print(f"ratio this / base: {rate['this'] / rate['base']:.3f} "
                  "(target: within 5%, >= 0.95)")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base_tree)], check=False)


if __name__ == "__main__":
    main()
