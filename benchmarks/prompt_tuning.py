"""What makes the prompt pass faster: weight formats (repacked kernels), micro-batch size, threads.

    python -m benchmarks.prompt_tuning --file q8_0=A.gguf --file q4_k_m=B.gguf --file q4_0=C.gguf
                                       --out result.json [--prompt-tokens 512] [--rounds 3] [--threads 2]

Each configuration is its own llama_cpp.Llama context on the same mmapped files, all open at once and
taking turns round by round; the prompt is evaluated from an empty cache at one loop (prompt cost is T×
that of one loop, so ratios between configurations hold at every T and one loop keeps this cheap).
Configurations: every file at the default micro-batch (n_ubatch 512) and the given threads; the first
file also at n_ubatch 32 and at the other thread count (1 ↔ 2). ggml repacks Q4_0, Q4_K and Q8_0
weights at load for its AVX2/AVX-512 GEMM kernels when the shapes allow (the CPU "extra" buffer types).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.cli import measurement_parser
from benchmarks.measure import PROMPT_WORD
from runtime import control

SMALL_UBATCH = 32


def configurations(files: dict[str, Path], threads: int) -> list[dict]:
    first = next(iter(files))
    configs = [{"file": name, "n_ubatch": 512, "threads": threads} for name in files]
    configs.append({"file": first, "n_ubatch": SMALL_UBATCH, "threads": threads})
    configs.append({"file": first, "n_ubatch": 512, "threads": 1 if threads > 1 else 2})
    return configs


def tune_prompt(files: dict[str, Path], *, prompt_tokens: int = 512, rounds: int = 3, threads: int = 2,
                on_run: Callable[[str], None] = lambda _: None) -> list[dict]:
    from llama_cpp import Llama  # the patched runtime

    configs = configurations(files, threads)
    contexts = []
    try:
        for c in configs:
            llm = Llama(str(files[c["file"]]), n_ctx=prompt_tokens + 16, n_batch=512, n_ubatch=c["n_ubatch"],
                        n_threads=c["threads"], n_threads_batch=c["threads"], verbose=False)
            control.set_loops(llm, 1)
            contexts.append(llm)
        prompt = (contexts[0].tokenize(PROMPT_WORD.encode(), add_bos=False) * prompt_tokens)[:prompt_tokens]
        runs: list[list[float]] = [[] for _ in configs]
        for _ in range(rounds):
            for c, llm, out in zip(configs, contexts, runs):
                llm.reset()
                start = time.perf_counter()
                llm.eval(prompt)
                out.append(prompt_tokens / (time.perf_counter() - start))
                on_run(f"{c['file']} n_ubatch={c['n_ubatch']} threads={c['threads']}")
    finally:
        for llm in contexts:
            llm.close()
    return [{**c, "loops": 1, "prompt_tokens": prompt_tokens, "prompt_tps_runs": r,
             "prompt_tps": statistics.median(r)} for c, r in zip(configs, runs)]


def main(argv: list[str] | None = None) -> None:
    parser = measurement_parser(__doc__, prompt_tokens=512)
    parser.add_argument("--file", action="append", required=True, metavar="NAME=PATH")
    args = parser.parse_args(argv)
    files = {name: Path(path) for name, path in (f.split("=", 1) for f in args.file)}
    rows = tune_prompt(files, prompt_tokens=args.prompt_tokens, rounds=args.rounds, threads=args.threads,
                       on_run=lambda label: print(label, flush=True))
    args.out.write_text(json.dumps({"rows": rows, "threads": args.threads, "rounds": args.rounds}, indent=2))


if __name__ == "__main__":
    main()
