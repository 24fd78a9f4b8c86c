"""``Scenario``: a whole run as one serialisable value.

A scenario names its workload (a generator with parameters, or an explicit graph), the
cluster's shape, a chaos schedule, a seed and a runtime. It round-trips through JSON
unchanged, so a scenario file, a trace header and a Hypothesis example are the same
thing. A scenario file holds one scenario or a JSON list of them (``load_scenarios``;
``squall scenarios --json`` writes the standard ones as such a list).
``load_scenario`` turns a bad file into a one-line ``ScenarioError`` naming the
file and the field. What a scenario may ask for is bounded (tasks, workers, threads,
worker processes, the length of its names, the size of its file: see
``squall.scenarios.limits``), every worker a fault strikes must exist when it strikes, and
every key a client action names (``squall.chaos.clients``) must be one of the workload's.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec

from squall.chaos.clients import client_actions, key_problem
from squall.chaos.injectors import effects, surface_calls
from squall.chaos.kinds import Faults, as_faults
from squall.core.graph import GraphError, TaskGraph, TaskSpec
from squall.scenarios.limits import (
    MAX_LINE_BYTES,
    MAX_PROCESSES,
    MAX_TASKS,
    MAX_THREADS,
    MAX_WORKERS,
    limit,
    name_problem,
    over,
    shown,
)
from squall.scenarios.workloads import WORKLOADS


class ScenarioError(ValueError):
    """A scenario that cannot run: the message is one line naming the field."""


class Generated(msgspec.Struct, tag="generated", frozen=True, kw_only=True, omit_defaults=True,
                forbid_unknown_fields=True):
    """A graph from a workload generator: ``WORKLOADS[name](tasks, seed, **params)``."""

    name: str
    tasks: int
    params: dict[str, float | int | str | bool] = {}
    seed: int | None = None  # None: the scenario's seed


class TaskDef(msgspec.Struct, frozen=True, omit_defaults=True, array_like=True):
    """One task of an explicit graph (simulated body)."""

    key: str
    deps: tuple[str, ...] = ()
    duration: float | None = None  # the hint the scheduler sees
    sim_duration: float | None = None  # what it really takes
    nbytes: int | None = None
    fails: bool = False
    priority: int = 0
    restrictions: tuple[str, ...] = ()  # worker names allowed to run it; () = any


class ExplicitGraph(msgspec.Struct, tag="graph", frozen=True, forbid_unknown_fields=True):
    tasks: tuple[TaskDef, ...]


Workload = Generated | ExplicitGraph


class LinkSpec(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """A worker's links (to and from everyone) from the start."""

    worker: str
    latency: float | None = None
    bandwidth: float | None = None
    jitter: float | None = None


DEFAULT_TICK = 0.1


class ClusterShape(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True,
                   forbid_unknown_fields=True):
    workers: int = 4
    threads: int = 1
    latency: float = 0.001
    bandwidth: float = 100e6
    jitter: float = 0.0
    links: tuple[LinkSpec, ...] = ()
    stealing: bool = False
    allowed_failures: int = 3
    heartbeat_interval: float | None = 0.5
    heartbeat_timeout: float | None = None  # needed for partitions to be noticed
    # virtual seconds between the scheduler's clock ticks (the heartbeat timeout is checked
    # and stealing balances on a tick); the simulator's only: the real scheduler sets its own
    tick_interval: float = DEFAULT_TICK
    # virtual seconds after which a run that has not finished counts as stuck (a livelock
    # keeps events coming, so the simulator's stall detection alone would not stop it)
    max_time: float = 3600.0


