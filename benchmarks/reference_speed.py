"""Prompt and decode speed of the PyTorch reference: the alternative a CPU user has today (issue 8).

    python -m benchmarks.reference_speed CHECKPOINT --out result.json [--prompt-tokens 512] [--gen-tokens 16]
                                         [--rounds 3] [--threads 2]

runtime/reference.py in bf16 with its KV cache, greedy. The prompt pass computes the logits of the last
position only (as llama.cpp does); each decode step feeds one token with the cache, all loops. Timed
separately here, which reference.generate does not do: it is the same loop with a clock around each part.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import MedianRates, Sizes, measurement_parser, sizes
from benchmarks.results import save


@dataclass
class ReferenceSpeed(MedianRates):
    dtype: str
    threads: int
    prompt_tokens: int
    gen_tokens: int
    load_seconds: float
    prompt_tps_runs: list[float]
    decode_tps_runs: list[float]
    peak_rss: int = 0  # of the child process (the suite adds it)


def reference_speed(checkpoint: str | Path, work: Sizes = Sizes(gen_tokens=16)) -> ReferenceSpeed:
    import torch  # here, not at the top: the report reads this module's record without PyTorch

    from runtime.reference import load_checkpoint

    torch.set_num_threads(work.threads)
    start = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build the module in bf16: a float32 1.4B would be 5.7 GB
    try:
        model = load_checkpoint(checkpoint, dtype=torch.bfloat16)
    finally:
        torch.set_default_dtype(previous)
    result = ReferenceSpeed("bfloat16", work.threads, work.prompt_tokens, work.gen_tokens,
                            time.perf_counter() - start, [], [])
    # Any ids do: the cost does not depend on them. A fixed spread avoids one repeated token.
    prompt = torch.tensor([[(17 + 7919 * i) % model.config.vocab_size for i in range(work.prompt_tokens)]])
    with torch.inference_mode():
        for _ in range(work.rounds):
            start = time.perf_counter()
            out = model(prompt)
            token = int(model.logits(out.hidden[-1][:, -1]).argmax())
            result.prompt_tps_runs.append(work.prompt_tokens / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(work.gen_tokens):
                out = model(torch.tensor([[token]]), cache=out.cache)
                token = int(model.logits(out.hidden[-1][:, -1]).argmax())
            result.decode_tps_runs.append(work.gen_tokens / (time.perf_counter() - start))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = measurement_parser(__doc__, Sizes(prompt_tokens=512, gen_tokens=16))
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args(argv)
    save(args.out, reference_speed(args.checkpoint, sizes(args)))


if __name__ == "__main__":
    main()
