"""What the built-in Toxiproxy server costs when no toxic is set.

Measures, side by side in one run, a loopback echo reached directly and through a proxy of
the built-in server: round-trip time of small messages and throughput of a bulk transfer.
Prints the ratios (proxied / direct). Run: python benchmarks/toxiproxy_overhead.py
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import statistics
import threading
import time

from squall.chaos.toxiproxy import connect_client, run_in_thread


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _round_trips(address: tuple[str, int], count: int) -> list[float]:
    times = []
    with socket.create_connection(address, timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(b"ping")
            got = b""
            while len(got) < 4:
                got += sock.recv(4 - len(got))
            times.append(time.perf_counter() - start)
    return times


def _throughput(address: tuple[str, int], megabytes: int) -> float:
    """MB/s echoed: one thread sends, this one receives everything back."""
    block = bytes(65536)
    total = megabytes * 1024 * 1024
    with socket.create_connection(address, timeout=10) as sock:
        sender = threading.Thread(
            target=lambda: [sock.sendall(block) for _ in range(total // len(block))]
        )
        start = time.perf_counter()
        sender.start()
        received = 0
        while received < total:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("connection closed early")
            received += len(chunk)
        elapsed = time.perf_counter() - start
        sender.join()
    return megabytes / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--megabytes", type=int, default=64)
    args = parser.parse_args()

    echo = _Server(("127.0.0.1", 0), _Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    direct = ("127.0.0.1", echo.server_address[1])
    with run_in_thread(port=0) as server:
        proxy = connect_client(server).create(upstream=f"{direct[0]}:{direct[1]}", name="bench")
        host, _, port = proxy.listen.rpartition(":")
        proxied = (host, int(port))

        rtt_direct = statistics.median(_round_trips(direct, args.round_trips))
        rtt_proxied = statistics.median(_round_trips(proxied, args.round_trips))
        mbps_direct = _throughput(direct, args.megabytes)
        mbps_proxied = _throughput(proxied, args.megabytes)
    echo.shutdown()

    print(
        f"median round trip: direct {rtt_direct * 1e6:.0f} µs, proxied {rtt_proxied * 1e6:.0f} µs"
    )
    print(f"  ratio proxied/direct: {rtt_proxied / rtt_direct:.2f}")
    print(f"echo throughput: direct {mbps_direct:.0f} MB/s, proxied {mbps_proxied:.0f} MB/s")
    print(f"  ratio proxied/direct: {mbps_proxied / mbps_direct:.2f}")


if __name__ == "__main__":
    main()
