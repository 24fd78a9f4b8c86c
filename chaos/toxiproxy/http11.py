"""Just enough HTTP/1.1 for a JSON API, on asyncio streams.

Handles keep-alive, Content-Length and chunked request bodies, and ``Expect: 100-continue``.
Limits keep a misbehaving client from making the server buffer without bound.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

MAX_BODY = 1024 * 1024
MAX_HEADERS = 100


class HttpError(Exception):
    """The request cannot be parsed; answer with ``status`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: list[str]  # decoded segments: "/proxies/a%20b/toxics" -> ["proxies", "a b", "toxics"]
    headers: dict[str, str]  # lower-case names
    body: bytes
    keep_alive: bool


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError as exc:  # the StreamReader's line limit (64 KiB) was exceeded
        raise HttpError(431, "request line or header too long") from exc


def _path_segments(target: str) -> list[str]:
    path = urlsplit(target).path
    return [unquote(segment) for segment in path.split("/") if segment]


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Request | None:
    """The next request on the connection, or None when the client has gone."""
    line = await _read_line(reader)
    while line in (b"\r\n", b"\n"):  # tolerated before a request line (RFC 9112 2.2)
        line = await _read_line(reader)
    if not line.endswith(b"\n"):
        return None
    parts = line.decode("latin-1").strip().split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"unsupported HTTP version {version!r}")

    headers: dict[str, str] = {}
    while True:
        line = await _read_line(reader)
        if not line.endswith(b"\n"):
            return None
        if line in (b"\r\n", b"\n"):
            break
        if len(headers) >= MAX_HEADERS:
            raise HttpError(431, "too many headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise HttpError(400, "malformed header line")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()

    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        keep_alive = "keep-alive" in connection
    else:
        keep_alive = "close" not in connection

    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        body = await _read_body(reader, headers)
    except asyncio.IncompleteReadError:
        return None
    return Request(method.upper(), _path_segments(target), headers, body, keep_alive)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower() != "chunked":
            raise HttpError(501, f"unsupported transfer-encoding {encoding!r}")
        return await _read_chunked(reader)
    length_text = headers.get("content-length")
    if length_text is None:
        return b""
    if not length_text.isdigit():
        raise HttpError(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        raise HttpError(413, "request body too large")
    return await reader.readexactly(length)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await _read_line(reader)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise HttpError(400, "bad chunk size") from exc
        if size < 0:
            raise HttpError(400, "bad chunk size")
        if size == 0:
            while (await _read_line(reader)) not in (b"\r\n", b"\n", b""):
                pass  # trailers are ignored
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise HttpError(413, "request body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk


def format_response(
    status: int,
    body: bytes = b"",
    *,
    keep_alive: bool,
    content_type: str = "application/json",
) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    if status != 204:  # a 204 has no body and no Content-Length
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if status == 204 else head + body
