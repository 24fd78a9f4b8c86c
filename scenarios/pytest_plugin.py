"""squall's pytest plugin (registered through the ``pytest11`` entry point).

- ``sim_cluster``: a fixture giving a strict-mode ``SimCluster``; shape it with
  ``@pytest.mark.sim_cluster(workers=2, threads=2, seed=3, stealing=True)``.
- ``squall_dask_cluster``: a fixture giving a dask.distributed cluster of real processes
  in squall's strict mode, with its client and fault surface (``DaskCluster``); shape it
  with ``@pytest.mark.squall_dask_cluster(workers=2, threads=1, network=True)``. After
  the test, the full checks run at quiescence; a violation fails the test with the
  invariant id and writes the trace to ``squall-traces/`` under the rootdir.
- ``@pytest.mark.real``: a test that starts real processes and sockets. Under
  ``pytest -n N --dist loadgroup`` all such tests share the xdist group ``real`` and so
  run one after another on one worker.
- ``--squall-traces DIR``: every ``*.jsonl`` trace in DIR becomes a test that checks the
  bug it recorded stays fixed: the trace's scenario, run again in the simulator with
  strict mode, must pass, and replaying its recorded stimuli must not reproduce the
  recorded violation.
- The Hypothesis profiles ``dev``, ``ci`` and ``deep`` are registered (choose with
  ``--hypothesis-profile`` or ``HYPOTHESIS_PROFILE``).
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REAL_MARKER = "real: starts real processes and sockets; run serially (xdist group 'real')"
DASK_MARKER = ("squall_dask_cluster(workers=2, threads=1, network=False, **shape): the "
               "squall_dask_cluster fixture's cluster (fields of squall's ClusterShape)")
DASK = "dask"  # the runtime the squall_dask_cluster fixture starts


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("squall")
    group.addoption("--squall-traces", metavar="DIR", default=None,
                    help="replay every squall trace (*.jsonl) in DIR as a regression test")


def pytest_configure(config: pytest.Config) -> None:
    from squall.scenarios.strategies import register_profiles

    config.addinivalue_line("markers", REAL_MARKER)
    config.addinivalue_line("markers", "property: a Hypothesis property or state-machine test "
                                       "(tox -e property runs these with the ci profile)")
    config.addinivalue_line("markers", "sim_cluster(**kwargs): SimCluster arguments for the "
                                       "sim_cluster fixture")
    config.addinivalue_line("markers", DASK_MARKER)
    register_profiles()
    # Checked here, before collection: under xdist a collection error in the workers
    # would surface as an INTERNALERROR traceback instead of this one line.
    folder = config.getoption("squall_traces")
    if folder and not Path(folder).is_dir():
        raise pytest.UsageError(f"--squall-traces: {folder!r} is not a directory")
    # HYPOTHESIS_PROFILE picks one (pytest's --hypothesis-profile, if given, wins).
    name = os.environ.get("HYPOTHESIS_PROFILE")
    if name and not getattr(config.option, "hypothesis_profile", None):
        from hypothesis import settings

        try:
            settings.load_profile(name)
        except Exception as e:  # an unknown name: say so in one line
            raise pytest.UsageError(f"HYPOTHESIS_PROFILE={name!r}: {e}") from None


@pytest.fixture
def sim_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A SimCluster with strict mode on (``validate=True``) unless the marker says not."""
    from squall.core.sim import SimCluster

    marker = request.node.get_closest_marker("sim_cluster")
    kwargs: dict[str, Any] = {"validate": True}
    if marker is not None:
        kwargs.update(marker.kwargs)
    yield SimCluster(**kwargs)


class _Validated:
    """What the squall_dask_cluster fixture hands the check after the test."""

    def __init__(self, cluster: Any, shape: Any, stimuli: deque[tuple[str, Any]]) -> None:
        self.cluster = cluster
        self.shape = shape
        self.stimuli = stimuli

    def check(self, item: pytest.Item) -> None:
        """Full checks at quiescence; pytest.fail naming the first violation (and the
        trace written) if strict mode found any."""
        from squall.core.outcome import Outcome, format_violation
        from squall.scenarios.model import ExplicitGraph, Scenario
        from squall.scenarios.target_run import write_trace

        cluster = self.cluster
        cluster.check(final=True)
        found = list(cluster.violations)
        if not found:
            return
        faults: dict[str, int] = {}
        for f in cluster.faults:
            faults[f.kind] = faults.get(f.kind, 0) + 1
        outcome = Outcome(results_ok=False, makespan=cluster.now(), n_tasks=0,
                          transitions=cluster.transitions, digest="",
                          n_stimuli=len(self.stimuli), faults=faults,
                          invariant_checks=cluster.invariant_checks, violations=found[:20])
        scenario = Scenario(workload=ExplicitGraph(tasks=()), cluster=self.shape,
                            runtime=DASK, name=item.name,
                            description=f"pytest {item.nodeid}: the test's own tasks")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)[:100]
        path = Path(item.config.rootpath) / "squall-traces" / f"{stem}-{DASK}.trace.jsonl"
        write_trace(path, scenario, list(self.stimuli), cluster.faults, outcome,
                    phase="stimulus" if found[0].stimulus_id else "end")
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        pytest.fail(f"{format_violation(found[0])}{more}\ntrace: {path}", pytrace=False)


