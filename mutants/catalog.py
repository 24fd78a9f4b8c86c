"""Mutants: a catalog of deliberate, documented bugs, to measure what exploration catches.

Each ``Mutant`` is one bug that a real scheduler has had, planted in the reference
scheduler, worker or work stealing by replacing **one** method for the duration of a
``with mutant.active():`` block (``unittest.mock.patch.object`` on the class). Production
code carries no switch and pays nothing: outside the block the class holds its own
method again. The buggy methods live beside the catalog, in ``scheduler_bugs`` (the
scheduler and its work stealing) and ``worker_bugs``; ``squall.mutants.measure`` explores
with them (``squall mutants``).

Most buggy methods are **copies** of the production method with the bug planted on
marked lines; the others wrap the production method, stub it or rewrite it (said in
their docstrings). A copy cannot drift from its production method, by this convention,
which tests/test_mutants.py checks for every copy (``squall.mutants.copies``):

- it is marked ``@copy_of(Owner.method)`` and lives in the module of bugs of its side,
  whose global names are the production module's (``MEMORY`` in ``worker_bugs`` is the
  worker's state): every global name the copy reads must be bound to the object the
  production method reads under it;
- its signature is the production method's (arguments, annotations, defaults, return
  annotation); only its name may differ;
- its body has the production body's lines, in order, each equal character for
  character (both dedented), except the **marked lines**: a line of code whose comment
  starts with ``# BUG`` (``# BUG``, ``# BUG: why``, ``# BUG (when flag off): why``)
  stands for the production line at its place, and its code must differ from that
  line's;
- a comment line that starts with ``# BUG``, with the comment lines right below it, is
  an explanation: it stands for no production line and must be right above a marked
  line of code.

So a bug deletes a production line by replacing it (``pass  # BUG``, ``if False:  # BUG``)
and adds code by changing one line; helpers it needs are defined outside the copy (in
the module, or in the factory that makes the copy). A change to a production method
anywhere but at a marked line fails the test until its copy is changed alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

from squall.core.scheduler import SchedulerState
from squall.core.stealing import WorkStealing
from squall.core.worker import WorkerState
from squall.mutants.scheduler_bugs import (
    balance_ignores_newcomers,
    candidates_bug,
    close_keeps_thief_booked,
    drifting_occupancy,
    handle_missing_data_ignored,
    on_transition_keeps_steals,
    remove_worker_bug,
    steal_response_bug,
    to_erred_keeps_dependents_waiting,
)
from squall.mutants.worker_bugs import (
    compute_task_resumes_nothing,
    drop_inputs_eagerly,
    handle_steal_request_takes_executing,
)

Method = Callable[..., Any]


class MutantError(ValueError):
    """An unknown mutant name (one line, listing the names)."""


@dataclass(frozen=True)
class Mutant:
    """One planted bug.

    ``make(original)`` returns the buggy method that replaces ``owner.attr`` (it gets the
    production method, to wrap it, and may keep per-activation state in its closure).
    ``space`` is the scenario space exploration draws from for it; ``caught_by`` the
    invariants expected to catch it, the one that fires in ``squall mutants`` first
    (documentation: whichever fires first is reported).
    """

    name: str
    title: str  # the bug, in one line
    models: str  # the failure mode real schedulers had, with references
    owner: type
    attr: str
    make: Callable[[Method], Method]
    space: str = "small"
    caught_by: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        return f"{self.owner.__name__}.{self.attr}"

    @contextmanager
    def active(self) -> Iterator[Mutant]:
        """The bug is live inside the block, and gone after it (even on an exception)."""
        original = self.owner.__dict__[self.attr]
        with mock.patch.object(self.owner, self.attr, self.make(original)):
            yield self


def _replace(fn: Method) -> Callable[[Method], Method]:
    """``make`` for a mutant whose buggy method does not need the production one (a copy,
    or a stub)."""
    return lambda original: fn


# ---------------------------------------------------------------------- the catalog


CATALOG: tuple[Mutant, ...] = (
    Mutant(
        "dead-worker-tasks-stranded",
        "a dead worker's processing tasks are not rescheduled",
        "processing tasks of a dead worker not rescheduled: they wait forever for a worker "
        "that is gone (dask/distributed worker-removal bugs, e.g. #6356, #3256)",
        SchedulerState, "_remove_worker",
        _replace(remove_worker_bug(reschedule=False, recompute=True, retry_limit=True)),
        caught_by=("worker.dead-holds-nothing", "task.processing-worker-running"),
    ),
    Mutant(
        "lost-replica-not-recomputed",
        "a task whose only replica died stays 'in memory' with no holder",
        "the only replica of a dependency lost and never recomputed: dependents wait for "
        "data nobody has",
        SchedulerState, "_remove_worker",
        _replace(remove_worker_bug(reschedule=True, recompute=False, retry_limit=True)),
        caught_by=("task.who-has-iff-memory",),
    ),
    Mutant(
        "retry-limit-ignored",
        "a task whose workers keep dying is retried forever, never erred (KilledWorker)",
        "a retry counter that never errs a task that keeps killing workers: a poison task "
        "takes down the cluster one worker after another (dask allowed-failures)",
        SchedulerState, "_remove_worker",
        _replace(remove_worker_bug(reschedule=True, recompute=True, retry_limit=False)),
        space="fragile",
        caught_by=("task.retries-within-limit",),
    ),
    Mutant(
        "occupancy-drift",
        "occupancy is a running total instead of being derived from the tasks",
        "occupancy accumulated incrementally, so it drifts, even below zero, as estimates "
        "change (dask/distributed #1544, PR #9012)",
        SchedulerState, "occupancy", drifting_occupancy,
        caught_by=("worker.occupancy-fresh", "worker.occupancy-non-negative"),
    ),
    Mutant(
        "error-not-propagated",
        "an erred task does not err its waiting dependents",
        "a failure that does not reach the tasks downstream: they wait forever for an input "
        "that will never come, and the client hangs",
        SchedulerState, "_to_erred", _replace(to_erred_keeps_dependents_waiting),
        caught_by=("task.in-play-dependents-wait", "liveness.waiting-task-progresses"),
    ),
    Mutant(
        "missing-data-ignored",
        "a worker's report that a holder lacks an input is ignored",
        "a lost replica reported by a peer but kept on record: fetches fail forever and "
        "the task never runs",
        SchedulerState, "_handle_missing_data", _replace(handle_missing_data_ignored),
        caught_by=("liveness.processing-task-runs", "liveness.worker-tasks-settled"),
    ),
    Mutant(
        "steal-confirm-after-release",
        "a steal stays open after its task left the victim, and a late answer confirms it",
        "a steal confirmed after the task was released or rescheduled, leaving it stuck on "
        "a worker that does not know it (dask/distributed #5370)",
        WorkStealing, "_on_transition", _replace(on_transition_keeps_steals),
        space="stealing",
        caught_by=("steal.in-flight-task-live",),
    ),
    Mutant(
        "steal-booking-leak",
        "the occupancy a steal booked on its thief is not given back when it closes",
        "occupancy accounting that drifts with every steal (the booked half of #1544 / PR "
        "#9012): thieves look ever busier and stop being fed",
        WorkStealing, "_close", _replace(close_keeps_thief_booked),
        space="imbalance",
        caught_by=("steal.in-flight-occupancy-zero",),
    ),
    Mutant(
        "steal-to-stale-record",
        "a steal's thief is checked by address, so a restarted thief's old record gets it",
        "a stolen task assigned to the stale record of a worker that rejoined at the same "
        "address: it stays processing forever (dask/distributed #6356, #6263, #3256)",
        WorkStealing, "steal_response",
        _replace(steal_response_bug(by_name=True, ignore_refusal=False)),
        space="restarts",
        caught_by=("task.processing-worker-running",),
    ),
    Mutant(
        "steal-refusal-ignored",
        "a steal is carried out although the victim answered that the task is running",
        "an executing task stolen, so it runs twice (dask/distributed #6689, #6869), the "
        "scheduler's half",
        WorkStealing, "steal_response",
        _replace(steal_response_bug(by_name=False, ignore_refusal=True)),
        space="stealing",
        caught_by=("steal.executing-never-stolen",),
    ),
    Mutant(
        "executing-task-stolen",
        "a worker gives up a task it is already executing when asked to",
        "an executing task stolen, so it runs twice (dask/distributed #6689, #6869), the "
        "worker's half",
        WorkerState, "_handle_steal_request", _replace(handle_steal_request_takes_executing),
        space="stealing",
        caught_by=("e2e.no-duplicate-run",),
    ),
    Mutant(
        "split-estimates",
        "stealing prices tasks with the user's hint, placement with measured durations",
        "placement and stealing using different duration estimates, so tasks ping-pong "
        "(dask/distributed PR #9000)",
        WorkStealing, "_candidates", _replace(candidates_bug(own_estimate=True,
                                                               skip_unknown=False)),
        space="imbalance",
        caught_by=("steal.books-shared-estimate",),
    ),
    Mutant(
        "unknown-duration-never-stolen",
        "tasks of a prefix that has never finished are never stolen",
        "unknown-duration tasks never stolen, so all work stays on the first worker "
        "(dask/distributed #5564, #3516)",
        WorkStealing, "_candidates", _replace(candidates_bug(own_estimate=False,
                                                               skip_unknown=True)),
        space="imbalance",
        caught_by=("steal.idle-worker-fed",),
    ),
    Mutant(
        "newcomers-never-fed",
        "stealing only feeds the workers present at its first round",
        "new workers on scale-up stay idle (dask/distributed #4471, #1851, #7093)",
        WorkStealing, "balance", balance_ignores_newcomers,
        space="imbalance",
        caught_by=("steal.idle-worker-fed",),
    ),
    Mutant(
        "freed-while-needed",
        "a worker drops a fetched input after its first use, though other tasks need it",
        "data freed while a dependent still needs it: the dependent runs without its input "
        "or waits for it forever",
        WorkerState, "_drop_inputs", _replace(drop_inputs_eagerly),
        caught_by=("wtask.inputs-held-while-running",),
    ),
    Mutant(
        "cancelled-task-not-resumed",
        "a task cancelled while running and then asked for again is not resumed",
        "a task released and re-assigned while its body runs is lost: the result is dropped "
        "and nobody computes it (dask/distributed cancelled/resumed state bugs, #6869)",
        WorkerState, "_handle_compute_task", _replace(compute_task_resumes_nothing),
        caught_by=("wtask.runnable-matches-state", "liveness.processing-task-runs"),
    ),
)

MUTANTS: dict[str, Mutant] = {m.name: m for m in CATALOG}
if len(MUTANTS) != len(CATALOG):  # pragma: no cover - a programming error, caught at import
    raise RuntimeError("two mutants share a name")


def mutant(name: str) -> Mutant:
    """The mutant called ``name``; MutantError lists the names when there is none."""
    try:
        return MUTANTS[name]
    except KeyError:
        raise MutantError(f"unknown mutant {name!r}; choose one of: "
                          f"{', '.join(MUTANTS)}") from None


@contextmanager
def switched_on(name: str | None) -> Iterator[Mutant | None]:
    """``with switched_on(name):`` the named mutant is live (None: nothing is)."""
    if name is None:
        yield None
        return
    with mutant(name).active() as m:
        yield m


__all__ = ["CATALOG", "MUTANTS", "Mutant", "MutantError", "mutant", "switched_on"]
