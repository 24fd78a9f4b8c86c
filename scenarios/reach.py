"""Reach goals: rare situations exploration is meant to drive the scheduler into.

An invariant says what must never happen; a reach goal says what must *sometimes* happen
for the search to be worth its time (the "sometimes" assertions of Antithesis-style
testing). A steal racing a worker's death, a fetch failing over to a second holder, a
result lost and recomputed while a dependent waits: a bug in those paths is invisible
to a search that never gets there. ``squall explore`` reports, per goal, how many
scenarios reached it, so a gap in the search shows as a goal with zero.

``ReachTracker`` is a stimulus recorder (``Target.log_stimuli``): it sees every stimulus
the cluster's state machines receive, as ``(receiver, message)``, and at the end of a run
(``finish(view)``) reads the few counters the stream does not show. It works from the
protocol's messages alone, so it runs on both of squall's runtimes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from squall.core import protocol as p

SCHEDULER = "scheduler"  # the receiver name of the scheduler's stimuli

# goal id -> what reaching it means (in the order reports print them)
GOALS: dict[str, str] = {
    "worker-rejoined": "a worker joined again under a name already used (a new incarnation)",
    "worker-timed-out": "the scheduler declared a worker dead by its heartbeat timeout",
    "fetch-failed-over": "a fetch failed from one holder, and the key then came from another",
    "result-recomputed": "a result was lost and computed again (from its lineage)",
    "retried-after-death": "a task whose worker died under it was run again and finished",
    "stale-report-ignored": "a report from a worker no longer assigned its task was ignored",
    "task-erred": "a task failed, and its error reached the scheduler",
    "client-released": "a client released keys it wanted, mid-run",
    "steal-moved": "a steal moved a queued task to another worker",
    "steal-refused": "a victim refused a steal (it had started the task)",
    "steal-raced-death": "a steal was open when its thief or victim left",
}


class ReachTracker:
    """Which of ``GOALS`` one run reached (``reached`` after ``finish``)."""

    def __init__(self) -> None:
        self.reached: set[str] = set()
        self._joined: set[str] = set()
        self._finished: set[str] = set()
        self._failed_from: dict[tuple[str, str], str] = {}  # (worker, key) -> holder

    def __call__(self, receiver: str, msg: Any) -> None:
        kind = type(msg)
        if receiver == SCHEDULER:
            if kind is p.TaskFinished:
                if msg.key in self._finished:
                    self.reached.add("result-recomputed")
                self._finished.add(msg.key)
            elif kind is p.AddWorker:
                if msg.worker in self._joined:
                    self.reached.add("worker-rejoined")
                self._joined.add(msg.worker)
            elif kind is p.TaskErred:
                self.reached.add("task-erred")
            elif kind is p.ClientReleasesKeys:
                self.reached.add("client-released")
            return
        if kind is p.GatherDepFailure:
            for key in (*msg.keys, *msg.missing):
                if key not in msg.nbytes:
                    self._failed_from[receiver, key] = msg.holder
        elif kind is p.GatherDepSuccess and self._failed_from:
            for key in msg.nbytes:
                failed = self._failed_from.get((receiver, key))
                if failed is not None and failed != msg.holder:
                    self.reached.add("fetch-failed-over")

    def finish(self, state: Any) -> set[str]:
        """Read what the stream does not show from the scheduler's state at the end (a
        ``SchedulerState``, or anything with the same fields; missing ones are skipped)."""
        if (getattr(state, "removals", None) or {}).get("heartbeat-timeout"):
            self.reached.add("worker-timed-out")
        if getattr(state, "stale_reports", 0):
            self.reached.add("stale-report-ignored")
        for ts in getattr(state, "tasks", {}).values():
            if getattr(ts, "suspicious", 0) and getattr(ts, "state", None) == "memory":
                self.reached.add("retried-after-death")
                break
        stats = getattr(getattr(state, "stealing", None), "stats", None) or {}
        if stats.get("moved"):
            self.reached.add("steal-moved")
        if stats.get("refused"):
            self.reached.add("steal-refused")
        if stats.get("thief-gone") or stats.get("victim-gone"):
            self.reached.add("steal-raced-death")
        return self.reached


def count_reached(counts: dict[str, int], reached: Iterable[str] | dict[str, int]) -> None:
    """Add one run's goals (a set) or other counts (goal -> n) to ``counts`` (goal ->
    scenarios that reached it)."""
    if isinstance(reached, dict):
        for goal, n in reached.items():
            counts[goal] = counts.get(goal, 0) + n
        return
    for goal in reached:
        counts[goal] = counts.get(goal, 0) + 1


def format_goals(counts: dict[str, int], scenarios: int) -> list[str]:
    """One line per goal: how many of ``scenarios`` reached it, unreached ones marked."""
    width = max(len(g) for g in GOALS)
    lines = []
    for goal, text in GOALS.items():
        n = counts.get(goal, 0)
        mark = "NOT REACHED" if n == 0 else f"{n} of {scenarios}"
        lines.append(f"{goal:<{width}}  {mark:>16}  {text}")
    return lines
