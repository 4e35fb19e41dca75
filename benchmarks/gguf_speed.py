"""One GGUF through the runtime: load time, prompt/decode speed at every loop count, KV bytes, a chat turn.

    python -m benchmarks.gguf_speed MODEL.gguf --out result.json [--prompt-tokens 512] [--gen-tokens 128]
                                    [--rounds 3] [--threads 2]

The suite runs this in a child process so that the child's peak RSS is this file's alone. Speeds come
from `ouro bench`'s own measurement (benchmarks.measure). Rather than measuring each loop count back to
back as `ouro bench` does, the loop counts take turns, one run each per round (set on the running context,
no reload; benchmarks.measure.take_turns).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.cli import measurement_parser
from benchmarks.measure import PROMPT_WORD, SpeedRow, take_turns
from runtime import control
from runtime import OuroModel, load

CHAT_MESSAGE = "Explain in two sentences why the sky is blue."


def loop_rows(model: OuroModel, prompt_tokens: int, gen_tokens: int, rounds: int,
              on_run: Callable[[str], None] = lambda _: None) -> list[SpeedRow]:
    """Select mode at loops 1..the file's."""
    configs = {f"T={t}": (t, lambda t=t: model.set_loops(t)) for t in range(1, model.file_loops + 1)}
    try:
        return take_turns(model, configs, PROMPT_WORD * prompt_tokens, gen_tokens, rounds, on_run)
    finally:
        model.set_loops(None)


def chat_turn(model: OuroModel, max_tokens: int = 32) -> dict:
    """One chat turn through the file's template with its own sampling defaults (Thinking: `<think>`
    prefilled by the template, the paper's temperature/top-p); end-of-turn is disabled so that exactly
    `max_tokens` come out of a random-weight model."""
    prompt = model.render_chat([{"role": "user", "content": CHAT_MESSAGE}])
    completion = model.chat([{"role": "user", "content": CHAT_MESSAGE}], max_tokens=max_tokens, ignore_eos=True,
                            seed=0)
    s = model.default_sampling
    return {"thinking_template": model.thinking, "opened_thinking": completion.opened_thinking,
            "prompt_tail": prompt[-40:], "generated_tokens": len(completion.tokens),
            "sampling": {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k},
            "decode_tps": completion.stats.decode_tps}


def measure_file(path: str | Path, *, prompt_tokens: int = 512, gen_tokens: int = 128, rounds: int = 3,
                 threads: int = 2, chat_tokens: int = 32, sweep: bool = True,
                 on_run: Callable[[str], None] = lambda _: None) -> dict:
    """sweep=False: load, KV and the chat turn only, for a file whose tensors another file already measured."""
    n_ctx = max(prompt_tokens + gen_tokens, 240) + 16  # room for the chat turn too
    start = time.perf_counter()
    model = load(path, n_ctx=n_ctx, n_threads=threads)
    load_seconds = time.perf_counter() - start
    with model:
        rows = loop_rows(model, prompt_tokens, gen_tokens, rounds, on_run) if sweep else []
        chat = chat_turn(model, chat_tokens)
        kv_measured = control.kv_bytes(model.llama) / model.llama.n_ctx()
        return {
            "file": str(path), "file_bytes": os.path.getsize(path), "threads": threads, "rounds": rounds,
            "load_seconds": load_seconds, "loops": model.file_loops,
            "kv_bytes_per_token": model.kv_bytes_per_token, "kv_bytes_per_token_measured": kv_measured,
            "rows": [r.to_dict() for r in rows], "chat": chat,
        }


def main(argv: list[str] | None = None) -> None:
    parser = measurement_parser(__doc__, prompt_tokens=512, gen_tokens=128)
    parser.add_argument("model", type=Path)
    parser.add_argument("--no-sweep", action="store_true",
                        help="no prompt/decode speeds: load, KV bytes and the chat turn only")
    args = parser.parse_args(argv)
    result = measure_file(args.model, prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
                          rounds=args.rounds, threads=args.threads, sweep=not args.no_sweep,
                          on_run=lambda label: print(label, flush=True))
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
