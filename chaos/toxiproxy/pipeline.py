"""One proxied TCP connection and the toxics applied to its two streams.

Each stream (upstream: client -> server, downstream: server -> client) is a pipe of two tasks:
a reader that reads a chunk, stamps it with its arrival time and plans it through the current
toxic chain, and a writer that sends each planned item when its release time comes. Planning
turns delays into release times instead of sleeping, so a latency toxic delays every chunk
without throttling the stream. The queue between them is bounded, so a slow writer (bandwidth)
pushes back on the reader and, through TCP, on the sender.

The chain is read again for every chunk: toxics added, updated or removed while a connection is
open apply to the data it reads from then on. Timers (timeout, reset_peer) start when a toxic
reaches a connection and are cancelled when it goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from .model import DOWNSTREAM, STREAMS, UPSTREAM, Toxic, split_host_port

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
QUEUE_ITEMS = 64  # bounded: the writer's pace pushes back on the reader
CONNECT_TIMEOUT = 30.0


class Kind(Enum):
    DATA = "data"
    EOF = "eof"  # the source finished: half-close the sink
    CLOSE = "close"  # a toxic ends the connection (limit_data)


@dataclass
class Item:
    at: float  # loop time at which the writer may send it
    kind: Kind
    data: bytes = b""


class ToxicState:
    """What one connection remembers about one toxic on one of its streams."""

    def __init__(self, toxic: Toxic, rng: random.Random) -> None:
        self.toxic = toxic
        # Toxicity is drawn once per connection, as in Toxiproxy; random() < 1.0 always holds.
        self.active = rng.random() < toxic.toxicity
        self.last = 0.0  # release time of the last item this toxic let out (keeps order)
        self.count = 0  # bytes let through (limit_data)


Transform = Callable[[ToxicState, list[Item], random.Random], list[Item]]


def _passthrough(state: ToxicState, item: Item, delay: float = 0.0) -> Item:
    state.last = max(item.at + delay, state.last)
    return Item(state.last, item.kind, item.data)


def _latency(state: ToxicState, items: list[Item], rng: random.Random) -> list[Item]:
    base, jitter = state.toxic.attributes["latency"], state.toxic.attributes["jitter"]
    out = []
    for item in items:
        delay_ms = base + (rng.uniform(-jitter, jitter) if jitter else 0.0)
        out.append(_passthrough(state, item, max(delay_ms, 0.0) / 1000))
    return out


def _bandwidth(state: ToxicState, items: list[Item], rng: random.Random) -> list[Item]:
    rate = state.toxic.attributes["rate"]  # KB/s; 0 means unlimited
    if rate <= 0:
        return items
    bytes_per_second = rate * 1000
    step = max(1, bytes_per_second // 10)  # pieces of 100 ms, so the stream flows smoothly
    out = []
    for item in items:
        if item.kind is not Kind.DATA:
            out.append(_passthrough(state, item))
            continue
        for start in range(0, len(item.data), step):
            piece = item.data[start : start + step]
            state.last = max(item.at, state.last) + len(piece) / bytes_per_second
            out.append(Item(state.last, Kind.DATA, piece))
    return out


def _slicer(state: ToxicState, items: list[Item], rng: random.Random) -> list[Item]:
    attrs = state.toxic.attributes
    average, variation = attrs["average_size"], attrs["size_variation"]
    gap = attrs["delay"] / 1_000_000  # µs
    if average <= 0:
        return items
    out = []
    for item in items:
        if item.kind is not Kind.DATA:
            out.append(_passthrough(state, item))
            continue
        at = max(item.at, state.last)
        start = 0
        while start < len(item.data):
            size = max(1, average + (rng.randint(-variation, variation) if variation else 0))
            if start:
                at += gap
            out.append(Item(at, Kind.DATA, item.data[start : start + size]))
            start += size
        state.last = at
    return out


def _limit_data(state: ToxicState, items: list[Item], rng: random.Random) -> list[Item]:
    limit = state.toxic.attributes["bytes"]
    out = []
    for item in items:
        if item.kind is not Kind.DATA:
            out.append(item)
            continue
        piece = item.data[: max(limit - state.count, 0)]
        state.count += len(piece)
        if piece:
            out.append(Item(item.at, Kind.DATA, piece))
        if state.count >= limit:
            # Everything after the limit is gone: the connection closes once this is sent.
            out.append(Item(item.at, Kind.CLOSE))
            break
    return out


def _slow_close(state: ToxicState, items: list[Item], rng: random.Random) -> list[Item]:
    delay = state.toxic.attributes["delay"] / 1000
    return [item if item.kind is Kind.DATA else _passthrough(state, item, delay) for item in items]


def _timeout(state: ToxicState, items: list[Item], rng: random.Random) -> list[Item]:
    # Data is dropped while the toxic is present; an end of stream still goes through.
    return [item for item in items if item.kind is not Kind.DATA]


TRANSFORMS: dict[str, Transform] = {
    "latency": _latency,
    "bandwidth": _bandwidth,
    "slicer": _slicer,
    "limit_data": _limit_data,
    "slow_close": _slow_close,
    "timeout": _timeout,
}
# reset_peer has no transform: while it is pending, a stream holds its data back.
HOLDING_TYPES = frozenset({"reset_peer"})
TIMER_TYPES = frozenset({"timeout", "reset_peer"})


def plan(states: Sequence[ToxicState], item: Item, rng: random.Random) -> list[Item]:
    """Run one item through a toxic chain, in the chain's order."""
    items = [item]
    for state in states:
        items = TRANSFORMS[state.toxic.type](state, items, rng)
        if not items:
            break
    return items


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # Linger on, timeout 0: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Pipe:
    """One stream of a connection: source -> toxic chain -> sink."""

    def __init__(
        self,
        conn: Connection,
        stream: str,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.source = source
        self.sink = sink
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_ITEMS)

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.source.read(READ_SIZE)
                states = await self._chain_when_not_held()
                item = Item(loop.time(), Kind.DATA if data else Kind.EOF, data)
                for planned in plan(states, item, self.conn.rng):
                    await self.queue.put(planned)
                    if planned.kind is not Kind.DATA:
                        return  # EOF or CLOSE: nothing more to read
        except OSError:
            self.conn.close()
        except Exception:
            log.exception("toxiproxy %s reader failed", self.stream)
            self.conn.close()

    async def _chain_when_not_held(self) -> list[ToxicState]:
        while True:
            states = self.conn.chain(self.stream)
            if not any(s.toxic.type in HOLDING_TYPES for s in states):
                return [s for s in states if s.toxic.type in TRANSFORMS]
            await self.conn.toxics_changed()

    async def write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await self.queue.get()
                wait = item.at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if item.kind is Kind.DATA:
                    self.sink.write(item.data)
                    await self.sink.drain()
                elif item.kind is Kind.EOF:
                    if self.sink.can_write_eof():
                        self.sink.write_eof()
                    self.conn.stream_finished(self.stream)
                    return
                else:
                    self.conn.close()
                    return
        except OSError:
            self.conn.close()
        except Exception:
            log.exception("toxiproxy %s writer failed", self.stream)
            self.conn.close()


