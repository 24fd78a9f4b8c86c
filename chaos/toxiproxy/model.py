"""The data the Toxiproxy API talks about: toxics, proxy configs, addresses, API errors.

Everything here is pure validation of decoded JSON; nothing does I/O.
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass, field
from typing import Any

UPSTREAM = "upstream"  # client -> server
DOWNSTREAM = "downstream"  # server -> client
STREAMS = (UPSTREAM, DOWNSTREAM)

# Toxic type -> its attributes and their defaults. Every attribute is a non-negative integer;
# units: latency/jitter/delay(slow_close)/timeout in ms, rate in KB/s (1 KB = 1000 bytes),
# slicer delay in µs, sizes in bytes.
TOXIC_TYPES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}

DEFAULT_LISTEN_HOST = "127.0.0.1"
MAX_ATTRIBUTE = 2**63 - 1  # Toxiproxy's attributes are Go int64s

# Proxy and toxic names are path segments of the API's URLs (/proxies/NAME/toxics/NAME),
# and clients such as toxiproxy-python put them there unescaped. So a name is refused
# at creation unless every URL can carry it as it is: short enough for a request head, and
# only characters a path segment may hold literally (RFC 3986 pchar, less the '%' of escapes).
MAX_NAME_LENGTH = 256
NAME_PUNCTUATION = "-._~!$&'()*+,;=:@"
_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + NAME_PUNCTUATION)


class ApiError(Exception):
    """An error the HTTP API reports as JSON ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


# eq=False: a Toxic is identified by the object itself. An update replaces the object, so
# per-connection state (toxicity roll, timers) keyed by it starts afresh, as a new toxic would.
@dataclass(eq=False)
class Toxic:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def _require_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("bad request body: expected a JSON object")
    return body


def _string_field(body: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise bad_request(f"missing required field: {key}")
        return None
    if not isinstance(value, str):
        raise bad_request(f"bad request body: {key} must be a string")
    return value


def _check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise bad_request(
            f"bad request body: name must be at most {MAX_NAME_LENGTH} characters, "
            f"got {len(name)}"
        )
    bad = next((char for char in name if char not in _NAME_CHARACTERS), None)
    if bad is not None:
        raise bad_request(
            f"bad request body: name may only contain letters, digits and "
            f"{NAME_PUNCTUATION}, not {bad!r}"
        )
    if name in (".", ".."):  # URL paths drop these segments: such a name has no URL
        raise bad_request(f"bad request body: name cannot be {name!r}")
    return name


def _toxicity(value: object) -> float:
    # bool is an int subclass; JSON true is not a probability.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request("bad request body: toxicity must be a number")
    if not 0.0 <= value <= 1.0:
        raise bad_request("bad request body: toxicity must be between 0 and 1")
    return float(value)


def _attributes(toxic_type: str, raw: object, base: dict[str, int]) -> dict[str, int]:
    if raw is None:
        return dict(base)
    if not isinstance(raw, dict):
        raise bad_request("bad request body: attributes must be a JSON object")
    allowed = TOXIC_TYPES[toxic_type]
    merged = dict(base)
    for key, value in raw.items():
        if key not in allowed:
            # Real Toxiproxy ignores unknown keys; a typo silently doing nothing is worse.
            raise bad_request(f"bad request body: {toxic_type} has no attribute {key!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"bad request body: attribute {key!r} must be an integer")
        if value < 0:
            raise bad_request(f"bad request body: attribute {key!r} must not be negative")
        if value > MAX_ATTRIBUTE:  # past this, the float arithmetic of the toxics overflows
            raise bad_request(
                f"bad request body: attribute {key!r} must be at most {MAX_ATTRIBUTE}"
            )
        merged[key] = value
    return merged


def parse_new_toxic(body: object) -> Toxic:
    """Validate a toxic-creation body; defaults follow Toxiproxy's."""
    data = _require_object(body)
    toxic_type = _string_field(data, "type", required=True)
    assert toxic_type is not None
    if toxic_type not in TOXIC_TYPES:
        raise bad_request(f"invalid toxic type: {toxic_type!r}")
    stream = _string_field(data, "stream", required=False) or DOWNSTREAM
    if stream not in STREAMS:
        raise bad_request("stream was invalid, can be either upstream or downstream")
    name = _check_name(_string_field(data, "name", required=False) or f"{toxic_type}_{stream}")
    toxicity = _toxicity(data["toxicity"]) if data.get("toxicity") is not None else 1.0
    attributes = _attributes(toxic_type, data.get("attributes"), TOXIC_TYPES[toxic_type])
    return Toxic(name, toxic_type, stream, toxicity, attributes)


def parse_toxic_update(existing: Toxic, body: object) -> Toxic:
    """Apply an update body (toxicity and/or some attributes) to a copy of ``existing``."""
    data = _require_object(body)
    for key in ("name", "type", "stream"):
        if key in data and data[key] != getattr(existing, key):
            raise bad_request(f"bad request body: a toxic's {key} cannot be changed")
    toxicity = existing.toxicity
    if data.get("toxicity") is not None:
        toxicity = _toxicity(data["toxicity"])
    attributes = _attributes(existing.type, data.get("attributes"), existing.attributes)
    return Toxic(existing.name, existing.type, existing.stream, toxicity, attributes)


@dataclass
class ProxyConfig:
    """A proxy as a create or populate request describes it."""

    name: str
    listen: str
    upstream: str
    enabled: bool


def parse_proxy_config(body: object) -> ProxyConfig:
    data = _require_object(body)
    name = _string_field(data, "name", required=True)
    upstream = _string_field(data, "upstream", required=True)
    listen = _string_field(data, "listen", required=False) or f"{DEFAULT_LISTEN_HOST}:0"
    assert name is not None and upstream is not None
    _check_name(name)
    split_host_port(listen, what="listen")
    split_host_port(upstream, what="upstream", allow_zero=False)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise bad_request("bad request body: enabled must be true or false")
    return ProxyConfig(name, listen, upstream, enabled)


@dataclass
class ProxyUpdate:
    """The fields of an update body that were present; None means unchanged."""

    listen: str | None
    upstream: str | None
    enabled: bool | None


def parse_proxy_update(name: str, body: object) -> ProxyUpdate:
    data = _require_object(body)
    if "name" in data and data["name"] != name:
        raise bad_request("bad request body: a proxy's name cannot be changed")
    listen = _string_field(data, "listen", required=False)
    upstream = _string_field(data, "upstream", required=False)
    if listen is not None:
        split_host_port(listen, what="listen")
    if upstream is not None:
        split_host_port(upstream, what="upstream", allow_zero=False)
    enabled = data.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise bad_request("bad request body: enabled must be true or false")
    return ProxyUpdate(listen, upstream, enabled)


def split_host_port(
    address: str, *, what: str = "address", allow_zero: bool = True
) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> (host, port). An empty host means loopback."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise bad_request(f"bad request body: {what} must be host:port, got {address!r}")
    port = int(port_text)
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise bad_request(f"bad request body: {what} port out of range in {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    # Toxiproxy binds ":port" to every interface; squall keeps unspecified hosts on loopback.
    return host or DEFAULT_LISTEN_HOST, port


def join_host_port(host: str, port: int) -> str:
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"
