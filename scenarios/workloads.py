"""Seeded task-graph generators: the workloads scenarios, tests and benchmarks run.

Each generator is ``fn(n, seed=0, **params) -> TaskGraph`` and is deterministic in its
arguments. Keys are ``<prefix>-<i>`` so that prefixes group tasks of the same kind.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from squall.core.graph import TaskGraph, TaskSpec

MiB = 1 << 20


def random_dag(n: int, seed: int = 0, *, max_deps: int = 3, window: int = 200,
               prefixes: int = 5, mean_duration: float = 0.05) -> TaskGraph:
    """Tasks depend on up to ``max_deps`` random tasks among the ``window`` before them."""
    rng = random.Random(f"random_dag:{seed}")
    g = TaskGraph()
    keys: list[str] = []
    means = [mean_duration * rng.uniform(0.2, 2.0) for _ in range(prefixes)]
    for i in range(n):
        k = rng.randrange(prefixes)
        lo = max(0, i - window)
        ndeps = rng.randint(0, min(max_deps, i - lo))
        deps = tuple(sorted(set(keys[j] for j in rng.sample(range(lo, i), ndeps)))) if ndeps else ()
        key = f"t{k}-{i}"
        d = rng.expovariate(1 / means[k])
        g.add_spec(TaskSpec(key, deps=deps, duration=means[k], sim_duration=d,
                            nbytes=rng.choice((100, 1000, 10_000, 100_000))))
        keys.append(key)
    return g


def chain(n: int, seed: int = 0, *, duration: float = 0.01) -> TaskGraph:
    g = TaskGraph()
    prev: tuple[str, ...] = ()
    for i in range(n):
        g.add_spec(TaskSpec(f"chain-{i}", deps=prev, duration=duration, nbytes=100))
        prev = (f"chain-{i}",)
    return g


def tree_reduction(n: int, seed: int = 0, *, fan_in: int = 2, duration: float = 0.01) -> TaskGraph:
    """``n`` leaves reduced ``fan_in`` at a time to a single root."""
    g = TaskGraph()
    level = [g.add_spec(TaskSpec(f"leaf-{i}", duration=duration, nbytes=1000)).key
             for i in range(n)]
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for j in range(0, len(level), fan_in):
            key = f"reduce{depth}-{j // fan_in}"
            g.add_spec(TaskSpec(key, deps=tuple(level[j:j + fan_in]), duration=duration,
                                nbytes=1000))
            nxt.append(key)
        level = nxt
    return g


def fan_out_fan_in(n: int, seed: int = 0, *, duration: float = 0.02) -> TaskGraph:
    """One source, ``n`` tasks reading it, one sink reading them all."""
    g = TaskGraph()
    g.add_spec(TaskSpec("source-0", duration=duration, nbytes=MiB))
    for i in range(n):
        g.add_spec(TaskSpec(f"map-{i}", deps=("source-0",), duration=duration, nbytes=1000))
    g.add_spec(TaskSpec("sink-0", deps=tuple(f"map-{i}" for i in range(n)), duration=duration,
                        nbytes=100))
    return g


def independent(n: int, seed: int = 0, *, duration: float = 0.1, prefix: str = "task") -> TaskGraph:
    """``n`` independent tasks of equal duration."""
    return TaskGraph(TaskSpec(f"{prefix}-{i}", duration=duration, nbytes=100) for i in range(n))


def many_tiny(n: int, seed: int = 0) -> TaskGraph:
    """Lots of 1 ms tasks: scheduler overhead dominates."""
    rng = random.Random(f"many_tiny:{seed}")
    return TaskGraph(TaskSpec(f"tiny-{i}", duration=0.001,
                              sim_duration=0.001 * rng.uniform(0.5, 1.5), nbytes=10)
                     for i in range(n))


def few_long(n: int, seed: int = 0) -> TaskGraph:
    """A handful of tasks that take long, with unknown durations."""
    rng = random.Random(f"few_long:{seed}")
    return TaskGraph(TaskSpec(f"long-{i}", sim_duration=rng.uniform(5.0, 30.0), nbytes=1000)
                     for i in range(max(1, n)))


def skewed_durations(n: int, seed: int = 0, *, wrong_by: float = 10.0) -> TaskGraph:
    """Independent tasks of several prefixes whose hints are wrong by ``wrong_by``x either way."""
    rng = random.Random(f"skewed:{seed}")
    g = TaskGraph()
    kinds = [("under", 1.0 / wrong_by), ("over", wrong_by), ("right", 1.0)]
    for i in range(n):
        name, factor = kinds[i % 3]
        actual = rng.uniform(0.05, 0.15)
        g.add_spec(TaskSpec(f"{name}-{i}", duration=actual * factor, sim_duration=actual,
                            nbytes=100))
    return g


def large_outputs(n: int, seed: int = 0) -> TaskGraph:
    """Producers of large outputs, each consumed by a couple of tasks: data locality matters."""
    rng = random.Random(f"large:{seed}")
    g = TaskGraph()
    producers = max(1, n // 3)
    for i in range(producers):
        g.add_spec(TaskSpec(f"big-{i}", duration=0.05, nbytes=rng.choice((10, 50, 100)) * MiB))
    for i in range(n - producers):
        deps = (f"big-{i % producers}",)
        g.add_spec(TaskSpec(f"use-{i}", deps=deps, duration=0.02, nbytes=1000))
    return g


def mixed(n: int, seed: int = 0, *, long_tasks: int | None = None, long_max: float = 5.0,
          big_tasks: int | None = None, big_mib: float = 20.0) -> TaskGraph:
    """Tiny tasks, long tasks, large outputs, a deep chain and a wide fan-in, together.

    ``long_tasks`` of 1..``long_max`` s (default n/50); ``big_tasks`` producers of
    ``big_mib`` MiB outputs, each read by one task (default n/20); the rest fan in."""
    rng = random.Random(f"mixed:{seed}")
    g = TaskGraph()
    n = max(n, 20)
    n_tiny = n * 5 // 10
    n_long = max(2, n // 50) if long_tasks is None else long_tasks
    n_big = max(2, n // 20) if big_tasks is None else big_tasks
    n_chain = max(2, n // 10)
    n_fan = n - n_tiny - n_long - 2 * n_big - n_chain - 1
    for i in range(n_tiny):
        g.add_spec(TaskSpec(f"tiny-{i}", duration=0.001, sim_duration=rng.uniform(0.0005, 0.002),
                            nbytes=10))
    for i in range(n_long):
        g.add_spec(TaskSpec(f"long-{i}", duration=1.0, sim_duration=rng.uniform(1.0, long_max),
                            nbytes=1000))
    for i in range(n_big):
        g.add_spec(TaskSpec(f"big-{i}", duration=0.05, nbytes=int(big_mib * MiB)))
        g.add_spec(TaskSpec(f"use-{i}", deps=(f"big-{i}",), duration=0.02, nbytes=100))
    prev: tuple[str, ...] = ()
    for i in range(n_chain):
        g.add_spec(TaskSpec(f"chain-{i}", deps=prev, duration=0.01, nbytes=100))
        prev = (f"chain-{i}",)
    leaves = []
    for i in range(max(1, n_fan)):
        g.add_spec(TaskSpec(f"part-{i}", duration=0.02, sim_duration=rng.uniform(0.01, 0.05),
                            nbytes=1000))
        leaves.append(f"part-{i}")
    g.add_spec(TaskSpec("gather-0", deps=tuple(leaves), duration=0.05, nbytes=100))
    return g


WORKLOADS: dict[str, Callable[..., TaskGraph]] = {
    "random-dag": random_dag,
    "chain": chain,
    "tree": tree_reduction,
    "fan-out-fan-in": fan_out_fan_in,
    "independent": independent,
    "many-tiny": many_tiny,
    "few-long": few_long,
    "skewed-durations": skewed_durations,
    "large-outputs": large_outputs,
    "mixed": mixed,
}


def make_workload(name: str, n: int, seed: int = 0) -> TaskGraph:
    """The named workload of size ``n``: ``n`` tasks, but ``n`` leaves for ``tree`` (plus
    the tasks reducing them: 2n-1 in all for a power of two) and ``n`` maps for
    ``fan-out-fan-in`` (plus a source and a sink); ``mixed`` has at least 20. ValueError
    names the unknown workload."""
    try:
        gen = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose one of: "
                         f"{', '.join(WORKLOADS)}") from None
    if n < 1:
        raise ValueError(f"workload {name!r}: number of tasks must be >= 1, got {n}")
    return gen(n, seed)
