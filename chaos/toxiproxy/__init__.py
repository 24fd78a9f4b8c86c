"""squall.chaos.toxiproxy: a built-in server that speaks Toxiproxy's HTTP API and toxics.

Network faults in real mode go through a Toxiproxy API, driven with the toxiproxy-python
client: a real toxiproxy-server when TOXIPROXY_URL names one, otherwise this server on loopback.
"""

from .client import TOXIPROXY_URL_ENV, connect_client, toxiproxy_client
from .http11 import HttpLimits
from .model import DOWNSTREAM, TOXIC_TYPES, UPSTREAM, ApiError
from .server import (
    DEFAULT_PORT,
    TOXIPROXY_API_VERSION,
    ThreadedToxiproxyServer,
    ToxiproxyServer,
    run_in_thread,
    serve,
)

__all__ = [
    "DEFAULT_PORT",
    "DOWNSTREAM",
    "HttpLimits",
    "TOXIC_TYPES",
    "TOXIPROXY_API_VERSION",
    "TOXIPROXY_URL_ENV",
    "UPSTREAM",
    "ApiError",
    "ThreadedToxiproxyServer",
    "ToxiproxyServer",
    "connect_client",
    "run_in_thread",
    "serve",
    "toxiproxy_client",
]
