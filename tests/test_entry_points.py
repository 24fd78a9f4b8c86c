"""The ways squall is started: the ``squall`` script and ``python -m squall``; and what a
clone holds to start from (README's links)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_python_dash_m_squall_is_the_squall_command() -> None:
    done = subprocess.run([sys.executable, "-m", "squall", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: squall" in done.stdout and "explore" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "squall", "run", "no-such-scenario"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no-such-scenario" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_readme_and_docs_link_only_to_files_a_clone_has() -> None:
    """README links the design document inside the repository (docs/DESIGN.md), and no
    link of README or docs/ points outside it (``../shared/...`` is not in a clone)."""
    readme = ROOT / "README.md"
    assert "](docs/DESIGN.md)" in readme.read_text()
    pages = [readme, *sorted((ROOT / "docs").glob("*.md"))]
    assert ROOT / "docs" / "DESIGN.md" in pages
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("#", "http://", "https://", "mailto:")):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), (page.name, target)
