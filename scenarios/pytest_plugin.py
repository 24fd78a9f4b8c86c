"""squall's pytest plugin (registered through the ``pytest11`` entry point). Everything it
adds is named ``squall...``, so it sits beside a project's own fixtures, markers and
profiles without replacing any:

- ``squall_sim_cluster``: a fixture giving a strict-mode ``SimCluster``; shape it with
  ``@pytest.mark.squall_sim_cluster(workers=2, threads=2, seed=3, stealing=True)``. When
  the test fails, the cluster's trace is written to the trace folder (below).
- ``squall_dask_cluster``: a fixture giving a dask.distributed cluster of real processes
  in squall's strict mode, with its client and fault surface (``DaskCluster``); shape it
  with ``@pytest.mark.squall_dask_cluster(workers=2, threads=1, network=True)``. After
  the test, the full checks run at quiescence; a violation fails the test with the
  invariant id and writes the trace to the trace folder.
- ``--squall-trace-dir DIR``: where those traces go (default ``squall-traces`` under the
  rootdir).
- ``@pytest.mark.squall_real``: a test that starts real processes and sockets. Under
  ``pytest -n N --dist loadgroup`` all such tests share the xdist group ``squall_real`` and
  so run one after another on one worker.
- ``@pytest.mark.squall_property``: a Hypothesis property or state-machine test.
- ``--squall-traces DIR``: every ``*.jsonl`` trace in DIR becomes a test that checks the
  bug it recorded stays fixed: the trace's scenario, run again in the simulator with
  strict mode, must pass, and replaying its recorded stimuli must not reproduce the
  recorded violation. A trace that cannot be read fails in one line (file and line).
- The Hypothesis profiles ``squall-dev``, ``squall-ci`` and ``squall-deep``
  (``squall.scenarios.profiles``) are registered where missing, as soon as Hypothesis is
  in play (imported, or a profile asked for); none is loaded unless asked
  (``--hypothesis-profile`` or ``HYPOTHESIS_PROFILE``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest


def _register_profiles_if_hypothesis(args: list[str] | None = None) -> None:
    """squall's profiles, once Hypothesis is in play: already imported, or a profile asked
    for. (Importing Hypothesis only for them would cost every pytest run 0.1 s.)"""
    if ("hypothesis" in sys.modules or os.environ.get("HYPOTHESIS_PROFILE")
            or any(a.startswith("--hypothesis-profile") for a in args or ())):
        from squall.scenarios.profiles import register_profiles

        register_profiles()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> None:
    # Before conftests and before Hypothesis' own plugin reads --hypothesis-profile.
    _register_profiles_if_hypothesis(args)

REAL = "squall_real"  # the marker, and the xdist group its tests share
REAL_MARKER = (f"{REAL}: starts real processes and sockets; run serially (xdist group "
               f"'{REAL}')")
PROPERTY_MARKER = ("squall_property: a Hypothesis property or state-machine test "
                   "(tox -e property runs these with the squall-ci profile)")
SIM_MARKER = ("squall_sim_cluster(workers=2, threads=2, seed=0, stealing=False, ...): "
              "SimCluster arguments for the squall_sim_cluster fixture")
DASK_MARKER = ("squall_dask_cluster(workers=2, threads=1, network=False, **shape): the "
               "squall_dask_cluster fixture's cluster (fields of squall's ClusterShape)")
DASK = "dask"  # the runtime the squall_dask_cluster fixture starts
SIM = "sim"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("squall")
    group.addoption("--squall-traces", metavar="DIR", default=None,
                    help="replay every squall trace (*.jsonl) in DIR as a regression test")
    group.addoption("--squall-trace-dir", metavar="DIR", default=None,
                    help="where a failing test's squall cluster writes its trace "
                         "(default: squall-traces under the rootdir)")


def pytest_configure(config: pytest.Config) -> None:
    _register_profiles_if_hypothesis()
    for line in (REAL_MARKER, PROPERTY_MARKER, SIM_MARKER, DASK_MARKER):
        config.addinivalue_line("markers", line)
    if not config.pluginmanager.hasplugin("xdist"):
        # (-p no:xdist): tests may still name their group; without xdist it means nothing
        config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's grouping "
                                           "(xdist is not loaded in this run)")
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


def trace_dir(config: pytest.Config) -> Path:
    """Where a failing test's trace goes (``--squall-trace-dir``)."""
    chosen = config.getoption("squall_trace_dir")
    return Path(chosen) if chosen else Path(config.rootpath) / "squall-traces"


