"""Mechanical mutants: an independent measure of bug-finding power (issue 17, item 7).

    python benchmarks/mechanical_mutants.py [--file core/stealing.py ...] [--sample N]
        [--seed S] [--budget SECONDS | --scenarios N] [--suite] [--json OUT] [--list]

squall's own mutants (squall.mutants.catalog) are written by the hands that wrote the
explorer. Here the mutants come from an established tool, cosmic-ray (its operators: each
replaces one binary, comparison or unary operator, a number, a boolean, ``and``/``or``,
``break``/``continue``, empties a ``for`` loop, adds a ``not`` or removes a decorator), one
mutation per mutant, over the chosen files of the pure core (default: core/stealing.py and
core/scheduler.py). ``--sample N --seed S`` takes a deterministic random sample of each
file's mutants.

Each mutant is judged in a subprocess, never in the working tree: the mutated source is
written to a temporary folder, and an import hook placed first on ``sys.meta_path``
makes ``squall.core.<module>`` load from it (whoever imports it, and before anyone does).
The subprocess then explores as ``squall explore`` does (``explore(budget=B, seed=0,
jobs=1, space="all")``), stopping at the first failing scenario (nothing is shrunk). With
``--scenarios N`` each mutant gets the first N scenarios of that exploration instead of a
time budget: the same scenarios on any machine under any load, so the same verdicts:

- killed: a scenario failed (an invariant violated, wrong results, or a crash);
- survived: the whole budget passed with no failure;
- timeout: the subprocess overran the budget by far (a mutant that loops forever);
- invalid: the mutated module cannot be imported (cosmic-ray's "incompetent").

``--suite``: the mutants exploration left alive are then run against the fast simulator
tests (tests/test_invariants.py, test_core_sim.py, test_stealing.py), in the same overlay.

Survivors judged equivalent (no behaviour can change) are listed, with a one-line reason
each, in benchmarks/equivalent_mutants.toml and left out of the kill rate; so are, by
construction, mutations inside annotations of a module with ``from __future__ import
annotations`` (never evaluated): they are counted, not run. The kill rate is killed /
(killed + survived - equivalent survivors); timeouts and invalid mutants are left out.

Before the mutants, the unmutated files run the same way (they must survive: a false
alarm would make every mutant look killed). One process at a time.

Needs cosmic-ray (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import importlib.abc
import importlib.util
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = Path(__file__).resolve().parent / "equivalent_mutants.toml"
DEFAULT_FILES = ("core/stealing.py", "core/scheduler.py")
SUITE = ("tests/test_invariants.py", "tests/test_core_sim.py", "tests/test_stealing.py")
SUITE_TIMEOUT = 300.0


# --- the overlay: squall.core.<module> loaded from a mutated copy ---------------------------

class Overlay(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: the module ``name`` is loaded from ``path``."""

    def __init__(self, name: str, path: str) -> None:
        self.name, self.path = name, path

    def find_spec(self, fullname: str, path: object = None, target: object = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path)


def install_overlay(name: str, path: str) -> None:
    if name in sys.modules:
        raise RuntimeError(f"{name} is imported already: the overlay comes too late")
    sys.meta_path.insert(0, Overlay(name, path))


def module_name(file: str) -> str:
    """core/stealing.py -> squall.core.stealing (the package-dir mapping of pyproject)."""
    parts = Path(file).with_suffix("").parts
    if parts[0] != "core":
        raise SystemExit(f"mechanical_mutants: {file} is not a file of core/")
    return ".".join(("squall",) + parts)


# --- the children (this script run again with --child) ---------------------------------------

def _write(result_path: str, **result: object) -> None:
    Path(result_path).write_text(json.dumps(result))


def _child_probe(args: argparse.Namespace) -> None:
    """Import the module through the overlay; report where it and its users got it."""
    mod = importlib.import_module(args.module)
    snapshot = importlib.import_module("squall.core.snapshot")
    _write(args.result, file=mod.__file__, marker=getattr(mod, "MECHANICAL_MARKER", None),
           snapshot_sees=getattr(getattr(snapshot, "WorkStealing", None), "__module__", None)
           and sys.modules[snapshot.WorkStealing.__module__].__file__)


