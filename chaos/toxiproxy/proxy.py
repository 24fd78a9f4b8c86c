"""A named proxy: a listener, the connections it accepted, and its toxics."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from .listener import Listener, bind_listener
from .model import ApiError, Toxic, join_host_port
from .pipeline import Connection

STOP_TIMEOUT = 5.0  # a closed connection ends within a loop turn; this is a backstop


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
        self._listener: Listener | None = None
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
        self._listener = Listener(sock, self._accept)
        self.listen = join_host_port(*self._listener.address)
        self.enabled = True

    async def stop(self) -> None:
        """Close the listener and every open connection."""
        self.enabled = False  # from here on, _accept turns connections away
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        tasks = list(self._connections.values())
        for conn in list(self._connections):
            conn.close()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)

    async def update(self, listen: str | None, upstream: str | None, enabled: bool | None) -> None:
        """Apply a proxy update; a new address restarts the listener and drops connections."""
        # The requested "host:0" still describes a proxy bound to host:<picked port>.
        listen_changed = listen is not None and listen not in (self.listen, self.requested_listen)
        upstream_changed = upstream is not None and upstream != self.upstream
        want_enabled = self.enabled if enabled is None else enabled
        if listen_changed or upstream_changed:
            await self.stop()
            if listen_changed:
                assert listen is not None
                self.listen = self.requested_listen = listen
            if upstream_changed:
                assert upstream is not None
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
