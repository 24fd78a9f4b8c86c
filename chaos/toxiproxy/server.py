"""A Toxiproxy-compatible server: the HTTP API, its lifecycle, and ways to host it.

``ToxiproxyServer`` runs in an existing event loop (``await start()`` / ``await stop()``);
``run_in_thread`` hosts one in a thread of its own for synchronous code and tests; ``serve``
runs one in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from .http11 import HttpConnection, HttpError, HttpLimits, Request
from .listener import Listener, bind_listener
from .model import (
    ApiError,
    join_host_port,
    parse_new_toxic,
    parse_proxy_config,
    parse_proxy_update,
    parse_toxic_update,
)
from .proxy import Proxy

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8474
# The Toxiproxy API version this server follows; "+squall" marks the implementation.
TOXIPROXY_API_VERSION = "2.9.0+squall"
THREAD_TIMEOUT = 10.0
# At stop(), how long a connection may take to finish the answer it is writing before it is
# cut off (a client that does not read would otherwise hold stop() up).
CLOSE_GRACE = 1.0

Payload = dict[str, Any] | list[Any] | None
Handler = Callable[..., Awaitable[tuple[int, Payload]]]


def _route(path: list[str]) -> tuple[str, tuple[str, ...]] | None:
    match path:
        case ["version"]:
            return "version", ()
        case ["reset"]:
            return "reset", ()
        case ["populate"]:
            return "populate", ()
        case ["proxies"]:
            return "proxies", ()
        case ["proxies", proxy]:
            return "proxy", (proxy,)
        case ["proxies", proxy, "toxics"]:
            return "toxics", (proxy,)
        case ["proxies", proxy, "toxics", toxic]:
            return "toxic", (proxy, toxic)
    return None


def _decode_json(request: Request) -> object:
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"bad request body: {exc}") from exc
    except RecursionError:  # json recurses once per level of nesting
        raise ApiError(400, "bad request body: JSON nested too deeply") from None


def _error_body(status: int, message: str) -> bytes:
    return json.dumps(ApiError(status, message).to_json()).encode()


class ToxiproxyServer:
    """Toxiproxy's HTTP API and the proxies it manages, in the running event loop.

    ``port=0`` picks a free port; after ``start()``, ``port`` is the one bound. Randomness
    (jitter, toxicity, slicer sizes) comes from ``rng``, or from ``random.Random(seed)``.
    ``limits`` bounds what one API client can make the server buffer or wait for.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.rng = rng if rng is not None else random.Random(seed)
        self._limits = limits if limits is not None else HttpLimits()
        self._proxies: dict[str, Proxy] = {}
        self._listener: Listener | None = None
        self._clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        # One API call at a time: a create awaits its listener, and must not race a second
        # create of the same name.
        self._lock = asyncio.Lock()
        self._routes: dict[str, dict[str, Handler]] = {
            "version": {"GET": self._version},
            "reset": {"POST": self._reset},
            "populate": {"POST": self._populate},
            "proxies": {"GET": self._list_proxies, "POST": self._create_proxy},
            "proxy": {
                "GET": self._get_proxy,
                "POST": self._update_proxy,
                "PATCH": self._update_proxy,
                "DELETE": self._delete_proxy,
            },
            "toxics": {"GET": self._list_toxics, "POST": self._create_toxic},
            "toxic": {
                "GET": self._get_toxic,
                "POST": self._update_toxic,
                "PATCH": self._update_toxic,
                "DELETE": self._delete_toxic,
            },
        }

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{join_host_port(self.host, self._port)}"

    async def start(self) -> None:
        address = join_host_port(self.host, self._port)
        try:
            sock = await bind_listener(address)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from exc
        self._listener = Listener(sock, self._serve_connection)
        self._port = self._listener.address[1]
        log.info("toxiproxy API listening on %s", self.url)

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        # Closing a transport ends its handler at its next read, cleanly; one still writing
        # to a client that does not read is cut off after a grace period.
        clients = dict(self._clients)
        for writer in clients.values():
            writer.close()
        if clients:
            _, stuck = await asyncio.wait(clients, timeout=CLOSE_GRACE)
            for task in stuck:
                clients[task].transport.abort()
            await asyncio.gather(*clients, return_exceptions=True)
        for proxy in list(self._proxies.values()):
            await proxy.stop()
        self._proxies.clear()

    async def __aenter__(self) -> ToxiproxyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- HTTP -----------------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._listener is None:  # accepted just before stop()
            writer.close()
            return
        self._clients[task] = writer
        http = HttpConnection(reader, writer, self._limits)
        try:
            while True:
                try:
                    request = await http.next_request()
                except HttpError as exc:
                    await http.refuse(exc, _error_body(exc.status, exc.message))
                    return
                if request is None:
                    return
                status, payload = await self._respond(request)
                body = b"" if payload is None else json.dumps(payload).encode()
                if not await http.respond(status, body):
                    return
        except ConnectionError:
            pass  # the client went away
        except TimeoutError:  # the client does not take its answer: drop what is unsent
            writer.transport.abort()
        finally:
            self._clients.pop(task, None)
            writer.close()

    async def _respond(self, request: Request) -> tuple[int, Payload]:
        # Like Toxiproxy: a browser must not drive the API (a web page could POST to loopback).
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            return 403, ApiError(403, "user agent not allowed").to_json()
        route = _route(request.path)
        if route is None:
            return 404, ApiError(404, "not found").to_json()
        name, params = route
        handler = self._routes[name].get(request.method)
        if handler is None:
            return 405, ApiError(405, f"method {request.method} not allowed").to_json()
        try:
            async with self._lock:
                return await handler(request, *params)
        except ApiError as exc:
            return exc.status, exc.to_json()
        except Exception as exc:  # the server must outlive a bug in one handler
            log.exception("toxiproxy API %s %s failed", request.method, "/".join(request.path))
            return 500, ApiError(500, f"internal error: {exc}").to_json()

    # --- handlers -------------------------------------------------------------------------

    def _proxy(self, name: str) -> Proxy:
        proxy = self._proxies.get(name)
        if proxy is None:
            raise ApiError(404, "proxy not found")
        return proxy

    async def _new_proxy(self, body: object) -> Proxy:
        config = parse_proxy_config(body)
        if config.name in self._proxies:
            raise ApiError(409, "proxy already exists")
        proxy = Proxy(config.name, config.listen, config.upstream, self.rng)
        if config.enabled:
            await proxy.start()
        self._proxies[proxy.name] = proxy
        return proxy

    async def _version(self, request: Request) -> tuple[int, Payload]:
        return 200, {"version": TOXIPROXY_API_VERSION}

    async def _reset(self, request: Request) -> tuple[int, Payload]:
        failure: ApiError | None = None
        for proxy in self._proxies.values():
            proxy.clear_toxics()
            try:
                await proxy.start()
            except ApiError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return 204, None

    async def _list_proxies(self, request: Request) -> tuple[int, Payload]:
        return 200, {name: proxy.to_json() for name, proxy in self._proxies.items()}

    async def _create_proxy(self, request: Request) -> tuple[int, Payload]:
        proxy = await self._new_proxy(_decode_json(request))
        return 201, proxy.to_json()

    async def _populate(self, request: Request) -> tuple[int, Payload]:
        body = _decode_json(request)
        if not isinstance(body, list):
            raise ApiError(400, "bad request body: expected a JSON array of proxies")
        configs = [parse_proxy_config(item) for item in body]  # all valid, or change nothing
        done: list[Proxy] = []
        for config, item in zip(configs, body, strict=True):
            try:
                existing = self._proxies.get(config.name)
                if existing is not None and (
                    config.listen not in (existing.listen, existing.requested_listen)
                    or config.upstream != existing.upstream
                ):
                    await existing.stop()
                    del self._proxies[config.name]
                    existing = None
                if existing is None:
                    done.append(await self._new_proxy(item))
                else:
                    await existing.update(None, None, config.enabled)
                    done.append(existing)
            except ApiError as exc:
                # Like Toxiproxy: the error, plus what was populated before it.
                return exc.status, {**exc.to_json(), "proxies": [p.to_json() for p in done]}
        return 201, {"proxies": [proxy.to_json() for proxy in done]}

    async def _get_proxy(self, request: Request, name: str) -> tuple[int, Payload]:
        return 200, self._proxy(name).to_json()

    async def _update_proxy(self, request: Request, name: str) -> tuple[int, Payload]:
        proxy = self._proxy(name)
        update = parse_proxy_update(name, _decode_json(request))
        await proxy.update(update.listen, update.upstream, update.enabled)
        return 200, proxy.to_json()

    async def _delete_proxy(self, request: Request, name: str) -> tuple[int, Payload]:
        proxy = self._proxy(name)
        await proxy.stop()
        del self._proxies[name]
        return 204, None

    async def _list_toxics(self, request: Request, name: str) -> tuple[int, Payload]:
        return 200, [toxic.to_json() for toxic in self._proxy(name).toxics]

    async def _create_toxic(self, request: Request, name: str) -> tuple[int, Payload]:
        proxy = self._proxy(name)
        toxic = parse_new_toxic(_decode_json(request))
        proxy.add_toxic(toxic)
        return 200, toxic.to_json()

    async def _get_toxic(self, request: Request, name: str, toxic: str) -> tuple[int, Payload]:
        return 200, self._proxy(name).find_toxic(toxic).to_json()

    async def _update_toxic(
        self, request: Request, name: str, toxic_name: str
    ) -> tuple[int, Payload]:
        proxy = self._proxy(name)
        old = proxy.find_toxic(toxic_name)
        new = parse_toxic_update(old, _decode_json(request))
        proxy.replace_toxic(old, new)
        return 200, new.to_json()

    async def _delete_toxic(self, request: Request, name: str, toxic: str) -> tuple[int, Payload]:
        self._proxy(name).remove_toxic(toxic)
        return 204, None


