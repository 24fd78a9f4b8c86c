"""Network faults in real mode: every link a worker opens goes through its own proxy.

A ``ProxyNetwork`` owns the Toxiproxy proxies of one ``LocalCluster(proxy=True)`` and is
the only thing that configures them, through the toxiproxy-python client: a real
toxiproxy-server when TOXIPROXY_URL names one, else squall's built-in server, started in
a process of its own (``start_builtin_server``) so that proxying costs no time in the
caller's process.

One proxy per connection a worker opens, named ``<prefix><worker>~scheduler`` (its
connection to the scheduler) and ``<prefix><a>~<b>`` (a's connection to peer b's data
socket). On a proxy from ``a`` to ``b``, Toxiproxy's upstream stream carries what a sends
to b and the downstream stream what b sends to a. So a directed link ``(src, dst)`` maps
onto two proxies: the upstream of ``src~dst`` and the downstream of ``dst~src``.

``set_link(src, dst, latency=, jitter=, bandwidth=, down=)`` keeps a table of directed
links resolved as in the simulator (each field from the most specific entry that sets
it: exact pair, then ``(src, "*")``, ``("*", dst)``, ``("*", "*")``) and brings every proxy
to what the table says: a latency toxic (latency,
jitter), a bandwidth toxic (rate), and ``down`` as the proxy disabled -- which closes its
connections and refuses new ones, both ways, until it is enabled again (on the same port).

Workers learn where to connect by looking their proxy up by name (``lookup_route``):
the proxies of a worker name exist before its process starts, so the lookup never misses.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from squall.chaos.toxiproxy.model import join_host_port
from squall.core.lifeline import die_with_parent, forked_from_main_thread

SCHEDULER = "scheduler"
SEP = "~"


@dataclass(frozen=True)
class LinkSettings:
    latency: float = 0.0  # seconds added, on top of what the network has
    jitter: float = 0.0  # seconds, +-
    bandwidth: float | None = None  # bytes/s; None: unlimited
    down: bool = False


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def _stream_toxics(link: LinkSettings) -> dict[str, tuple[str, dict[str, int]]]:
    """Toxic name suffix -> (type, attributes) a link's settings call for."""
    out: dict[str, tuple[str, dict[str, int]]] = {}
    if _ms(link.latency) or _ms(link.jitter):
        out["latency"] = ("latency", {"latency": _ms(link.latency), "jitter": _ms(link.jitter)})
    if link.bandwidth is not None:
        # Toxiproxy's rate is in KB/s (1 KB = 1000 bytes); 0 would mean unlimited.
        out["bandwidth"] = ("bandwidth", {"rate": max(1, int(link.bandwidth // 1000))})
    return out


class _Route:
    """One proxy: the connection ``client`` opens to ``server``, and what is applied."""

    __slots__ = ("client", "server", "proxy", "toxics", "enabled")

    def __init__(self, client: str, server: str, proxy: Any) -> None:
        self.client = client
        self.server = server
        self.proxy = proxy
        self.toxics: dict[str, tuple[str, dict[str, int]]] = {}  # toxic name -> applied
        self.enabled = True


class ProxyNetwork:
    """The proxies of one cluster; ``set_link`` changes them, ``close`` removes them."""

    def __init__(self, api_url: str, *, host: str = "127.0.0.1", prefix: str = "") -> None:
        from squall.chaos.toxiproxy import connect_client

        self.api_url = api_url
        self.client = connect_client(api_url)
        self.host = host
        self.prefix = prefix
        self.links: dict[tuple[str, str], dict[str, Any]] = {}  # (src, dst) -> fields set
        self.routes: dict[str, _Route] = {}  # proxy name -> route
        self.endpoints: dict[str, str] = {}  # server end name -> "host:port" upstream

    # ------------------------------------------------------------------ topology

    def proxy_name(self, client: str, server: str) -> str:
        return f"{self.prefix}{client}{SEP}{server}"

    def add_endpoint(self, name: str, address: str) -> None:
        """Proxies from every known worker to ``name`` (a worker, or the scheduler) at
        ``address`` ("host:port"); and, for a worker, from it to every known endpoint."""
        if name in self.endpoints:
            return
        known = [n for n in self.endpoints if n != SCHEDULER]
        self.endpoints[name] = address
        if name == SCHEDULER:
            for w in known:
                self._route(w, SCHEDULER)
            return
        for w in known:
            self._route(w, name)
            self._route(name, w)
        if SCHEDULER in self.endpoints:
            self._route(name, SCHEDULER)

    def _route(self, client: str, server: str) -> None:
        name = self.proxy_name(client, server)
        if name in self.routes:
            return
        existing = self.client.get_proxy(name)
        if existing is not None:  # left over on a shared server by an earlier run
            existing.destroy()
        proxy = self.client.create(upstream=self.endpoints[server], name=name,
                                   listen=f"{self.host}:0", enabled=True)
        route = self.routes[name] = _Route(client, server, proxy)
        self._apply(route)

    def listen(self, client: str, server: str) -> str:
        """Where ``client`` connects to reach ``server`` ("host:port")."""
        return str(self.routes[self.proxy_name(client, server)].proxy.listen)

    # ------------------------------------------------------------------ link settings

    def link(self, src: str, dst: str) -> LinkSettings:
        links = self.links
        fields: dict[str, Any] = {}
        for key in (("*", "*"), ("*", dst), (src, "*"), (src, dst)):  # most specific last
            fields.update(links.get(key, {}))
        return LinkSettings(**fields)

    def set_link(self, src: str, dst: str, *, latency: float | None = None,
                 jitter: float | None = None, bandwidth: float | None = None,
                 down: bool | None = None) -> None:
        """Change the directed link(s) from ``src`` to ``dst`` (a worker, "scheduler" or
        "*"); a field left as None keeps its value."""
        entry = self.links.setdefault((src, dst), {})
        for field, value in (("latency", latency), ("jitter", jitter),
                             ("bandwidth", bandwidth), ("down", down)):
            if value is not None:
                entry[field] = value
        for route in self.routes.values():
            self._apply(route)

    def _apply(self, route: _Route) -> None:
        """Bring one proxy to what the link table says (only what differs is sent)."""
        up = self.link(route.client, route.server)
        down = self.link(route.server, route.client)
        want: dict[str, tuple[str, dict[str, int]]] = {}
        for stream, link in (("upstream", up), ("downstream", down)):
            for kind, spec in _stream_toxics(link).items():
                want[f"{kind}_{stream}"] = spec
        proxy = route.proxy
        for name, spec in list(route.toxics.items()):
            if want.get(name) != spec:
                proxy.destroy_toxic(name)
                del route.toxics[name]
        for name, (kind, attributes) in want.items():
            if name not in route.toxics:
                proxy.add_toxic(name=name, type=kind, stream=name.rsplit("_", 1)[1],
                                attributes=attributes)
                route.toxics[name] = (kind, attributes)
        enabled = not (up.down or down.down)
        if enabled != route.enabled:
            if enabled:
                proxy.enable()
            else:
                proxy.disable()
            route.enabled = enabled

    def close(self) -> None:
        for route in self.routes.values():
            try:
                route.proxy.destroy()
            except Exception:  # the server is gone already
                pass
        self.routes.clear()


# ------------------------------------------------------------------ the worker's side


def lookup_route(api_url: str, name: str, timeout: float = 5.0) -> str | None:
    """The "host:port" proxy ``name`` listens on, or None if there is no such proxy.

    Used by worker processes: a plain HTTP GET, nothing to import but the standard library.
    """
    url = f"{api_url.rstrip('/')}/proxies/{urllib.parse.quote(name, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
    listen = body.get("listen") if isinstance(body, dict) else None
    return str(listen) if listen else None


# ------------------------------------------------------------------ ports and the server


def free_port(host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """A free TCP port *below* the kernel's ephemeral range, so that no socket bound to port
    0 meanwhile (a proxy's, say) can take it before the process it is meant for binds it."""
    lo, hi = _ephemeral_range()
    start, end = (20000, lo) if lo > 21000 else (hi + 1, 65535)
    rng = rng or random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
    for _ in range(200):
        port = rng.randrange(start, end)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # "::1": IPv6
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise OSError(f"no free port found on {host} between {start} and {end}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


class BuiltinServer:
    """squall's Toxiproxy-compatible server in a child process, on a free loopback port."""

    def __init__(self, host: str = "127.0.0.1", seed: int | None = None,
                 timeout: float = 10.0) -> None:
        ctx: Any = multiprocessing.get_context(
            "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        parent, child = ctx.Pipe(duplex=False)
        # The server exits when this end closes: when this process dies, however it dies
        # (and at once, with the kernel's parent-death signal: see squall.core.lifeline).
        alive, self._alive = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_server_main, args=(host, seed, child, alive,
                                                              self._alive,
                                                              forked_from_main_thread()),
                                   name="squall-toxiproxy", daemon=True)
        self.process.start()
        child.close()
        alive.close()
        if not parent.poll(timeout):
            self.stop()
            raise RuntimeError(f"the built-in toxiproxy server did not start within {timeout} s")
        status, value = parent.recv()
        parent.close()
        if status != "ok":
            self.stop()
            raise RuntimeError(f"the built-in toxiproxy server failed: {value}")
        self.url = f"http://{join_host_port(host, value)}"  # "[::1]:PORT" for IPv6

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5.0)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self._alive.close()


def _exit_with_parent(alive: Any) -> None:
    """Block until the parent's end of ``alive`` closes, then end this process."""
    try:
        alive.recv()
    except (EOFError, OSError):
        pass
    os._exit(0)


def _server_main(host: str, seed: int | None, conn: Any, alive: Any = None,
                 parent_end: Any = None, lifeline: bool = False) -> None:
    import threading

    from squall.chaos.toxiproxy import serve

    if lifeline:
        die_with_parent()
    if parent_end is not None:
        parent_end.close()  # (inherited with fork) so that only the parent holds it open
    if alive is not None:
        threading.Thread(target=_exit_with_parent, args=(alive,), name="parent-watch",
                         daemon=True).start()

    def ready(server: Any) -> None:
        conn.send(("ok", server.port))
        conn.close()

    try:
        serve(host, 0, seed=seed, on_ready=ready)
    except Exception as e:  # reported to the parent in one line
        conn.send(("error", f"{type(e).__name__}: {e}".splitlines()[0]))
