"""``squall balance SNAPSHOT.json``: balancing rounds on a scheduler snapshot (the format
is ``squall.core.snapshot.load_snapshot``'s; ``squall replay TRACE --snapshot FILE --at
SECONDS`` writes one), printed as ``{worker: [task keys]}``."""

from __future__ import annotations

import json

import click

from squall.cli.errors import SquallError
from squall.core.snapshot import SnapshotError, balance_snapshot
from squall.scenarios.limits import MAX_LINE_BYTES, limit


@click.command("balance")
@click.argument("snapshot_path", metavar="SNAPSHOT.json")
@click.option("--rounds", default=1, show_default=True, help="balancing rounds to run")
def balance_command(snapshot_path: str, rounds: int) -> None:
    """Run balancing rounds on a scheduler snapshot; print {worker: [task keys]} as JSON.

    `squall replay TRACE --snapshot FILE --at SECONDS` writes a snapshot of a recorded
    run; README's "Work stealing and balance snapshots" gives the format."""
    if rounds < 1:
        raise SquallError(f"--rounds must be >= 1, got {rounds}")
    cap = limit(MAX_LINE_BYTES)
    try:
        with open(snapshot_path, "rb") as f:
            data = f.read(cap + 1)  # never more than the limit, whatever the file holds
        if len(data) > cap:
            raise SquallError(f"snapshot {snapshot_path!r} is larger than {cap:,} bytes (set "
                              f"{MAX_LINE_BYTES} to raise the limit)")
        text = data.decode("utf-8")
    except OSError as e:
        raise SquallError(f"cannot read snapshot {snapshot_path!r}: "
                          f"{e.strerror or type(e).__name__}") from None
    except UnicodeDecodeError:
        raise SquallError(f"snapshot {snapshot_path!r} is not UTF-8 text") from None
    try:
        snapshot = json.loads(text)
    except json.JSONDecodeError as e:
        raise SquallError(f"snapshot {snapshot_path!r} is not valid JSON: {e.msg} at line "
                          f"{e.lineno} column {e.colno}") from None
    except RecursionError:
        raise SquallError(f"snapshot {snapshot_path!r}: JSON nested too deeply (a snapshot "
                          "is an object of lists of flat objects)") from None
    try:
        result = balance_snapshot(snapshot, rounds)
    except SnapshotError as e:
        raise SquallError(f"snapshot {snapshot_path!r}: {e}") from None
    click.echo(json.dumps(result))
