"""``squall toxiproxy``: the built-in Toxiproxy-compatible server, standalone."""

from __future__ import annotations

import click

from squall.cli.errors import SquallError


@click.command("toxiproxy")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address the API binds to (loopback unless told otherwise)")
@click.option("--port", type=click.IntRange(0, 65535), default=8474, show_default=True,
              help="API port (0: any free port)")
@click.option("--seed", type=int, default=None, help="seed for jitter, toxicity and slicing")
def toxiproxy_command(host: str, port: int, seed: int | None) -> None:
    """Run the built-in Toxiproxy-compatible proxy server until interrupted."""
    from squall.chaos.toxiproxy import serve
    from squall.chaos.toxiproxy.model import ApiError, join_host_port

    def ready(server: object) -> None:
        where = join_host_port(host.strip("[]"), getattr(server, "port", port))
        click.echo(f"squall toxiproxy: API on http://{where}", err=True)  # [::1]: IPv6

    try:
        serve(host, port, seed=seed, on_ready=ready)
    except OSError as e:
        raise SquallError(str(e).splitlines()[0]) from None
    except ApiError as e:  # an address the server refuses (a bad --host)
        raise SquallError(f"--host/--port: {e.message.splitlines()[0]}") from None
