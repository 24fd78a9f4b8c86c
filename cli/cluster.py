"""The commands that start a real cluster by hand, over several machines.

    squall keys DIR                                       # once; copy DIR to every machine
    squall scheduler --listen tcp://0.0.0.0:8786 --keys DIR
    squall worker tcp://SCHEDULER:8786 --threads 4 --keys DIR

Every member authenticates with ZeroMQ CURVE (a peer without the cluster's key is
refused, which matters because workers unpickle what they are sent). On this machine
alone, ``squall scheduler`` without ``--keys`` makes a key pair in a new directory only
its user can read (0700), prints where, and removes it when it exits; workers take it
with ``--keys DIR``, clients with ``Client(address, keys=DIR)``. ``--insecure`` (scheduler
and worker) runs without keys, on loopback only: any local user could then run code as
the cluster's user. Addresses default to 127.0.0.1; binding anything else requires
``--keys``. Registered in ``squall.cli.main``.

A worker outlives its scheduler: when the scheduler dies, stops answering or declares it
dead, the worker says so and rejoins as a new incarnation once a scheduler answers at the
same address (see ``squall.core.runtime.worker_server.serve_standalone``).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile

import click

from squall.cli.errors import SquallError
from squall.core.runtime import transport as net


def _load_keys(keys: str | None) -> net.Keys | None:
    if keys is None:
        return None
    try:
        return net.load_keys(keys)
    except net.KeysError as e:
        raise SquallError(str(e)) from None


def _seconds(flag: str, value: float) -> float:
    """A duration flag must be a positive, finite number of seconds."""
    if not 0 < value < math.inf:
        raise SquallError(f"{flag} must be a positive number of seconds, got {value:g}")
    return value


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


@click.command("keys")
@click.argument("directory", type=click.Path(file_okay=False))
def keys_command(directory: str) -> None:
    """Make the cluster's CURVE key pair in DIRECTORY (copy it to every machine)."""
    try:
        secret = net.create_keys(directory)
    except (net.KeysError, OSError) as e:
        raise SquallError(str(e)) from None
    click.echo(f"wrote {secret} (secret: keep it private) and {secret.with_suffix('.key')}")


@click.command("scheduler")
@click.option("--listen", default="tcp://127.0.0.1:8786", show_default=True,
              help="address to bind (not loopback: --keys required)")
@click.option("--keys", "keys_dir", default=None,
              help="directory made by `squall keys` [default: a new key pair in a 0700 "
                   "temporary directory, printed, removed at exit]")
@click.option("--insecure", is_flag=True,
              help="no keys: any local user may submit code to run as yours (loopback only)")
@click.option("--heartbeat-timeout", default=10.0, show_default=True,
              help="seconds of silence before a worker is declared dead")
@click.option("--allowed-failures", default=3, show_default=True,
              help="deaths of its worker a task survives before it errs")
@click.option("--validate/--no-validate", default=False, show_default=True,
              help="strict mode: check invariants after every transition")
@click.option("-v", "--verbose", is_flag=True)
def scheduler_command(listen: str, keys_dir: str | None, insecure: bool,
                      heartbeat_timeout: float, allowed_failures: int, validate: bool,
                      verbose: bool) -> None:
    """Run a scheduler until interrupted."""
    from squall.core.runtime.scheduler_server import SchedulerServer

    _seconds("--heartbeat-timeout", heartbeat_timeout)
    if allowed_failures < 0:
        raise SquallError(f"--allowed-failures must be >= 0, got {allowed_failures}")
    if insecure and keys_dir is not None:
        raise SquallError("--keys and --insecure exclude each other")
    made = None  # the key directory made here, removed at exit
    try:
        try:
            if keys_dir is None and not insecure:
                net.check_listen(listen, None)  # beyond loopback: --keys, for every machine
                made = tempfile.mkdtemp(prefix="squall-keys-")  # mode 0700
                net.create_keys(made)
                keys_dir = made
            _logging(verbose)
            server = SchedulerServer(listen, keys=_load_keys(keys_dir),
                                     heartbeat_timeout=heartbeat_timeout,
                                     allowed_failures=allowed_failures, validate=validate)
            address = server.bind()
        except (net.AddressError, net.KeysError, ImportError, OSError) as e:
            raise SquallError(str(e)) from None
        if keys_dir is not None:
            click.echo(f"squall scheduler: CURVE keys in {keys_dir} (workers: squall worker "
                       f"{address} --keys {keys_dir}; clients: Client(\"{address}\", "
                       f"keys=\"{keys_dir}\"))" + ("; removed at exit" if made else ""),
                       err=True)
        else:
            click.echo("squall scheduler: --insecure: no authentication; any local user may "
                       "run code as this user", err=True)
        click.echo(f"squall scheduler: listening at {address}", err=True)
        try:
            server.serve()
        except KeyboardInterrupt:
            pass
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


@click.command("worker")
@click.argument("scheduler")
@click.option("--threads", default=1, show_default=True, help="threads running tasks")
@click.option("--name", default=None, help="worker name (default: HOST-PID)")
@click.option("--listen", default=None,
              help="address of its data socket (default: the interface towards the "
                   "scheduler, any free port)")
@click.option("--keys", "keys_dir", default=None,
              help="the scheduler's key directory (made by `squall keys`, or printed by "
                   "`squall scheduler`)")
@click.option("--insecure", is_flag=True,
              help="no keys, for a scheduler started with --insecure (loopback only)")
@click.option("--heartbeat-interval", default=0.5, show_default=True)
@click.option("--register-timeout", default=10.0, show_default=True,
              help="seconds to wait for the scheduler to accept this worker")
@click.option("--validate/--no-validate", default=False, show_default=True)
@click.option("-v", "--verbose", is_flag=True)
def worker_command(scheduler: str, threads: int, name: str | None, listen: str | None,
                   keys_dir: str | None, insecure: bool, heartbeat_interval: float,
                   register_timeout: float, validate: bool, verbose: bool) -> None:
    """Run a worker for the scheduler at SCHEDULER (tcp://HOST:PORT) until interrupted."""
    from squall.core.runtime.worker_server import RegistrationError, serve_standalone

    if threads < 1:
        raise SquallError(f"--threads must be >= 1, got {threads}")
    _seconds("--heartbeat-interval", heartbeat_interval)
    _seconds("--register-timeout", register_timeout)
    if insecure == (keys_dir is not None):
        raise SquallError("give --keys DIR (the directory `squall scheduler` printed) or, "
                          "for a scheduler started with --insecure, --insecure")
    _logging(verbose)
    try:
        serve_standalone(scheduler, name=name, nthreads=threads, listen=listen,
                         keys=_load_keys(keys_dir), heartbeat_interval=heartbeat_interval,
                         register_timeout=register_timeout, validate=validate)
    except (net.AddressError, RegistrationError, ImportError, OSError) as e:
        raise SquallError(str(e)) from None
    except KeyboardInterrupt:
        pass