class Scenario(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True,
               forbid_unknown_fields=True):
    workload: Workload
    cluster: ClusterShape = msgspec.field(default_factory=ClusterShape)
    chaos: Faults = ()  # of any kind registered when the scenario is decoded
    seed: int = 0
    runtime: str = "sim"  # one a target offers (squall.targets.runtime_names())
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "chaos", as_faults(self.chaos, "chaos"))

    def check(self) -> None:
        """Raise ScenarioError naming the first bad field."""
        from squall.targets import runtime_names

        if self.runtime not in runtime_names():
            raise ScenarioError(f"runtime: unknown runtime {shown(self.runtime)}; choose one "
                                f"of: {', '.join(runtime_names())}")
        if self.name and (why := name_problem(self.name)) is not None:
            raise ScenarioError(f"name: {why}")
        c = self.cluster
        joins = [f for f in self.chaos if "add_worker" in effects(f)]
        if c.workers < 1 and not (c.workers == 0 and joins):
            raise ScenarioError(f"cluster.workers must be >= 1 (or 0 with a fault that "
                                f"starts a worker), got {c.workers}")
        if c.threads < 1:
            raise ScenarioError(f"cluster.threads must be >= 1, got {c.threads}")
        self._check_sizes(c, len(joins))
        if not c.latency >= 0 or not c.jitter >= 0:
            raise ScenarioError("cluster.latency and cluster.jitter must be >= 0")
        if not c.bandwidth > 0:
            raise ScenarioError(f"cluster.bandwidth must be > 0, got {c.bandwidth}")
        if not c.max_time > 0:
            raise ScenarioError(f"cluster.max_time must be > 0, got {c.max_time}")
        if c.allowed_failures < 0:
            raise ScenarioError(f"cluster.allowed_failures must be >= 0, got {c.allowed_failures}")
        for name in ("heartbeat_interval", "heartbeat_timeout"):
            v = getattr(c, name)
            if v is not None and not v > 0:
                raise ScenarioError(f"cluster.{name} must be > 0 or null, got {v}")
        if not c.tick_interval > 0:
            raise ScenarioError(f"cluster.tick_interval must be > 0, got {c.tick_interval}")
        w = self.workload
        if isinstance(w, Generated):
            if w.name not in WORKLOADS:
                raise ScenarioError(f"workload.name: unknown workload {shown(w.name)}; choose "
                                    f"one of: {', '.join(WORKLOADS)}")
            if w.tasks < 1:
                raise ScenarioError(f"workload.tasks must be >= 1, got {w.tasks}")
            try:
                inspect.signature(WORKLOADS[w.name]).bind(w.tasks, 0, **w.params)
            except TypeError as e:
                raise ScenarioError(f"workload.params: {w.name!r}: {e}") from None
        elif not w.tasks:
            raise ScenarioError("workload.tasks: an explicit graph needs at least one task")
        else:
            self.graph()  # cheap for an explicit graph: names a cycle or a missing key now
        for i, fault in enumerate(self.chaos):
            try:
                fault.check()
            except ValueError as e:
                raise ScenarioError(f"chaos[{i}]: {e}") from None
        ever = self._check_fault_workers()
        if isinstance(w, ExplicitGraph):
            for i, t in enumerate(w.tasks):
                for name in t.restrictions:
                    if name not in ever:
                        raise ScenarioError(
                            f"workload.tasks[{i}].restrictions: task {t.key!r} may run only "
                            f"on {shown(name)}, a worker the cluster never has (it has "
                            f"{', '.join(sorted(ever)) or 'none'})")
        if client_actions(self.chaos):
            graph = self.graph()
            why = key_problem(self.chaos, {spec.key: spec.deps for spec in graph})
            if why is not None:
                raise ScenarioError(why)

    def _check_sizes(self, c: ClusterShape, joins: int) -> None:
        """The limits (``squall.scenarios.limits``) on what the scenario asks for: tasks,
        workers, threads, worker processes, and the length of every name in it."""
        started = c.workers + joins
        w = self.workload
        tasks = w.tasks if isinstance(w, Generated) else len(w.tasks)
        if (why := over("tasks", tasks, MAX_TASKS)) is not None:
            raise ScenarioError(f"workload.tasks: {why}")
        if (why := over("workers (started and joining)", started, MAX_WORKERS)) is not None:
            raise ScenarioError(f"cluster.workers: {why}")
        if self.runtime != "sim" and (why := over(
                f"worker processes (started and joining, runtime {self.runtime!r})", started,
                MAX_PROCESSES)) is not None:
            raise ScenarioError(f"cluster.workers: {why}")
        if (why := over("threads per worker", c.threads, MAX_THREADS)) is not None:
            raise ScenarioError(f"cluster.threads: {why}")
        for i, link in enumerate(c.links):
            if (why := name_problem(link.worker)) is not None:
                raise ScenarioError(f"cluster.links[{i}].worker: {why}")
        if isinstance(w, Generated):
            for param, value in w.params.items():
                if (why := name_problem(param)) is not None:
                    raise ScenarioError(f"workload.params: {why}")
                if isinstance(value, str) and (why := name_problem(value)) is not None:
                    raise ScenarioError(f"workload.params.{param}: {why}")
                if type(value) is int and (why := over(param, value, MAX_TASKS)) is not None:
                    raise ScenarioError(f"workload.params.{param}: {why}")
        else:
            for i, t in enumerate(w.tasks):
                for name in (t.key, *t.deps):
                    if (why := name_problem(name)) is not None:
                        raise ScenarioError(f"workload.tasks[{i}]: key {why}")
                for name in t.restrictions:
                    if (why := name_problem(name)) is not None:
                        raise ScenarioError(f"workload.tasks[{i}].restrictions: {why}")
        for i, fault in enumerate(self.chaos):
            for field in fault.__struct_fields__:
                value = getattr(fault, field)
                if isinstance(value, str) and (why := name_problem(value)) is not None:
                    raise ScenarioError(f"chaos[{i}].{field}: {why}")
                if isinstance(value, tuple):  # a client action's keys
                    for item in value:
                        if isinstance(item, str) and (why := name_problem(item)) is not None:
                            raise ScenarioError(f"chaos[{i}].{field}: {why}")
                if field == "threads" and type(value) is int and (why := over(
                        "threads per worker", value, MAX_THREADS)) is not None:
                    raise ScenarioError(f"chaos[{i}].threads: {why}")

    def _check_fault_workers(self) -> set[str]:
        """Every worker a fault strikes (kills, pauses, or one end of a link it changes)
        exists when it strikes: one the cluster starts with, or one that joined before
        (under its name, or under the next free ``wN``, as every runtime names it).
        Returns the name of every worker the cluster ever has."""
        n = self.cluster.workers
        known = {f"w{i}" for i in range(n)}
        auto = n
        starts = "no worker" if n < 1 else "w0" if n == 1 else f"w0..w{n - 1}"
        for method, target, fault in surface_calls(self.chaos):
            if method == "add_worker":
                if not target:
                    while f"w{auto}" in known:
                        auto += 1
                    target = f"w{auto}"
                known.add(target)
                continue
            if method == "set_link":
                ends = target.split("->")
            elif method in ("kill_worker", "pause_worker"):
                ends = [target]
            else:
                continue
            for name in ends:
                if name not in known and name not in ("*", "scheduler"):
                    where = next((f"chaos[{i}]" for i, f in enumerate(self.chaos)
                                  if f is fault), "chaos")
                    raise ScenarioError(
                        f"{where}: {fault.kind_name()} fault at {fault.at:g} s names worker "
                        f"{shown(name)}, which does not exist then (the cluster starts "
                        f"{starts}; a worker that joins before the fault counts)")
        return known

    def graph(self) -> TaskGraph:
        """The task graph this scenario submits (ScenarioError on a bad graph)."""
        w = self.workload
        try:
            if isinstance(w, Generated):
                gen = WORKLOADS.get(w.name)
                if gen is None:
                    raise ScenarioError(f"workload.name: unknown workload {w.name!r}")
                seed = self.seed if w.seed is None else w.seed
                try:
                    g = gen(w.tasks, seed, **w.params)
                except TypeError as e:
                    raise ScenarioError(f"workload.params: {w.name!r}: {e}") from None
            else:
                g = TaskGraph(TaskSpec(t.key, deps=t.deps, duration=t.duration,
                                       sim_duration=t.sim_duration, nbytes=t.nbytes,
                                       fails=t.fails, priority=t.priority,
                                       restrictions=t.restrictions) for t in w.tasks)
            g.validate()
        except GraphError as e:
            raise ScenarioError(f"workload: {e}") from None
        return g

    def describe(self) -> str:
        """One line: what runs on what, with how many faults."""
        w = self.workload
        what = (f"{w.name} x{w.tasks}" if isinstance(w, Generated)
                else f"explicit graph of {len(w.tasks)} tasks")
        c = self.cluster
        kinds: dict[str, int] = {}
        for f in self.chaos:
            kinds[f.kind_name()] = kinds.get(f.kind_name(), 0) + 1
        chaos = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "no faults"
        steal = ", stealing" if c.stealing else ""
        return f"{what} on {c.workers}x{c.threads} threads{steal}; {chaos}; seed {self.seed}"


