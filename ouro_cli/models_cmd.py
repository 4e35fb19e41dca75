"""`ouro list` and `ouro rm NAME`: the converted and downloaded models (hub/catalog.py).

ouro_cli/main.py composes this module's app into `ouro`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hub import catalog
from ouro_cli import model_options as opt

app = typer.Typer()


@app.command("list")
def list_models() -> None:
    """Show the models converted into the cache and those downloaded from the Hugging Face Hub."""
    found = catalog.entries()
    if not found:
        Console(stderr=True).print("no converted or downloaded models yet (try `ouro chat ByteDance/Ouro-1.4B`)")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "kind", "type", "size", "loops", "where"):
        table.add_column(column, justify="right" if column in ("size", "loops") else "left", overflow="fold")
    for e in found:
        table.add_row(escape(e.name), e.kind, e.type, opt.human_bytes(e.size), str(e.loops or "–"),
                      escape(str(e.path)))
    Console(highlight=False).print(table)


@app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="A NAME from `ouro list` (@COMMIT may be left out).")]) -> None:
    """Delete a converted or downloaded model."""
    err = Console(stderr=True, highlight=False)
    with opt.cli_errors(err):
        entry = catalog.remove(name)
    err.print(f"removed {escape(entry.name)} ({opt.human_bytes(entry.size)}, {escape(str(entry.path))})")
