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

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.measure import PROMPT_WORD, Sizes, measurement_parser, show, sizes
from benchmarks.results import save
from runtime import control

SMALL_UBATCH = 32


@dataclass
class TuningRow:
    file: str  # the name given with --file (the weight type)
    n_ubatch: int
    threads: int
    prompt_tokens: int
    loops: int = 1
    prompt_tps_runs: list[float] = field(default_factory=list)

    @property
    def prompt_tps(self) -> float:
        return statistics.median(self.prompt_tps_runs)


@dataclass
class Tuning:
    rows: list[TuningRow]


def tune_prompt(files: dict[str, Path], work: Sizes = Sizes()) -> Tuning:
    from llama_cpp import Llama  # the patched runtime

    first, n = next(iter(files)), work.prompt_tokens
    rows = [TuningRow(name, 512, work.threads, n) for name in files]
    rows += [TuningRow(first, SMALL_UBATCH, work.threads, n), TuningRow(first, 512, 1 if work.threads > 1 else 2, n)]
    contexts = []
    try:
        for r in rows:
            llm = Llama(str(files[r.file]), n_ctx=n + 16, n_batch=512, n_ubatch=r.n_ubatch, n_threads=r.threads,
                        n_threads_batch=r.threads, verbose=False)
            control.set_loops(llm, 1)
            contexts.append(llm)
        prompt = (contexts[0].tokenize(PROMPT_WORD.encode(), add_bos=False) * n)[:n]
        for _ in range(work.rounds):
            for r, llm in zip(rows, contexts):
                llm.reset()
                start = time.perf_counter()
                llm.eval(prompt)
                r.prompt_tps_runs.append(n / (time.perf_counter() - start))
                show(f"{r.file} n_ubatch={r.n_ubatch} threads={r.threads}")
    finally:
        for llm in contexts:
            llm.close()
    return Tuning(rows)


def main(argv: list[str] | None = None) -> None:
    parser = measurement_parser(__doc__, Sizes(prompt_tokens=512), decodes=False)
    parser.add_argument("--file", action="append", required=True, metavar="NAME=PATH")
    args = parser.parse_args(argv)
    files = {name: Path(path) for name, path in (f.split("=", 1) for f in args.file)}
    save(args.out, tune_prompt(files, sizes(args)))


if __name__ == "__main__":
    main()
