"""What runs in dask's nanny and worker processes for squall (imports distributed).

``SquallNanny``: a ``distributed.Nanny`` whose worker process reaches the scheduler at
``scheduler_via`` (its own proxy) while the nanny itself talks to the scheduler directly,
so cutting a worker's link never cuts its nanny's.

``PeerRoutes``: a ``WorkerPlugin`` that, inside the worker process, sends each connection
the worker opens to a peer through the proxy of that pair. The proxies are named
``<prefix><worker>~<peer>`` by ``squall.chaos.network.ProxyNetwork``; the worker knows a
peer only by its address, so it asks the Toxiproxy API once per address which of its own
proxies leads there (none: it connects directly -- its nanny, say).

``DieWithParent``: a ``WorkerPlugin`` that has the kernel SIGKILL the worker process when
the process that started it dies (Linux). dask's own watch (a pipe from the parent) needs
the worker to run; a worker squall paused with SIGSTOP does not, and would outlive it.

``WorkerStimulusLog``: a ``WorkerPlugin`` that sends every stimulus the worker's state
machine handles to the scheduler, for the trace (``squall.targets.dask.stimuli``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
import urllib.request
from typing import Any

import msgspec
from distributed import Nanny
from distributed.diagnostics.plugin import WorkerPlugin

from squall.core.lifeline import die_with_parent
from squall.targets.dask.stimuli import WORKER_TOPIC


class SquallNanny(Nanny):
    """A Nanny whose worker reaches the scheduler at ``scheduler_via`` (if given)."""

    def __init__(self, scheduler_ip: Any = None, *args: Any, scheduler_via: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(scheduler_ip, *args, **kwargs)
        if scheduler_via:
            self.worker_kwargs["scheduler_ip"] = scheduler_via


class DieWithParent(WorkerPlugin):
    """SIGKILL from the kernel when the worker's parent dies (Linux; elsewhere a no-op)."""

    name = "squall-die-with-parent"

    def setup(self, worker: Any) -> None:
        die_with_parent()


class PeerRoutes(WorkerPlugin):
    """Routes the worker's connections to peers through its per-pair proxies."""

    name = "squall-peer-routes"

    def __init__(self, api_url: str, prefix: str, worker: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.own = f"{prefix}{worker}~"  # the names of this worker's proxies start so
        self.routes: dict[str, str] = {}  # peer address -> where to connect ("": directly)

    def setup(self, worker: Any) -> None:
        import distributed.core as core

        direct = core.connect
        routes = self.routes

        async def connect(addr: str, *args: Any, **kwargs: Any) -> Any:
            route = routes.get(addr)
            if route is None:
                route = await asyncio.to_thread(self.lookup, addr)
                if route is not None:
                    routes[addr] = route
            return await direct(route or addr, *args, **kwargs)

        core.connect = connect

    def lookup(self, addr: str) -> str | None:
        """The proxy address of this worker's proxy to ``addr``; "" if it has none; None if
        the API could not be asked (ask again next time)."""
        scheme, _, hostport = addr.rpartition("://")
        try:
            with urllib.request.urlopen(f"{self.api_url}/proxies", timeout=5.0) as resp:
                proxies = json.loads(resp.read())
        except (OSError, ValueError):
            return None
        for name, proxy in proxies.items():
            if name.startswith(self.own) and proxy.get("upstream") == hostport:
                return f"{scheme or 'tcp'}://{proxy['listen']}"
        return ""


class WorkerStimulusLog(WorkerPlugin):
    """Sends every stimulus the worker's state machine handles to the scheduler on
    ``WORKER_TOPIC`` (see ``squall.targets.dask.stimuli``)."""

    name = "squall-stimulus-log"

    def setup(self, worker: Any) -> None:
        state = worker.state
        meta = {"worker": str(worker.name), "address": str(worker.address),
                "incarnation": str(worker.id)}
        encode = msgspec.json.Encoder(enc_hook=str).encode
        topic = WORKER_TOPIC

        def send(op: str, stimulus_id: str, c: int, event: dict[str, Any]) -> None:
            record = {"op": op, "stimulus_id": stimulus_id, "t": time.time(), "c": c,
                      "event": event, **meta}
            worker.log_event(topic, {"r": encode(record).decode()})

        def announce() -> None:
            """The start record: what a fresh WorkerState needs to behave as this one (sent
            again when a reused cluster starts a new recording)."""
            send("start", "", state.transition_counter, {
                "nthreads": state.nthreads, "resources": dict(state.total_resources),
                "transfer_incoming_count_limit": state.transfer_incoming_count_limit,
                "transfer_incoming_bytes_limit": _finite(state.transfer_incoming_bytes_limit),
                "transfer_message_bytes_limit": _finite(state.transfer_message_bytes_limit),
                "tasks": len(state.tasks),
                # sets iterate in hash order: a replay needs the worker's seed (dask fixes it)
                "hash_seed": os.environ.get("PYTHONHASHSEED", "")})

        self.announce = announce
        announce()
        # The worker's entry point, not WorkerState's (a slotted class): one stimulus at a
        # time, as dask's own loop takes them, so each has its count before it.
        prior = vars(worker).get("handle_stimulus")
        cls = type(worker)

        def handle_stimulus(*stims: Any) -> None:
            original = (prior if prior is not None
                        else cls.handle_stimulus.__get__(worker, cls))
            for ev in stims:
                c = state.transition_counter
                try:
                    send(type(ev).__name__, ev.stimulus_id, c,
                         ev.to_loggable(handled=time.time())._to_dict())
                except Exception:  # never let recording break the worker
                    send(type(ev).__name__, str(getattr(ev, "stimulus_id", "")), c, {})
                original(ev)

        functools.update_wrapper(handle_stimulus, cls.handle_stimulus)
        worker.handle_stimulus = handle_stimulus
        self._undo = (worker, handle_stimulus, prior)

    def teardown(self, worker: Any) -> None:
        owner, ours, prior = getattr(self, "_undo", (None, None, None))
        if owner is not None and vars(owner).get("handle_stimulus") is ours:
            if prior is not None:
                owner.handle_stimulus = prior
            else:
                del owner.handle_stimulus  # the class's method again


def _finite(limit: float) -> float | None:
    """A limit as JSON can hold it: None for no limit (infinity)."""
    return None if limit == float("inf") else limit


def announce_stimulus_log(dask_worker: Any) -> None:
    """(``client.run``) Each worker's stimulus log sends its start record again."""
    plugin = dask_worker.plugins.get(WorkerStimulusLog.name)
    announce = getattr(plugin, "announce", None)
    if announce is not None:
        announce()
