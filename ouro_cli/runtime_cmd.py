"""`ouro runtime build|status|devtree`: the patched llama.cpp runtime (the work is in runtime.build)."""

from __future__ import annotations

from pathlib import Path

import typer

from runtime import build as runtime_build

runtime_app = typer.Typer(
    help="Build, install and inspect the patched llama.cpp runtime (llama-cpp-python + patches/).",
    no_args_is_help=True,
)


@runtime_app.command()
def build(
    native: bool = typer.Option(False, "--native", help="Tune for this CPU (GGML_NATIVE) instead of the "
                                "portable AVX2 set; the wheel may not run on older CPUs."),
    tools: bool = typer.Option(False, "--tools", help="Also build llama-cli, llama-server, llama-bench, "
                               "llama-perplexity and llama-quantize."),
    force: bool = typer.Option(False, "--force", help="Rebuild from a clean build directory and reinstall."),
) -> None:
    """Build (incrementally, cached) and install the runtime for the current patches/."""
    raise typer.Exit(runtime_build.cli_build(native=native, tools=tools, force=force))


@runtime_app.command()
def status() -> None:
    """Tell whether the installed runtime matches patches/ (exit 1 when it does not)."""
    raise typer.Exit(runtime_build.cli_status())


@runtime_app.command()
def devtree(directory: Path = typer.Argument(..., help="New directory for the git checkout.")) -> None:
    """Make a git checkout of the vendored llama.cpp with one commit per patch, for editing patches/."""
    raise typer.Exit(runtime_build.cli_devtree(directory))