class Connection:
    """A client connection accepted by a proxy, and its connection to the upstream."""

    def __init__(
        self,
        upstream: str,
        toxics: Callable[[], Sequence[Toxic]],
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        rng: random.Random,
    ) -> None:
        self.upstream = upstream
        self._toxics = toxics
        self.rng = rng
        self._client = (client_reader, client_writer)
        self._upstream_writer: asyncio.StreamWriter | None = None
        self._states: dict[Toxic, ToxicState] = {}
        self._timers: dict[Toxic, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._finished: set[str] = set()
        self._changed = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self.closed = False

    async def run(self) -> None:
        """Connect upstream and pump both streams until the connection ends."""
        client_reader, client_writer = self._client
        connected = await self._connect_upstream()
        if connected is None:
            client_writer.close()
            return
        up_reader, up_writer = connected
        self._upstream_writer = up_writer
        pipes = [
            Pipe(self, UPSTREAM, client_reader, up_writer),
            Pipe(self, DOWNSTREAM, up_reader, client_writer),
        ]
        try:
            for pipe in pipes:
                self._tasks.append(asyncio.create_task(pipe.read_loop()))
                self._tasks.append(asyncio.create_task(pipe.write_loop()))
            self._running = True
            self.sync_toxics()
            await self._done.wait()
        finally:
            self._running = False
            self.close()
            tasks = self._tasks + list(self._timers.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _connect_upstream(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The upstream streams, or None if the connect failed or close() came first."""
        host, port = split_host_port(self.upstream)
        connect = asyncio.create_task(
            asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        )
        closed = asyncio.create_task(self._done.wait())
        try:
            await asyncio.wait({connect, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not connect.done():
                connect.cancel()
            await asyncio.gather(connect, closed, return_exceptions=True)
        if connect.cancelled() or connect.exception() is not None:
            return None
        up_reader, up_writer = connect.result()
        if self.closed:
            up_writer.close()
            return None
        return up_reader, up_writer

    def chain(self, stream: str) -> list[ToxicState]:
        """The toxics currently on this stream that apply to this connection, in order."""
        states = []
        for toxic in self._toxics():
            if toxic.stream != stream:
                continue
            state = self._states.get(toxic)
            if state is None:
                state = self._states[toxic] = ToxicState(toxic, self.rng)
            if state.active:
                states.append(state)
        return states

    def sync_toxics(self) -> None:
        """Called whenever the proxy's toxics change: start or cancel timers, wake held readers."""
        if not self._running:
            return
        current = list(self._toxics())
        for toxic in [t for t in self._states if t not in current]:
            del self._states[toxic]
        for toxic in [t for t in self._timers if t not in current]:
            self._timers.pop(toxic).cancel()
        for stream in STREAMS:
            for state in self.chain(stream):
                toxic = state.toxic
                if toxic.type in TIMER_TYPES and toxic not in self._timers:
                    # timeout 0 means "never close"; reset_peer 0 means "reset now".
                    if toxic.type == "timeout" and toxic.attributes["timeout"] == 0:
                        continue
                    self._timers[toxic] = asyncio.create_task(self._fire(toxic))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def toxics_changed(self) -> None:
        await self._changed.wait()

    async def _fire(self, toxic: Toxic) -> None:
        await asyncio.sleep(toxic.attributes["timeout"] / 1000)
        self.close(reset_stream=toxic.stream if toxic.type == "reset_peer" else None)

    def stream_finished(self, stream: str) -> None:
        self._finished.add(stream)
        if self._finished.issuperset(STREAMS):
            self._done.set()

    def close(self, reset_stream: str | None = None) -> None:
        """End the connection now. ``reset_stream`` sends RST to that stream's receiver."""
        if self.closed:
            return
        self.closed = True
        client_writer = self._client[1]
        for stream, writer in ((UPSTREAM, self._upstream_writer), (DOWNSTREAM, client_writer)):
            if writer is None:
                continue
            if stream == reset_stream:
                _abort_with_rst(writer)
            else:
                writer.close()
        self._done.set()
