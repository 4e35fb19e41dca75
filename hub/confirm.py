"""Before a download: its size, always; a yes/no question when it is large, unless --yes was given."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from hub.errors import HubError
from hub.reference import HubRef
from runtime.memory_plan import human_bytes

LARGE_DOWNLOAD = 1 << 30  # bytes; Ouro-1.4B's checkpoint is 2.9 GB, the tiny test repos a few hundred KB


def confirm_download(ref: HubRef, sizes: dict[str, int], yes: bool, console: Console) -> None:
    """Show what is about to be downloaded; ask first when it exceeds LARGE_DOWNLOAD (a refusal raises)."""
    total = sum(sizes.values())
    if not sizes:
        return
    files = ", ".join(f"{name} {human_bytes(n)}" for name, n in sizes.items())
    console.print(f"{escape(str(ref))}: downloading {human_bytes(total)} ({escape(files)})")
    if total <= LARGE_DOWNLOAD or yes:
        return
    if not sys.stdin.isatty():
        raise HubError(f"{ref}: not downloading {human_bytes(total)} without confirmation; pass --yes")
    if not typer.confirm("Download?", default=True, err=True):
        raise HubError(f"{ref}: download declined")
