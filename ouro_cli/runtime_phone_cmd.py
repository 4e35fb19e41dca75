"""`ouro runtime export-source DIR` and `ouro runtime cross-build`: the patched runtime for phones and ARM.

The work is in runtime.export_source and runtime.cross; importing this module adds the two commands to
the `ouro runtime` group (ouro_cli/main.py imports it).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ouro_cli.runtime_cmd import runtime_app
from runtime import cross
from runtime.export_source import cli_export


@runtime_app.command("export-source")
def export_source(directory: Path = typer.Argument(..., help="New (or empty) directory for the tree.")) -> None:
    """Write the patched llama.cpp tree with build scripts for Android (NDK, Termux) and iOS notes."""
    raise typer.Exit(cli_export(directory))


@runtime_app.command("cross-build")
def cross_build(
    target: str = typer.Option("aarch64-linux", "--target", help=f"One of: {', '.join(cross.TARGETS)}."),
    force: bool = typer.Option(False, "--force", help="Rebuild from a clean build directory."),
) -> None:
    """Cross-compile the patched llama.cpp (ouro-greedy, static) for ARM Linux, runnable under qemu."""
    raise typer.Exit(cross.cli_build(target, force=force))
