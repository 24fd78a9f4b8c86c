"""The built-in Toxiproxy server's HTTP layer: framing, limits, and clients that misbehave.

Requests go over raw sockets or http.client, so the bytes on the wire are the ones under
test. Every wait is a socket timeout (a deadline), never a sleep; no timing is asserted.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from squall.chaos.toxiproxy import (
    TOXIPROXY_API_VERSION,
    HttpLimits,
    ThreadedToxiproxyServer,
    run_in_thread,
)

DEADLINE = 5.0  # the longest any test waits for a condition
UPSTREAM = "127.0.0.1:9"  # never connected to: these tests send no traffic through proxies
MAX_HEAD = HttpLimits().max_head
MAX_BODY = HttpLimits().max_body


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedToxiproxyServer]:
    with run_in_thread(port=0, seed=1) as running:
        yield running


@pytest.fixture
def api(server: ThreadedToxiproxyServer) -> Iterator[str]:
    yield server.url
    requests.post(f"{server.url}/reset", timeout=DEADLINE)
    for name in requests.get(f"{server.url}/proxies", timeout=DEADLINE).json():
        requests.delete(f"{server.url}/proxies/{name}", timeout=DEADLINE)


@pytest.fixture
def no_crash_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if the server logged an error (a traceback) while it ran."""
    with caplog.at_level(logging.ERROR, logger="squall.chaos.toxiproxy"):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def _recv_until_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


