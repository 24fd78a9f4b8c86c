"""Buggy copies of production methods, and the check that keeps them copies.

A copy says what it copies with ``@copy_of(Owner.method)`` and differs from it only on
lines marked ``# BUG`` (the convention is spelled out at the top of
``squall.mutants.catalog``). ``copy_drift(copy)`` lists where it differs otherwise;
tests/test_mutants.py asserts that it finds nothing for every copy, so a production
method cannot change without its copies.
"""

from __future__ import annotations

import ast
import difflib
import dis
import inspect
import io
import textwrap
import tokenize
from collections.abc import Callable
from types import CodeType
from typing import Any, TypeVar

BUG = "# BUG"

F = TypeVar("F", bound=Callable[..., Any])


def copy_of(production: Callable[..., Any]) -> Callable[[F], F]:
    """Mark the decorated function as a copy of ``production`` with ``# BUG`` lines."""

    def mark(fn: F) -> F:
        fn.__copy_of__ = production  # type: ignore[attr-defined]
        return fn

    return mark


def copied_from(fn: Callable[..., Any]) -> Callable[..., Any] | None:
    """The production function ``fn`` is a marked copy of, or None."""
    return getattr(fn, "__copy_of__", None)


def copy_drift(copy: Callable[..., Any]) -> list[str]:
    """Where the marked copy ``copy`` differs from its production method other than on its
    ``# BUG`` lines, one line each (nothing: it is an exact copy)."""
    production = copied_from(copy)
    if production is None:
        return [f"{copy.__qualname__} is not marked @copy_of(...)"]
    problems = source_drift(inspect.getsource(copy), inspect.getsource(production))
    problems += globals_drift(copy, production)
    return [f"{copy.__qualname__} (copy of {production.__qualname__}): {p}" for p in problems]


def source_drift(copy_source: str, production_source: str) -> list[str]:
    """Compare a copy's source with its production function's source (see the convention);
    one line per difference."""
    copy_sig, copy_body = _split(copy_source)
    prod_sig, prod_body = _split(production_source)
    problems = []
    if copy_sig != prod_sig:
        problems.append("the signature differs (only the name may)")
    lines, bug_problems = _without_explanations(copy_body)
    problems += bug_problems
    prod_code = [_code(line) for line in prod_body]
    if len(lines) != len(prod_body):
        diff = difflib.unified_diff(prod_body, [line for line, _ in lines], "production",
                                    "copy", lineterm="", n=0)
        problems.append(f"{len(lines)} lines stand for {len(prod_body)} production lines: "
                        + " | ".join(list(diff)[2:8]))
        return problems
    for n, ((line, bug), prod, code) in enumerate(zip(lines, prod_body, prod_code, strict=True),
                                                  1):
        if bug:
            if _code(line) == code:
                problems.append(f"body line {n} is marked {BUG} but its code is production's: "
                                f"{prod.strip()!r}")
        elif line != prod:
            problems.append(f"body line {n} is {line.strip()!r}, production's is "
                            f"{prod.strip()!r}")
    return problems


def globals_drift(copy: Callable[..., Any], production: Callable[..., Any]) -> list[str]:
    """The global names the copy reads must be the objects its production method reads under
    those names (a worker copy's MEMORY is the worker's state, not the scheduler's)."""
    problems = []
    names = _global_names(copy.__code__) & _global_names(production.__code__)
    for name in sorted(names):
        mine = copy.__globals__.get(name, _MISSING)
        theirs = production.__globals__.get(name, _MISSING)
        if mine is not theirs and not (mine is _MISSING and theirs is _MISSING):
            problems.append(f"the global {name!r} is not production's")
    return problems


_MISSING = object()


def _global_names(code: CodeType) -> set[str]:
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname == "LOAD_GLOBAL"}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _global_names(const)
    return names


def _split(source: str) -> tuple[str, list[str]]:
    """A function's signature (arguments and return annotation, as an AST dump: its name,
    decorators and layout do not count) and the lines of its body after the ``def``
    header (dedented with the function)."""
    source = textwrap.dedent(source)
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef), source[:80]
    signature = ast.dump(node.args) + " -> " + (ast.dump(node.returns) if node.returns else "")
    lines = source.splitlines()
    return signature, lines[_header_end(source, node.lineno):]


def _header_end(source: str, def_line: int) -> int:
    """The number of the line that ends the ``def`` header starting at ``def_line``: the one
    with the colon outside brackets."""
    depth = 0
    started = False
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.start[0] < def_line:
            continue
        if tok.type == tokenize.NAME and tok.string == "def":
            started = True
        elif started and tok.type == tokenize.OP:
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
            elif tok.string == ":" and depth == 0:
                return tok.start[0]
    raise ValueError("no end to the def header")


def _comment_at(line: str) -> int:
    """Where the line's comment starts (-1: it has none), strings understood."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if tok.type == tokenize.COMMENT:
                return len(line) - len(line.lstrip()) + tok.start[1]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        # A line of a longer statement: look for "#" outside quotes the simple way.
        quote = ""
        for i, ch in enumerate(line):
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#":
                return i
    return -1


def _code(line: str) -> str:
    """The line without its comment."""
    at = _comment_at(line)
    return (line if at < 0 else line[:at]).rstrip()


def _is_bug(line: str) -> bool:
    at = _comment_at(line)
    return at >= 0 and line[at:].startswith(BUG)


def _without_explanations(body: list[str]) -> tuple[list[tuple[str, bool]], list[str]]:
    """The copy's body lines, each with whether it is marked, without the explanation
    blocks (a comment line starting "# BUG" and the comment lines right below it), which
    must stand right above a marked line of code."""
    lines: list[tuple[str, bool]] = []
    problems = []
    i = 0
    while i < len(body):
        line = body[i]
        if line.strip().startswith(BUG):
            j = i + 1
            while j < len(body) and body[j].strip().startswith("#"):
                j += 1
            if j == len(body) or not _is_bug(body[j]):
                problems.append(f"the explanation {line.strip()!r} is not right above a line "
                                f"marked {BUG}")
            i = j
            continue
        lines.append((line, _is_bug(line)))
        i += 1
    return lines, problems
