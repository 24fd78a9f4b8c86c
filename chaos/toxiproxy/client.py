"""Point the toxiproxy-python client at a Toxiproxy API: a real server or the built-in one.

toxiproxy-python keeps the server address in class attributes, so the address set here holds
for every ``toxiproxy.Toxiproxy`` in the process: one Toxiproxy API per process at a time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import urlsplit

import toxiproxy

from .server import DEFAULT_PORT, run_in_thread

TOXIPROXY_URL_ENV = "TOXIPROXY_URL"


class HasAddress(Protocol):
    """A server object with the address of its API (``ToxiproxyServer`` and its thread host)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def _parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"bad Toxiproxy URL {url!r}: {exc}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"bad Toxiproxy URL {url!r}: expected http://host:port")
    return parts.hostname, port


def _client_host(host: str) -> str:
    # The client builds "http://%s:%s": an IPv6 literal needs its brackets, and a server
    # bound to every interface is reached on loopback.
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def connect_client(target: str | HasAddress | None = None) -> toxiproxy.Toxiproxy:
    """A ``toxiproxy.Toxiproxy`` talking to ``target``: a URL or a (built-in) server object.

    With no target, the URL comes from the TOXIPROXY_URL environment variable (a real
    toxiproxy-server); ValueError if it is unset or malformed.
    """
    if target is None:
        url = os.environ.get(TOXIPROXY_URL_ENV)
        if not url:
            raise ValueError(
                f"no Toxiproxy server: set {TOXIPROXY_URL_ENV} (e.g. http://127.0.0.1:8474) "
                "or pass a server"
            )
        host, port = _parse_url(url)
    elif isinstance(target, str):
        host, port = _parse_url(target)
    else:
        host, port = target.host, target.port
    client = toxiproxy.Toxiproxy()
    client.update_api_consumer(_client_host(host), port)
    return client


@contextlib.contextmanager
def toxiproxy_client(seed: int | None = None) -> Iterator[toxiproxy.Toxiproxy]:
    """A client for the configured real server (TOXIPROXY_URL), else for a built-in server
    started on a free loopback port for the duration of the block."""
    if os.environ.get(TOXIPROXY_URL_ENV):
        yield connect_client()
        return
    with run_in_thread(port=0, rng=random.Random(seed)) as server:
        yield connect_client(server)
