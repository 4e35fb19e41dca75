"""What the user sees during and after a conversion: a per-tensor progress bar, then a one-screen summary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from convert.plan import TensorPlan
from convert.safetensors_reader import SafetensorsFile
from convert.writer import Advance


@contextmanager
def tensor_progress(console: Console, plans: list[TensorPlan], weights: SafetensorsFile) -> Iterator[Advance]:
    """A bar over the source bytes (so big tensors weigh what they cost), labelled with the current tensor."""
    total = sum(weights.entries[p.src.hf_name].nbytes for p in plans)
    index = {p.name: i for i, p in enumerate(plans, 1)}
    digits = len(str(len(plans)))
    name_width = max(len(p.name) for p in plans)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(bar_width=24), TaskProgressColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        # Transient: the summary replaces the bar on success, the error line on failure. Off when
        # stderr is not a terminal: rich would not animate it there anyway, only leave debris in logs.
        console=console, transient=True, disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task("", total=total)

        def advance(plan: TensorPlan, nbytes: int) -> None:
            label = f"{index[plan.name]:>{digits}}/{len(plans)} {plan.name:<{name_width}} {plan.ggml_type.name:<4}"
            progress.update(task, advance=nbytes, description=label)

        yield advance


@contextmanager
def quantize_progress(console: Console, label: str) -> Iterator[Callable[[int, int], None]]:
    """A bar over the tensors llama.cpp's quantizer has done (it reports them one by one)."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@dataclass
class Summary:
    source: Path
    output: Path
    type_name: str
    n_tensors: int
    n_params: int
    tensor_bytes: int
    file_bytes: int
    seconds: float
    layers: int
    loops: int
    thinking: bool
    template_from_checkpoint: bool
    fallbacks: list[str] = field(default_factory=list)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.tensor_bytes / self.n_params


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def print_summary(console: Console, s: Summary) -> None:
    table = Table(title="ouro convert", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("source", escape(str(s.source)))
    table.add_row("output", escape(str(s.output)))
    table.add_row("type", s.type_name.upper())
    table.add_row("model", f"{s.layers} layers x {s.loops} loops, {s.n_params:,} parameters in {s.n_tensors} tensors")
    table.add_row("file size", f"{_size(s.file_bytes)} ({s.file_bytes:,} bytes)")
    table.add_row("bits per weight", f"{s.bits_per_weight:.2f}")
    table.add_row("time", f"{s.seconds:.1f} s")
    flavour = "Thinking (sampling temp 1.0, top_p 0.7 recorded)" if s.thinking else "base (no sampling defaults)"
    template = "from the checkpoint" if s.template_from_checkpoint else "ChatML written by the converter"
    table.add_row("flavour", f"{flavour}; chat template {template}")
    for note in s.fallbacks:
        table.add_row("[yellow]fallback[/yellow]", escape(note))
    console.print(table)
