"""What skip-mode early exit and the loop-shared KV cache buy (issue 5's BENCHMARKS.md lines).

    python -m benchmarks.exit_speed MODEL.gguf --out result.json [--rounds 3] [--threads 2]
    python -m benchmarks.exit_speed MODEL.gguf --out result.json --long-context 3000 [--gen-tokens 32]

- Decode tok/s of select mode (all loops run) against skip mode with the exit forced after loop k
  (threshold 0, min_loops k: the gate's CDF always reaches 0, so every token exits at loop k), k = 1..T-1,
  and skip mode at threshold 1.0 (nothing exits: the cost of checking). One runtime.load, the modes set
  per context with runtime.control, taking turns round by round (see benchmarks.gguf_speed).
- KV cache bytes at n_ctx 4096 with full and loop-shared KV (`ouro.kv_share`), read from the context.
- Decode tok/s with 3,000 tokens in the cache, shared vs full KV: two models (`runtime.load(kv=...)`,
  weights mmapped once, both open at once), decode timed around single-token evals of the underlying
  llama_cpp.Llama. The 3,000 cached tokens are evaluated at 1 loop to save minutes (set on the context
  directly: the API's set_loops would start the conversation over): decode at all loops then reads 3,000
  positions in every slot either way, which is what its speed depends on (the cached values themselves do
  not matter for speed).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.cli import measurement_parser
from benchmarks.measure import PROMPT_WORD, take_turns
from runtime import control
from runtime import load


def skip_rows(path: str | Path, *, prompt_tokens: int = 64, gen_tokens: int = 64, rounds: int = 3,
              threads: int = 2, on_run: Callable[[str], None] = lambda _: None) -> list[dict]:
    with load(path, n_ctx=prompt_tokens + gen_tokens + 16, n_threads=threads) as model:
        llm, loops = model.llama, model.file_loops
        configs = {"select": (loops, lambda: control.set_exit(llm, mode="select", threshold=1.0, min_loops=1))}
        for k in range(1, loops):
            configs[f"skip k={k}"] = (k, lambda k=k: control.set_exit(llm, mode="skip", threshold=0.0, min_loops=k))
        configs["skip q=1.0"] = (loops, lambda: control.set_exit(llm, mode="skip", threshold=1.0, min_loops=1))
        rows = take_turns(model, configs, PROMPT_WORD * prompt_tokens, gen_tokens, rounds, on_run)
        # The statistics say how many loops the last decode ran: proof that the forced exits happened.
        loops_run = {}
        for label, (_, apply) in configs.items():
            apply()
            model.generate(PROMPT_WORD * 4, max_tokens=2, ignore_eos=True, temperature=0.0)
            loops_run[label] = control.last_loops(llm)
    return [{**r.to_dict(), "loops_run_last_decode": loops_run[r.label]} for r in rows]


KV_POLICIES = ("full", "share")


def kv_bytes(path: str | Path, n_ctx: int = 4096) -> dict[str, int]:
    result = {}
    for kv in KV_POLICIES:
        with load(path, n_ctx=n_ctx, n_threads=1, kv=kv) as model:
            result[kv] = control.kv_bytes(model.llama)
    return result


def long_context_decode(path: str | Path, *, context: int = 3000, gen_tokens: int = 32, rounds: int = 3,
                        threads: int = 2, on_run: Callable[[str], None] = lambda _: None) -> dict[str, list[float]]:
    """Decode tok/s runs with `context` tokens cached, full vs shared KV, taking turns."""
    models = {kv: load(path, n_ctx=context + gen_tokens + 16, n_threads=threads, kv=kv) for kv in KV_POLICIES}
    contexts = {kv: model.llama for kv, model in models.items()}
    try:
        for llm in contexts.values():
            filler = (llm.tokenize(PROMPT_WORD.encode(), add_bos=False) * context)[:context]
            control.set_loops(llm, 1)
            llm.eval(filler)
            control.set_loops(llm, None)
        runs: dict[str, list[float]] = {name: [] for name in contexts}
        for _ in range(rounds):
            for name, llm in contexts.items():
                llm.n_tokens = context  # forget the previous round's tokens (eval drops their KV cells)
                token = int(llm.input_ids[context - 1])
                start = time.perf_counter()
                for _ in range(gen_tokens):
                    llm.eval([token])  # which token is fed does not change the cost: no sampling here
                runs[name].append(gen_tokens / (time.perf_counter() - start))
                on_run(f"{name} KV at {context} tokens")
        return runs
    finally:
        for model in models.values():
            model.close()


def measure_exit(path: str | Path, *, prompt_tokens: int = 64, gen_tokens: int = 64, rounds: int = 3,
                 threads: int = 2, on_run: Callable[[str], None] = lambda _: None) -> dict:
    """Select vs skip decode speed and the KV bytes, full vs shared."""
    return {"file": str(path), "threads": threads, "rounds": rounds,
            "skip": skip_rows(path, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, rounds=rounds,
                              threads=threads, on_run=on_run),
            "kv_bytes_4096": kv_bytes(path)}


def measure_long_context(path: str | Path, *, context: int = 3000, gen_tokens: int = 32, rounds: int = 3,
                         threads: int = 2, on_run: Callable[[str], None] = lambda _: None) -> dict:
    runs = long_context_decode(path, context=context, gen_tokens=gen_tokens, rounds=rounds, threads=threads,
                               on_run=on_run)
    return {"file": str(path), "threads": threads, "rounds": rounds, "context": context, "gen_tokens": gen_tokens,
            "runs": runs, "decode_tps": {name: statistics.median(r) for name, r in runs.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = measurement_parser(__doc__, prompt_tokens=64, gen_tokens=64)
    parser.add_argument("model", type=Path)
    parser.add_argument("--long-context", type=int, metavar="N",
                        help="measure only decode with N cached tokens, full vs shared KV")
    args = parser.parse_args(argv)
    show = lambda label: print(label, flush=True)  # noqa: E731
    if args.long_context:
        result = measure_long_context(args.model, context=args.long_context, gen_tokens=args.gen_tokens,
                                      rounds=args.rounds, threads=args.threads, on_run=show)
    else:
        result = measure_exit(args.model, prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
                              rounds=args.rounds, threads=args.threads, on_run=show)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
