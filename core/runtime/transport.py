"""The transport of the real cluster: framing, sockets, CURVE keys and serialisation.

A wire message is a ZeroMQ multipart message: one msgpack header, a list of the tagged
structs of ``core/protocol.py`` (several messages travel together: batching), then the
cloudpickle frames that some of them announce (``frame_count``): task bodies, values,
exceptions. The header is decoded with the protocol's one definition; bytes from the
frames are unpickled only by a worker or client, and only from the peers it connected to
itself (CURVE-authenticated: the peer proved it holds the cluster's secret key; only an
explicitly insecure cluster, on loopback, skips that).

Topology: the scheduler binds a ROUTER; every worker and client connects a DEALER to it.
Each worker binds a ROUTER of its own that serves its values (``GetData`` ->
``DataReply``) to peers and clients, who connect DEALERs to it. A data socket answers only
peers whose CURVE handshake proved they hold the cluster's key pair (any local peer, in an
insecure cluster).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import os
import pickle
import socket as pysocket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import msgspec
import zmq

from squall.core import protocol as p
from squall.core.protocol import ProtocolError

ZAP_DOMAIN = "squall"
KEY_NAME = "squall"  # DIR/squall.key (public), DIR/squall.key_secret (secret, mode 0600)
_LOOPBACK_NAMES = ("localhost",)

# Limits of a registration, checked by the scheduler: the threads of one worker (a
# scheduler may set a lower cap), the characters of a name and of a data address.
MAX_NTHREADS = 4096
MAX_NAME = 256
MAX_ADDRESS = 512

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[list[Any]] = msgspec.msgpack.Decoder(list[p.AnyMessage])
_FRAMED = (p.RunSpecs, p.DataReply, p.Payload)


class AddressError(ValueError):
    """An address that is not tcp://HOST:PORT, or a non-loopback one without keys."""


class KeysError(ValueError):
    """Missing or unreadable CURVE keys; the message names the file."""


class SerializationError(RuntimeError):
    """A task's body could not be unpickled on its worker, or its result could not be
    pickled; the message names the task and the reason."""


# ------------------------------------------------------------------ addresses


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port); port 0 means "any free port"."""
    if not isinstance(address, str) or not address.startswith("tcp://"):
        raise AddressError(f"address {address!r}: expected tcp://HOST:PORT")
    rest = address[len("tcp://"):]
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise AddressError(f"address {address!r}: expected tcp://HOST:PORT")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_ipv6(host: str) -> bool:
    """Whether ``host`` (as ``parse_address`` gives it, without brackets) is an IPv6
    address."""
    return ":" in host


def format_address(host: str, port: int | str) -> str:
    """``tcp://HOST:PORT``, an IPv6 host in brackets (``tcp://[::1]:8786``)."""
    return f"tcp://[{host}]:{port}" if is_ipv6(host) else f"tcp://{host}:{port}"


def bind_endpoint(host: str, port: int) -> str:
    """What to pass to bind(): ZeroMQ spells "any free port" as ``*``."""
    return format_address(host, port or "*")


def bind(sock: zmq.Socket[Any], host: str, port: int) -> None:
    """Bind ``sock`` to ``host``:``port`` (0: any free port). A ZeroMQ socket speaks IPv4
    only unless told: an IPv6 host turns its IPv6 on first."""
    if is_ipv6(host):
        sock.setsockopt(zmq.IPV6, 1)
    sock.bind(bind_endpoint(host, port))


def connect(sock: zmq.Socket[Any], address: str) -> None:
    """Connect ``sock`` to ``address``; an IPv6 host (``tcp://[::1]:PORT``, brackets or
    not) turns the socket's IPv6 on first. Anything not ``tcp://HOST:PORT`` is passed on
    as it is."""
    try:
        host, port = parse_address(address)
    except AddressError:
        sock.connect(address)
        return
    if is_ipv6(host):
        sock.setsockopt(zmq.IPV6, 1)
    sock.connect(format_address(host, port))


