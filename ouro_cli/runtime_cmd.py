"""`ouro runtime build|status|devtree|export-source|cross-build|cross-run`: the patched llama.cpp runtime.

The work is in the toolchain package; this module turns its results and errors into terminal output and
exit codes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from toolchain import cross
from toolchain.devtree import make_devtree
from toolchain.errors import BuildError
from toolchain.export_source import SCRIPTS_DIR, export_source
from toolchain.sanitize import build_sanitized, current_sanitized
from toolchain.status import print_status, runtime_status
from toolchain.wheel import build_runtime

app = typer.Typer(
    name="runtime",
    help="Build, install and inspect the patched llama.cpp runtime (llama-cpp-python + patches/).",
    no_args_is_help=True,
)


def _run(work: Callable[[Console], list[str]]) -> None:
    """Run a build step: `work` gets the console for its progress and returns the lines reporting its
    result. An error is one message without a traceback (exit 1); Ctrl-C exits 130."""
    console = Console(stderr=True, soft_wrap=True)
    try:
        lines = work(console)
    except BuildError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        raise typer.Exit(130) from None
    for line in lines:
        console.print(line, highlight=False)


@app.command()
def build(
    native: Annotated[bool, typer.Option("--native", help="Tune for this CPU (GGML_NATIVE) instead of the portable AVX2 set; the wheel may not run on older CPUs.")] = False,
    tools: Annotated[bool, typer.Option("--tools", help="Also build llama-cli, llama-server, llama-bench, llama-perplexity and llama-quantize.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild from a clean build directory and reinstall.")] = False,
    sanitize: Annotated[bool, typer.Option("--sanitize", help="Instead: build libllama and ggml with ASan + UBSan into the cache (never installed) and print their directory; scripts/sanitize.sh runs the tests against it.")] = False,
) -> None:
    """Build (incrementally, cached) and install the runtime for the current patches/."""
    if sanitize:
        _sanitized(force)
        return

    def work(console: Console) -> list[str]:
        result = build_runtime(native=native, tools=tools, force=force, console=console)
        return [f"runtime ready in {result.seconds:.1f} s (key {result.key[:12]})",
                *([f"tools: {result.tools}"] if result.tools else [])]

    _run(work)


def _sanitized(force: bool) -> None:
    """The sanitized build; its library directory alone goes to stdout, for scripts (LLAMA_CPP_LIB_PATH)."""
    built: list = []

    def work(console: Console) -> list[str]:
        built.append(build_sanitized(force=force, console=console))
        return [f"sanitized libraries ready in {built[0].seconds:.1f} s (key {built[0].key[:12]})"]

    _run(work)
    print(built[0].lib_dir)


@app.command()
def status(
    sanitize: Annotated[bool, typer.Option("--sanitize", help="Print the sanitized build's library directory for the current patches/ (exit 1 if it is not built).")] = False,
) -> None:
    """Tell whether the installed runtime matches patches/ (exit 1 when it does not)."""
    if sanitize:
        lib_dir = current_sanitized()
        if lib_dir is None:
            Console(stderr=True).print("no sanitized build for the current patches/: run `ouro runtime build --sanitize`")
            raise typer.Exit(1)
        print(lib_dir)
        raise typer.Exit(0)
    current = runtime_status()
    print_status(current, Console(soft_wrap=True))
    raise typer.Exit(0 if current.ok else 1)


@app.command()
def devtree(directory: Annotated[Path, typer.Argument(help="New directory for the git checkout.")]) -> None:
    """Make a git checkout of the vendored llama.cpp with one commit per patch, for editing patches/."""
    _run(lambda console: [f"dev tree ready: {make_devtree(directory, console=console)} "
                          f"(branch ouro-patches, base tag vendored)"])


@app.command("export-source")
def export_source_cmd(directory: Annotated[Path, typer.Argument(help="New (or empty) directory for the tree.")]) -> None:
    """Write the patched llama.cpp tree with build scripts for Android (NDK, Termux) and iOS notes."""
    def work(console: Console) -> list[str]:
        target = export_source(directory, console=console)
        return [f"patched llama.cpp written to {target}; build scripts in {target / SCRIPTS_DIR}"]

    _run(work)


Target = Annotated[str, typer.Option("--target", help=f"One of: {', '.join(cross.TARGETS)}.")]


@app.command("cross-build")
def cross_build(
    target: Target = "aarch64-linux",
    force: Annotated[bool, typer.Option("--force", help="Rebuild from a clean build directory.")] = False,
) -> None:
    """Cross-compile the patched llama.cpp (ouro-greedy, static) for ARM Linux, runnable under qemu."""
    _run(lambda console: [f"{target}: {cross.build_cross(target, force=force, console=console)}"])


@app.command("cross-run")
def cross_run(
    model: Annotated[Path, typer.Argument(help="An Ouro GGUF file.")],
    tokens: Annotated[list[int], typer.Argument(help="The prompt, as token ids.")],
    n_predict: Annotated[int, typer.Option("--n-predict", "-n", help="Tokens to predict greedily.")] = 8,
    target: Target = "aarch64-linux",
    compare: Annotated[bool, typer.Option("--compare", help="Also run the host runtime and compare.")] = False,
    phone: Annotated[bool, typer.Option("--phone", help="Shared KV, q8_0 KV cache, flash attention.")] = False,
) -> None:
    """Run the cross-built ouro-greedy under qemu: greedy tokens for a prompt of token ids."""
    out = Console(soft_wrap=True, highlight=False)
    same = True

    def work(console: Console) -> list[str]:
        nonlocal same
        if not compare:
            run = cross.run_greedy(model, tokens, n_predict, target_name=target, phone=phone)
            out.print(" ".join(map(str, run.tokens)))
            return []
        c = cross.compare(model, tokens, n_predict, target_name=target, phone=phone)
        same = c.tokens_equal
        out.print(f"{target} tokens: {' '.join(map(str, c.target.tokens))} ({c.target.seconds:.1f} s under emulation)")
        out.print(f"host tokens:  {' '.join(map(str, c.host.tokens))} ({c.host.seconds:.2f} s)")
        out.print(f"tokens equal: {c.tokens_equal}; logits max |diff| {c.max_abs_diff:.3g} "
                  f"({c.max_rel_diff:.3g} of the largest |logit|) over {c.steps_compared} step(s)")
        return []

    _run(work)
    raise typer.Exit(0 if same else 1)
