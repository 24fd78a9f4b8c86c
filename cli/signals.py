"""SIGTERM as Ctrl-C: what a CI timeout sends ends a command as cleanly as Ctrl-C does.

While a ``squall`` command runs, the first SIGTERM raises ``Terminated`` (a
``KeyboardInterrupt``) in the main thread, so every ``finally``/``with`` that cleans up
after Ctrl-C runs for it too: a cluster is closed (its launcher, scheduler, workers and
proxy server stop), exploration jobs are stopped, key directories are removed. The
command then exits with 143 (128 + SIGTERM), after ``squall: terminated``. A second
SIGTERM during that clean-up ends the process at once (the default action); what it
started still dies with it (``squall.core.lifeline``).

Where Python cannot let an exception out -- an at-fork hook (the logging module's runs in
the parent right after every fork), a ``__del__``, a weakref callback -- it reports it
as "unraisable" and goes on: a ``Terminated`` raised there would be lost, and the command
would run on. The unraisable hook catches it and has the SIGTERM sent again, from a
thread, once the main thread has left the hook: it is raised where the main thread is
then (and, should that be such a place again, sent again). Ctrl-C's KeyboardInterrupt,
lost the same way, comes again the same way (SIGINT).

Processes forked meanwhile get SIGTERM's default action back: a ``proc.terminate()``
ends them as before.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import CodeType
from typing import Any

import click

TERMINATED_EXIT = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by the first SIGTERM a command receives."""


class TermState:
    received = False


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one is not caught
    _state.received = True
    raise Terminated()


_state = TermState()


def _default_in_child() -> None:
    """(at fork, in the child) SIGTERM's default action, not the command's handler."""
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:  # not the main thread (cannot be, after a fork)
            pass


os.register_at_fork(after_in_child=_default_in_child)


def _send_again_outside(code: CodeType, signum: int) -> None:
    """(a thread) ``signum`` to this process once the main thread runs no frame of
    ``code``."""
    main = threading.main_thread().ident
    while True:
        frame = sys._current_frames().get(main) if main is not None else None
        if frame is None:
            return  # the main thread is gone: so is the command
        while frame is not None and frame.f_code is not code:
            frame = frame.f_back
        if frame is None:
            break
        time.sleep(0.001)  # it is returning from the hook: a few bytecodes
    os.kill(os.getpid(), signum)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[TermState]:
    """SIGTERM raises ``Terminated`` inside the block (main thread only; elsewhere, or
    where SIGTERM is ignored, nothing changes). The state says whether one came."""
    _state.received = False
    if threading.current_thread() is not threading.main_thread():
        yield _state
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:  # ignored by whoever started us: leave it so
        yield _state
        return
    hook = sys.unraisablehook

    def redeliver(unraisable: Any) -> None:
        """While the block runs: a swallowed ``Terminated`` (or Ctrl-C's
        ``KeyboardInterrupt``) comes again."""
        exc = unraisable.exc_value
        if isinstance(exc, Terminated):
            signal.signal(signal.SIGTERM, _raise_terminated)
            signum = signal.SIGTERM
        elif isinstance(exc, KeyboardInterrupt) and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signum = signal.SIGINT
        else:
            hook(unraisable)
            return
        # Not from here, where it would be raised, and lost, again; and with no wait for
        # the thread to start (Thread.start waits: the signal could land there).
        _thread.start_new_thread(_send_again_outside, (redeliver.__code__, signum))

    signal.signal(signal.SIGTERM, _raise_terminated)
    sys.unraisablehook = redeliver
    try:
        yield _state
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        sys.unraisablehook = hook


def run_terminable(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with SIGTERM as Ctrl-C (see the module doc); after a SIGTERM, whatever
    ``fn`` did with it, ``squall: terminated`` and exit 143."""
    term = _state
    try:
        with sigterm_as_interrupt() as term:
            result = fn(*args)
    except (SystemExit, Terminated):
        if not term.received:
            raise
        result = None
    if term.received:
        click.echo("squall: terminated", err=True)
        sys.exit(TERMINATED_EXIT)
    return result
