"""The result oracle: what every key of a graph must end as, and which errors are right.

One definition, used by the simulator (its outcome), the real runtime (its outcome) and
the end-to-end invariants. A simulated task's value is a deterministic mix of its key
and its inputs, so a sequential evaluation of the graph says what each key must hold; a
task that ``fails`` raises, and every key downstream of it must be reported erred.
"""

from __future__ import annotations

import zlib

from squall.core.graph import TaskGraph, TaskSpec

DEFAULT_OUTPUT_BYTES = 100
_MASK = (1 << 61) - 1


def task_value(key: str, inputs: list[int]) -> int:
    """The deterministic result of a simulated task: a mix of its key and its inputs."""
    v = zlib.crc32(key.encode()) * 0x9E3779B1
    for i, x in enumerate(inputs):
        v += (i + 1) * x
    return v & _MASK


def output_bytes(spec: TaskSpec) -> int:
    """The size of a simulated task's output."""
    return DEFAULT_OUTPUT_BYTES if spec.nbytes is None else spec.nbytes


def expected_results(graph: TaskGraph, order: list[str] | None = None) -> dict[str, int | str]:
    """Sequential evaluation: each key's value, or "error:<key>" naming the failed task."""
    out: dict[str, int | str] = {}
    specs = graph.tasks
    for key in order if order is not None else graph.topological_order():
        spec = specs[key]
        inputs = []
        failed = None
        for d in spec.deps:  # (a loop: cheaper than a comprehension for 0-3 inputs)
            x = out[d]
            if failed is None and type(x) is str:
                failed = x
            inputs.append(x)
        if failed is not None:
            out[key] = failed
        elif spec.fails:
            out[key] = f"error:{key}"
        else:
            out[key] = task_value(key, inputs)  # type: ignore[arg-type]
    return out


def is_upstream(graph: TaskGraph, blame: str, key: str) -> bool:
    """Whether ``blame`` is ``key`` or one of its ancestors."""
    specs = graph.tasks
    seen, todo = {key}, [key]
    while todo:
        k = todo.pop()
        if k == blame:
            return True
        for d in specs[k].deps:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return False


def error_problem(graph: TaskGraph, key: str, blame: str, want: int | str, *,
                  killed: bool) -> str | None:
    """Why reporting ``key`` erred, blamed on ``blame``, is wrong (None: it is right).

    An error is right when it is blamed on a task upstream of ``key`` (or ``key``) that
    raises -- which one, when several do, depends on timing -- or on one the scheduler
    gave up on because its workers kept dying (``killed``: KilledWorker), which explains
    a key that should have succeeded as well."""
    if not isinstance(want, str):
        return None if killed else f"should succeed but was reported error:{blame}"
    if blame not in graph.tasks or not (graph.tasks[blame].fails or killed):
        return f"reported error:{blame}, but {blame!r} does not raise"
    if not is_upstream(graph, blame, key):
        return f"reported error:{blame}, but {blame!r} is not upstream of it"
    return None