def _child_explore(args: argparse.Namespace) -> None:
    import traceback

    try:
        importlib.import_module(args.module)
    except BaseException as e:  # the mutant itself cannot run
        _write(args.result, status="invalid", detail=f"{type(e).__name__}: {e}"[:200])
        return
    import squall.scenarios.explore as ex

    started = time.monotonic()
    original = ex.run_scenario
    count = [0]

    def first_failure(scenario: object, **kw: object) -> object:
        count[0] += 1
        try:
            out = original(scenario, **kw)
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)
            where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                          if f.filename == args.path), "")
            _stop(f"crash {type(e).__name__}: {str(e)[:120]}" + (f" at {where}" if where
                                                                   else ""))
        if out.failed:
            _stop(str(out.violations[0].invariant) if out.violations
                  else f"wrong results {list(out.wrong)[:2]}")
        return out

    def _stop(what: str) -> None:
        _write(args.result, status="killed", by=what, scenarios=count[0],
               seconds=round(time.monotonic() - started, 2))
        sys.stdout.flush()
        os._exit(0)  # at once: no shrinking

    ex.run_scenario = first_failure  # type: ignore[assignment]
    # next to the mutated copy: the parent's temporary folder (os._exit skips cleanups)
    out_dir = Path(args.path).parent / "traces"
    try:
        res = ex.explore(budget=args.budget if not args.scenarios else 1e9, seed=0, jobs=1,
                         space="all", out_dir=out_dir, max_scenarios=args.scenarios or None)
    except Exception as e:  # exploration itself crashed (outside a scenario run)
        _stop(f"crash {type(e).__name__} in exploration: {str(e)[:120]}")
    _write(args.result, status="survived", scenarios=res.stats.scenarios,
           seconds=round(time.monotonic() - started, 2))


def _child_suite(args: argparse.Namespace) -> None:
    import pytest

    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                        "--hypothesis-profile=squall-ci", f"--rootdir={ROOT}",
                        "-c", str(ROOT / "pyproject.toml"), *[str(ROOT / t) for t in SUITE]])
    _write(args.result, status="survived" if code == 0 else "killed", code=int(code))


def child_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=("probe", "explore", "suite"), required=True)
    ap.add_argument("--module", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--budget", type=float, default=10.0)
    ap.add_argument("--scenarios", type=int, default=0)
    args = ap.parse_args(argv)
    install_overlay(args.module, args.path)
    {"probe": _child_probe, "explore": _child_explore, "suite": _child_suite}[args.child](args)


def run_child(kind: str, module: str, path: Path, timeout: float, budget: float = 0.0,
              cwd: str | None = None, scenarios: int = 0) -> dict[str, object]:
    """Run ``--child kind`` in a subprocess (its own session, killed whole on timeout)."""
    result = path.with_suffix(f".{kind}.json")
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--module", module,
           "--path", str(path), "--result", str(result), "--budget", str(budget),
           "--scenarios", str(scenarios)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=cwd or str(path.parent), start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"status": "timeout", "seconds": round(time.monotonic() - started, 1)}
    if result.exists():
        out = json.loads(result.read_text())
        out.setdefault("seconds", round(time.monotonic() - started, 2))
        return out
    tail = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
    return {"status": "killed" if kind == "explore" else "error",
            "by": f"child died (exit {proc.returncode}): {tail[0][:150]}",
            "seconds": round(time.monotonic() - started, 2)}


# --- generating the mutants with cosmic-ray --------------------------------------------------

@dataclass
class Mutant:
    file: str  # relative to the repository: core/stealing.py
    operator: str  # cosmic-ray's operator, without its "core/" provider prefix
    occurrence: int  # cosmic-ray's occurrence of that operator in the file
    line: int
    col: int
    before: str = ""  # the line as it is
    after: str = ""  # the line mutated (several lines joined by " / ")
    annotation: bool = False
    status: str = ""  # killed / survived / timeout / invalid / annotation
    by: str = ""  # what killed it
    suite: str = ""  # --suite: killed / survived, for exploration's survivors
    seconds: float = 0.0
    scenarios: int = 0
    judged: str = ""  # from equivalent_mutants.toml: "equivalent: reason", "gap: reason"
    source: str = field(default="", repr=False)

    @property
    def label(self) -> str:
        return f"{self.file}:{self.line} {self.operator}: {self.before!r} -> {self.after!r}"


