"""What an invariant is: an id, the entity it is about, one line of text, a check.

A check returns ``None`` when the invariant holds, else a short detail string (or an
``(entity, detail)`` pair when it names its own entity, as liveness checks do). It never
raises for a broken state: the validator turns a detail into an InvariantViolation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# What an invariant is about.
TASK = "task"  # a scheduler task (TaskState)
WORKER = "worker"  # the scheduler's record of a worker (WorkerInfo)
CLUSTER = "cluster"  # scheduler-wide collections, or scheduler and workers together
WORKER_TASK = "worker-task"  # a worker's record of a task (WTask)
WORKER_STATE = "worker-state"  # a worker state machine as a whole (WorkerState)
STEAL = "steal"  # work stealing in flight
LIVENESS = "liveness"
END_TO_END = "end-to-end"
ENTITIES = (TASK, WORKER, CLUSTER, WORKER_TASK, WORKER_STATE, STEAL, LIVENESS, END_TO_END)

# When an invariant is checked.
INCREMENTAL = "incremental"  # after every stimulus, on what its transitions touched; and full
FULL = "full"  # needs a whole-state scan: in full checks only (quiescence, end, stuck)
QUIESCENT = "quiescent"  # only when nothing is in flight (liveness, cross-machine agreement)
END = "end"  # at the end of a run (end to end)
SCOPES = (INCREMENTAL, FULL, QUIESCENT, END)

Check = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Invariant:
    id: str
    entity: str
    text: str
    check: Check
    scope: str = INCREMENTAL
    # For task / worker-task invariants: the states it applies to (None: every state).
    states: frozenset[str] | None = None
    # Whether a neighbour's transition can break it (it reads the task's dependencies or
    # dependents, or fields their transitions write): then it is also checked on tasks
    # touched only as a neighbour.
    neighbours: bool = False
    # Whether it only says that the state is one of the known states.
    known_state: bool = False

    def applies(self, state: str) -> bool:
        return self.states is None or state in self.states


def registrar(into: list[Invariant], entity: str, default_states: Iterable[str] | None = None,
              ) -> Callable[..., Callable[[Check], Check]]:
    """A decorator factory that appends each decorated check, in definition order, to
    ``into`` as an Invariant of ``entity`` (applying to ``default_states`` unless told)."""

    def invariant(id: str, text: str, *, scope: str = INCREMENTAL,
                  states: Iterable[str] | None = default_states, neighbours: bool = False,
                  known_state: bool = False, entity: str = entity
                  ) -> Callable[[Check], Check]:
        if scope not in SCOPES:
            raise ValueError(f"invariant {id!r}: unknown scope {scope!r}")
        if entity not in ENTITIES:
            raise ValueError(f"invariant {id!r}: unknown entity {entity!r}")

        def register(fn: Check) -> Check:
            into.append(Invariant(id, entity, text, fn, scope,
                                  None if states is None else frozenset(states), neighbours,
                                  known_state))
            return fn

        return register

    return invariant


def by_state(invariants: Iterable[Invariant], states: Iterable[str], scopes: tuple[str, ...],
             neighbours_only: bool = False) -> dict[str, tuple[Invariant, ...]]:
    """For each state, the invariants (of the given scopes; only those a neighbour's move
    can break, if asked) that apply to it, in order. An invariant that only says the
    state is a known one (``known_state``) is left out: being looked up by its state
    proves it; the validator runs it on a state it finds no entry for."""
    chosen = [inv for inv in invariants
              if inv.scope in scopes and (inv.neighbours or not neighbours_only)
              and not inv.known_state]
    return {s: tuple(inv for inv in chosen if inv.applies(s)) for s in states}