class ThreadedToxiproxyServer:
    """A ``ToxiproxyServer`` in a daemon thread with its own event loop.

    Use as a context manager, or call ``start()`` / ``stop()``. ``start()`` returns once the
    API is listening (or raises what prevented it).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        self.server = ToxiproxyServer(host, port, seed=seed, rng=rng, limits=limits)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, timeout: float = THREAD_TIMEOUT) -> None:
        if self._thread is not None:
            raise RuntimeError("this toxiproxy server was already started")
        self._thread = threading.Thread(target=self._run, name="squall-toxiproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"toxiproxy server did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error

    def stop(self, timeout: float = THREAD_TIMEOUT) -> None:
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is None or stopping is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"toxiproxy server did not stop within {timeout} s")

    def _run(self) -> None:
        # asyncio.run, not a bare loop: it also finishes what closing sockets leaves pending.
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:  # handed to the thread that called start()
            self._error = exc
            return
        finally:
            self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.server.stop()

    def __enter__(self) -> ThreadedToxiproxyServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    seed: int | None = None,
    rng: random.Random | None = None,
    limits: HttpLimits | None = None,
) -> ThreadedToxiproxyServer:
    """Start a server in a thread; it is listening when this returns.

    ``with run_in_thread(port=0) as server: ...`` stops it at the end of the block.
    """
    threaded = ThreadedToxiproxyServer(host, port, seed=seed, rng=rng, limits=limits)
    threaded.start()
    return threaded


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    seed: int | None = None,
    on_ready: Callable[[ToxiproxyServer], None] | None = None,
) -> None:
    """Run a server in the foreground until SIGINT or SIGTERM, then stop it cleanly.

    Raises OSError (with the address in its message) when the API port cannot be bound.
    ``on_ready`` is called once the API listens, e.g. to print the port chosen for port 0.
    """
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, seed, on_ready))


async def _serve(
    host: str,
    port: int,
    seed: int | None,
    on_ready: Callable[[ToxiproxyServer], None] | None,
) -> None:
    server = ToxiproxyServer(host, port, seed=seed)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available off the main thread or on Windows; Ctrl-C still ends asyncio.run.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stopping.set)
    try:
        if on_ready is not None:
            on_ready(server)
        await stopping.wait()
    finally:
        await server.stop()
