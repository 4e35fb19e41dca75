"""One GGUF through the runtime: load time, prompt/decode speed at every loop count, KV bytes, a chat turn.

    python -m benchmarks.gguf_speed MODEL.gguf --out result.json [--prompt-tokens 512] [--gen-tokens 128]
                                    [--rounds 3] [--threads 2] [--no-sweep]

The suite runs this in a child process so that the child's peak RSS is this file's alone. Speeds are
`ouro bench`'s measurement (benchmarks.measure), the loop counts taking turns round by round rather than
back to back, set on the running context.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import PROMPT_WORD, Sizes, SpeedRow, measurement_parser, sizes, take_turns
from benchmarks.results import save
from runtime import OuroModel, control, load

CHAT_MESSAGE = "Explain in two sentences why the sky is blue."


@dataclass
class ChatTurn:
    opened_thinking: bool  # the template prefilled `<think>` (a Thinking model)
    prompt_tail: str
    generated_tokens: int
    temperature: float  # the file's own sampling defaults
    top_p: float


@dataclass
class FileSpeed:
    load_seconds: float
    loops: int  # the file's
    kv_bytes_per_token: float  # runtime's formula
    kv_bytes_per_token_measured: float  # the context's KV buffer / its cells
    rows: list[SpeedRow]  # select mode at loops 1..the file's; none for a file measured with --no-sweep
    chat: ChatTurn
    peak_rss: int = 0  # of the child process (the suite adds it)
    same_tensors_as: str | None = None  # the model whose file of the same tensors was swept (the suite adds it)


def chat_turn(model: OuroModel, max_tokens: int = 32) -> ChatTurn:
    """One chat turn through the file's template with its own sampling defaults (Thinking: `<think>`
    prefilled by the template, the paper's temperature/top-p); end-of-turn is disabled so that exactly
    `max_tokens` come out of a random-weight model."""
    messages = [{"role": "user", "content": CHAT_MESSAGE}]
    completion = model.chat(messages, max_tokens=max_tokens, ignore_eos=True, seed=0)
    s = model.default_sampling
    return ChatTurn(completion.opened_thinking, model.render_chat(messages)[-40:], len(completion.tokens),
                    s.temperature, s.top_p)


def measure_file(path: str | Path, work: Sizes = Sizes(), *, chat_tokens: int = 32, sweep: bool = True) -> FileSpeed:
    """sweep=False: load, KV and the chat turn only, for a file whose tensors another file already measured."""
    start = time.perf_counter()
    model = load(path, n_ctx=max(work.prompt_tokens + work.gen_tokens, 240) + 16,  # room for the chat turn too
                 n_threads=work.threads)
    load_seconds = time.perf_counter() - start
    with model:
        rows = []
        if sweep:
            configs = {f"T={t}": (t, lambda t=t: model.set_loops(t)) for t in range(1, model.file_loops + 1)}
            rows = take_turns(model, configs, PROMPT_WORD * work.prompt_tokens, work.gen_tokens, work.rounds)
            model.set_loops(None)
        return FileSpeed(load_seconds, model.file_loops, model.kv_bytes_per_token,
                         control.kv_bytes(model.llama) / model.llama.n_ctx(), rows, chat_turn(model, chat_tokens))


def main(argv: list[str] | None = None) -> None:
    parser = measurement_parser(__doc__, Sizes(prompt_tokens=512, gen_tokens=128))
    parser.add_argument("model", type=Path)
    parser.add_argument("--no-sweep", action="store_true",
                        help="no prompt/decode speeds: load, KV bytes and the chat turn only")
    args = parser.parse_args(argv)
    save(args.out, measure_file(args.model, sizes(args), sweep=not args.no_sweep))


if __name__ == "__main__":
    main()
