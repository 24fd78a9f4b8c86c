"""The ways squall is started: the ``squall`` script and ``python -m squall``."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_squall_is_the_squall_command() -> None:
    done = subprocess.run([sys.executable, "-m", "squall", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: squall" in done.stdout and "explore" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "squall", "run", "no-such-scenario"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no-such-scenario" in bad.stderr
    assert "Traceback" not in bad.stderr
