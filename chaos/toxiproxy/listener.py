"""Listening sockets and an accept loop, shared by the API and the proxies.

asyncio.start_server is not used: on Python 3.11, closing its Server while an accepted
connection is still being set up trips an assertion inside asyncio and leaks the socket,
and cancelling its handler tasks logs spurious errors. Owning the accept loop avoids both.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

from .model import split_host_port

log = logging.getLogger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# Running out of descriptors or buffers is transient: back off instead of spinning.
_BACKOFF_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BACKOFF_SECONDS = 0.1


async def bind_listener(address: str) -> socket.socket:
    """A listening, non-blocking socket on one address (never one per resolved family)."""
    host, port = split_host_port(address)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a disabled-then-enabled proxy rebind its port while old connections linger
        # in TIME_WAIT; on Linux it does not allow taking a port someone is listening on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """Accepts connections on ``sock`` and runs ``handler(reader, writer)`` for each.

    Accepting happens in a reader callback, not in a task awaiting ``sock_accept``: a task
    cancelled just as a connection arrives would lose the accepted socket. ``close()`` stops
    accepting and closes the socket; handlers already running are the owner's to end.
    """

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self._handler = handler
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._loop.add_reader(sock, self._accept_ready)

    def _accept_ready(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _BACKOFF_ERRNOS:
                    raise
                log.warning("accept on %s failed, backing off: %s", self.address, exc)
                self._loop.remove_reader(self.sock)
                self._loop.call_later(_BACKOFF_SECONDS, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn))
            self._handlers.add(task)  # keep a reference until it is done
            task.add_done_callback(self._handlers.discard)

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self.sock, self._accept_ready)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except BaseException:  # including cancellation at shutdown: the socket is ours
            conn.close()
            raise
        try:
            await self._handler(reader, writer)
        except Exception:
            log.exception("connection handler on %s failed", self.address)
            writer.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.sock)
        self.sock.close()
