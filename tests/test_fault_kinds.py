"""A fault kind is its struct: one defined here and registered for a test is drawn by the
strategies and the rate schedules, decoded from scenario JSON, applied in the simulator,
recorded and replayed, and labelled in the report -- no other module names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import find, settings

from squall.chaos.injectors import (
    Fault,
    Heal,
    JoinWorker,
    KillWorker,
    effects,
    surface_calls,
)
from squall.chaos.kinds import WORKER, FaultKind, RateDraw, fault_kinds, rate_kinds, registered
from squall.chaos.schedule import ChaosSchedule
from squall.core.view import FaultSurface
from squall.scenarios.model import (
    ClusterShape,
    Generated,
    Scenario,
    ScenarioError,
    scenario_from_json,
    scenario_to_json,
)
from squall.scenarios.replay import MATCH, replay_trace
from squall.scenarios.report import write_report
from squall.scenarios.runner import run_scenario
from squall.scenarios.strategies import faults, with_recovery

LABEL = "crashed (a test's kind)"


class Crash(Fault, tag="crash", frozen=True):
    """A worker's process crashes: a new kind acting through an existing surface method."""

    worker: str

    def apply(self, surface: FaultSurface) -> None:
        surface.kill_worker(self.worker)

    @classmethod
    def at_rate(cls, draw: RateDraw, t: float) -> list[Fault]:
        victim = draw.victim(t)
        if victim is None:
            return []
        draw.out_until(victim, round(t + 0.5, 3))
        return [Crash(at=t, worker=victim), JoinWorker(at=round(t + 0.5, 3), worker=victim)]


@pytest.fixture
def crash() -> Iterator[FaultKind]:
    with registered(Crash, label=LABEL, colour="purple", draw={"worker": WORKER}) as kind:
        yield kind
    assert "crash" not in {k.name for k in fault_kinds()}


def _scenario(*chaos: Fault) -> Scenario:
    return Scenario(workload=Generated(name="independent", tasks=40, params={"duration": 0.05}),
                    cluster=ClusterShape(workers=3), chaos=chaos, seed=4)


def test_hypothesis_draws_a_registered_kind_and_recovers_from_it(crash: FaultKind) -> None:
    one = find(faults(3), lambda f: isinstance(f, Crash),
               settings=settings(database=None, max_examples=500))
    assert one == Crash(at=0.0, worker="w0")  # shrunk, as any kind is
    # It kills a worker (by what it does through the surface): a drawn schedule with one
    # ends with a recovery.
    assert with_recovery([one]) == (one, Heal(at=0.5), JoinWorker(at=0.5))
    assert effects(Crash(worker="w0")) == {"kill_worker"}


def test_rate_schedules_draw_a_registered_kind(crash: FaultKind) -> None:
    assert "crash" in rate_kinds()
    drawn = ChaosSchedule.from_rates(1, {"crash": 2.0}, workers=3, duration=3.0)
    assert drawn.kinds().get("crash", 0) >= 2
    assert all(isinstance(f, Crash | JoinWorker) for f in drawn)
    swarms = [ChaosSchedule.swarm(seed, workers=3, duration=2.0) for seed in range(20)]
    assert any("crash" in s.kinds() for s in swarms)
    again = msgspec.json.decode(msgspec.json.encode(drawn), type=ChaosSchedule)
    assert again == drawn


def test_scenario_json_decodes_the_kinds_registered_when_it_is_read() -> None:
    sc = _scenario(Crash(at=0.3, worker="w1"), KillWorker(at=0.4, worker="w2"))
    data = scenario_to_json(sc)
    assert '{"kind": "crash", "worker": "w1", "at": 0.3}' in data.decode()
    scenario_from_json(scenario_to_json(_scenario(KillWorker(worker="w2"))))  # decoded once
    with pytest.raises(ScenarioError, match=re.escape("Invalid value 'crash' - at "
                                                      "`$.chaos[0].kind`")):
        scenario_from_json(data)
    with registered(Crash, label=LABEL, colour="purple"):
        assert scenario_from_json(data) == sc
    with pytest.raises(ScenarioError, match="Invalid value 'crash'"):
        scenario_from_json(data)


def test_a_registered_kind_runs_is_recorded_replayed_and_labelled(crash: FaultKind,
                                                                   tmp_path: Path) -> None:
    sc = _scenario(Crash(at=0.2, worker="w1"), JoinWorker(at=0.5, worker="w1"))
    trace = tmp_path / "crash.jsonl"
    out = run_scenario(sc, trace=trace)
    assert out.ok, (out.violations, out.wrong)
    assert out.faults == {"crash": 1, "join": 1} and out.runs  # w1's work ran again
    assert [(m, t, f.kind_name()) for m, t, f in surface_calls(sc.chaos)] == [
        ("kill_worker", "w1", "crash"), ("add_worker", "w1", "join")]
    assert replay_trace(trace).verdict == MATCH
    page = tmp_path / "crash.html"
    write_report(trace, page)
    timeline = page.read_text().split("<h2>timeline</h2>")[1].split("<h2>occupancy</h2>")[0]
    assert LABEL in timeline and "#800080" in timeline  # its label and colour (purple)


def test_a_tag_names_one_kind() -> None:
    class Impostor(Fault, tag="kill", frozen=True):
        worker: str

    with pytest.raises(ValueError, match="fault kind 'kill' is registered already"):
        with registered(Impostor, label="kill", colour="red"):
            pass
    assert {k.name: k.cls for k in fault_kinds()}["kill"] is KillWorker  # untouched


def test_a_kind_without_apply_is_refused_when_it_registers() -> None:
    class Inert(Fault, tag="inert", frozen=True):
        worker: str

    with pytest.raises(TypeError, match="fault kind 'inert' defines no apply"):
        with registered(Inert, label="inert", colour="grey"):
            pass
    assert "inert" not in {k.name for k in fault_kinds()}
