"""What early exit costs in answers: held-out accuracy against loops per token, through the GGUF runtime.

    python -m benchmarks.exit_quality [--problems N] [--threads 1] [--checkpoint DIR] [--output BENCHMARKS.md]

Issue 5's last line. The trained embedded model (models/ouro-tiny-arith) is converted to F16, Q8_0 and
Q4_K_M (models.evaluate.convert_all, into a temporary directory); each file is loaded by `runtime.load` in
three settings (select, skip, share+skip: SETTINGS), and each setting runs the exit thresholds 1.0, 0.9,
0.7 and 0.5, set on the running context. Every setting answers the same held-out problems, scored by the
model card's scorer (models.evaluate.score). The section this writes (after the early-exit section of
BENCHMARKS.md) says how; its figure is benchmarks/figures/exit_quality.png.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.markdown import FIGURES, Markers, figure, plot, table, write_section
from convert.errors import ConvertError
from models.data import HELD_OUT_SEED, Problem, held_out_problems
from models.evaluate import MAX_NEW_TOKENS, convert_all, score
from runtime import Settings, load
from runtime.errors import OuroRuntimeError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "models" / "ouro-tiny-arith"
FIGURE = FIGURES / "exit_quality.png"  # relative to BENCHMARKS.md's directory
QTYPES: tuple[str, ...] = ("f16", "q8_0", "q4_k_m")
THRESHOLDS: tuple[float, ...] = (1.0, 0.9, 0.7, 0.5)
# The held-out prompts are under 60 tokens and replies at most MAX_NEW_TOKENS: a small context keeps the
# (all-loops) KV allocation of the full policy trivial.
SETTINGS: dict[str, Settings] = {"select": Settings(n_ctx=256, exit_mode="select"),
                                 "skip": Settings(n_ctx=256, exit_mode="skip"),
                                 "share+skip": Settings(n_ctx=256, exit_mode="skip", kv="share")}
N_PROBLEMS = 100
MARKERS = Markers("exit-quality", "python -m benchmarks.exit_quality")
ANCHOR_HEADING = "Early exit"  # the section this one follows when the markers are not there yet


@dataclass(frozen=True)
class Row:
    """One (file, setting, threshold) measurement."""

    qtype: str
    setting: str
    threshold: float
    solved: int
    total: int
    loops_sum: float  # sum over decode steps of the loops each used
    decode_steps: int

    @property
    def accuracy(self) -> float:
        return self.solved / self.total

    @property
    def mean_loops(self) -> float | None:
        return self.loops_sum / self.decode_steps if self.decode_steps else None


@dataclass(frozen=True)
class Measurement:
    rows: list[Row]
    loops: int  # T, the file's ouro.num_loops
    weights: dict[str, str]  # qtype -> the ggml tensor types the file actually holds (K-quant fallbacks)
    problems: int


def measure(files: Mapping[str, Path], problems: Sequence[Problem], *, threads: int = 1,
            thresholds: Sequence[float] = THRESHOLDS, console: Console | None = None) -> Measurement:
    """Each file x setting x threshold on `problems`, each problem a new conversation; one load per file and
    setting (thresholds are set on the running context)."""
    rows, weights, loops = [], {}, 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console or Console(stderr=True)) as progress:
        task = progress.add_task("exit quality", total=len(files) * len(SETTINGS) * len(thresholds) * len(problems))
        for qtype, path in files.items():
            for setting, settings in SETTINGS.items():
                with load(path, settings, n_threads=threads) as model:
                    loops = model.file_loops
                    weights[qtype] = ", ".join(f"{t.type} x{t.count}" for t in model.summary.tensor_types)
                    for q in thresholds:
                        progress.update(task, description=f"{qtype.upper()} {setting} q={q}")
                        model.set_exit_threshold(q)
                        s = score(model, problems, advance=lambda: progress.advance(task))
                        rows.append(Row(qtype, setting, q, s.solved, s.total, s.loops, s.tokens))
    return Measurement(rows, loops, weights, len(problems))


def markdown_table(m: Measurement) -> str:
    """One line per setting. 'vs all loops': accuracy minus that of the same file in select mode at 1.0.
    'compute saved': the share of loop computations skip mode did not run (select mode runs them all)."""
    baseline = {r.qtype: r.accuracy for r in m.rows if r.setting == "select" and r.threshold == 1.0}
    rows = [[r.qtype.upper(), r.setting, f"{r.threshold:g}", f"{r.accuracy:.3f}",
             f"{100 * (r.accuracy - baseline[r.qtype]):+.1f} pts" if r.qtype in baseline else "",
             "n/a" if r.mean_loops is None else f"{r.mean_loops:.2f}",
             "0%" if r.setting == "select" or r.mean_loops is None else f"{1 - r.mean_loops / m.loops:.0%}"]
            for r in m.rows]
    return "\n".join(table(["weights", "mode", "threshold", "accuracy", "vs all loops", "mean loops / token",
                            "compute saved"], rows, right_from=2)).rstrip()


def draw(plt, m: Measurement, command: str):
    """Accuracy against mean loops, one panel per weight type, one marker per setting and threshold."""
    qtypes = list(dict.fromkeys(r.qtype for r in m.rows))
    markers = {"select": ("o", 9), "skip": ("s", 6), "share+skip": ("^", 5)}  # sizes: coinciding points stay visible
    fig, axes = plt.subplots(1, len(qtypes), figsize=(4.2 * len(qtypes), 4.2), sharey=True, squeeze=False)
    for ax, qtype in zip(axes[0], qtypes):
        for setting, (marker, size) in markers.items():
            rows = [r for r in m.rows if r.qtype == qtype and r.setting == setting and r.mean_loops is not None]
            ax.plot([r.mean_loops for r in rows], [r.accuracy for r in rows], marker=marker, markersize=size,
                    linestyle="-", linewidth=0.8, alpha=0.8, label=setting)
            for r in rows if setting == "skip" else []:
                ax.annotate(f"{r.threshold:g}", (r.mean_loops, r.accuracy), textcoords="offset points",
                            xytext=(0, 8), ha="center", fontsize=7)
        ax.set_title(qtype.upper(), fontsize=10)
        ax.set_xlabel("mean loops per token (runtime statistics)")
        ax.set_xlim(0.8, m.loops + 0.2)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"held-out accuracy ({m.problems} problems)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(f"Early exit: accuracy vs loops (labels: exit threshold q, skip mode)\n{command}", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))  # room for the legend below the panels
    return fig


def render_section(m: Measurement, command: str, checkpoint_name: str, figure_link: str | None) -> str:
    weights = "; ".join(f"{q.upper()}: {w}" for q, w in m.weights.items())
    return "\n".join([f"""## Early exit and answer quality (trained `{checkpoint_name}`, issue 5)

