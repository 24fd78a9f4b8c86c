"""A SimCluster driven step by step: submit graphs at any time, advance virtual time, drain.

``SimCluster.run(graph)`` submits one graph and runs to the end. The stateful Hypothesis
machine needs finer control: several submissions, faults between them, time advanced
in steps with the state checked in between. This subclass adds exactly that on top of
the simulator's event loop (it relies on the loop's internals: move it into
``core/sim.py`` if the simulator grows the same API).
"""

from __future__ import annotations

import heapq
from typing import Any

from squall.core import protocol as p
from squall.core.graph import GraphError, TaskGraph
from squall.core.outcome import Outcome
from squall.core.sim import CLIENT, SimCluster


class SteppedCluster(SimCluster):
    """``submit(graph)``, ``advance(seconds)``, ``drain() -> Outcome``."""

    now: float
    _started: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.graph = TaskGraph()  # every graph submitted so far, merged
        self._specs = self.graph.tasks
        self._wanted: set[str] = set()
        self.submitted = 0

    def submit(self, graph: TaskGraph, *, wanted: list[str] | None = None) -> None:
        """Submit ``graph`` now (its keys must be new); nothing runs until ``advance``."""
        assert self.graph is not None
        order = graph.validate(known=self.graph.tasks)
        for key in order:
            spec = graph[key]
            if spec.func is not None:
                raise GraphError(f"task {key!r} has a real function; the simulator runs "
                                 "simulated bodies")
            self.graph.add_spec(spec)
        wanted = order if wanted is None else wanted
        self._wanted.update(wanted)
        self.submitted += 1
        self._send_to_scheduler(None, [p.UpdateGraph(
            stimulus_id=self._new_sid("update-graph"), time=self.now, client=CLIENT,
            tasks=graph.to_msgs(order), wanted=tuple(wanted))])
        if not self._started:
            self._started = True
            self._schedule_periodic()

    def advance(self, seconds: float) -> None:
        """Process every event due in the next ``seconds`` of virtual time."""
        until = self.now + seconds
        events = self._events
        while events and events[0][0] <= until:
            t, _, fn, args, periodic = heapq.heappop(events)
            self.now = t
            if periodic:
                self._periodic -= 1
            fn(*args)
        self.now = until

    def drain(self) -> Outcome:
        """Run until every wanted key has a result (stuck: SimulationError) and check them."""
        assert self.graph is not None
        self._loop()
        return self._outcome(self.graph, self.graph.topological_order())

    def pending_keys(self) -> list[str]:
        return sorted(self._wanted - set(self.results))
