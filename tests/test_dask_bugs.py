"""Historical dask.distributed bugs planted into the installed dask
(``squall.mutants.dask_bugs``): each is caught by its own invariant, and the same
scenarios with no bug planted find nothing. Real processes (marked ``real``), about a
second a run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from squall.mutants.dask_bugs import (  # noqa: E402
    DASK_CATALOG,
    DaskBugError,
    dask_bug,
    run_baseline,
    run_bug,
)

pytestmark = [pytest.mark.real, pytest.mark.xdist_group("dask-bugs")]


@pytest.mark.parametrize("bug", DASK_CATALOG, ids=lambda b: b.name)
def test_planted_bug_is_caught_by_its_invariant(bug) -> None:
    result = run_bug(bug)
    assert result.caught, result
    assert result.expected, f"{bug.name}: caught by {result.invariants}, expected one of " \
                            f"{bug.caught_by}"
    assert result.seconds is not None and result.seconds < 10


def test_baseline_with_no_bug_planted_is_clean() -> None:
    results = run_baseline()
    assert len(results) == len({b.scenario for b in DASK_CATALOG})
    for r in results:
        assert r.error is None, r
        assert r.violations == 0, r


def test_the_bug_is_gone_after_the_block() -> None:
    for bug in DASK_CATALOG:
        before = bug.owner.__dict__[bug.attr]
        with bug.active():
            assert bug.owner.__dict__[bug.attr] is not before
        assert bug.owner.__dict__[bug.attr] is before


def test_unknown_bug_names_the_catalog() -> None:
    with pytest.raises(DaskBugError, match="dask-occupancy-drift"):
        dask_bug("no-such-bug")


def test_cli_lists_and_runs_one(tmp_path) -> None:
    from squall.cli.mutants import mutants_command

    runner = CliRunner()
    listed = runner.invoke(mutants_command, ["--target", "dask", "--list"])
    assert listed.exit_code == 0, listed.output
    assert "#1544" in listed.output
    out = tmp_path / "bugs.json"
    ran = runner.invoke(mutants_command, ["--target", "dask", "--mutant",
                                          "dask-occupancy-drift", "--json", str(out)])
    assert ran.exit_code == 0, ran.output
    doc = json.loads(out.read_text())
    assert doc["summary"] == {**doc["summary"], "bugs": 1, "caught": 1, "false_alarms": 0}
    assert doc["bugs"][0]["caught_by"] in dask_bug("dask-occupancy-drift").caught_by
