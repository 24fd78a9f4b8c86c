"""The bounded transition log both state machines keep."""

from __future__ import annotations

import pytest

from squall.core import protocol as p
from squall.core.scheduler import SchedulerState
from squall.core.translog import TransitionLog


def test_the_log_keeps_the_last_size_transitions_oldest_first() -> None:
    log = TransitionLog(3)
    for i in range(20):
        log.add((f"k-{i}", "waiting", "processing", f"s-{i}"))
        log.trim()
        assert len(log) == min(i + 1, 3)
        assert list(log)[-1] == (f"k-{i}", "waiting", "processing", f"s-{i}")
    assert [entry[0] for entry in log] == ["k-17", "k-18", "k-19"]


def test_an_untrimmed_log_still_shows_only_the_last_size() -> None:
    log = TransitionLog(2)
    for i in range(50):  # one stimulus causing many transitions: trimmed only after it
        log.add((f"k-{i}", "released", "waiting", "update"))
    assert [entry[0] for entry in log] == ["k-48", "k-49"]


def test_a_zero_size_log_keeps_nothing_and_a_negative_size_is_refused() -> None:
    log = TransitionLog(0)
    log.add(("k", "released", "waiting", "s"))
    log.trim()
    assert list(log) == [] and len(log) == 0
    with pytest.raises(ValueError, match="transition log size must be >= 0, got -1"):
        TransitionLog(-1)


def test_the_scheduler_logs_each_transition_with_its_stimulus() -> None:
    s = SchedulerState(transition_log_size=4)
    s.handle(p.AddWorker(stimulus_id="join", time=0, worker="w0", nthreads=1))
    s.handle(p.UpdateGraph(stimulus_id="submit", time=0, client="c", wanted=("a-0", "b-0"),
                           tasks=(p.TaskSpecMsg("a-0"), p.TaskSpecMsg("b-0"))))
    assert s.story(["a-0"]) == [("a-0", "released", "waiting", "submit"),
                                ("a-0", "waiting", "processing", "submit")]
    s.handle(p.TaskFinished(stimulus_id="done", time=1, worker="w0", key="a-0", nbytes=8,
                            duration=1.0, run_id=s.tasks["a-0"].run_id))
    assert list(s.transition_log) == [("a-0", "waiting", "processing", "submit"),
                                      ("b-0", "released", "waiting", "submit"),
                                      ("b-0", "waiting", "processing", "submit"),
                                      ("a-0", "processing", "memory", "done")]
