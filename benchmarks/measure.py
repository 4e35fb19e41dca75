"""How prompt and decode speed is measured, for `ouro bench` and the benchmark suite alike.

One run: a fixed prompt from an empty KV cache, then greedy tokens with end-of-turn disabled, through the
Python API (so the numbers are what `ouro chat` and `ouro serve` get); the runtime's own statistics time
the prompt pass and the decode steps. A configuration's runs are kept and their medians reported.
The suite's measuring children take their sizes and options from here too, and write their results as
JSON to --out (benchmarks.results.save).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime import Completion, GenerationStats, OuroModel
from runtime.errors import OuroRuntimeError

# Prompt text: one common word repeated gives one token per repeat with a byte-level BPE.
PROMPT_WORD = " the"


@dataclass(frozen=True)
class Sizes:
    """How much one measurement does."""

    prompt_tokens: int = 512
    gen_tokens: int = 128
    rounds: int = 3  # runs per configuration: medians are reported
    threads: int = 2


def measurement_parser(doc: str | None, defaults: Sizes, *, decodes: bool = True) -> argparse.ArgumentParser:
    """A measuring child's options: --out, --prompt-tokens, --gen-tokens (when it decodes), --rounds, --threads."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="write the result as JSON here")
    parser.add_argument("--prompt-tokens", type=int, default=defaults.prompt_tokens)
    if decodes:
        parser.add_argument("--gen-tokens", type=int, default=defaults.gen_tokens)
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="runs per configuration (medians are reported)")
    parser.add_argument("--threads", type=int, default=defaults.threads)
    return parser


def sizes(args: argparse.Namespace) -> Sizes:
    return Sizes(args.prompt_tokens, getattr(args, "gen_tokens", Sizes.gen_tokens), args.rounds, args.threads)


class MedianRates:
    """prompt/decode tok/s as the medians of a dataclass's `*_tps_runs` lists."""

    prompt_tps_runs: list[float]
    decode_tps_runs: list[float]

    @property
    def prompt_tps(self) -> float:
        return statistics.median(self.prompt_tps_runs)

    @property
    def decode_tps(self) -> float:
        return statistics.median(self.decode_tps_runs)

    def to_dict(self) -> dict:
        return {**asdict(self), "prompt_tps": self.prompt_tps, "decode_tps": self.decode_tps}


@dataclass
class SpeedRow(MedianRates):
    """The runs of one configuration (loop count, exit mode, ...)."""

    label: str
    loops: int  # loops per token: set, or the exit loop forced
    threshold: float | None = None  # the exit threshold when it is what the configuration varies
    prompt_tokens: int = 0
    gen_tokens: int = 0
    mean_loops: float | None = None  # the runtime's statistic, last run
    prompt_tps_runs: list[float] = field(default_factory=list)
    decode_tps_runs: list[float] = field(default_factory=list)

    def add(self, stats: GenerationStats) -> None:
        self.prompt_tokens, self.gen_tokens = stats.prefill_tokens, stats.generated_tokens
        self.mean_loops = stats.mean_loops
        self.prompt_tps_runs.append(stats.prefill_tps)
        self.decode_tps_runs.append(stats.decode_tps)


def timed_run(model: OuroModel, prompt: str, gen_tokens: int) -> GenerationStats:
    model.reset()  # from an empty KV cache: the whole prompt is evaluated every run
    completion = model.generate(prompt, max_tokens=gen_tokens, ignore_eos=True, temperature=0.0)
    assert isinstance(completion, Completion)
    stats = completion.stats
    if stats.prefill_tps is None or stats.decode_tps is None:
        raise OuroRuntimeError("the run measured no prompt or decode work (is --gen-tokens at least 2?)")
    return stats


def measure_row(model: OuroModel, label: str, prompt: str, gen_tokens: int, repeats: int,
                advance: Callable[[], None] = lambda: None, threshold: float | None = None) -> SpeedRow:
    """`repeats` runs back to back at the model's current settings."""
    row = SpeedRow(label, model.loops, threshold)
    for _ in range(repeats):
        row.add(timed_run(model, prompt, gen_tokens))
        advance()
    return row


def take_turns(model: OuroModel, configs: dict[str, tuple[int, Callable[[], None]]], prompt: str,
               gen_tokens: int, rounds: int) -> list[SpeedRow]:
    """Each round runs every configuration once: `configs` maps a label to (loops, a function that puts
    the context in that configuration). On a machine shared with other jobs, load drifts over minutes;
    taking turns spreads that drift evenly over the configurations whose ratios are reported."""
    rows = {label: SpeedRow(label, loops) for label, (loops, _) in configs.items()}
    for _ in range(rounds):
        for label, (_, apply) in configs.items():
            apply()
            rows[label].add(timed_run(model, prompt, gen_tokens))
            show(label)
    return list(rows.values())


def show(label: str) -> None:
    """A measuring child's progress, on stdout (the suite keeps it in the child's log)."""
    print(label, flush=True)