def local_ip_towards(host: str) -> str:
    """The address of this machine's interface that routes to ``host`` (a loopback
    address of the same family for a loopback host)."""
    v6 = is_ipv6(host)
    if is_loopback(host):
        return "::1" if v6 else "127.0.0.1"
    with pysocket.socket(pysocket.AF_INET6 if v6 else pysocket.AF_INET,
                         pysocket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # no packet is sent: this only picks the route
        return str(s.getsockname()[0])


# ------------------------------------------------------------------ CURVE keys


@dataclass(frozen=True)
class Keys:
    """The cluster's one CURVE key pair, shared by every member (z85-encoded). Whoever
    holds the secret belongs to the cluster; it never appears in a repr."""

    public: bytes
    secret: bytes = field(repr=False)
    directory: str = ""  # where they were read from ("": made in memory, never written)


def new_keys() -> Keys:
    """A fresh key pair in memory: a ``LocalCluster``'s own, handed to the processes it
    starts and to the clients made from it, and to nobody else."""
    if not zmq.has("curve"):
        raise KeysError("this pyzmq/libzmq has no CURVE support: a cluster cannot "
                        "authenticate its members (LocalCluster(insecure=True) runs without)")
    public, secret = zmq.curve_keypair()
    return Keys(public, secret)


def create_keys(directory: str | os.PathLike[str]) -> Path:
    """Write a new key pair into ``directory`` (made 0700 if new; the secret file 0600,
    never readable by others, not even for a moment); return the secret file's path."""
    import zmq.auth

    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = d / f"{KEY_NAME}.key_secret"
    if secret.exists():
        raise KeysError(f"{secret}: exists already; remove it to make new keys")
    umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(d, KEY_NAME)
    finally:
        os.umask(umask)
    os.chmod(secret, 0o600)
    os.chmod(d / f"{KEY_NAME}.key", 0o644)  # the public half may be read by anyone
    return secret


def load_keys(directory: str | os.PathLike[str]) -> Keys:
    import zmq.auth

    path = Path(directory) / f"{KEY_NAME}.key_secret"
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeysError(f"{path}: cannot read CURVE keys ({e}); make them with "
                        f"`squall keys {directory}`") from None
    if not secret:
        raise KeysError(f"{path}: holds no secret key")
    return Keys(public, secret, str(directory))


def check_listen(address: str, keys: Keys | None) -> tuple[str, int]:
    """Parse an address to bind; anything but loopback needs CURVE keys."""
    host, port = parse_address(address)
    if keys is None and not is_loopback(host):
        raise AddressError(
            f"{address} is not a loopback address: CURVE keys are required "
            f"(make them with `squall keys DIR` and pass --keys DIR)")
    return host, port


class _OneKey:
    """ZAP credentials check: only the cluster's own public key may connect."""

    def __init__(self, public: bytes) -> None:
        self.public = public

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.public


@functools.cache
def _authenticator_class() -> Any:
    from zmq.auth.base import Authenticator
    from zmq.auth.thread import ThreadAuthenticator

    class StoppableAuthenticator(ThreadAuthenticator):
        """ZeroMQ's ThreadAuthenticator, whose stop() cannot hang. Its own sends TERMINATE
        on a PAIR socket and then joins the thread: a SIGTERM (``Terminated``) raised in
        that join leaves the pipe set while the thread ends, and the stop() its __del__
        runs at exit then blocks forever on a send to a pipe nobody reads (a ``squall
        worker`` stopped while it rejoined printed "terminated" and never exited)."""

        def stop(self) -> None:
            pipe = self.pipe
            if pipe:
                try:
                    pipe.send(b"TERMINATE", zmq.NOBLOCK)
                except zmq.Again:  # the thread has ended: nobody at the other end
                    pass
                if self.is_alive():
                    self.thread.join()
                self.thread = None  # type: ignore[assignment]
                self.pipe = None  # type: ignore[assignment]
                pipe.close(0)
            Authenticator.stop(self)

    return StoppableAuthenticator


def start_authenticator(ctx: zmq.Context[Any], keys: Keys) -> Any:
    """Start ZeroMQ's ZAP handler for this context (one thread); returns it for stop()."""
    auth = _authenticator_class()(ctx, log=logging.getLogger("squall.net.auth"))
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_OneKey(keys.public))
    return auth


# ------------------------------------------------------------------ sockets


def ms(seconds: float) -> int:
    """A poll timeout in whole milliseconds, rounded up (never a busy loop), >= 0."""
    return max(0, math.ceil(seconds * 1000))


def make_socket(ctx: zmq.Context[Any], kind: int, *, keys: Keys | None = None,
                server: bool = False, linger_ms: int = 0) -> zmq.Socket[Any]:
    """A socket with unbounded queues (a ROUTER silently drops past its high-water mark)
    and, with ``keys``, CURVE as server or client."""
    s = ctx.socket(kind)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    s.setsockopt(zmq.LINGER, linger_ms)
    if keys is not None:
        s.curve_publickey = keys.public
        s.curve_secretkey = keys.secret
        if server:
            s.curve_server = True
            s.zap_domain = ZAP_DOMAIN.encode()
            # No ZAP handler (not started, or gone): refuse every peer, never admit one.
            s.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        else:
            s.curve_serverkey = keys.public
    return s


REFUSAL_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

# A connection to the scheduler is pinged (ZMTP heartbeats, answered by the scheduler's
# ZeroMQ I/O thread: a scheduler busy in a long handle() still answers) every
# PING_INTERVAL s, and closed when nothing came back for PING_TIMEOUT s.
PING_INTERVAL = 1.0
PING_TIMEOUT = 5.0


