"""`ouro convert SRC [-o OUT] [-t TYPE] [--force]`: an Ouro HF checkpoint to GGUF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from convert.convert import convert_checkpoint
from convert.errors import ConvertError
from hub.resolve import checkpoint_source
from ouro_cli import model_options as opt

app = typer.Typer()


@app.command("convert")
def convert(
    src: Annotated[str, typer.Argument(help="Checkpoint directory, or a Hugging Face repo id, optionally @REVISION (downloaded unless cached).")],
    outfile: Annotated[Optional[Path], typer.Option("--outfile", "-o", help="Output file (default: <model-name>-<type>.gguf here).")] = None,
    qtype: opt.ConvertType = opt.OutputTypeName["q8_0"],
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output file if it exists.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Download a large checkpoint without asking.")] = False,
) -> None:
    """Convert an Ouro checkpoint to GGUF (loops, exit gate and tokenizer included)."""
    try:
        convert_checkpoint(checkpoint_source(src, Console(stderr=True), yes), outfile, qtype.value, force)
    except ConvertError as e:
        # One line, no traceback: bad input is the user's to fix, and the message says how.
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/bold red] {escape(str(e))}")
        raise typer.Exit(1) from None
