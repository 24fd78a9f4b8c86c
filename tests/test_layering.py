"""The layers show in the folders, and no lower layer imports a higher one.

Every import in every module of the package is read (ast: those inside functions too,
where upward imports used to hide) and checked against the table in README.md.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (module prefix, layer, rank): the most specific prefix wins. A module may import its
# own layer and any layer of a lower rank; layers of equal rank are peers and stay apart.
LAYERS: list[tuple[str, str, int]] = [
    ("squall.core.sim", "simulator", 2),
    ("squall.core.runtime", "real runtime", 2),
    ("squall.core", "pure core", 0),
    ("squall.invariants", "invariants", 1),
    ("squall.chaos", "chaos", 1),
    ("squall.targets", "targets", 3),
    ("squall.scenarios", "scenarios", 4),
    ("squall.mutants", "mutants", 5),
    ("squall.cli", "cli", 6),
    ("squall.__main__", "cli", 6),  # python -m squall (cli/entry/__main__.py)
]
# What the pure state machines may import besides the standard library.
PURE_THIRD_PARTY = {"msgspec"}


def layer_of(module: str) -> tuple[str, int] | None:
    for prefix, name, rank in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return name, rank
    return None


def package_modules() -> dict[str, Path]:
    """Every module of the installed package, by its dotted name (from pyproject's map)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    modules: dict[str, Path] = {}
    for package in config["tool"]["setuptools"]["packages"]:
        folder = ROOT / dirs[package]
        for path in folder.glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement, at any depth."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = module.split(".")
                if path.stem != "__init__":
                    parts = parts[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.append((node.lineno, base))
            # "from squall.core import sim" imports the subpackage squall.core.sim
            out.extend((node.lineno, f"{base}.{a.name}") for a in node.names
                       if layer_of(f"{base}.{a.name}") != layer_of(base))
    return out


def test_every_package_folder_is_in_the_layer_table() -> None:
    modules = package_modules()
    assert modules, "no modules found"
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    assert not unplaced, f"modules in no layer: {unplaced}"


def test_no_layer_imports_a_higher_or_peer_layer() -> None:
    problems = []
    for module, path in sorted(package_modules().items()):
        here = layer_of(module)
        assert here is not None
        for line, imported in imports_of(path, module):
            there = layer_of(imported)
            if there is None or there[0] == here[0]:
                continue
            if there[1] >= here[1]:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {here[0]} imports "
                                f"{imported} ({there[0]})")
    assert not problems, "\n".join(problems)


def test_pure_core_imports_only_the_standard_library_and_msgspec() -> None:
    problems = []
    for module, path in sorted(package_modules().items()):
        if layer_of(module) != ("pure core", 0):
            continue
        for line, imported in imports_of(path, module):
            top = imported.split(".")[0]
            if top in ("squall", "__future__") or top in sys.stdlib_module_names:
                continue
            if top not in PURE_THIRD_PARTY:
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {imported}")
    assert not problems, "\n".join(problems)


def test_readme_layer_table_names_every_layer_folder() -> None:
    readme = (ROOT / "README.md").read_text()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    for prefix, name, _ in LAYERS:
        folder = dirs.get(prefix)
        if folder is None:  # a module, not a package: its folder is another layer's
            continue
        assert f"`{folder}/`" in readme, f"README's layer table does not list {folder}/ ({name})"


@pytest.mark.parametrize("source, expected", [
    ("import zmq\n", ["zmq"]),
    ("def f():\n    from squall.scenarios.cli import X\n", ["squall.scenarios.cli"]),
    ("from squall.core import sim\n", ["squall.core", "squall.core.sim"]),
])
def test_the_import_walker_sees_nested_and_submodule_imports(
        tmp_path: Path, source: str, expected: list[str]) -> None:
    path = tmp_path / "m.py"
    path.write_text(source)
    assert [name for _, name in imports_of(path, "squall.core.m")] == expected
