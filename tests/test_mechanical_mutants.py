"""The overlay of benchmarks/mechanical_mutants.py: a subprocess imports the mutated copy.

Mechanical mutants are judged without touching the working tree: the mutated source lives
in a temporary folder and an import hook makes ``squall.core.<module>`` load from it. A
hand-written mutation (a marker constant added to a copy of core/stealing.py) shows that
the subprocess gets the copy, and that the modules importing it get it too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "mechanical_mutants.py"


def test_overlay_makes_the_subprocess_import_the_mutated_module(tmp_path: Path) -> None:
    original = (ROOT / "core" / "stealing.py").read_text(encoding="utf-8")
    mutated = tmp_path / "stealing.py"
    mutated.write_text(original + '\nMECHANICAL_MARKER = "mutated"\n', encoding="utf-8")
    result = tmp_path / "probe.json"
    subprocess.run([sys.executable, str(SCRIPT), "--child", "probe", "--module",
                    "squall.core.stealing", "--path", str(mutated), "--result", str(result)],
                   check=True, timeout=60, cwd=tmp_path)
    seen = json.loads(result.read_text())
    assert seen["file"] == str(mutated)
    assert seen["marker"] == "mutated"
    # squall.core.snapshot imports WorkStealing from squall.core.stealing: the copy's
    assert seen["snapshot_sees"] == str(mutated)
    assert (ROOT / "core" / "stealing.py").read_text(encoding="utf-8") == original
