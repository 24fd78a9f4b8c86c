"""``squall invariants``: the catalog as a table, or as JSON with ``--json``; with
``--target dask``, which invariants apply to dask.distributed (and how), which do not (and
why), and the dask-only ones."""

from __future__ import annotations

import click
import msgspec
from rich.console import Console
from rich.table import Table

from squall.invariants.base import ENTITIES
from squall.invariants.catalog import CATALOG

TARGETS = ("reference", "dask")


@click.command("invariants")
@click.option("--json", "as_json", is_flag=True, help="machine-readable: a JSON list")
@click.option("--entity", type=click.Choice(ENTITIES), default=None,
              help="only the invariants about this kind of entity")
@click.option("--target", type=click.Choice(TARGETS), default="reference", show_default=True,
              help="the scheduler: squall's reference one, or dask.distributed (which "
                   "invariants apply to it, which do not and why, and its own)")
def invariants_command(as_json: bool, entity: str | None, target: str) -> None:
    """List the invariants strict mode checks: id, entity, when, what must hold."""
    if target == "dask":
        _dask(as_json, entity)
        return
    chosen = [inv for inv in CATALOG if entity is None or inv.entity == entity]
    if as_json:
        rows = [{"id": inv.id, "entity": inv.entity, "scope": inv.scope, "text": inv.text}
                for inv in chosen]
        click.echo(msgspec.json.format(msgspec.json.encode(rows), indent=2).decode())
        return
    table = Table(title=f"squall invariants: {len(chosen)} checked in strict mode")
    table.add_column("id", no_wrap=True)
    table.add_column("checked", no_wrap=True)
    table.add_column("what must hold")
    last = None
    for inv in chosen:
        if inv.entity != last:  # one section per kind of entity
            if last is not None:
                table.add_section()
            table.add_row(f"[bold]{inv.entity}[/bold]", "", "")
            last = inv.entity
        table.add_row(inv.id, inv.scope, inv.text)
    Console().print(table)


def _dask(as_json: bool, entity: str | None) -> None:
    """The dask listing: every catalog invariant with how it applies (same, adapted) or
    not, and why; then the dask-only invariants (``how``: dask-only)."""
    from squall.targets.dask.invariants import rows

    groups = {name: [r for r in group if entity is None or r["entity"] == entity]
              for name, group in rows().items()}
    if as_json:
        out = [*groups["applies"], *groups["not"], *groups["dask-only"]]
        click.echo(msgspec.json.format(msgspec.json.encode(out), indent=2).decode())
        return
    console = Console()
    titles = {"applies": "apply to dask.distributed (same: unchanged on dask's state; "
                         "adapted: through a mapping of a dask concept)",
              "not": "do not apply to dask.distributed, and why",
              "dask-only": "dask-only invariants (squall.targets.dask.invariants)"}
    for name in ("applies", "not", "dask-only"):
        chosen = groups[name]
        table = Table(title=f"{len(chosen)} {titles[name]}")
        table.add_column("id", no_wrap=True)
        if name == "applies":
            table.add_column("how", no_wrap=True)
            table.add_column("on dask")
        else:
            table.add_column("why not" if name == "not" else "what must hold")
        for r in chosen:
            if name == "applies":
                table.add_row(r["id"], r["how"], r["note"])
            elif name == "not":
                table.add_row(r["id"], r["note"])
            else:
                table.add_row(r["id"], r["text"])
        console.print(table)
