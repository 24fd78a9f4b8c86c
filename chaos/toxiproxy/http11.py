"""HTTP/1.1 for the JSON API: h11 parses and frames, this module does the I/O and the limits.

h11 is sans-IO (bytes in, events out), so reading and writing the asyncio streams, the size
limits and the deadlines live here. One ``HttpConnection`` per client; its requests are
answered one at a time, in order (pipelined requests wait in h11's buffer).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

import h11

READ_SIZE = 64 * 1024
# After refusing a request, how long to keep reading (and dropping) what the client still
# sends: closing with unread input makes the kernel send a reset, which can destroy the
# error answer before the client has read it.
LINGER_SECONDS = 1.0


class HttpError(Exception):
    """The request is refused: answer ``status`` with ``message``, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class HttpLimits:
    """What one client can make the server hold in memory or wait for."""

    max_head: int = 16 * 1024  # request line and headers, in bytes (431 beyond)
    max_body: int = 1024 * 1024  # in bytes, once de-chunked (413 beyond)
    # Seconds for a whole request to arrive (408 if it started, a quiet close if not), and
    # for a response to be taken by the client.
    timeout: float = 30.0


@dataclass
class Request:
    method: str
    path: list[str]  # decoded segments: "/proxies/a%20b/toxics" -> ["proxies", "a b", "toxics"]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


def _path_segments(target: bytes) -> list[str]:
    path = urlsplit(target.decode("ascii")).path  # h11 allows only visible ASCII in targets
    return [unquote(segment) for segment in path.split("/") if segment]


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def _refusal(exc: h11.RemoteProtocolError, limits: HttpLimits) -> HttpError:
    status = exc.error_status_hint
    if status == 431:  # h11's only reason for 431: its buffer passed max_incomplete_event_size
        return HttpError(431, f"request head larger than {limits.max_head} bytes")
    message = str(exc)  # h11 may quote what it could not parse: keep the answer short
    if len(message) > 200:
        message = message[:200] + "..."
    return HttpError(status, f"bad request: {message}")


class HttpConnection:
    """One client's connection: whole requests in (``next_request``), answers out."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: HttpLimits
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)
        self._method = b""

    async def next_request(self) -> Request | None:
        """The next whole request, or None once the client has closed or stayed idle.

        Raises HttpError for a request to refuse; answer it with ``refuse``.
        """
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        self._method = b""
        try:
            async with asyncio.timeout(self._limits.timeout):
                return await self._read_request()
        except TimeoutError:
            if self._h11.their_state is h11.IDLE and not self._h11.trailing_data[0]:
                return None  # idle between requests: nobody is waiting for an answer
            raise HttpError(408, "request not received in time") from None

    async def _read_request(self) -> Request | None:
        head = await self._next_event()
        if head is None:
            return None
        assert isinstance(head, h11.Request)
        self._method = head.method
        # h11 bounds only a head still incomplete; one that arrived whole in a single read
        # is measured here (give or take the spaces around header values).
        size = len(head.method) + len(head.target) + 13  # "M T HTTP/1.1\r\n" + "\r\n"
        size += sum(len(name) + len(value) + 4 for name, value in head.headers.raw_items())
        if size > self._limits.max_head:
            raise HttpError(431, f"request head larger than {self._limits.max_head} bytes")
        if head.http_version not in (b"1.0", b"1.1"):
            raise HttpError(505, f"unsupported HTTP version {head.http_version.decode()}")
        headers: dict[str, str] = {}
        for raw_name, raw_value in head.headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        # h11 has checked that a Content-Length is digits; refuse before asking for the body.
        if int(headers.get("content-length", "0")) > self._limits.max_body:
            raise HttpError(413, f"request body larger than {self._limits.max_body} bytes")
        if self._h11.they_are_waiting_for_100_continue:
            proceed = h11.InformationalResponse(status_code=100, headers=[])
            self._writer.write(self._h11.send(proceed))
        body = bytearray()
        while not isinstance(event := await self._next_event(), h11.EndOfMessage):
            if event is None:
                return None
            assert isinstance(event, h11.Data)
            body += event.data
            if len(body) > self._limits.max_body:  # chunked: no length to check up front
                raise HttpError(413, f"request body larger than {self._limits.max_body} bytes")
        method = head.method.decode("ascii").upper()
        return Request(method, _path_segments(head.target), headers, bytes(body))

    async def _next_event(self) -> h11.Event | None:
        """The next event of the client's request; None if the client went away."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise _refusal(exc, self._limits) from None
            if event is h11.NEED_DATA:
                data = await self._reader.read(READ_SIZE)
                if not data:
                    return None  # mid-request too: nobody is left to read an answer
                if self._h11.their_state is h11.IDLE and not self._h11.trailing_data[0]:
                    # Empty lines before a request line are allowed (RFC 9112 2.2); h11
                    # would take them for a missing request line.
                    data = data.lstrip(b"\r\n")
                if data:  # (h11 takes b"" for the end of the stream)
                    self._h11.receive_data(data)
            elif isinstance(event, h11.Event) and not isinstance(event, h11.ConnectionClosed):
                return event
            else:  # closed; or PAUSED, which a cycle restarted before each request rules out
                return None

    async def respond(self, status: int, body: bytes = b"", *, close: bool = False) -> bool:
        """Send one response; True if the connection can take another request."""
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if status == 204:  # no body, so no framing headers
            headers = []
        if close:
            headers.append(("Connection", "close"))
        data = self._h11.send(
            h11.Response(status_code=status, headers=headers, reason=_reason(status))
        )
        if body and status != 204 and self._method != b"HEAD":  # h11 frames HEAD as empty
            data += self._h11.send(h11.Data(data=body))
        data += self._h11.send(h11.EndOfMessage())
        self._writer.write(data)
        if self._writer.transport.get_write_buffer_size():  # not all sent at once: wait, bounded
            async with asyncio.timeout(self._limits.timeout):
                await self._writer.drain()
        return self._h11.our_state is h11.DONE

    async def refuse(self, error: HttpError, body: bytes) -> None:
        """Answer a refused request, then drop what the client still sends, for a while."""
        await self.respond(error.status, body, close=True)
        if self._writer.can_write_eof():
            self._writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                while await self._reader.read(READ_SIZE):
                    pass
