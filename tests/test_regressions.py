"""Scenarios exploration once failed on correct code: each must now pass, in the simulator,
strict mode on. Each file is the scenario as `benchmarks/false_alarms.py` wrote it.

- extended-pause-keeps-message-order: a worker paused twice (the second pause extending the
  first) got a steal request before the task it stole, because each message deferred by
  the pause was deferred again on its own; the task then ran twice
  (e2e.no-duplicate-run). The simulator now holds a paused worker's messages in order.
- cut-off-victim-with-open-steals: a victim cut off from the start could not answer two
  steals; stealing rightly left the rest of its queue (what its threads run next), and
  steal.idle-worker-fed blamed balancing for it. Tasks being stolen now count as leaving.
- stale-run-starts-after-the-new-one: a client released a key and wanted it again at once;
  the new run started on one worker before the stale run's message reached another, and
  e2e.no-duplicate-run looked for the release only between the runs in the order they
  started. It now looks between them in the order they were handed out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.scenarios.model import load_scenarios
from squall.scenarios.runner import run_scenario

REGRESSIONS = sorted((Path(__file__).parent / "regressions").glob("*.json"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.stem)
def test_a_scenario_once_flagged_on_correct_code_passes(path: Path) -> None:
    (scenario,) = load_scenarios(path)
    outcome = run_scenario(scenario, validate=True)
    assert outcome.ok, (outcome.violations, outcome.wrong)
