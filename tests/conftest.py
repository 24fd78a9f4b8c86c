"""Shared test settings: the Hypothesis profile and the CLI runner.

squall's own suite runs with squall's profiles (``squall.scenarios.profiles``, registered
by its pytest plugin): ``squall-ci`` on CI (reproducible), ``squall-dev`` elsewhere, unless
``HYPOTHESIS_PROFILE`` or ``--hypothesis-profile`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import settings

from squall.cli.main import main
from squall.scenarios.profiles import CI, DEV, register_profiles


def pytest_configure(config: pytest.Config) -> None:
    register_profiles()
    if not os.environ.get("HYPOTHESIS_PROFILE") and not config.getoption(
            "hypothesis_profile", None):
        settings.load_profile(CI if os.environ.get("CI") else DEV)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """Run ``squall ARGV`` in-process: (exit code, stdout, stderr)."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        code = 0
        try:
            main(argv)
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
