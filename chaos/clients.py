"""Client actions: what a scenario's clients do mid-run, as data in its chaos schedule.

A scenario submits its graph from one client, which wants every key. Its clients may also
act later, each a timed entry of the same schedule as the faults:

- ``ReleaseKeys`` (``release``): ``client`` drops its futures of ``keys``. A key no other
  client wants then needs no result, and the scheduler may forget it (and, if it is still
  running or waiting, cancel it); a key a still-wanted key depends on must still be
  computed.
- ``WantKeys`` (``want``): ``client`` asks for ``keys``: an UpdateGraph carrying their
  tasks and every task they depend on (the scheduler keeps the records it still has and
  takes the specs of those it forgot), wanting ``keys``. After a release it is a
  re-request; from another client, a second client wanting overlapping keys; for keys
  still running, a resubmission of keys in flight.
- ``SubmitKeys`` (``submit``): ``keys`` are not part of the first submission: ``client``
  submits them at ``at`` (with what they depend on), wanting them -- a graph submitted
  while faults are in progress. Whatever depends on a key submitted late must be
  submitted late too (by this action or another): the first submission is then a graph
  of its own.

Why faults' kinds and not a schedule of their own: a client action is a timed event like
a fault, and everything squall does with a fault it must do with one -- serialise it in a
scenario, record it in a trace at the moment it happens, replay the run, draw it from
Hypothesis and let the minimizer drop it or move it sooner. As fault kinds (registered
with ``@fault_kind``, acting through ``apply(surface)``) they share the one schedule, the
one trace format and the one replay; nothing that reads a schedule needs to know of them
but the few places where a client differs from a fault (the keys held back from the first
submission, the key names a scenario must check). They act through the ``ClientSurface``
(``release_keys``, ``want_keys``), beside the fault surface: the client's stimuli to the
scheduler are the scheduler's own (``ClientReleasesKeys``, ``UpdateGraph``), recorded and
replayed like every other stimulus, and the trace notes each action as it strikes as it
notes a fault. Hypothesis does not draw them with the faults (they name keys, not
workers): ``squall.scenarios.strategies.client_actions`` does.

Runtimes: the simulator performs them all. Real mode (``LocalCluster``) and a target's
own runtime (dask) refuse a scenario with client actions, with a one-line reason, before
anything starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from squall.chaos.injectors import Fault
from squall.chaos.kinds import fault_kind
from squall.core.view import ClientSurface, FaultSurface

CLIENT = "client"  # the client that submits the scenario's graph
# The surface calls client actions make (``injectors.effects`` names them so).
CLIENT_METHODS = frozenset({"release_keys", "want_keys"})


class ClientAction(Fault, frozen=True):
    """Base of the client actions: ``client`` acts on ``keys`` at ``at``."""

    keys: tuple[str, ...]
    client: str = CLIENT

    def check(self) -> None:
        super().check()
        kind = self.kind_name()
        if not self.client:
            raise ValueError(f"{kind} action: 'client' must name a client")
        if not self.keys:
            raise ValueError(f"{kind} action: 'keys' must name at least one key")
        if len(set(self.keys)) != len(self.keys):
            twice = next(k for i, k in enumerate(self.keys) if k in self.keys[:i])
            raise ValueError(f"{kind} action: 'keys' names {twice!r} twice")

    @staticmethod
    def _clients(surface: FaultSurface) -> ClientSurface:
        """The surface's client side (a runtime without one fails here, by name)."""
        if not hasattr(surface, "want_keys"):
            raise ValueError(f"{type(surface).__name__} performs no client actions")
        return cast(ClientSurface, surface)


@fault_kind(label="release", colour="purple")
class ReleaseKeys(ClientAction, tag="release", frozen=True):
    """``client`` drops its futures of ``keys`` (a cancel, if they are still running)."""

    def apply(self, surface: FaultSurface) -> None:
        self._clients(surface).release_keys(self.client, self.keys)


@fault_kind(label="want", colour="blue")
class WantKeys(ClientAction, tag="want", frozen=True):
    """``client`` asks for ``keys`` (again): their tasks and what they depend on are sent
    with it, and the scheduler keeps what it still knows."""

    def apply(self, surface: FaultSurface) -> None:
        self._clients(surface).want_keys(self.client, self.keys)


@fault_kind(label="submit", colour="teal")
class SubmitKeys(ClientAction, tag="submit", frozen=True):
    """``keys`` are held back from the first submission; ``client`` submits them now."""

    def apply(self, surface: FaultSurface) -> None:
        self._clients(surface).want_keys(self.client, self.keys)


def client_actions(chaos: Iterable[Fault]) -> list[ClientAction]:
    return [f for f in chaos if isinstance(f, ClientAction)]


def held_back(chaos: Iterable[Fault]) -> set[str]:
    """The keys the first submission leaves out: those a ``submit`` action submits."""
    return {k for f in chaos if isinstance(f, SubmitKeys) for k in f.keys}


def last_action(chaos: Iterable[Fault]) -> float | None:
    """When the last client action strikes (a run lasts at least until then), if any."""
    return max((f.at for f in chaos if isinstance(f, ClientAction)), default=None)


def key_problem(chaos: Sequence[Fault], deps: Mapping[str, Sequence[str]]) -> str | None:
    """What is wrong with the keys the client actions of ``chaos`` name, for a graph of
    ``deps`` (key -> its dependencies): "chaos[i].keys: ..." naming the first bad one;
    None if nothing is."""
    held = held_back(chaos)
    for i, f in enumerate(chaos):
        if not isinstance(f, ClientAction):
            continue
        for key in f.keys:
            if key not in deps:
                return f"chaos[{i}].keys: {f.kind_name()} action names {key!r}, not a key " \
                       "of the workload's graph"
    if held:
        for key, needs in deps.items():
            if key in held:
                continue
            late = next((d for d in needs if d in held), None)
            if late is not None:
                i = next(i for i, f in enumerate(chaos)
                         if isinstance(f, SubmitKeys) and late in f.keys)
                return (f"chaos[{i}].keys: {late!r} is submitted late, but {key!r}, which "
                        "depends on it, is in the first submission (submit it late too)")
    return None