_DASK_KEY = pytest.StashKey[_Validated]()


@pytest.fixture
def squall_dask_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A dask.distributed cluster of real processes on this machine in squall's strict
    mode (``squall.targets.dask.cluster.DaskCluster``): ``.client`` is its
    ``distributed.Client``; its fault surface is ``kill_worker``, ``pause_worker``,
    ``set_link`` (with ``network=True``), ``skew_estimates`` and ``add_worker``. Shape it
    with ``@pytest.mark.squall_dask_cluster(workers=2, threads=1, network=False,
    stealing=True, ...)``. After the test: full checks at quiescence; a violation fails
    the test with the invariant id and the trace is written. Skipped (one line saying
    what to install) when dask.distributed is missing."""
    from squall.scenarios.model import ClusterShape
    from squall.targets import target_for

    marker = request.node.get_closest_marker("squall_dask_cluster")
    kwargs: dict[str, Any] = {"workers": 2, "threads": 1, "stealing": True}
    if marker is not None:
        kwargs.update(marker.kwargs)
    network = bool(kwargs.pop("network", False))
    try:
        shape = ClusterShape(**kwargs)
    except TypeError as e:
        raise pytest.UsageError(f"@pytest.mark.squall_dask_cluster: {e}") from None
    target = target_for(DASK)
    try:
        cluster = target.start(DASK, shape, validate=True, network=network)
    except ImportError as e:
        pytest.skip(str(e).splitlines()[0])
    try:
        stimuli: deque[tuple[str, Any]] = deque()
        target.log_stimuli(cluster, lambda receiver, stimulus: stimuli.append(
            (receiver, stimulus)))
        request.node.stash[_DASK_KEY] = _Validated(cluster, shape, stimuli)
        yield cluster
    finally:
        cluster.close()  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After a test that used ``squall_dask_cluster`` passed: strict mode's verdict."""
    result = yield
    validated = item.stash.get(_DASK_KEY, None)
    if validated is not None:
        validated.check(item)
    return result


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("real") is not None:
            item.add_marker(pytest.mark.xdist_group("real"))
    folder = config.getoption("squall_traces")
    if not folder:
        return
    for trace in sorted(Path(folder).glob("*.jsonl")):
        items.append(TraceItem.from_parent(session, name=f"squall-trace[{trace.name}]",
                                           trace=trace))


class TraceRegression(AssertionError):
    pass


class TraceItem(pytest.Item):
    """One recorded trace, checked as a regression test."""

    def __init__(self, *, trace: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trace = trace

    def runtest(self) -> None:
        check_trace_regression(self.trace)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, TraceRegression):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.trace, None, f"squall trace {self.trace.name}"


def check_trace_regression(trace: Path) -> None:
    """Raise TraceRegression if the bug ``trace`` recorded is back (see module doc)."""
    import msgspec

    from squall.core.outcome import format_violation
    from squall.scenarios.replay import REPRODUCED, replay_trace
    from squall.scenarios.runner import run_scenario
    from squall.scenarios.trace import read_header

    header = read_header(trace)
    scenario = msgspec.structs.replace(header.scenario, runtime="sim")
    outcome = run_scenario(scenario, validate=True)
    if not outcome.ok:
        what = (format_violation(outcome.violations[0]) if outcome.violations
                else f"wrong results: {outcome.wrong}")
        raise TraceRegression(f"{trace.name}: its scenario fails again ({scenario.describe()}):"
                              f"\n{what}\nreplay: squall replay {trace}")
    result = replay_trace(trace, validate=True)
    recorded_at_stimulus = result.recorded is not None and result.recorded.phase == "stimulus"
    if result.verdict == REPRODUCED and result.violation is not None and recorded_at_stimulus:
        raise TraceRegression(f"{trace.name}: replaying its stimuli reproduces the violation:"
                              f"\n{format_violation(result.violation)}")
