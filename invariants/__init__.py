"""squall.invariants: the invariant catalog and the strict-mode validator.

- ``CATALOG``: every Invariant (id, entity, text, check, scope), in checking order.
- ``Validator(cluster)``: strict mode for a SimCluster (or a replay of one).
- ``SchedulerValidator(state)`` / ``WorkerValidator(ws, data=...)``: strict mode for one
  state machine, with no simulator (the real runtime's processes use these).
- ``InvariantViolation``: raised at the first broken invariant; ``.to_violation()`` gives
  the serialisable ``squall.core.outcome.Violation``.
"""

from squall.invariants.base import ENTITIES, SCOPES, Invariant
from squall.invariants.catalog import BY_ID, CATALOG, invariant
from squall.invariants.cluster_validator import Validator
from squall.invariants.validator import Reporter, SchedulerValidator, WorkerValidator
from squall.invariants.violation import InvariantViolation

__all__ = [
    "BY_ID", "CATALOG", "ENTITIES", "SCOPES", "Invariant", "InvariantViolation", "Reporter",
    "SchedulerValidator", "Validator", "WorkerValidator", "invariant",
]
