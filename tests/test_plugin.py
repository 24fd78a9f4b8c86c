"""squall's pytest plugin in a user's project (a pytest run of its own in a temporary
folder): it adds only ``squall``-named things, replaces none of the project's, and its
fixtures leave a trace when a test fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Hypothesis loads a profile named "ci" by itself where one of these is set (a CI machine),
# and the chosen profile comes from HYPOTHESIS_PROFILE: the user's run here is a local one
_CHOOSES_A_PROFILE = ("CI", "__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI", "TF_BUILD",
                      "bamboo.buildKey", "BUILDKITE", "CIRCLECI", "CIRRUS_CI",
                      "CODEBUILD_BUILD_ID", "GITHUB_ACTIONS", "GITLAB_CI",
                      "HEROKU_TEST_RUN_ID", "TEAMCITY_VERSION", "HYPOTHESIS_PROFILE")


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    local = {k: v for k, v in os.environ.items() if k not in _CHOOSES_A_PROFILE}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-W", "error::pytest.PytestUnknownMarkWarning", *args],
                          cwd=folder, capture_output=True, text=True, timeout=300, env=local)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with its own Hypothesis profiles (named as squall's used to be) and its own
    ``real`` marker."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        from hypothesis import settings

        settings.register_profile("ci", max_examples=7)
        settings.register_profile("deep", max_examples=11)

        def pytest_configure(config):
            config.addinivalue_line("markers", "real: the project's own marker")
    """))
    (tmp_path / "test_settings.py").write_text(textwrap.dedent("""
        import os

        import pytest
        from hypothesis import settings

        @pytest.mark.real
        def test_sees(record_property):
            print("MAX_EXAMPLES", settings().max_examples)
    """))
    return tmp_path


def _max_examples(done: subprocess.CompletedProcess[str]) -> int:
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("MAX_EXAMPLES"))
    return int(line.split()[1])


def test_the_projects_profiles_and_default_are_its_own(project: Path) -> None:
    assert _max_examples(_pytest(project, "-s")) == 100  # Hypothesis' default: untouched
    assert _max_examples(_pytest(project, "-s", "--hypothesis-profile=deep")) == 11
    assert _max_examples(_pytest(project, "-s", "--hypothesis-profile=ci")) == 7


def test_squalls_profiles_are_there_to_choose(project: Path) -> None:
    assert _max_examples(_pytest(project, "-s", "--hypothesis-profile=squall-deep")) == 2000
    assert _max_examples(_pytest(project, "-s", "--hypothesis-profile=squall-ci")) == 30


def test_no_unknown_marker_without_xdist_and_the_projects_marker_is_left_alone(
        project: Path) -> None:
    (project / "test_grouped.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.squall_real
        @pytest.mark.xdist_group("mine")
        def test_grouped():
            pass
    """))
    done = _pytest(project, "-p", "no:xdist")  # (unknown markers are errors here)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = _pytest(project, "--collect-only", "-q", "-n", "2")
    assert listed.returncode == 0, listed.stdout + listed.stderr


def test_a_failing_sim_cluster_test_leaves_its_trace_where_asked(project: Path) -> None:
    (project / "test_sim.py").write_text(textwrap.dedent("""
        import pytest
        from squall.core.graph import TaskGraph, TaskSpec

        @pytest.mark.squall_sim_cluster(workers=2, threads=1, seed=4)
        def test_broken(squall_sim_cluster):
            graph = TaskGraph([TaskSpec("a", duration=1.0), TaskSpec("b", deps=("a",))])
            squall_sim_cluster.run(graph)
            assert squall_sim_cluster.now < 0.5, "too slow"

        def test_fine(squall_sim_cluster):
            squall_sim_cluster.run(TaskGraph([TaskSpec("a", duration=1.0)]))
    """))
    traces = project / "my-traces"
    done = _pytest(project, "test_sim.py", "--squall-trace-dir", str(traces))
    assert done.returncode == 1, done.stdout + done.stderr
    written = sorted(traces.glob("*.jsonl"))
    assert [p.name for p in written] == ["test_broken-sim.trace.jsonl"]
    assert f"trace: {written[0]}" in done.stdout
    lines = [json.loads(x) for x in written[0].read_text().splitlines()]
    assert lines[0]["k"] == "header" and lines[-1]["k"] == "outcome"
    assert any(x["k"] == "s" for x in lines)  # the run's stimuli
    replayed = subprocess.run([sys.executable, "-m", "squall.cli.main", "replay",
                               str(written[0])], capture_output=True, text=True, timeout=120)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr  # it ran as recorded


def test_a_truncated_trace_fails_in_one_line(project: Path) -> None:
    folder = project / "traces"
    folder.mkdir()
    (folder / "cut.jsonl").write_text('{"k":"header","format":1')  # no newline: cut short
    done = _pytest(project, "--squall-traces", str(folder), "-k", "squall-trace")
    assert done.returncode == 1
    failure = done.stdout[done.stdout.index("FAILURES"):]
    assert "cut.jsonl: line 1" in failure
    assert "pluggy" not in failure and "Traceback" not in failure
