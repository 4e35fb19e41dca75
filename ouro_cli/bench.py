"""`ouro bench MODEL [--json]`: prompt and decode speed at every loop count, and in skip mode.

For each configuration (select mode at loops 1..T, then skip mode at the file's loops and a few exit
thresholds, when the runtime has it; at threshold 1 skip mode never exits early, so it is not measured) the model evaluates a fixed prompt from an empty KV cache and then decodes a fixed number of
tokens greedily with end-of-turn disabled, `--repeats` times; the table shows the medians. Everything goes
through the Python API (benchmarks.measure, which the benchmark suite uses too), so the numbers are what
`ouro chat` and `ouro serve` get. MODEL is resolved as theirs is (hub.resolve): a file, or a Hugging Face
reference downloaded and converted once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from benchmarks.measure import PROMPT_WORD, SpeedRow, measure_row
from hub.resolve import model_file
from ouro_cli import model_options as opt
from runtime import Settings, load
from runtime.errors import OuroRuntimeError

app = typer.Typer()

DEFAULT_SKIP_THRESHOLDS = [0.5, 0.9]


@dataclass
class BenchResult:
    model: str
    threads: int | None
    n_ctx: int
    repeats: int
    rows: list[SpeedRow]  # label: the mode, "select" or "skip"; threshold: skip mode's (select: None)
    skip_mode: str  # "measured", or "not measured: <why>"

    def to_dict(self) -> dict:
        rows = [{"mode": r.pop("label"), **r} for r in (row.to_dict() for row in self.rows)]
        return {"model": self.model, "threads": self.threads, "n_ctx": self.n_ctx, "repeats": self.repeats,
                "rows": rows, "skip_mode": self.skip_mode}


def run_bench(path: str | Path, *, label: str | None = None, loops: list[int] | None = None,
              prompt_tokens: int = 64, gen_tokens: int = 32, repeats: int = 3, settings: Settings = Settings(),
              skip_thresholds: list[float] = DEFAULT_SKIP_THRESHOLDS, console: Console | None = None) -> BenchResult:
    """Measure `path` at each loop count (default 1..the file's), then in skip mode at each of
    `skip_thresholds` if the runtime has skip mode; `settings` for the rest (threads, KV cache), with a
    context just large enough. `label` names the model in the result (default: `path`)."""
    console = console or Console(stderr=True)
    prompt = PROMPT_WORD * prompt_tokens
    n_ctx = prompt_tokens + gen_tokens + 16
    with load(path, settings, n_ctx=n_ctx, loops=1) as model:
        loop_counts = loops or list(range(1, model.file_loops + 1))
        rows: list[SpeedRow] = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("benchmarking", total=(len(loop_counts) + len(skip_thresholds)) * repeats)
            advance = lambda: progress.advance(task)  # noqa: E731
            for t in loop_counts:
                progress.update(task, description=f"select, {t} loop{'s' if t > 1 else ''}")
                model.set_loops(t)
                rows.append(measure_row(model, "select", prompt, gen_tokens, repeats, advance))
            try:
                if not skip_thresholds:
                    raise OuroRuntimeError("no --skip-thresholds")
                model.set_loops(None)
                model.set_exit_mode("skip")
            except OuroRuntimeError as e:
                skip_mode = f"not measured: {e}"
            else:
                for q in skip_thresholds:
                    progress.update(task, description=f"skip mode, threshold {q:g}")
                    model.set_exit_threshold(q)
                    rows.append(measure_row(model, "skip", prompt, gen_tokens, repeats, advance, threshold=q))
                skip_mode = "measured"
    return BenchResult(model=label or str(path), threads=settings.n_threads, n_ctx=n_ctx, repeats=repeats,
                       rows=rows, skip_mode=skip_mode)


def render(console: Console, result: BenchResult) -> None:
    table = Table(title=f"ouro bench {result.model}", title_justify="left")
    for name in ("mode", "loops", "exit at", "prompt tok/s", "decode tok/s", "decode vs 1 loop", "mean loops/token"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    base = next((r.decode_tps for r in result.rows if r.label == "select" and r.loops == 1), None)
    for r in result.rows:
        table.add_row(r.label, str(r.loops), "last loop" if r.threshold is None else f"CDF ≥ {r.threshold:g}",
                      f"{r.prompt_tps:,.1f}", f"{r.decode_tps:,.1f}",
                      f"{r.decode_tps / base:.2f}×" if base else "–",
                      f"{r.mean_loops:.2f}" if r.mean_loops is not None else "–")
    console.print(table)
    first = result.rows[0]
    console.print(f"[dim]medians of {result.repeats} runs · {first.prompt_tokens}-token prompt from an empty cache, "
                  f"{first.gen_tokens} greedy tokens · threads {result.threads or 'default'} · "
                  f"skip mode {result.skip_mode}[/dim]")


def _parse_list(text: str, option: str, kind: type, low: float, high: float) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise OuroRuntimeError(f"{option} takes comma-separated {kind.__name__}s, got {text!r}") from None
    if not values or not all(low <= v <= high for v in values):
        raise OuroRuntimeError(f"{option} needs values in {low:g}..{high:g}, got {text!r}")
    return values


@app.command("bench")
def bench(
    model: Annotated[str, typer.Argument(help=opt.MODEL_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    loops: Annotated[Optional[str], typer.Option("--loops", help="Loop counts to measure, e.g. 1,2,4 (default: 1..the file's).")] = None,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", "-p", min=1, help="Prompt length in tokens.")] = 64,
    gen_tokens: Annotated[int, typer.Option("--gen-tokens", "-n", min=2, help="Tokens to decode per run.")] = 32,
    repeats: Annotated[int, typer.Option("--repeats", "-r", min=1, help="Runs per configuration (the median is shown).")] = 3,
    skip_thresholds: Annotated[str, typer.Option("--skip-thresholds", help="Exit thresholds to measure skip mode at, e.g. 0.5,0.9 (empty: none).")] = ",".join(map(str, DEFAULT_SKIP_THRESHOLDS)),
    threads: opt.Threads = None, kv_type: opt.KvTypeOpt = None, phone: opt.Phone = False,
    yes: opt.Yes = False, model_type: opt.ModelType = None,
) -> None:
    """Measure prompt and decode tokens/s at loops 1..T and in skip mode (early exit that skips compute)."""
    err = Console(stderr=True, highlight=False)
    with opt.cli_errors(err):
        # Every flag is checked before MODEL is resolved, which may mean a large download.
        settings = opt.settings(phone=phone, threads=threads, kv_type=kv_type)
        loop_counts = None if loops is None else _parse_list(loops, "--loops", int, 1, 16)
        thresholds = _parse_list(skip_thresholds, "--skip-thresholds", float, 0, 1) if skip_thresholds.strip() else []
        file, label = model_file(model, err, yes, model_type and model_type.value)
        result = run_bench(file, label=label, loops=loop_counts, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
                           repeats=repeats, settings=settings, skip_thresholds=thresholds, console=err)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        render(Console(highlight=False), result)
