"""The catalog: every invariant squall checks, in the order the validator checks them."""

from __future__ import annotations

from squall.invariants.base import Invariant
from squall.invariants.cluster_checks import (
    END_INVARIANTS,
    LIVENESS_INVARIANTS,
    QUIESCENT_INVARIANTS,
)
from squall.invariants.scheduler_checks import (
    CLUSTER_INVARIANTS,
    TASK_INVARIANTS,
    TRANSITION_INVARIANTS,
    WORKER_INVARIANTS,
)
from squall.invariants.stealing_checks import RESPONSE_INVARIANTS, STEAL_INVARIANTS
from squall.invariants.worker_checks import (
    WSTATE_INVARIANTS,
    WTASK_INVARIANTS,
    WTRANSITION_INVARIANTS,
)

CATALOG: tuple[Invariant, ...] = (
    *TRANSITION_INVARIANTS, *TASK_INVARIANTS, *WORKER_INVARIANTS, *CLUSTER_INVARIANTS,
    *WTRANSITION_INVARIANTS, *WTASK_INVARIANTS, *WSTATE_INVARIANTS,
    *STEAL_INVARIANTS, *RESPONSE_INVARIANTS,
    *QUIESCENT_INVARIANTS, *LIVENESS_INVARIANTS, *END_INVARIANTS,
)
BY_ID: dict[str, Invariant] = {inv.id: inv for inv in CATALOG}
if len(BY_ID) != len(CATALOG):  # pragma: no cover - a programming error, caught at import
    raise RuntimeError("two invariants share an id")


def invariant(id: str) -> Invariant:
    """The invariant with this id; KeyError names it."""
    try:
        return BY_ID[id]
    except KeyError:
        raise KeyError(f"no invariant {id!r} in the catalog") from None