`{command}`

Held-out accuracy and mean loops per token of the trained embedded model through the GGUF runtime.
{m.problems} held-out problems (`models.data.held_out_problems`, seed {HELD_OUT_SEED}: the first ones of
the model card's evaluation), each a new conversation through the file's chat template, greedy, at most
{MAX_NEW_TOKENS} tokens, solved when the reply is exactly the answer (the model card's rule). select: all
{m.loops} loops run, the token is read out at the gate's exit loop; skip: computation stops at the exit
loop; share+skip: skip with the loop-shared KV cache, where a cached token keeps only the K/V of the last
loop computed for it, so loop t of a later token attends to another depth's K/V than the model was trained
with (the prompt, one micro-batch, stays exact; the decode steps do not). Mean loops per token: the runtime's statistics over
the decode steps (a reply's first token comes from the prompt pass, which runs all loops in every mode);
in select mode it is the loop read out, in the skip modes the loops computed. Tensor types in the files
(llama.cpp falls back from K-quants on rows not a multiple of 256): {weights}.
""", markdown_table(m), "", *figure(figure_link, "accuracy vs mean loops", "the table above, one panel per "
                                   "weight type (the exit threshold next to each point, 1.0 at the right).")])


def write_report(m: Measurement, command: str, output: Path, checkpoint_name: str) -> Path | None:
    """The figure next to `output` and the section inside it; returns the figure's path (None: no matplotlib)."""
    link = plot(output, FIGURE.name, lambda plt: draw(plt, m, command))
    # Markers absent: after the early-exit section, whose speeds this section's accuracies go with.
    write_section(output, render_section(m, command, checkpoint_name, link), MARKERS, after_heading=ANCHOR_HEADING)
    return output.parent / FIGURE if link else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exit_quality", description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=N_PROBLEMS, help="held-out problems per setting")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="trained HF checkpoint")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="the BENCHMARKS.md to update")
    args = parser.parse_args(argv)
    if args.problems < 1 or args.threads < 1:
        parser.error("--problems and --threads must be at least 1")
    if not (args.checkpoint / "config.json").is_file():
        parser.error(f"{args.checkpoint} is not a checkpoint directory (no config.json)")
    command = "python -m benchmarks.exit_quality " + shlex.join(
        [f"--problems={args.problems}", f"--threads={args.threads}"]
        + ([f"--checkpoint={args.checkpoint}"] if args.checkpoint != DEFAULT_CHECKPOINT else []))
    try:
        with tempfile.TemporaryDirectory(prefix="exit-quality-") as tmp:
            m = measure(convert_all(args.checkpoint, Path(tmp), QTYPES), held_out_problems(args.problems),
                        threads=args.threads)
    except (ConvertError, OuroRuntimeError) as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False)
        return 1
    print(markdown_table(m))  # plain print: a console would wrap the table's lines
    figure_path = write_report(m, command, args.output, args.checkpoint.name)
    print(f"wrote {args.output}" + (f" and {figure_path}" if figure_path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