_encoder = msgspec.json.Encoder()


def scenario_to_json(scenario: Scenario, *, indent: bool = True) -> bytes:
    """JSON of a scenario; indented for people, with each task of a graph on one line."""
    data = _encoder.encode(scenario)
    if not indent:
        return data
    return _pretty(msgspec.json.decode(data), "").encode()


def _pretty(obj: Any, pad: str) -> str:
    """Nested objects one key per line; a task, a fault or any flat value on one line."""
    if _flat(obj):
        return json.dumps(obj, separators=(", ", ": "))
    inner = pad + "  "
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {_pretty(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    items = [inner + _pretty(x, inner) for x in obj]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


def _flat(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(not isinstance(v, dict | list) or (
            isinstance(v, list) and not any(isinstance(x, dict | list) for x in v))
            for v in obj.values())
    if isinstance(obj, list):
        return all(not isinstance(x, dict | list) or (
            isinstance(x, list) and not any(isinstance(y, dict | list) for y in x))
            for x in obj)
    return True


def scenario_from_json(data: bytes | str, source: str = "scenario") -> Scenario:
    """Decode and check a scenario; ScenarioError names the source and the field."""
    try:
        scenario = msgspec.json.decode(data, type=Scenario)
    except msgspec.ValidationError as e:
        raise ScenarioError(f"{source}: {str(e).splitlines()[0]}") from None
    except msgspec.DecodeError as e:
        raise ScenarioError(f"{source}: not valid JSON: {str(e).splitlines()[0]}") from None
    try:
        scenario.check()
    except ScenarioError as e:
        raise ScenarioError(f"{source}: {e}") from None
    return scenario


def scenarios_to_json(scenarios: list[Scenario]) -> bytes:
    """A list of scenarios as one JSON document (what ``squall run FILE`` runs in turn)."""
    items = ("  " + _pretty(msgspec.json.decode(_encoder.encode(sc)), "  ") for sc in scenarios)
    return ("[\n" + ",\n".join(items) + "\n]").encode()


def scenarios_from_json(data: bytes | str, source: str = "scenario") -> list[Scenario]:
    """One scenario (a JSON object) or several (a JSON list of them), each decoded and
    checked; ScenarioError names the source, the scenario's index in a list and the
    field."""
    try:
        decoded = msgspec.json.decode(data, type=Scenario | list[Scenario])
    except msgspec.ValidationError as e:
        why = str(e).splitlines()[0]
        if why.startswith("Expected `object | array`"):
            why = "expected a scenario (a JSON object) or a list of scenarios" + why[25:]
        raise ScenarioError(f"{source}: {why}") from None
    except msgspec.DecodeError as e:
        raise ScenarioError(f"{source}: not valid JSON: {str(e).splitlines()[0]}") from None
    if isinstance(decoded, Scenario):
        try:
            decoded.check()
        except ScenarioError as e:
            raise ScenarioError(f"{source}: {e}") from None
        return [decoded]
    if not decoded:
        raise ScenarioError(f"{source}: an empty list holds no scenario to run")
    for i, scenario in enumerate(decoded):
        try:
            scenario.check()
        except ScenarioError as e:
            raise ScenarioError(f"{source}: [{i}]: {e}") from None
    return decoded


def _read_scenario_file(path: Path) -> bytes:
    cap = limit(MAX_LINE_BYTES)
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)  # never more than the limit, whatever the file holds
    except OSError as e:
        raise ScenarioError(f"cannot read scenario file {str(path)!r}: {e.strerror}") from None
    if len(data) > cap:
        raise ScenarioError(f"{path}: scenario file larger than {cap:,} bytes (set "
                            f"{MAX_LINE_BYTES} to raise the limit)")
    return data


def load_scenario(path: str | Path) -> Scenario:
    """The one scenario a file holds."""
    path = Path(path)
    return scenario_from_json(_read_scenario_file(path), source=str(path))


def load_scenarios(path: str | Path) -> list[Scenario]:
    """The scenarios a file holds: one (a JSON object) or a list of them (what
    ``squall scenarios --json`` prints)."""
    path = Path(path)
    return scenarios_from_json(_read_scenario_file(path), source=str(path))


def to_builtins(scenario: Scenario) -> Any:
    return msgspec.to_builtins(scenario)
