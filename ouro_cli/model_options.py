"""What `ouro chat` and `ouro generate` share: the model, sampling and loop/exit options, loading, errors.

Each command declares the options with these annotated types (Typer has no option groups), then calls
`sampling(...)` and `open_model(...)`.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from runtime.api import EXIT_MODES, KV_MODES, OuroModel, load
from runtime.errors import OuroRuntimeError
from runtime.memory_plan import KV_TYPES, available_memory, fit_warning, human_bytes, plan_memory  # noqa: F401  (human_bytes: used by chat and info through this module)
from runtime.validate import validate_gguf

ExitMode = Enum("ExitMode", {m: m for m in EXIT_MODES}, type=str)
KvMode = Enum("KvMode", {m: m for m in KV_MODES}, type=str)
DEFAULT_CTX = 2048

# The MODEL argument of every command that loads one (hub.resolve turns a repo reference into a file).
# No square brackets: Typer's help is Rich markup.
MODEL_HELP = ("A GGUF file, or a Hugging Face repo id, optionally @REVISION, then :TYPE (a checkpoint's type, "
              "converted once; a GGUF repo's quant) or /FILE.gguf.")
_S = "Sampling"
_R = "Model and loops"
Temp = Annotated[Optional[float], typer.Option("--temp", help="Temperature (0 = greedy). Default: the file's general.sampling.temp, else 0.8.", rich_help_panel=_S)]
TopP = Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling (default 0.95 or the file's).", rich_help_panel=_S)]
TopK = Annotated[Optional[int], typer.Option("--top-k", help="Top-k sampling, 0 = off (default 40).", rich_help_panel=_S)]
MinP = Annotated[Optional[float], typer.Option("--min-p", help="Min-p sampling (default 0.05).", rich_help_panel=_S)]
RepeatPenalty = Annotated[Optional[float], typer.Option("--repeat-penalty", help="Repetition penalty, 1 = off (default).", rich_help_panel=_S)]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Sampling seed (default: random).", rich_help_panel=_S)]
MaxTokens = Annotated[Optional[int], typer.Option("--max-tokens", "-n", help="Stop after this many tokens (default: at the end of the turn or a full context).", rich_help_panel=_S)]
IgnoreEos = Annotated[bool, typer.Option("--ignore-eos", help="Never end the turn; generate until --max-tokens or a full context.", rich_help_panel=_S)]
Ctx = Annotated[int, typer.Option("--ctx", "-c", help="Context length in tokens; its KV cache is allocated up front (the size is printed).", rich_help_panel=_R)]
Threads = Annotated[Optional[int], typer.Option("--threads", "-t", help="CPU threads (default: llama-cpp-python's).", rich_help_panel=_R)]
Loops = Annotated[Optional[int], typer.Option("--loops", help="Loops per token (default: the file's ouro.num_loops).", rich_help_panel=_R)]
ExitThreshold = Annotated[Optional[float], typer.Option("--exit-threshold", help="Q-exit threshold in [0, 1] (default: the file's; 1 = always the last loop).", rich_help_panel=_R)]
ExitModeOpt = Annotated[ExitMode, typer.Option("--exit-mode", help="select: run every loop, read the exit loop; skip: stop computing at the exit.", rich_help_panel=_R)]
KvOpt = Annotated[KvMode, typer.Option("--kv", help="full: one KV slot per loop and layer; share: generated tokens keep only their last loop's.", rich_help_panel=_R)]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Download a large model from the Hugging Face Hub without asking.", rich_help_panel=_R)]
Phone = Annotated[bool, typer.Option("--phone", help="Small-memory preset: --kv share, a q8_0 KV cache, --ctx 2048, 4 threads (replaces those options).", rich_help_panel=_R)]


def sampling(*, temp: float | None, top_p: float | None, top_k: int | None, min_p: float | None,
             repeat_penalty: float | None, seed: int | None, max_tokens: int | None,
             ignore_eos: bool) -> dict[str, Any]:
    """The sampling overrides the user gave (None = the model's default), as OuroModel keyword arguments."""
    given = dict(temperature=temp, top_p=top_p, top_k=top_k, min_p=min_p, repeat_penalty=repeat_penalty,
                 seed=seed, max_tokens=max_tokens, ignore_eos=ignore_eos or None)
    return {k: v for k, v in given.items() if v is not None}


@dataclass
class OpenedModel:
    model: OuroModel
    label: str          # what to call it: the file, or the embedded model's description
    synthetic: bool     # the embedded random-weight stand-in


def open_model(path: Optional[str], *, ctx: int, threads: int | None, loops: int | None,
               exit_threshold: float | None, exit_mode: ExitMode, kv: KvMode, console: Console,
               kv_type: str = "f16", yes: bool = False) -> OpenedModel:
    """Load MODEL (a file or a Hugging Face reference), or with none the embedded model (converted into the
    cache on first use)."""
    synthetic = False
    if path is None:
        from runtime.embedded import embedded_model

        embedded = embedded_model(console)
        file, label, synthetic = embedded.gguf, embedded.label, embedded.synthetic
    else:
        from hub.resolve import model_file

        file, label = model_file(path, console, yes)
    summary = validate_gguf(file)
    if summary.head_dim % KV_TYPES[kv_type][1]:  # --phone on a model whose heads a q8_0 block cannot split
        console.print(f"[dim]a {kv_type} KV cache needs heads of a multiple of {KV_TYPES[kv_type][1]} values "
                      f"(this model: {summary.head_dim}): using f16[/dim]")
        kv_type = "f16"
    # Warn before loading: a KV cache that does not fit can get the process killed while it is allocated.
    warning = fit_warning(plan_memory(summary, ctx, kv=kv.value, kv_type=kv_type, loops=loops), available_memory())
    if warning:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    model = load(file, n_ctx=ctx, loops=loops, exit_threshold=exit_threshold, exit_mode=exit_mode.value,
                 kv=kv.value, n_threads=threads, kv_type=kv_type)
    return OpenedModel(model, label, synthetic)


@contextlib.contextmanager
def cli_errors(console: Console) -> Iterator[None]:
    """Bad input ends the command with one red line on stderr and exit status 1, no traceback."""
    try:
        yield
    except OuroRuntimeError as e:
        console.print(f"[bold red]error:[/bold red] {escape(str(e))}")
        raise typer.Exit(1) from None


class CtrlC:
    """While text streams, the first Ctrl-C only asks the stream to stop after the current token.

    A KeyboardInterrupt raised at an arbitrary point can land inside llama.cpp's sampler callback,
    where ctypes swallows it, so the stop would be lost; polling a flag after each token cannot miss.
    A second Ctrl-C raises KeyboardInterrupt at once (e.g. during a long prompt evaluation).
    """

    def __init__(self) -> None:
        self.pressed = False

    def __enter__(self) -> CtrlC:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True




def kv_summary(model: OuroModel) -> str:
    """One line: the context's KV memory, and where the per-token figure comes from."""
    md = model.metadata
    return (f"context {model.n_ctx} tokens · KV cache {human_bytes(model.kv_bytes_capacity)} "
            f"({human_bytes(model.kv_bytes_per_token)}/token = K+V × {md.get('ouro.block_count')} layers "
            f"× {model.loops} loops × {md.get('ouro.attention.head_count_kv')} KV heads × F16, kv {model.kv})")


def loops_text(mean_loops: float | None) -> str:
    return f"{mean_loops:.2f}" if mean_loops is not None else "–"


def rate(value: float | None) -> str:
    return f"{value:.1f} tok/s" if value is not None else "–"
