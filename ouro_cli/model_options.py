"""What the commands that load a model share: the sampling and settings options, loading, errors.

Each command declares the options with these annotated types (Typer has no option groups), then turns
them into one `Settings` with `settings(...)` (the --phone preset, then the flags given) and calls
`open_model(path, settings, console, yes=..., type_name=...)` (PATH may be a Hugging Face reference:
hub.resolve).

`--type` is the one option named like `ouro convert`'s: the same choices (convert.plan.OUTPUT_TYPES) and
validation, `OutputTypeName`. On `ouro convert` its short form is `-t`; on the commands that load a model
`-t` stays `--threads`, llama.cpp's meaning, which scripts already rely on.
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

from convert.plan import OUTPUT_TYPES
from runtime import OuroModel
from runtime.errors import OuroRuntimeError
from runtime.keys import EXIT_MODES, KV_MODES
from runtime.kv import KV_TYPES
from runtime.loading import open_checked, plan_for
from runtime.memory_plan import available_memory, fit_warning, human_bytes
from runtime.settings import DEFAULT_CTX, MMAP_MODES, PRESETS, Settings
from runtime.validate import validate_gguf

ExitMode = Enum("ExitMode", {m: m for m in EXIT_MODES}, type=str)
KvMode = Enum("KvMode", {m: m for m in KV_MODES}, type=str)
KvType = Enum("KvType", {t: t for t in KV_TYPES}, type=str)
OutputTypeName = Enum("OutputTypeName", {name: name for name in OUTPUT_TYPES}, type=str)
MmapMode = Enum("MmapMode", {m: m for m in MMAP_MODES}, type=str)

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
Ctx = Annotated[Optional[int], typer.Option("--ctx", "-c", help=f"Context length in tokens (default {DEFAULT_CTX}); its KV cache is allocated up front (the size is printed).", rich_help_panel=_R)]
Threads = Annotated[Optional[int], typer.Option("--threads", "-t", help="CPU threads (default: llama-cpp-python's).", rich_help_panel=_R)]
Loops = Annotated[Optional[int], typer.Option("--loops", help="Loops per token (default: the file's ouro.num_loops).", rich_help_panel=_R)]
ExitThreshold = Annotated[Optional[float], typer.Option("--exit-threshold", help="Q-exit threshold in [0, 1] (default: the file's; 1 = always the last loop).", rich_help_panel=_R)]
ExitModeOpt = Annotated[Optional[ExitMode], typer.Option("--exit-mode", help="select (default): run every loop, read the exit loop; skip: stop computing at the exit.", rich_help_panel=_R)]
KvOpt = Annotated[Optional[KvMode], typer.Option("--kv", help="full (default): one KV slot per loop and layer; share: generated tokens keep only their last loop's.", rich_help_panel=_R)]
KvTypeOpt = Annotated[Optional[KvType], typer.Option("--kv-type", help="KV cache element type: f16 (default) or q8_0 (half the memory).", rich_help_panel=_R)]
ConvertType = Annotated[OutputTypeName, typer.Option("--type", "-t", case_sensitive=False, help="Tensor type of the weight matrices; K-quants need `ouro runtime build`.")]
ModelType = Annotated[Optional[OutputTypeName], typer.Option("--type", case_sensitive=False, help="With a Hugging Face repo id: the type a checkpoint is converted to once (default q8_0), or the quant of a GGUF repo's file; the same as a :TYPE suffix. (-t is --threads, as in llama.cpp.)", rich_help_panel=_R)]
MmapOpt = Annotated[Optional[MmapMode], typer.Option("--mmap", help="How the weights are held: auto (default) reads the file into memory when llama.cpp repacks some of its matrices for this CPU (mmap would keep their file pages resident too), else maps it; on: always map; off: always read.", rich_help_panel=_R)]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Download a large model from the Hugging Face Hub without asking.", rich_help_panel=_R)]
Phone = Annotated[bool, typer.Option("--phone", help="Small-memory preset: --kv share, a q8_0 KV cache, --ctx 2048, 4 threads (replaces those options).", rich_help_panel=_R)]


def settings(*, phone: bool = False, ctx: int | None = None, threads: int | None = None, loops: int | None = None,
             exit_threshold: float | None = None, exit_mode: ExitMode | None = None, kv: KvMode | None = None,
             kv_type: KvType | None = None, mmap: MmapMode | None = None) -> Settings:
    """The one Settings of a command: the --phone preset (or the defaults), then the flags given."""
    given = dict(n_ctx=ctx, n_threads=threads, loops=loops, exit_threshold=exit_threshold,
                 exit_mode=exit_mode and exit_mode.value, kv=kv and kv.value, kv_type=kv_type and kv_type.value,
                 mmap=mmap and mmap.value)
    preset = PRESETS["phone" if phone else "default"]
    if phone:  # the preset replaces the memory options (see --phone's help)
        given.update(n_ctx=None, n_threads=None, kv=None, kv_type=None)
    return preset.replace(**{k: v for k, v in given.items() if v is not None})


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


def open_model(path: Optional[str], settings: Settings, console: Console, *, yes: bool = False,
               type_name: OutputTypeName | None = None) -> OpenedModel:
    """Load MODEL (a file or a Hugging Face reference), or with none the embedded model (converted into the
    cache on first use); `yes` downloads a large model without asking; `type_name` is --type."""
    synthetic = False
    if path is None:
        if type_name is not None:
            raise OuroRuntimeError(f"--type {type_name.value} needs a Hugging Face repo id as MODEL")
        from ouro_cli.embedded import embedded_model

        embedded = embedded_model(console)
        file, label, synthetic = embedded.gguf, embedded.label, embedded.synthetic
    else:
        from hub.resolve import model_file

        file, label = model_file(path, console, yes, type_name and type_name.value)
    summary = validate_gguf(file)
    block_values = KV_TYPES[settings.kv_type][1]
    if summary.head_dim % block_values:  # --phone on a model whose heads a q8_0 block cannot split
        console.print(f"[dim]a {settings.kv_type} KV cache needs heads of a multiple of {block_values} values "
                      f"(this model: {summary.head_dim}): using f16[/dim]")
        settings = settings.replace(kv_type="f16")
    # Warn before loading: a KV cache that does not fit can get the process killed while it is allocated.
    plan = plan_for(summary, settings)
    warning = fit_warning(plan, available_memory())
    if warning:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    return OpenedModel(open_checked(summary, settings, plan=plan), label, synthetic)


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
    """One line: the context's KV memory, and where the per-token figure comes from (the loops that own
    slots: all of them with full KV, one with shared KV; the cache's element type)."""
    md = model.metadata
    slot_loops = f"{model.loops} loops" if model.kv == "full" else "1 loop (shared)"
    return (f"context {model.n_ctx} tokens · KV cache {human_bytes(model.kv_bytes_capacity)} "
            f"({human_bytes(model.kv_bytes_per_token)}/token = K+V × {md.get('ouro.block_count')} layers "
            f"× {slot_loops} × {md.get('ouro.attention.head_count_kv')} KV heads × {model.kv_type.upper()}, "
            f"kv {model.kv})")


def loops_text(mean_loops: float | None) -> str:
    return f"{mean_loops:.2f}" if mean_loops is not None else "–"


def rate(value: float | None) -> str:
    return f"{value:.1f} tok/s" if value is not None else "–"