def keepalive(sock: zmq.Socket[Any], interval: float = PING_INTERVAL,
              timeout: float = PING_TIMEOUT) -> None:
    """Ping the peer every ``interval`` s; close the connection after ``timeout`` s of
    silence (a frozen or vanished peer), which a ``LinkWatch`` then reports."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, round(interval * 1000)))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, round(timeout * 1000)))


class LinkWatch:
    """Watches the connections of one connecting socket (a ZeroMQ monitor).

    ``read()`` says whether an established connection closed since the last call: the
    peer's process died (its kernel closed the socket), a ``keepalive`` ping went
    unanswered, or the link was cut. The connection is not to be trusted again: a ROUTER
    gives a reconnected peer a new identity, so whatever was registered on the old one
    is gone. A connection that failed before its handshake completed (nobody listening
    yet, a refused key) is not a loss; a handshake the peer refused for its security
    mechanism or credentials is counted in ``refused`` (with the last one's kind in
    ``refusal``), one it closed without saying why (a CURVE server that cannot read a
    client holding another server key does so) in ``cut``: see ``refusal_reason``."""

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self.sock = sock
        self.monitor: zmq.Socket[Any] = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | REFUSAL_EVENTS)
        self.up = 0  # connections whose handshake succeeded and that are still open
        self.lost = 0  # established connections that closed
        self.refused = 0  # handshakes that failed on the mechanism or the credentials
        self.refusal = 0  # the last one's event
        self.cut = 0  # handshakes the peer closed without a reason

    def read(self) -> bool:
        """Take the pending events; True if an established connection closed."""
        from zmq.utils.monitor import recv_monitor_message

        lost = False
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return lost
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.up += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED and self.up > 0:
                self.up -= 1
                self.lost += 1
                lost = True
            elif event["event"] in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                    zmq.EVENT_HANDSHAKE_FAILED_AUTH):
                self.refused += 1
                self.refusal = event["event"]
            elif event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self.cut += 1

    def refusal_reason(self, peer: str, keys: Keys | None) -> str:
        """Why ``peer`` refused the handshake, in words for the one who holds ``keys``."""
        if self.refusal == zmq.EVENT_HANDSHAKE_FAILED_AUTH or (
                not self.refused and keys is not None):
            return (f"{peer} refused this connection's CURVE key: it is not the cluster's "
                    "(keys from another cluster?)")
        if keys is None:
            return (f"{peer} requires the cluster's CURVE keys: Client(cluster) passes a "
                    "LocalCluster's own; else keys=DIR, the directory `squall scheduler` "
                    "printed (or gave with --keys)")
        return (f"{peer} refused the handshake: it does not use CURVE keys (started with "
                "--insecure?) or speaks another protocol")

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:  # the socket is closed already
            pass
        self.monitor.close(0)


# ------------------------------------------------------------------ framing


def frame_count(msg: Any) -> int:
    """How many frames follow the header for this message."""
    t = type(msg)
    if t is p.RunSpecs:
        return len(msg.funcs) + len(msg.keys)
    if t is p.DataReply:
        return len(msg.keys)
    if t is p.Payload:
        return 1
    return 0


def pack(msgs: list[Any], frames: list[bytes] | None = None) -> list[bytes]:
    header = _encoder.encode(msgs)
    return [header, *frames] if frames else [header]


def unpack(parts: list[bytes]) -> tuple[list[Any], list[bytes]]:
    """Header and frames of one wire message; ProtocolError says what is wrong."""
    if not parts:
        raise ProtocolError("empty message")
    try:
        msgs = _decoder.decode(parts[0])
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ProtocolError(f"undecodable header: {e}") from None
    if not msgs:
        raise ProtocolError("header holds no message")
    need = 0
    for m in msgs:
        if isinstance(m, _FRAMED):
            if type(m) is p.RunSpecs and len(m.func_of) != len(m.keys):
                raise ProtocolError(f"run-specs: {len(m.keys)} keys but {len(m.func_of)} "
                                    "function tokens")
            need += frame_count(m)
    if need != len(parts) - 1:
        raise ProtocolError(f"header announces {need} frame(s), {len(parts) - 1} came")
    return msgs, parts[1:]


def split_frames(msgs: list[Any], frames: list[bytes]) -> list[tuple[Any, list[bytes]]]:
    """Each message with the frames it announced."""
    out = []
    i = 0
    for m in msgs:
        n = frame_count(m) if isinstance(m, _FRAMED) else 0
        out.append((m, frames[i:i + n]))
        i += n
    return out


# ------------------------------------------------------------------ recorded stimuli

_record_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
    tuple[str, int, int, p.AnyMessage])


def encode_record(target: str, incarnation: int, transitions: int, msg: Any) -> bytes:
    """One recorded stimulus: who received it, its incarnation, the receiver's transition
    count before it, and the message."""
    return _encoder.encode((target, incarnation, transitions, msg))


def decode_record(data: bytes) -> tuple[str, int, int, Any]:
    try:
        return _record_decoder.decode(data)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ProtocolError(f"undecodable record: {e}") from None


# ------------------------------------------------------------------ serialisation


class Ref:
    """Stands for the value of ``key`` inside a task's arguments (a future, or a
    dependency of a graph task); the worker substitutes the value before the call."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ref, (self.key,))

    def __repr__(self) -> str:
        return f"Ref({self.key!r})"