def _exchange(server: ThreadedToxiproxyServer, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; read until the server closes. Success answers need Connection: close."""
    with socket.create_connection((server.host, server.port), timeout=DEADLINE) as raw:
        raw.sendall(data)
        return _parse(_recv_until_eof(raw))


def _still_serving(server: ThreadedToxiproxyServer) -> bool:
    response = requests.get(f"{server.url}/version", timeout=DEADLINE)
    return response.json() == {"version": TOXIPROXY_API_VERSION}


def _one_line_error(body: bytes, status: int) -> dict[str, Any]:
    assert b"\n" not in body
    error = json.loads(body)
    assert error["status"] == status
    return error


# --- framing ------------------------------------------------------------------------------


def test_chunked_request_body_is_accepted(server: ThreadedToxiproxyServer, api: str) -> None:
    # As real Toxiproxy does: chunk extensions and trailers are allowed and ignored.
    body = json.dumps({"name": "chunked", "upstream": UPSTREAM}).encode()
    head = b"POST /proxies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:]))
    status, _, answer = _exchange(
        server, head + b"Connection: close\r\n\r\n" + chunks + b"0\r\nX-Trailer: 1\r\n\r\n"
    )
    assert status == 201
    assert json.loads(answer)["name"] == "chunked"

    # http.client chunks an iterable body itself.
    conn = http.client.HTTPConnection(server.host, server.port, timeout=DEADLINE)
    try:
        parts = iter([b'{"name": "chunked2", ', b'"upstream": "%s"}' % UPSTREAM.encode()])
        conn.request("POST", "/proxies", body=parts, encode_chunked=True)
        assert conn.getresponse().status == 201
    finally:
        conn.close()
    assert set(requests.get(f"{api}/proxies", timeout=DEADLINE).json()) == {"chunked", "chunked2"}


def test_expect_100_continue(server: ThreadedToxiproxyServer, api: str) -> None:
    body = json.dumps({"name": "expecting", "upstream": UPSTREAM}).encode()
    head = (
        b"POST /proxies HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection((server.host, server.port), timeout=DEADLINE) as raw:
        raw.sendall(head)
        assert raw.recv(1024).startswith(b"HTTP/1.1 100 ")  # the body is wanted
        raw.sendall(body)
        assert _parse(_recv_until_eof(raw))[0] == 201


def test_head_request_gets_no_body_and_the_connection_stays_usable(
    server: ThreadedToxiproxyServer,
) -> None:
    head = b"HEAD /version HTTP/1.1\r\nHost: x\r\n\r\n"
    get = b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=DEADLINE) as raw:
        raw.sendall(head + get)
        answers = _recv_until_eof(raw)
    first, _, second = answers.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 405 ")
    # The answer to HEAD has headers only; the next answer follows at once.
    assert second.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(_parse(second)[2])["version"] == TOXIPROXY_API_VERSION


def test_pipelined_requests_are_answered_in_order(server: ThreadedToxiproxyServer) -> None:
    # An empty line before a request line is tolerated (RFC 9112 section 2.2).
    one = b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=DEADLINE) as raw:
        raw.sendall(b"\r\n" + one + one + last)
        answers = _recv_until_eof(raw)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert answers.count(b"HTTP/1.1 404 Not Found\r\n") == 1
    assert answers.index(b" 404 ") > answers.rindex(b" 200 ")


# --- limits -------------------------------------------------------------------------------


def test_deeply_nested_json_is_a_400_not_a_crash(
    server: ThreadedToxiproxyServer, api: str, no_crash_logged: None
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/proxies", "/populate"):
        response = requests.post(f"{api}{path}", data=deep, timeout=DEADLINE)
        assert response.status_code == 400
        assert "nested too deeply" in _one_line_error(response.content, 400)["error"]
    assert _still_serving(server)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * 100_000, "at most 256"),
        ("x" * 257, "at most 256"),
        ("a b", "may only contain"),
        ("a?b", "may only contain"),
        ("a#b", "may only contain"),
        ("a%41", "may only contain"),
        ("tab\t", "may only contain"),
        ("proxy-é", "may only contain"),
        (".", "cannot be"),
        ("..", "cannot be"),
    ],
    ids=["100000-long", "257-long", "space", "query", "fragment", "percent", "tab",
         "non-ascii", "dot", "dot-dot"],
)
def test_proxy_names_that_cannot_be_addressed_are_refused(
    server: ThreadedToxiproxyServer, api: str, name: str, message: str
) -> None:
    response = requests.post(
        f"{api}/proxies", json={"name": name, "upstream": UPSTREAM}, timeout=DEADLINE
    )
    error = _one_line_error(response.content, 400)
    assert response.status_code == 400
    assert "name" in error["error"] and message in error["error"]
    populate = requests.post(
        f"{api}/populate", json=[{"name": name, "upstream": UPSTREAM}], timeout=DEADLINE
    )
    assert populate.status_code == 400
    assert requests.get(f"{api}/proxies", timeout=DEADLINE).json() == {}


def test_toxic_names_that_cannot_be_addressed_are_refused(
    server: ThreadedToxiproxyServer, api: str
) -> None:
    requests.post(f"{api}/proxies", json={"name": "p", "upstream": UPSTREAM}, timeout=DEADLINE)
    response = requests.post(
        f"{api}/proxies/p/toxics", json={"type": "latency", "name": "a?b"}, timeout=DEADLINE
    )
    assert response.status_code == 400
    assert "name may only contain" in _one_line_error(response.content, 400)["error"]


def test_longest_name_can_be_addressed_and_deleted(
    server: ThreadedToxiproxyServer, api: str
) -> None:
    name = "Az09-._~!$&'()*+,;=:@" + "x" * 235  # every allowed kind of character, 256 long
    created = requests.post(
        f"{api}/proxies", json={"name": name, "upstream": UPSTREAM}, timeout=DEADLINE
    )
    assert created.status_code == 201
    assert requests.get(f"{api}/proxies/{name}", timeout=DEADLINE).json()["name"] == name
    toxic = requests.post(
        f"{api}/proxies/{name}/toxics", json={"type": "latency", "name": name}, timeout=DEADLINE
    )
    assert toxic.status_code == 200
    assert requests.delete(f"{api}/proxies/{name}/toxics/{name}", timeout=DEADLINE).ok
    assert requests.delete(f"{api}/proxies/{name}", timeout=DEADLINE).status_code == 204
    assert requests.get(f"{api}/proxies", timeout=DEADLINE).json() == {}


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"x" * MAX_HEAD + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * MAX_HEAD + b"\r\n\r\n",
        b"GET /version HTTP/1.1\r\nHost: x\r\n" + b"X-Many: z\r\n" * (MAX_HEAD // 10),
    ],
    ids=["long-target", "long-header", "many-headers"],
)
def test_request_head_over_the_limit_is_431(
    server: ThreadedToxiproxyServer, request_bytes: bytes, no_crash_logged: None
) -> None:
    status, headers, body = _exchange(server, request_bytes)
    assert status == 431
    assert headers["connection"] == "close"
    assert "request head" in _one_line_error(body, 431)["error"]
    assert _still_serving(server)


def test_request_body_over_the_limit_is_413(
    server: ThreadedToxiproxyServer, api: str, no_crash_logged: None
) -> None:
    # Declared too large: refused before any of the body is read (and no 100 Continue).
    declared = (
        b"POST /proxies HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)
    )
    status, _, body = _exchange(server, declared)
    assert status == 413
    assert "request body" in _one_line_error(body, 413)["error"]

    # Chunked: refused once the chunks pass the limit.
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    chunked = b"POST /proxies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, _, body = _exchange(
        server, chunked + chunk * (MAX_BODY // 65536 + 1) + b"0\r\n\r\n"
    )
    assert status == 413
    _one_line_error(body, 413)

    # At the limit is fine (a 400 about the JSON, not a 413).
    at_limit = requests.post(f"{api}/proxies", data=b" " * MAX_BODY, timeout=DEADLINE)
    assert at_limit.status_code == 400
    assert _still_serving(server)


@pytest.mark.parametrize(
    ("garbage", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n", 400),
        (b"GET /version HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
        (b"GET /version HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 requires Host
        (b"GET /version HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
         400),
        (b"POST /proxies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /proxies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /proxies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"2\r\n{}XX\r\n", 400),
    ],
    ids=["words", "tls-hello", "no-colon", "no-host", "http2", "negative-length",
         "two-lengths", "gzip", "bad-chunk-size", "bad-chunk-end"],
)
def test_garbage_gets_an_error_answer_and_the_server_keeps_serving(
    server: ThreadedToxiproxyServer, garbage: bytes, status: int, no_crash_logged: None
) -> None:
    answer_status, headers, body = _exchange(server, garbage)
    assert answer_status == status
    assert headers["connection"] == "close"
    _one_line_error(body, status)
    assert _still_serving(server)


def test_client_gone_mid_request_leaves_the_server_serving(
    server: ThreadedToxiproxyServer, no_crash_logged: None
) -> None:
    mid_body = b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"
    for partial in (b"GET /ver", mid_body):
        with socket.create_connection((server.host, server.port), timeout=DEADLINE) as raw:
            raw.sendall(partial)
            raw.shutdown(socket.SHUT_WR)
            assert _recv_until_eof(raw) == b""  # closed without an answer: nobody to read it
    assert _still_serving(server)


def test_slow_client_gets_408_and_an_idle_one_is_closed() -> None:
    with run_in_thread(port=0, limits=HttpLimits(timeout=0.5)) as fast:
        address = (fast.host, fast.port)
        with socket.create_connection(address, timeout=DEADLINE) as slow, \
                socket.create_connection(address, timeout=DEADLINE) as idle:
            slow.sendall(b"GET /version HTTP/1.1\r\nHo")
            status, headers, body = _parse(_recv_until_eof(slow))
            assert status == 408
            assert headers["connection"] == "close"
            _one_line_error(body, 408)
            assert _recv_until_eof(idle) == b""
        assert _still_serving(fast)


def test_stop_is_not_held_up_by_a_client_that_never_reads() -> None:
    running = run_in_thread(port=0, limits=HttpLimits(timeout=60.0))
    try:
        with requests.Session() as session:
            session.post(f"{running.url}/proxies", json={"name": "p", "upstream": UPSTREAM},
                         timeout=DEADLINE)
            for i in range(100):  # long names: an answer of ~35 KB
                session.post(f"{running.url}/proxies/p/toxics",
                             json={"type": "latency", "name": f"{i}{'t' * 250}"},
                             timeout=DEADLINE)
        greedy = socket.socket()
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.settimeout(DEADLINE)
        with greedy:
            greedy.connect((running.host, running.port))
            # ~17 MB of answers, far more than the socket buffers hold; none of it is read.
            greedy.sendall(b"GET /proxies/p/toxics HTTP/1.1\r\nHost: x\r\n\r\n" * 500)
            assert greedy.recv(1) == b"H"  # answering: the server has read the requests
            running.stop(timeout=DEADLINE)  # TimeoutError if the server waits on this client
    finally:
        running.stop()
