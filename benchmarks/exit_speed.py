"""What skip-mode early exit and the loop-shared KV cache buy (issue 5's BENCHMARKS.md lines).

    python -m benchmarks.exit_speed MODEL.gguf --out result.json [--rounds 3] [--threads 2]
    python -m benchmarks.exit_speed MODEL.gguf --out result.json --long-context 3000 [--gen-tokens 32]

Decode tok/s of select mode against skip mode with the exit forced after loop k (threshold 0, min_loops k:
the gate's CDF always reaches 0) and skip mode where nothing exits (threshold 1.0: the cost of checking),
taking turns on one context; the KV bytes of full and loop-shared KV at n_ctx 4096. --long-context: decode
with N tokens cached, full vs shared KV, two models open at once, timed around single-token evals. The N
tokens are evaluated at 1 loop to save minutes (set on the context: the API's set_loops would start the
conversation over); decode at all loops then reads N positions in every slot either way, which is what its
speed depends on, not the cached values.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import PROMPT_WORD, Sizes, SpeedRow, measurement_parser, show, sizes, take_turns
from benchmarks.results import save
from runtime import control, load

KV_POLICIES = ("full", "share")


@dataclass
class ExitSpeed:
    rows: list[SpeedRow]  # "select", "skip k=1" .. "skip k=T-1", "skip q=1.0"
    kv_bytes_4096: dict[str, int]  # KV policy -> the context's KV buffer bytes at n_ctx 4096

    def row(self, label: str) -> SpeedRow:
        return next(r for r in self.rows if r.label == label)


@dataclass
class LongContext:
    context: int  # cached tokens
    gen_tokens: int
    runs: dict[str, list[float]]  # KV policy -> decode tok/s of each round

    @property
    def decode_tps(self) -> dict[str, float]:
        return {kv: statistics.median(runs) for kv, runs in self.runs.items()}


def measure_exit(path: str | Path, work: Sizes = Sizes(64, 64)) -> ExitSpeed:
    """Select vs skip decode speed, and the KV bytes, full vs shared."""
    with load(path, n_ctx=work.prompt_tokens + work.gen_tokens + 16, n_threads=work.threads) as model:
        llm, loops = model.llama, model.file_loops
        configs = {"select": (loops, lambda: control.set_exit(llm, mode="select", threshold=1.0, min_loops=1))}
        for k in range(1, loops):
            configs[f"skip k={k}"] = (k, lambda k=k: control.set_exit(llm, mode="skip", threshold=0.0, min_loops=k))
        configs["skip q=1.0"] = (loops, lambda: control.set_exit(llm, mode="skip", threshold=1.0, min_loops=1))
        rows = take_turns(model, configs, PROMPT_WORD * work.prompt_tokens, work.gen_tokens, work.rounds)
    kv_bytes = {}
    for kv in KV_POLICIES:
        with load(path, n_ctx=4096, n_threads=1, kv=kv) as model:
            kv_bytes[kv] = control.kv_bytes(model.llama)
    return ExitSpeed(rows, kv_bytes)


def measure_long_context(path: str | Path, work: Sizes = Sizes(gen_tokens=32), context: int = 3000) -> LongContext:
    """Decode tok/s runs with `context` tokens cached, full vs shared KV, taking turns."""
    models = {kv: load(path, n_ctx=context + work.gen_tokens + 16, n_threads=work.threads, kv=kv)
              for kv in KV_POLICIES}
    try:
        for model in models.values():
            llm = model.llama
            control.set_loops(llm, 1)
            llm.eval((llm.tokenize(PROMPT_WORD.encode(), add_bos=False) * context)[:context])
            control.set_loops(llm, None)
        runs: dict[str, list[float]] = {kv: [] for kv in models}
        for _ in range(work.rounds):
            for kv, model in models.items():
                llm = model.llama
                llm.n_tokens = context  # forget the previous round's tokens (eval drops their KV cells)
                token = int(llm.input_ids[context - 1])
                start = time.perf_counter()
                for _ in range(work.gen_tokens):
                    llm.eval([token])  # which token is fed does not change the cost: no sampling here
                runs[kv].append(work.gen_tokens / (time.perf_counter() - start))
                show(f"{kv} KV at {context} tokens")
        return LongContext(context, work.gen_tokens, runs)
    finally:
        for model in models.values():
            model.close()


def main(argv: list[str] | None = None) -> None:
    parser = measurement_parser(__doc__, Sizes(prompt_tokens=64, gen_tokens=64))
    parser.add_argument("model", type=Path)
    parser.add_argument("--long-context", type=int, metavar="N",
                        help="measure only decode with N cached tokens, full vs shared KV")
    args = parser.parse_args(argv)
    save(args.out, measure_long_context(args.model, sizes(args), args.long_context) if args.long_context
         else measure_exit(args.model, sizes(args)))


if __name__ == "__main__":
    main()