_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex, Ref})


def _plain(obj: Any, depth: int = 0) -> bool:
    """Builtin data only (stdlib pickle is exact and fast for it, and no class defined in
    a __main__ can hide inside to be pickled by reference)."""
    t = type(obj)
    if t in _SCALARS:
        return True
    if depth > 3:
        return False
    if t is tuple or t is list:
        return len(obj) <= 256 and all(_plain(x, depth + 1) for x in obj)
    if t is dict:
        return len(obj) <= 256 and all(
            _plain(k, depth + 1) and _plain(v, depth + 1) for k, v in obj.items())
    return False


def dumps(obj: Any) -> bytes:
    """Bytes of ``obj``: stdlib pickle for plain data, cloudpickle for anything else."""
    if _plain(obj):
        return pickle.dumps(obj, protocol=5)
    return cloudpickle.dumps(obj, protocol=5)


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def exception_blob(exc: BaseException) -> bytes | None:
    """Bytes that unpickle into ``exc`` on the other side, or None if none do (many
    exception classes with required constructor arguments pickle but do not unpickle).
    An InvariantViolation travels as a recipe that rebuilds it from the catalog."""
    if hasattr(exc, "to_violation") and hasattr(exc, "invariant"):
        try:
            return pickle.dumps(_ViolationRecipe(exc), protocol=5)
        except Exception:  # fall through: try the exception as it is
            pass
    try:
        blob = dumps(exc)
        loads(blob)
    except Exception:  # the text of the exception still travels
        return None
    return blob


class _ViolationRecipe:
    """Pickles as a call that rebuilds an InvariantViolation where it is unpickled."""

    def __init__(self, exc: Any) -> None:
        self.args = (exc.invariant.id, exc.entity, exc.detail, {
            "key": exc.key, "start": exc.start, "finish": exc.finish,
            "stimulus_id": exc.stimulus_id, "time": exc.time, "recent": list(exc.recent),
            "story": list(exc.story), "trace_path": exc.trace_path})

    def __reduce__(self) -> tuple[Any, ...]:
        return (rebuild_violation, self.args)


def rebuild_violation(invariant_id: str, entity: str, detail: str,
                      fields: dict[str, Any]) -> BaseException:
    from squall.invariants import BY_ID, InvariantViolation

    return InvariantViolation(BY_ID[invariant_id], entity, detail, **fields)


def substitute(obj: Any, values: dict[str, Any]) -> Any:
    """``obj`` with every Ref replaced by its value (inside tuples, lists and dicts)."""
    t = type(obj)
    if t is Ref:
        return values[obj.key]
    if t is tuple or t is list:
        return t(substitute(x, values) for x in obj)
    if t is dict:
        return {k: substitute(v, values) for k, v in obj.items()}
    return obj


def find_refs(obj: Any, out: dict[str, None], depth: int = 0) -> bool:
    """Collect the keys of Refs inside ``obj`` (in order); whether there were any."""
    t = type(obj)
    if t is Ref:
        out[obj.key] = None
        return True
    if depth > 8:
        return False
    found = False
    if t is tuple or t is list:
        for x in obj:
            found = find_refs(x, out, depth + 1) or found
    elif t is dict:
        for v in obj.values():
            found = find_refs(v, out, depth + 1) or found
    return found


# ------------------------------------------------------------------ rejected input


class Drops:
    """Counts rejected frames and messages and logs each with its peer and reason (the
    first ``loud`` ones, then every 1000th, so a flood cannot drown the log)."""

    def __init__(self, log: logging.Logger, where: str, loud: int = 50) -> None:
        self.log = log
        self.where = where
        self.loud = loud
        self.count = 0

    def __call__(self, peer: str, reason: str, quiet: bool = False) -> None:
        """Count one drop; log it unless ``quiet`` (e.g. more of a peer already told)."""
        self.count += 1
        if quiet:
            return
        if self.count <= self.loud or self.count % 1000 == 0:
            self.log.warning("%s: dropped a message from %s: %s (%d dropped so far)",
                             self.where, peer, reason, self.count)


def peer_label(identity: bytes) -> str:
    return f"unknown peer {identity.hex()[:16]}"