def _cosmic_ray() -> tuple[object, object, object, object]:
    try:
        import parso  # noqa: F401  (before cosmic_ray: its plugins import parso.tree circularly)
        from cosmic_ray.ast import ast_nodes, get_ast
        from cosmic_ray.mutating import mutate_code
        from cosmic_ray.plugins import get_operator, operator_names
    except ImportError:
        raise SystemExit("mechanical_mutants: needs cosmic-ray: pip install -e '.[bench]'"
                         ) from None
    return ast_nodes, get_ast, mutate_code, (get_operator, operator_names)


def _annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the annotations are, when the module never evaluates them (``from __future__
    import annotations``); else nothing."""
    tree = ast.parse(source)
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                 and any(a.name == "annotations" for a in n.names) for n in tree.body)
    if not future:
        return []
    spans = []
    for node in ast.walk(tree):
        notes: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            notes += [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs]
            notes += [a.vararg.annotation if a.vararg else None,
                      a.kwarg.annotation if a.kwarg else None, node.returns]
        elif isinstance(node, ast.AnnAssign):
            notes.append(node.annotation)
        spans += [((n.lineno, n.col_offset), (n.end_lineno or n.lineno, n.end_col_offset or 0))
                  for n in notes if n is not None]
    return spans


def mutants_of(file: str) -> list[Mutant]:
    """Every mutant cosmic-ray's operators (those that take no arguments) make of ``file``,
    in cosmic-ray's order (operator, then occurrence); sources not made yet."""
    ast_nodes, get_ast, _, (get_operator, operator_names) = _cosmic_ray()
    source = (ROOT / file).read_text(encoding="utf-8")
    nodes = list(ast_nodes(get_ast(source)))  # type: ignore[operator]
    spans = _annotation_spans(source)
    out = []
    for name in operator_names():  # type: ignore[operator]
        cls = get_operator(name)  # type: ignore[operator]
        if cls.arguments():  # VariableReplacer/Inserter: need a configuration
            continue
        op = cls()
        occurrence = 0
        for node in nodes:
            for start, _end in op.mutation_positions(node):
                m = Mutant(file, name.split("/", 1)[-1], occurrence, start[0], start[1])
                m.annotation = any(a <= start < b for a, b in spans)
                out.append(m)
                occurrence += 1
    return out


def make_source(m: Mutant) -> None:
    """Fill in the mutant's source and its before/after lines."""
    _, _, mutate_code, (get_operator, _) = _cosmic_ray()
    original = (ROOT / m.file).read_text(encoding="utf-8")
    code = mutate_code(original, get_operator("core/" + m.operator)(), m.occurrence)  # type: ignore[operator]
    if code is None:
        raise RuntimeError(f"cosmic-ray made no mutation for {m.operator} #{m.occurrence}")
    m.source = code
    old, new = original.splitlines(), code.splitlines()
    before, after = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new,
                                                       autojunk=False).get_opcodes():
        if tag != "equal":
            before += [s.strip() for s in old[i1:i2]]
            after += [s.strip() for s in new[j1:j2]]
    m.before, m.after = " / ".join(before), " / ".join(after) or "(removed)"


# --- the equivalents file ---------------------------------------------------------------------

def load_judgements(path: Path = EQUIVALENTS) -> dict[tuple[str, str, str, str], str]:
    """(file, operator, before, after) -> "equivalent: reason" / "gap: reason"."""
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out = {}
    for kind in ("equivalent", "gap"):
        for e in data.get(kind, []):
            out[(e["file"], e["operator"], e["before"], e["after"])] = f"{kind}: {e['reason']}"
    return out


# --- measuring ----------------------------------------------------------------------------------

