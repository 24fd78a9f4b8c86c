"""A named proxy: a listener, the connections it accepted, and its toxics."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

from .model import ApiError, Toxic, join_host_port, split_host_port
from .pipeline import Connection

STOP_TIMEOUT = 5.0


async def bind_listener(address: str) -> socket.socket:
    """A listening, non-blocking socket on one address (never one per resolved family)."""
    host, port = split_host_port(address)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a disabled-then-enabled proxy rebind its port while old connections linger
        # in TIME_WAIT; on Linux it does not allow stealing a port someone is listening on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_error(address: str, exc: OSError) -> ApiError:
    # Toxiproxy reports listen failures as 500 with the OS message.
    return ApiError(500, f"listen tcp {address}: {exc.strerror or exc}")


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str, rng: random.Random) -> None:
        self.name = name
        self.listen = listen  # the bound address while enabled (a port 0 is resolved)
        self.requested_listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: list[Toxic] = []
        self._rng = rng
        self._server: asyncio.Server | None = None
        self._connections: dict[Connection, asyncio.Task[Any]] = {}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [toxic.to_json() for toxic in self.toxics],
        }

    async def start(self) -> None:
        if self.enabled:
            return
        try:
            sock = await bind_listener(self.listen)
        except OSError as exc:
            raise listen_error(self.listen, exc) from exc
        host, port = sock.getsockname()[:2]
        self.listen = join_host_port(host, port)
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.enabled = True

    async def stop(self) -> None:
        """Close the listener and every open connection."""
        self.enabled = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._connections.values())
        for conn, task in list(self._connections.items()):
            conn.close()
            if conn.connecting:
                task.cancel()  # do not wait out a slow upstream connect
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for task in pending:
                task.cancel()
        if server is not None:
            await server.wait_closed()

    async def update(self, listen: str | None, upstream: str | None, enabled: bool | None) -> None:
        readdress = (listen is not None and listen not in (self.listen, self.requested_listen)) or (
            upstream is not None and upstream != self.upstream
        )
        want_enabled = self.enabled if enabled is None else enabled
        if readdress:
            await self.stop()
            if listen is not None and listen not in (self.listen, self.requested_listen):
                self.listen = self.requested_listen = listen
            if upstream is not None:
                self.upstream = upstream
        if want_enabled:
            await self.start()
        elif self.enabled:
            await self.stop()

    def find_toxic(self, name: str) -> Toxic:
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        raise ApiError(404, "toxic not found")

    def add_toxic(self, toxic: Toxic) -> None:
        if any(t.name == toxic.name for t in self.toxics):
            raise ApiError(409, "toxic already exists")
        self.toxics.append(toxic)
        self._toxics_changed()

    def replace_toxic(self, old: Toxic, new: Toxic) -> None:
        self.toxics[self.toxics.index(old)] = new
        self._toxics_changed()

    def remove_toxic(self, name: str) -> None:
        self.toxics.remove(self.find_toxic(name))
        self._toxics_changed()

    def clear_toxics(self) -> None:
        self.toxics.clear()
        self._toxics_changed()

    def _toxics_changed(self) -> None:
        for conn in self._connections:
            conn.sync_toxics()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled:
            writer.close()
            return
        conn = Connection(self.upstream, lambda: self.toxics, reader, writer, self._rng)
        task = asyncio.current_task()
        assert task is not None
        self._connections[conn] = task
        try:
            await conn.run()
        finally:
            del self._connections[conn]
