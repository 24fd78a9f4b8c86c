"""Processes that die with the process that started them (standard library only).

Every process squall starts -- the cluster's launcher, its scheduler and workers, the
built-in proxy server, exploration jobs, dask workers -- must end when its parent ends,
however the parent ends: an exit, Ctrl-C, SIGTERM (what a CI timeout sends) or SIGKILL,
which no handler sees. Two mechanisms, used together:

- ``die_with_parent()``, first thing in the child: on Linux the kernel sends it SIGKILL
  when its parent dies (``prctl(PR_SET_PDEATHSIG)``), even when it is stopped (SIGSTOP)
  or busy in a task; it then checks that its parent is still the process that started
  it, since the parent may have died before the request took hold. Elsewhere a no-op.
- a pipe from the parent whose end the child watches (the launcher's command pipe, the
  proxy server's ``alive`` pipe): it closes when the parent dies, on every platform, and
  lets the child stop what it started in order.

Linux sends the signal when the *thread* that forked the child ends, not the process:
a child forked from a thread that may end before the child should (a ``LocalCluster``
made in a thread pool, say) must not ask for it. ``forked_from_main_thread()``, called in
the parent before it starts the child, says whether that is safe.

What outlived its parent is found in /proc (Linux): ``descendants(root)`` (the live
processes under ``root``), ``session_members(sid)`` (a session's, orphans reparented to
init among them) and ``wait_gone(members, timeout)``, which the tests and
``benchmarks/faults.py`` use to count what a command or a cluster left behind; what a
command says is read as it says it by ``StderrLines``.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # prctl(2)


def forked_from_main_thread() -> bool:
    """In the parent, before it starts a child: whether the child may ask for the
    parent-death signal (the thread forking it is the main thread, which ends with the
    process)."""
    return threading.current_thread() is threading.main_thread()


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` (SIGKILL) to this process when its parent dies (Linux;
    elsewhere a no-op). If the parent is gone already -- it died before the request took
    hold, or even before this process looked (it was reparented) -- die now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import multiprocessing

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    gone = os.getppid() != parent  # it died before the request took hold
    # It may have died even before ``parent`` was read: ``parent`` is then init (or a
    # subreaper), not the process that started this one. A multiprocessing child knows
    # that one's pid: when the kernel's parent is another process, whether that one still
    # lives decides. (Not its sentinel pipe: every sibling forked after this one holds its
    # write end too, so it looks alive while they live -- a ``squall explore`` SIGKILLed
    # just after it forked its jobs left the first one running, reparented to init.) With
    # the forkserver method the kernel's parent is the fork server, and this asks about
    # the process that asked for this one.
    started_by = multiprocessing.parent_process()
    if not gone and started_by is not None and started_by.pid not in (None, parent):
        gone = not alive(started_by.pid)
    if gone:
        os.kill(os.getpid(), sig)


# ------------------------------------------------------------------ what outlived whom


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session id) of a process from /proc, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[3])


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (dead, not yet reaped)."""
    st = proc_stat(pid)
    return st is not None and st[0] not in "ZX"


def _live() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, ppid, session) of every live (not zombie) process of the machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := proc_stat(int(entry))) is not None and st[0] not in "ZX":
            out[int(entry)] = st
    return out


def descendants(root: int | None = None) -> set[int]:
    """The live (not zombie) descendants of ``root`` (default: this process)."""
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in _live().items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [os.getpid() if root is None else root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def session_members(sid: int) -> set[int]:
    """The live processes of session ``sid``: what its leader started, orphans reparented
    to init among them (a process that calls setsid itself leaves it)."""
    return {pid for pid, (_, _, session) in _live().items() if session == sid}


def wait_gone(members: Callable[[], set[int]], timeout: float) -> set[int]:
    """Wait until ``members()`` is empty, blocking on each one's exit (its pidfd), for at
    most ``timeout`` seconds; what is still there then (empty: all gone)."""
    deadline = time.monotonic() + timeout
    while left := members():
        if time.monotonic() > deadline:
            return left
        try:
            fd = os.pidfd_open(min(left))
        except OSError:  # gone meanwhile
            continue
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
    return set()


class StderrLines:
    """The lines a child process writes to its stderr (a text pipe), collected by a thread
    as they come, so that a caller can wait until one says what it waits for."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._stream = stream
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def first(self, predicate: Callable[[str], object], timeout: float) -> str | None:
        """The first line ``predicate`` holds for, waiting for it until ``timeout`` seconds
        have passed or the stream ends; None if there is none by then."""
        def found() -> str | None:
            return next((x for x in self.lines if predicate(x)), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None or not self._reader.is_alive(),
                                timeout)
            return found()

    def count(self, predicate: Callable[[str], object]) -> int:
        with self._cond:
            return sum(1 for x in self.lines if predicate(x))

    def join(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until the stream has ended and every line
        is in."""
        self._reader.join(timeout)