def evaluate(m: Mutant, work: Path, budget: float, timeout: float, scenarios: int = 0) -> None:
    path = work / f"{Path(m.file).stem}.py"
    path.write_text(m.source, encoding="utf-8")
    r = run_child("explore", module_name(m.file), path, timeout, budget, scenarios=scenarios)
    m.status = str(r["status"])
    m.by = str(r.get("by") or r.get("detail") or "")
    m.seconds = float(r.get("seconds", 0.0))  # type: ignore[arg-type]
    m.scenarios = int(r.get("scenarios", 0))  # type: ignore[call-overload]


def evaluate_suite(m: Mutant, work: Path) -> None:
    path = work / f"{Path(m.file).stem}.py"
    path.write_text(m.source, encoding="utf-8")
    r = run_child("suite", module_name(m.file), path, SUITE_TIMEOUT)
    m.suite = "killed" if r["status"] in ("killed", "timeout") else str(r["status"])


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def summarize(file: str, total: list[Mutant], run: list[Mutant], suite: bool) -> Iterator[str]:
    annotations = sum(m.annotation for m in total)
    by = {s: [m for m in run if m.status == s] for s in ("killed", "survived", "timeout",
                                                        "invalid")}
    survivors = sorted(by["survived"], key=lambda m: (m.line, m.col, m.operator))
    equivalent = [m for m in survivors if m.judged.startswith("equivalent")
                  and m.suite != "killed"]
    for m in survivors:
        if m.judged.startswith("equivalent") and m.suite == "killed":
            yield f"  WARNING: judged equivalent but the suite kills it: {m.label}"
    killed = len(by["killed"])
    by_suite = killed + sum(m.suite == "killed" for m in survivors)
    alive = len(survivors) - len(equivalent) - (by_suite - killed)
    denominator = killed + len(survivors) - len(equivalent)
    yield (f"{file}: {len(total)} mutants ({annotations} in annotations, never evaluated: "
           f"left out), {len(run)} run")
    yield (f"  killed by exploration {killed}, survived {len(survivors)} "
           f"(equivalent {len(equivalent)}), timeout {len(by['timeout'])}, "
           f"invalid {len(by['invalid'])}")
    if denominator:
        lo, hi = wilson(killed, denominator)
        yield (f"  kill rate of non-equivalent mutants, exploration alone: {killed}/"
               f"{denominator} = {killed / denominator:.1%} (95% interval {lo:.0%}-{hi:.0%})")
        if suite:
            lo, hi = wilson(by_suite, denominator)
            yield (f"  exploration + suite: {by_suite}/{denominator} = "
                   f"{by_suite / denominator:.1%} (95% interval {lo:.0%}-{hi:.0%}); "
                   f"left alive by both: {alive}")
    kinds: dict[str, int] = {}
    for m in by["killed"]:
        what = m.by.split(" ")[0] if m.by.startswith(("crash", "wrong")) else m.by
        kinds[what] = kinds.get(what, 0) + 1
    if kinds:
        yield "  killed by: " + ", ".join(f"{k} {n}" for k, n in
                                          sorted(kinds.items(), key=lambda kv: -kv[1]))
    times = [m.seconds for m in by["killed"]]
    if times:
        times.sort()
        yield (f"  seconds to the first failure: median {times[len(times) // 2]:.1f}, "
               f"max {times[-1]:.1f}")
    if survivors:
        gaps = sum(m.judged.startswith("gap") for m in survivors)
        yield (f"  exploration's survivors judged: equivalent {len(equivalent)}, gap {gaps}, "
               f"not judged {len(survivors) - len(equivalent) - gaps}")
        yield "  survivors (file:line operator: before -> after [suite] judged):"
        for m in survivors:
            tag = f" [suite: {m.suite}]" if m.suite else ""
            yield f"    {m.label}{tag} {m.judged or 'not judged'}"
    for m in by["timeout"] + by["invalid"]:
        yield f"  {m.status}: {m.label} {m.by}"


