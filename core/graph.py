"""Task graphs: what a user submits.

A ``TaskSpec`` names a task, its dependencies and what the scheduler may know of it in
advance (a duration hint, an output size, a prefix, a priority). It has either a real
body (``func`` and ``args``, run in real mode) or a simulated one (``sim_duration``,
``fails``), run by the simulator. Values of dependencies are passed to ``func`` after
``args``, in the order of ``deps``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from squall.core.protocol import TaskSpecMsg


class GraphError(ValueError):
    """A mistake in a submitted graph. The message is one line naming the keys."""


_HEX = frozenset("0123456789abcdef")


def key_prefix(key: str) -> str:
    """The task prefix of a key: its name before the trailing token ("inc-12" -> "inc",
    "load-3f2a9c81d0" -> "load"). Called once per task, so no regex."""
    for sep in "-_":
        head, found, token = key.rpartition(sep)
        if found and token and (token.isdigit() or (len(token) >= 8 and _HEX.issuperset(token))):
            return head
    return key


@dataclass(slots=True)
class TaskSpec:
    key: str
    deps: tuple[str, ...] = ()
    duration: float | None = None  # hint the scheduler sees; None = unknown
    nbytes: int | None = None  # output size hint (and the simulated output size)
    prefix: str | None = None  # default: derived from the key
    priority: int = 0  # higher runs first among ready tasks
    restrictions: tuple[str, ...] = ()
    # real body
    func: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    # simulated body
    sim_duration: float | None = None  # actual simulated run time; None = the hint (or 0.01)
    fails: bool = False  # the simulated body raises

    @property
    def task_prefix(self) -> str:
        return self.prefix if self.prefix is not None else key_prefix(self.key)

    @property
    def actual_duration(self) -> float:
        if self.sim_duration is not None:
            return self.sim_duration
        return self.duration if self.duration is not None else 0.01

    def to_msg(self) -> TaskSpecMsg:
        # (positional, in TaskSpecMsg's field order: a graph has one per task)
        return TaskSpecMsg(self.key, self.deps, self.task_prefix, self.duration, self.nbytes,
                           self.priority, self.restrictions, self.func is not None)


class TaskGraph:
    """An ordered collection of task specs, checked as it is built and as a whole."""

    def __init__(self, tasks: Iterable[TaskSpec] = ()) -> None:
        self.tasks: dict[str, TaskSpec] = {}
        for t in tasks:
            self.add_spec(t)

    def add_spec(self, spec: TaskSpec) -> TaskSpec:
        if not isinstance(spec.key, str) or not spec.key:
            raise GraphError(f"task key must be a non-empty string, got {spec.key!r}")
        if spec.key in self.tasks:
            raise GraphError(f"duplicate key: {spec.key!r}")
        if spec.key in spec.deps:
            raise GraphError(f"cycle: {spec.key!r} depends on itself")
        if len(set(spec.deps)) != len(spec.deps):
            raise GraphError(f"task {spec.key!r} lists a dependency twice: {list(spec.deps)}")
        if spec.duration is not None and not spec.duration >= 0:
            raise GraphError(f"task {spec.key!r}: duration must be >= 0, got {spec.duration}")
        if spec.nbytes is not None and spec.nbytes < 0:
            raise GraphError(f"task {spec.key!r}: nbytes must be >= 0, got {spec.nbytes}")
        self.tasks[spec.key] = spec
        return spec

    def add(self, key: str, func: Callable[..., Any] | None = None, *args: Any,
            deps: Iterable[str] = (), **fields: Any) -> TaskSpec:
        """Add a task; ``fields`` are TaskSpec fields (duration, nbytes, sim_duration, ...)."""
        return self.add_spec(TaskSpec(key=key, deps=tuple(deps), func=func, args=args, **fields))

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self.tasks.values())

    def __contains__(self, key: object) -> bool:
        return key in self.tasks

    def __getitem__(self, key: str) -> TaskSpec:
        return self.tasks[key]

    def validate(self, known: Iterable[str] = ()) -> list[str]:
        """Check the whole graph; return its keys in a topological order.

        ``known`` are keys that exist already (submitted earlier) and may be depended on.
        """
        known_set = set(known)
        tasks = self.tasks
        for spec in tasks.values():
            for d in spec.deps:
                if d not in tasks and d not in known_set:
                    missing = [d for d in spec.deps if d not in tasks and d not in known_set]
                    raise GraphError(f"task {spec.key!r} depends on missing key(s): {missing}")
        return self.topological_order()

    def topological_order(self) -> list[str]:
        """Keys with every task after its dependencies, as close to the order the tasks
        were added as that allows (exactly that order when it already has dependencies
        first, as graphs usually do); GraphError names a cycle."""
        tasks = self.tasks
        seen: set[str] = set()
        for key, spec in tasks.items():
            for d in spec.deps:
                if d not in seen and d in tasks:  # (deps outside the graph: known keys)
                    return self._stable_topological_order()
            seen.add(key)
        return list(tasks)

    def _stable_topological_order(self) -> list[str]:
        """Kahn's algorithm, always taking the ready key that was added first."""
        tasks = self.tasks
        keys = list(tasks)
        indegree: dict[str, int] = {}  # keys with dependencies in the graph: how many left
        dependents: dict[str, list[int]] = {}  # key -> insertion indices of its dependents
        ready: list[int] = []  # a heap of the insertion indices of keys with none left
        for i, (key, spec) in enumerate(tasks.items()):
            n = 0
            for d in spec.deps:
                if d in tasks:
                    n += 1
                    dependents.setdefault(d, []).append(i)
            if n:
                indegree[key] = n
            else:
                ready.append(i)
        order: list[str] = []
        while ready:
            key = keys[heapq.heappop(ready)]
            order.append(key)
            for j in dependents.get(key, ()):
                dep = keys[j]
                n = indegree[dep] - 1
                indegree[dep] = n
                if n == 0:
                    heapq.heappush(ready, j)
        if len(order) != len(tasks):
            raise GraphError(f"cycle among keys: {_find_cycle(self, indegree)}")
        return order

    def to_msgs(self, order: Iterable[str] | None = None) -> tuple[TaskSpecMsg, ...]:
        """The tasks as messages, in ``order`` (default: the order they were added)."""
        if order is None:
            return tuple([spec.to_msg() for spec in self.tasks.values()])
        specs = self.tasks
        return tuple([specs[key].to_msg() for key in order])


def _find_cycle(graph: TaskGraph, indegree: dict[str, int]) -> list[str]:
    """One cycle among the tasks left with a positive indegree, for the error message."""
    remaining = {k for k, n in indegree.items() if n > 0}
    start = min(remaining)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(d for d in graph.tasks[node].deps if d in remaining)
    return path[seen[node]:] + [node]
