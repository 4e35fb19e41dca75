"""Prompt and decode speed of the PyTorch reference: the alternative a CPU user has today (issue 8).

    python -m benchmarks.reference_speed CHECKPOINT [--prompt-tokens 512] [--gen-tokens 16] [--rounds 3]
                                         [--threads 2] [--out result.json]

runtime/reference.py in bf16 with its KV cache, greedy. The prompt pass computes the logits of the last
position only (as llama.cpp does); each decode step feeds one token with the cache, all loops. Timed
separately here, which reference.generate does not do: it is the same loop with a clock around each part.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.cli import measurement_parser
from benchmarks.measure import MedianRates
from runtime.reference import load_checkpoint


@dataclass
class ReferenceSpeed(MedianRates):
    checkpoint: str
    dtype: str
    threads: int
    prompt_tokens: int
    gen_tokens: int
    load_seconds: float
    prompt_tps_runs: list[float]
    decode_tps_runs: list[float]


@torch.inference_mode()
def _one_run(model, prompt_ids: list[int], gen_tokens: int) -> tuple[float, float]:
    start = time.perf_counter()
    out = model(torch.tensor([prompt_ids]))
    token = int(model.logits(out.hidden[-1][:, -1]).argmax())
    prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(gen_tokens):
        out = model(torch.tensor([[token]]), cache=out.cache)
        token = int(model.logits(out.hidden[-1][:, -1]).argmax())
    decode_s = time.perf_counter() - start
    return len(prompt_ids) / prompt_s, gen_tokens / decode_s


def reference_speed(checkpoint: str | Path, *, prompt_tokens: int = 512, gen_tokens: int = 16, runs: int = 3,
                    threads: int = 2, dtype: torch.dtype = torch.bfloat16) -> ReferenceSpeed:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build the module in bf16: a float32 copy of 1.4B weights would be 5.7 GB
    try:
        model = load_checkpoint(checkpoint, dtype=dtype)
    finally:
        torch.set_default_dtype(previous)
    load_s = time.perf_counter() - start
    vocab = model.config.vocab_size
    # Any ids do: the cost does not depend on them. A fixed spread avoids one repeated token.
    prompt_ids = [(17 + 7919 * i) % vocab for i in range(prompt_tokens)]
    prompt_runs, decode_runs = [], []
    for _ in range(runs):
        p, d = _one_run(model, prompt_ids, gen_tokens)
        prompt_runs.append(p)
        decode_runs.append(d)
    return ReferenceSpeed(checkpoint=str(checkpoint), dtype=str(dtype).removeprefix("torch."), threads=threads,
                          prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, load_seconds=load_s,
                          prompt_tps_runs=prompt_runs, decode_tps_runs=decode_runs)


def main(argv: list[str] | None = None) -> None:
    parser = measurement_parser(__doc__, prompt_tokens=512, gen_tokens=16)
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args(argv)
    result = reference_speed(args.checkpoint, prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
                             runs=args.rounds, threads=args.threads)
    text = json.dumps(result.to_dict(), indent=2)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
