"""What squall's pytest plugin adds to a user's ``pytest --collect-only``, side by side.

    python benchmarks/plugin_cost.py [--runs N]

A small project of its own (ten plain tests, nothing of squall's used) in a temporary
folder; ``pytest --collect-only -q`` run N times with the plugin loaded and N times with
``-p no:squall``, alternating, in fresh processes. Prints the median wall time of each
and the difference (the target: at most 150 ms).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _collect(folder: Path, *extra: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *extra], cwd=folder,
                          capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pytest failed: {done.stdout[-500:]}{done.stderr[-500:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_user.py").write_text("".join(
            f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n\n" for i in range(10)))
        with_plugin: list[float] = []
        without: list[float] = []
        _collect(folder)  # (warm the file cache)
        for _ in range(args.runs):
            with_plugin.append(_collect(folder))
            without.append(_collect(folder, "-p", "no:squall"))
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"pytest --collect-only, median of {args.runs}: with squall's plugin {a * 1000:.0f} ms,"
          f" without {b * 1000:.0f} ms: the plugin adds {(a - b) * 1000:.0f} ms "
          f"({a / b:.2f}x)")


if __name__ == "__main__":
    main()
