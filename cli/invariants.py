"""``squall invariants``: the catalog as a table, or as JSON with ``--json``."""

from __future__ import annotations

import click
import msgspec
from rich.console import Console
from rich.table import Table

from squall.invariants.base import ENTITIES
from squall.invariants.catalog import CATALOG


@click.command("invariants")
@click.option("--json", "as_json", is_flag=True, help="machine-readable: a JSON list")
@click.option("--entity", type=click.Choice(ENTITIES), default=None,
              help="only the invariants about this kind of entity")
def invariants_command(as_json: bool, entity: str | None) -> None:
    """List the invariants strict mode checks: id, entity, when, what must hold."""
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
