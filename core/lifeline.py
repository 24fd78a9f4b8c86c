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
"""

from __future__ import annotations

import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # prctl(2)


def forked_from_main_thread() -> bool:
    """In the parent, before it starts a child: whether the child may ask for the
    parent-death signal (the thread forking it is the main thread, which ends with the
    process)."""
    return threading.current_thread() is threading.main_thread()


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` (SIGKILL) to this process when its parent dies (Linux;
    elsewhere a no-op). If the parent is gone already -- this process was reparented, or
    the multiprocessing parent's sentinel says so -- die now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import multiprocessing

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    gone = os.getppid() != parent  # it died before the request took hold
    # It may have died even before ``parent`` was read (we were reparented then): the
    # multiprocessing parent's sentinel (a pipe it holds open) has closed in that case.
    # (With the forkserver method the kernel's parent is the fork server; the sentinel
    # still tells of the process that asked for this one.)
    started_by = multiprocessing.parent_process()
    if not gone and started_by is not None:
        try:
            gone = not started_by.is_alive()
        except (OSError, ValueError, AssertionError):  # no sentinel to ask
            pass
    if gone:
        os.kill(os.getpid(), sig)