def _trace_path(item: pytest.Item, runtime: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)[:100]
    return trace_dir(item.config) / f"{stem}-{runtime}.trace.jsonl"


_REPORT_KEY = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keeps the call phase's report, so a fixture's teardown knows whether its test
    failed."""
    report = yield
    if report.when == "call":
        item.stash[_REPORT_KEY] = report
    return report


@pytest.fixture
def squall_sim_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A SimCluster with strict mode on (``validate=True``) unless the marker says not.
    Its run is recorded; if the test fails, the trace is written to the trace folder and
    named in the failure's report (``squall replay PATH`` replays it)."""
    from squall.core.sim import SimCluster
    from squall.scenarios.model import ClusterShape, ExplicitGraph, Scenario
    from squall.scenarios.trace import SimRecorder, TraceWriter

    marker = request.node.get_closest_marker("squall_sim_cluster")
    kwargs: dict[str, Any] = {"validate": True}
    if marker is not None:
        kwargs.update(marker.kwargs)
    cluster = SimCluster(**kwargs)
    item = request.node
    shape = ClusterShape(workers=len(cluster.workers), threads=cluster.threads,
                         stealing=bool(kwargs.get("stealing", False)))
    header = Scenario(workload=ExplicitGraph(tasks=()), cluster=shape, runtime=SIM,
                      name=item.name, seed=int(kwargs.get("seed", 0)),
                      description=f"pytest {item.nodeid}: the test's own graphs")
    scratch = Path(tempfile.mkdtemp(prefix="squall-sim-"))
    recorder = SimRecorder(cluster, TraceWriter(scratch / "run.jsonl", header))
    try:
        yield cluster
    finally:
        report = item.stash.get(_REPORT_KEY, None)
        try:
            if report is not None and report.failed:
                _keep_sim_trace(item, report, cluster, recorder, scratch / "run.jsonl")
            else:
                recorder.writer.close()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _keep_sim_trace(item: pytest.Item, report: pytest.TestReport, cluster: Any,
                    recorder: Any, scratch: Path) -> None:
    """The failing test's run, as a trace in the trace folder; its path in the report."""
    from squall.core.outcome import Outcome
    from squall.scenarios.runner import violation_from

    found = []
    excinfo = getattr(report, "excinfo", None)
    exc = getattr(excinfo, "value", None) if excinfo is not None else None
    if exc is not None:
        v = violation_from(exc, cluster.now)
        if v is not None:
            found.append(v)
    # (results_ok: the test judged its own results; the trace holds what the cluster did)
    outcome = Outcome(results_ok=True, makespan=cluster.now, n_tasks=0,
                      transitions=cluster.scheduler.transition_counter, digest="",
                      n_stimuli=recorder.writer.n, violations=found)
    recorder.finish(outcome, "stimulus" if found and found[0].stimulus_id else "end")
    path = _trace_path(item, SIM)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(scratch), path)
    except OSError as e:
        report.sections.append(("squall trace", f"not written: {path}: {e.strerror}"))
        return
    report.sections.append(("squall trace", f"trace: {path}\nreplay: squall replay {path}"))


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
        path = _trace_path(item, DASK)
        path.parent.mkdir(parents=True, exist_ok=True)
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
    _register_profiles_if_hypothesis()  # (a test module may have imported Hypothesis)
    grouped = config.pluginmanager.hasplugin("xdist")
    for item in items:
        if grouped and item.get_closest_marker(REAL) is not None:
            item.add_marker(pytest.mark.xdist_group(REAL))
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
        from squall.scenarios.trace import TraceError

        if isinstance(excinfo.value, TraceRegression | TraceError):
            return str(excinfo.value)  # one line (or a few) that say it all
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
