"""The built-in Toxiproxy server, driven through the unchanged toxiproxy-python client.

Proxies and toxics are managed with ``toxiproxy.Toxiproxy`` / ``toxiproxy.Proxy`` (and, for
endpoints the client has no method for, its own ``APIConsumer``). Traffic goes through a
loopback echo server. Every wait is a socket timeout (a deadline), never a sleep; timing
bounds are loose because the machine is small and shared.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from squall.chaos.toxiproxy import (
    TOXIPROXY_API_VERSION,
    TOXIPROXY_URL_ENV,
    ThreadedToxiproxyServer,
    ToxiproxyServer,
    connect_client,
    run_in_thread,
    toxiproxy_client,
)

DEADLINE = 5.0  # the longest any test waits for a condition
SLACK = 0.5  # allowance on top of an expected delay, for two noisy shared cores


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    echo = _EchoServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=echo.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{echo.server_address[1]}"
    echo.shutdown()
    echo.server_close()
    thread.join(DEADLINE)


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedToxiproxyServer]:
    with run_in_thread(port=0, seed=1234) as running:
        yield running


@pytest.fixture
def client(server: ThreadedToxiproxyServer) -> Iterator[toxiproxy.Toxiproxy]:
    yield connect_client(server)
    connect_client(server).destroy_all()  # a test may have pointed the client elsewhere


@pytest.fixture
def proxy(client: toxiproxy.Toxiproxy, upstream: str) -> toxiproxy.Proxy:
    return client.create(upstream=upstream, name="echo")


def _address(proxy: toxiproxy.Proxy) -> tuple[str, int]:
    host, _, port = proxy.listen.rpartition(":")
    return host, int(port)


def _connect(proxy: toxiproxy.Proxy) -> socket.socket:
    return socket.create_connection(_address(proxy), timeout=DEADLINE)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _recv_until_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.monotonic()
    sock.sendall(payload)
    assert _recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - start


def _error_body(exc: BaseException) -> dict[str, Any]:
    # The client raises its exceptions with the response body as the only argument.
    return json.loads(exc.args[0])


# --- proxies ------------------------------------------------------------------------------


def test_version_and_running(client: toxiproxy.Toxiproxy) -> None:
    assert client.running()
    assert json.loads(client.version()) == {"version": TOXIPROXY_API_VERSION}


def test_create_list_get_destroy(client: toxiproxy.Toxiproxy, upstream: str) -> None:
    created = client.create(upstream=upstream, name="echo")
    host, port = _address(created)
    assert (host, created.enabled, created.upstream) == ("127.0.0.1", True, upstream)
    assert port != 0  # listen 127.0.0.1:0 reports the port actually bound

    assert set(client.proxies()) == {"echo"}
    body = APIConsumer.get("/proxies/echo").json()
    assert body == {
        "name": "echo",
        "listen": created.listen,
        "upstream": upstream,
        "enabled": True,
        "toxics": [],
    }
    with _connect(created) as sock:
        _round_trip(sock)

    assert created.destroy()
    assert client.get_proxy("echo") is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=DEADLINE)


def test_disable_closes_connections_and_enable_reopens(
    client: toxiproxy.Toxiproxy, proxy: toxiproxy.Proxy
) -> None:
    address = _address(proxy)
    with _connect(proxy) as sock:
        _round_trip(sock)
        proxy.disable()
        assert sock.recv(16) == b""  # the open connection was closed
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=DEADLINE)
    assert client.get_proxy("echo").enabled is False

    proxy.enable()
    assert client.get_proxy("echo").listen == proxy.listen  # same port again
    with _connect(proxy) as sock:
        _round_trip(sock)

    with proxy.down():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=DEADLINE)
    with _connect(proxy) as sock:
        _round_trip(sock)


def test_reset_enables_proxies_and_removes_toxics(
    client: toxiproxy.Toxiproxy, proxy: toxiproxy.Proxy
) -> None:
    proxy.add_toxic(type="latency", attributes={"latency": 1000})
    proxy.disable()
    assert client.reset()
    again = client.get_proxy("echo")
    assert again.enabled is True
    assert again.toxics() == {}
    with _connect(proxy) as sock:
        assert _round_trip(sock) < 1.0


def test_populate(client: toxiproxy.Toxiproxy, upstream: str) -> None:
    response = APIConsumer.post(
        "/populate",
        json=[
            {"name": "a", "upstream": upstream},
            {"name": "b", "upstream": upstream, "listen": "127.0.0.1:0", "enabled": False},
        ],
    )
    assert response.status_code == 201
    populated = {p["name"]: p for p in response.json()["proxies"]}
    assert set(populated) == {"a", "b"}
    assert not populated["a"]["listen"].endswith(":0")
    assert populated["b"]["enabled"] is False

    # The same config again keeps the existing proxy (and its port).
    again = APIConsumer.post("/populate", json=[{"name": "a", "upstream": upstream}])
    assert again.json()["proxies"][0]["listen"] == populated["a"]["listen"]

    # toxiproxy-python populates client-side, through POST /proxies.
    client.populate([{"name": "c", "upstream": upstream, "listen": "127.0.0.1:0"}])
    assert set(client.proxies()) == {"a", "b", "c"}
    with _connect(client.get_proxy("c")) as sock:
        _round_trip(sock)


# --- toxics -------------------------------------------------------------------------------


def test_latency_applies_to_open_connection(proxy: toxiproxy.Proxy) -> None:
    with _connect(proxy) as sock:
        assert _round_trip(sock) < SLACK
        proxy.add_toxic(type="latency", attributes={"latency": 100})
        assert proxy.get_toxic("latency_downstream").attributes == {"latency": 100, "jitter": 0}
        for _ in range(3):
            assert 0.1 <= _round_trip(sock) < 0.1 + SLACK

        # Updating a toxic (POST and PATCH both do) changes it for new data too.
        url = "/proxies/echo/toxics/latency_downstream"
        assert APIConsumer.post(url, json={"attributes": {"latency": 200}}).status_code == 200
        assert 0.2 <= _round_trip(sock) < 0.2 + SLACK
        patch = requests.patch(
            f"http://{APIConsumer.host}:{APIConsumer.port}{url}", json={"toxicity": 0.0}
        )
        assert patch.json()["toxicity"] == 0.0
        assert _round_trip(sock) < SLACK

        proxy.destroy_toxic("latency_downstream")
        assert _round_trip(sock) < SLACK


def test_latency_with_jitter_and_upstream_stream(proxy: toxiproxy.Proxy) -> None:
    proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 100, "jitter": 50})
    with _connect(proxy) as sock:
        for _ in range(4):
            assert 0.05 <= _round_trip(sock) < 0.15 + SLACK


def test_toxicity_zero_never_applies(proxy: toxiproxy.Proxy) -> None:
    proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 2000})
    with _connect(proxy) as sock:
        assert _round_trip(sock) < SLACK


def test_bandwidth(proxy: toxiproxy.Proxy) -> None:
    proxy.add_toxic(type="bandwidth", attributes={"rate": 100})  # 100 KB/s
    payload = bytes(range(256)) * 196  # ~50 KB: ~0.5 s at 100 KB/s
    with _connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        assert _recv_exactly(sock, len(payload)) == payload
        elapsed = time.monotonic() - start
    assert 0.45 <= elapsed < 0.5 + 2 * SLACK


def test_timeout_zero_drops_data_until_removed(proxy: toxiproxy.Proxy) -> None:
    with _connect(proxy) as sock:
        _round_trip(sock)
        proxy.add_toxic(type="timeout", attributes={"timeout": 0})
        sock.sendall(b"lost")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        sock.settimeout(DEADLINE)
        proxy.destroy_toxic("timeout_downstream")
        sock.sendall(b"back")
        assert _recv_exactly(sock, 4) == b"back"  # what came during the toxic is gone


def test_timeout_closes_connection(proxy: toxiproxy.Proxy) -> None:
    proxy.add_toxic(type="timeout", attributes={"timeout": 200})
    start = time.monotonic()
    with _connect(proxy) as sock:
        assert sock.recv(16) == b""
    assert 0.2 <= time.monotonic() - start < 0.2 + SLACK


def test_reset_peer_on_open_connection(proxy: toxiproxy.Proxy) -> None:
    with _connect(proxy) as sock:
        _round_trip(sock)
        start = time.monotonic()
        proxy.add_toxic(type="reset_peer", attributes={"timeout": 100})
        with pytest.raises(ConnectionResetError):
            sock.recv(16)
    assert 0.1 <= time.monotonic() - start < 0.1 + SLACK


def test_limit_data(proxy: toxiproxy.Proxy) -> None:
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    with _connect(proxy) as sock:
        sock.sendall(bytes(range(100)))
        assert _recv_until_eof(sock) == bytes(range(10))


def test_slicer(proxy: toxiproxy.Proxy) -> None:
    # Slices of 5..15 bytes, 50 ms apart: 50 bytes make at least 4 slices, so >= 150 ms.
    attributes = {"average_size": 10, "size_variation": 5, "delay": 50_000}
    proxy.add_toxic(type="slicer", attributes=attributes)
    payload = b"0123456789" * 5
    with _connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        reads = []
        while sum(map(len, reads)) < len(payload):
            reads.append(sock.recv(65536))
            assert reads[-1]
        elapsed = time.monotonic() - start
    assert b"".join(reads) == payload
    assert len(reads) >= 2
    assert 0.15 <= elapsed < 0.5 + 2 * SLACK


def test_slow_close(proxy: toxiproxy.Proxy) -> None:
    proxy.add_toxic(type="slow_close", attributes={"delay": 300})
    with _connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)  # the echo server closes in turn
        assert _recv_exactly(sock, 3) == b"bye"
        data_at = time.monotonic() - start
        assert sock.recv(16) == b""
        closed_at = time.monotonic() - start
    assert data_at < 0.3  # data is not held back, only the close
    assert 0.3 <= closed_at < 0.3 + SLACK


def test_toxicity_draws_follow_the_seed(upstream: str) -> None:
    # limit_data of 0 bytes closes a connection at its first data: a poisoned connection
    # answers EOF, a spared one echoes. The same seed must poison the same connections.
    def poisoned_pattern(seed: int) -> list[bool]:
        with run_in_thread(port=0, seed=seed) as running:
            client = connect_client(running)
            seeded = client.create(upstream=upstream, name="seeded")
            seeded.add_toxic(type="limit_data", toxicity=0.5, attributes={"bytes": 0})
            pattern = []
            for _ in range(12):
                with _connect(seeded) as sock:
                    sock.sendall(b"x")
                    pattern.append(sock.recv(16) == b"")
            return pattern

    first = poisoned_pattern(7)
    assert first == poisoned_pattern(7)
    assert any(first) and not all(first)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toxic", "message"),
    [
        ({"type": "nonsense"}, "invalid toxic type"),
        ({"type": "latency", "attributes": {"latency": -1}}, "must not be negative"),
        ({"type": "latency", "attributes": {"latency": "100"}}, "must be an integer"),
        ({"type": "latency", "attributes": {"latency": 2**63}}, "must be at most"),  # int64
        ({"type": "latency", "attributes": {"latence": 100}}, "no attribute"),
        ({"type": "latency", "stream": "sideways"}, "stream was invalid"),
        ({"type": "latency", "toxicity": 1.5}, "toxicity"),
    ],
)
def test_bad_toxic_is_400(proxy: toxiproxy.Proxy, toxic: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidToxic) as raised:
        proxy.add_toxic(**toxic)
    body = _error_body(raised.value)
    assert body["status"] == 400
    assert message in body["error"]
    assert proxy.toxics() == {}


def test_conflicts_and_missing_things(proxy: toxiproxy.Proxy, upstream: str) -> None:
    proxy.add_toxic(type="latency")
    with pytest.raises(ProxyExists) as raised:  # the client's name for every 409
        proxy.add_toxic(type="latency")
    assert _error_body(raised.value) == {"error": "toxic already exists", "status": 409}

    # toxiproxy-python checks for a duplicate proxy itself; ask the server directly.
    with pytest.raises(ProxyExists) as raised:
        APIConsumer.post("/proxies", json={"name": "echo", "upstream": upstream})
    assert _error_body(raised.value) == {"error": "proxy already exists", "status": 409}

    ghost = toxiproxy.Proxy(name="ghost", upstream=upstream, enabled=True, listen="x:1")
    with pytest.raises(NotFound) as raised:
        ghost.add_toxic(type="latency")
    assert _error_body(raised.value) == {"error": "proxy not found", "status": 404}
    with pytest.raises(NotFound):
        APIConsumer.get("/proxies/ghost")
    with pytest.raises(NotFound) as raised:
        proxy.destroy_toxic("no_such_toxic")
    assert _error_body(raised.value) == {"error": "toxic not found", "status": 404}


def test_bad_requests_leave_the_server_serving(
    client: toxiproxy.Toxiproxy, proxy: toxiproxy.Proxy, upstream: str
) -> None:
    with pytest.raises(InvalidToxic) as raised:
        APIConsumer.post("/proxies", data=b"{not json")
    assert _error_body(raised.value)["status"] == 400
    with pytest.raises(InvalidToxic) as raised:
        APIConsumer.post("/proxies", json={"name": "no-upstream"})
    assert _error_body(raised.value) == {"error": "missing required field: upstream", "status": 400}

    # A port in use is a 500, as in Toxiproxy; the client raises nothing for a 500.
    clash = APIConsumer.post(
        "/proxies", json={"name": "clash", "upstream": upstream, "listen": proxy.listen}
    )
    assert clash.status_code == 500
    assert clash.json()["status"] == 500 and "in use" in clash.json()["error"]
    assert set(client.proxies()) == {"echo"}

    base = f"http://{APIConsumer.host}:{APIConsumer.port}"
    assert requests.get(f"{base}/nowhere").status_code == 404
    assert requests.put(f"{base}/proxies").json() == {
        "error": "method PUT not allowed",
        "status": 405,
    }
    assert requests.get(f"{base}/version", headers={"User-Agent": "Mozilla/5.0"}).status_code == 403

    with socket.create_connection((APIConsumer.host, APIConsumer.port), timeout=DEADLINE) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert _recv_until_eof(raw).startswith(b"HTTP/1.1 400 ")

    assert json.loads(client.version())["version"] == TOXIPROXY_API_VERSION
    with _connect(proxy) as sock:
        _round_trip(sock)


def test_keep_alive_serves_several_requests(server: ThreadedToxiproxyServer) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=DEADLINE)
    try:
        for _ in range(3):
            conn.request("GET", "/version")
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["version"] == TOXIPROXY_API_VERSION
        conn.request("POST", "/reset")
        assert conn.getresponse().status == 204
    finally:
        conn.close()


# --- hosting and the client ---------------------------------------------------------------


def test_thread_host_lifecycle() -> None:
    with run_in_thread(port=0) as running:
        port = running.port
        assert port != 0
        assert connect_client(running).running()
        with pytest.raises(OSError, match="cannot listen"):
            run_in_thread(port=port)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)


def test_async_server_in_a_running_loop() -> None:
    async def version_over_raw_http() -> bytes:
        async with ToxiproxyServer(port=0) as api:
            reader, writer = await asyncio.open_connection(api.host, api.port)
            writer.write(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = await asyncio.wait_for(reader.read(), DEADLINE)
            writer.close()
            return response

    response = asyncio.run(version_over_raw_http())
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(json.dumps({"version": TOXIPROXY_API_VERSION}).encode())


def test_connect_client_from_env(
    server: ThreadedToxiproxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOXIPROXY_URL_ENV, server.url)
    assert json.loads(connect_client().version())["version"] == TOXIPROXY_API_VERSION
    assert (APIConsumer.host, APIConsumer.port) == ("127.0.0.1", server.port)
    with toxiproxy_client() as from_env:
        assert from_env.running() and APIConsumer.port == server.port

    monkeypatch.delenv(TOXIPROXY_URL_ENV)
    with pytest.raises(ValueError, match=TOXIPROXY_URL_ENV):
        connect_client()
    with pytest.raises(ValueError, match="bad Toxiproxy URL"):
        connect_client("ftp://127.0.0.1:8474")
    with toxiproxy_client(seed=3) as built_in:  # no real server configured: a built-in one
        assert built_in.running() and APIConsumer.port != server.port