def report_saved(path: Path) -> int:
    judgements = load_judgements()
    saved = [Mutant(**m) for m in json.loads(path.read_text())]
    for m in saved:
        m.judged = judgements.get((m.file, m.operator, m.before, m.after), "")
    files = list(dict.fromkeys(m.file for m in saved))
    for file in files:
        total = [m for m in saved if m.file == file]
        run = [m for m in total if m.status not in ("", "annotation")]
        print("\n".join(summarize(file, total, run, any(m.suite for m in run))))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
            sys.path.pop(0)  # benchmarks/ is not a package to import from
        child_main(argv)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", action="append", default=[],
                    help="a file of core/ to mutate (repeatable; default: "
                         + ", ".join(DEFAULT_FILES) + ")")
    ap.add_argument("--sample", type=int, default=0, help="run N mutants of each file, "
                    "drawn at random (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="the sample's seed")
    ap.add_argument("--budget", type=float, default=8.0, help="seconds of exploration each")
    ap.add_argument("--scenarios", type=int, default=0,
                    help="explore this many scenarios each, whatever the time (the same "
                         "verdicts on any machine; 0: --budget)")
    ap.add_argument("--timeout", type=float, default=0.0,
                    help="kill a mutant's run after this (default: 3x budget + 30 s; with "
                         "--scenarios, 1 s per 5 scenarios + 60 s)")
    ap.add_argument("--suite", action="store_true",
                    help="run exploration's survivors against the fast simulator tests")
    ap.add_argument("--list", action="store_true", help="count the mutants; run nothing")
    ap.add_argument("--json", default=None, help="write every mutant's result here")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="print the summary of a run saved with --json again (with the "
                         "judgements of equivalent_mutants.toml as they are now); run nothing")
    args = ap.parse_args(argv)
    if args.report:
        return report_saved(Path(args.report))
    files = args.file or list(DEFAULT_FILES)
    timeout = args.timeout or (args.scenarios / 5 + 60 if args.scenarios
                               else 3 * args.budget + 30)
    judgements = load_judgements()
    budget = (f"the first {args.scenarios} scenarios" if args.scenarios
              else f"budget {args.budget:g} s")
    print(f"python {platform.python_version()}, cosmic-ray operators, {budget} "
          f"per mutant, exploration seed 0, space 'all', one job"
          + (f", sample {args.sample} per file (seed {args.seed})" if args.sample else ""))
    everything: list[Mutant] = []
    report: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="squall-mechanical-") as tmp:
        for file in files:
            total = mutants_of(file)
            pool = [m for m in total if not m.annotation]
            for m in total:
                if m.annotation:
                    m.status = "annotation"
            if args.list:
                print(f"{file}: {len(total)} mutants, {len(total) - len(pool)} in annotations,"
                      f" {len(pool)} to run")
                continue
            chosen = pool
            if args.sample and args.sample < len(pool):
                chosen = random.Random(f"{args.seed}:{file}").sample(pool, args.sample)
                chosen.sort(key=lambda m: (m.line, m.col, m.operator))
            work = Path(tmp) / Path(file).stem
            work.mkdir()
            base = Mutant(file, "none", -1, 0, 0, source=(ROOT / file).read_text("utf-8"))
            evaluate(base, work, args.budget, timeout, args.scenarios)
            print(f"{file} unmutated: {base.status} ({base.scenarios} scenarios in "
                  f"{base.seconds:.1f} s){' ' + base.by if base.by else ''}", flush=True)
            if base.status != "survived":
                print("the unmutated code fails: no mutant can be judged", file=sys.stderr)
                return 2
            for i, m in enumerate(chosen, 1):
                make_source(m)
                m.judged = judgements.get((m.file, m.operator, m.before, m.after), "")
                evaluate(m, work, args.budget, timeout, args.scenarios)
                print(f"[{i}/{len(chosen)}] {m.status:8} {m.seconds:5.1f} s  {m.label}"
                      + (f"  <- {m.by}" if m.by else ""), file=sys.stderr, flush=True)
            if args.suite:
                for m in chosen:
                    if m.status == "survived":
                        evaluate_suite(m, work)
                        print(f"suite: {m.suite:8} {m.label}", file=sys.stderr, flush=True)
            report += list(summarize(file, total, chosen, args.suite))
            everything += total
    if args.list:
        return 0
    print("\n" + "\n".join(report))
    run = [m for m in everything if m.status not in ("", "annotation")]
    wall = time.monotonic() - started
    print(f"wall time {wall:.0f} s, {wall / max(1, len(run)):.1f} s per mutant run")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{k: v for k, v in asdict(m).items() if k != "source"} for m in everything],
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
