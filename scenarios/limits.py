"""Bounds on untrusted input (scenario files, traces, command-line numbers), and the one
error for an output that cannot be written.

Each limit has a default and an environment variable that overrides it (a positive
integer; ``_`` may group digits):

==========================  ===========  ================================================
variable                    default      what it bounds
==========================  ===========  ================================================
``SQUALL_MAX_LINE_BYTES``   134217728    a trace line (128 MiB), and a scenario or
                                         snapshot file
``SQUALL_MAX_NAME``         256          a name, in characters: a scenario's, a worker's,
                                         a task key, a prefix
``SQUALL_MAX_TASKS``        1000000      a workload's tasks (and any count it is given)
``SQUALL_MAX_WORKERS``      10000        the workers a scenario starts and joins
``SQUALL_MAX_THREADS``      1024         threads per worker
``SQUALL_MAX_PROCESSES``    64           worker processes a scenario starts and joins on
                                         real processes (any runtime but ``sim``); the
                                         ``--jobs`` of ``explore`` and ``mutants``
``SQUALL_MAX_JOBS``         4 per CPU    the ``--jobs`` of ``explore`` (its own processes)
                                         and ``mutants``, per CPU this process may use:
                                         more only share the CPUs, and a time budget
                                         waits for every job's last batch
==========================  ===========  ================================================

A value over its limit is bad input: a one-line error naming the field and the variable
that raises the limit. A name may not hold control characters (NUL, newline, ...) either.
"""

from __future__ import annotations

import os
import re

MAX_LINE_BYTES = "SQUALL_MAX_LINE_BYTES"
MAX_NAME = "SQUALL_MAX_NAME"
MAX_TASKS = "SQUALL_MAX_TASKS"
MAX_WORKERS = "SQUALL_MAX_WORKERS"
MAX_THREADS = "SQUALL_MAX_THREADS"
MAX_PROCESSES = "SQUALL_MAX_PROCESSES"
MAX_JOBS = "SQUALL_MAX_JOBS"
JOBS_PER_CPU = 4  # SQUALL_MAX_JOBS's default, per CPU

DEFAULTS: dict[str, int] = {
    MAX_LINE_BYTES: 128 << 20,
    MAX_NAME: 256,
    MAX_TASKS: 1_000_000,
    MAX_WORKERS: 10_000,
    MAX_THREADS: 1024,
    MAX_PROCESSES: 64,
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHOWN = 40  # characters of an over-long value an error message shows


class LimitError(ValueError):
    """A limit's environment variable that is not a positive integer (one line)."""


class OutputError(Exception):
    """An output (a trace, a report, a log, a directory) that cannot be written: one line
    naming the path. The CLI exits 2."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def limit(var: str) -> int:
    """The limit ``var`` names: its environment variable if set, else its default."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return JOBS_PER_CPU * usable_cpus() if var == MAX_JOBS else DEFAULTS[var]
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise LimitError(f"{var} must be a positive integer, got {raw[:_SHOWN]!r}")
    return value


def over(what: str, value: int, var: str) -> str | None:
    """Why ``value`` (a number of ``what``) is over its limit, or None."""
    cap = limit(var)
    if value <= cap:
        return None
    return f"{value:,} {what} exceed the limit of {cap:,} (set {var} to raise it)"


def jobs_problem(jobs: int) -> str | None:
    """Why ``jobs`` processes of exploration on this machine are too many, or None: over
    ``SQUALL_MAX_PROCESSES``, or over ``SQUALL_MAX_JOBS`` (by default 4 per CPU: more only
    share the CPUs, and each makes a time budget wait for the batch it is in)."""
    if (why := over("jobs (processes)", jobs, MAX_PROCESSES)) is not None:
        return why
    cap = limit(MAX_JOBS)
    if jobs <= cap:
        return None
    where = "" if os.environ.get(MAX_JOBS, "").strip() else (
        f" ({JOBS_PER_CPU} per CPU, {usable_cpus()} CPU(s) here)")
    return (f"{jobs:,} jobs (processes) exceed the limit of {cap:,}{where} (set {MAX_JOBS} "
            "to raise it)")


def shown(value: str) -> str:
    """``value`` as an error message shows it: quoted, cut short if long."""
    return repr(value) if len(value) <= _SHOWN else repr(value[:_SHOWN]) + "..."


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a name (too long, or a control character in it), or None."""
    cap = limit(MAX_NAME)
    if len(value) > cap:
        return (f"{shown(value)} is {len(value):,} characters long, over the limit of "
                f"{cap:,} (set {MAX_NAME} to raise it)")
    bad = _CONTROL.search(value)
    if bad is not None:
        return f"{shown(value)} holds a control character ({bad.group()!r})"
    return None


def cannot_write(path: object, error: OSError, what: str = "") -> OutputError:
    """The OutputError for ``error`` on writing ``path`` (``what``: "trace", "report"...)."""
    reason = error.strerror or str(error) or type(error).__name__
    return OutputError(f"cannot write {what + ' ' if what else ''}{str(path)!r}: {reason}")


def make_output_dir(path: object, what: str = "output directory") -> None:
    """Create the directory ``path`` (and its parents) now, or raise OutputError."""
    from pathlib import Path

    try:
        Path(str(path)).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(path, e, what) from None


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
SLUG_CHARS = 80  # a derived file name's stem, at most


def slug(name: str, default: str = "scenario") -> str:
    """A safe file-name stem for ``name``: letters, digits, ``_ . -`` only, no leading dot
    (nothing like ``..``), at most ``SLUG_CHARS`` characters (a long name keeps a hash of
    the whole so that two stay apart)."""
    import hashlib

    stem = _SLUG.sub("-", name).strip("-.")
    if len(stem) > SLUG_CHARS:
        digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"),
                                 digest_size=4).hexdigest()
        stem = f"{stem[:SLUG_CHARS - 9].rstrip('-.')}-{digest}"
    return stem or default
