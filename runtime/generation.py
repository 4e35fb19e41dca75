"""Generating text: the stream, the sampling loop over llama.cpp, and what each call measured.

Prompts go through `Llama.generate`, which keeps the KV cache of the longest common token prefix of its
previous run; a metered Llama records each eval() so the statistics can tell the prompt suffix it had to
evaluate (prefill) from the decode steps, and the loops each token used.
"""

from __future__ import annotations

import codecs
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from runtime import control
from runtime.errors import OuroRuntimeError
from runtime.sampling import SamplingParams
from runtime.template import THINK_OPEN


@dataclass
class GenerationStats:
    """What one chat/generate call measured."""

    prompt_tokens: int           # tokens of the whole prompt (for chat: the conversation so far)
    prefill_tokens: int          # of those, evaluated by this call; the rest were reused from the KV cache
    prefill_seconds: float
    generated_tokens: int        # sampled tokens, not counting the end-of-turn token
    decode_steps: int            # single-token evaluations after the prefill
    decode_seconds: float
    mean_loops: float | None     # loops per generated token (runtime statistics); None if none ran
    kv_bytes: int                # KV cache bytes holding tokens after this call
    finish_reason: str           # "stop" (end of turn), "length" (max_tokens or context full), "interrupted"

    @property
    def prefill_tps(self) -> float | None:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_tokens and self.prefill_seconds else None

    @property
    def decode_tps(self) -> float | None:
        return self.decode_steps / self.decode_seconds if self.decode_steps and self.decode_seconds else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prefill_tps": self.prefill_tps, "decode_tps": self.decode_tps}


@dataclass
class Completion:
    text: str
    tokens: list[int]
    stats: GenerationStats
    opened_thinking: bool = False  # the prompt opened a <think> block: the text starts inside it

    @property
    def message(self) -> dict[str, str]:
        """The reply as the assistant message to append to the conversation (so the next turn reuses
        this turn's KV cache): the text, after the <think> opening the template wrote for it."""
        return {"role": "assistant", "content": (THINK_OPEN if self.opened_thinking else "") + self.text}


class TextStream:
    """Iterator over the text of a generation as it is produced, in complete UTF-8 characters.

    `completion` is set once the generation ends: exhausted, closed early (`close()`, or a
    KeyboardInterrupt inside the loop) or failed. `opened_thinking` is known before the first piece.
    """

    def __init__(self, make_pieces: Callable[[TextStream], Iterator[str]], opened_thinking: bool) -> None:
        self.opened_thinking = opened_thinking
        self.completion: Completion | None = None
        self._pieces = make_pieces(self)  # a generator: nothing runs before the first next()
        self.owner = threading.get_ident()
        self.release: Callable[[], None] | None = None  # set by runtime.locking: frees the model at the end

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except BaseException:  # StopIteration included: the generation is over
            self._end()
            raise

    def close(self) -> None:
        try:
            self._pieces.close()  # type: ignore[attr-defined]  (a generator: runs its `finally`)
        finally:
            self._end()

    def __del__(self) -> None:
        # An abandoned stream must not keep other threads waiting for the model; its generation is ended
        # (the generator's `finally`) before the model is released.
        if self.release is not None:
            self.close()

    def _end(self) -> None:
        release, self.release = self.release, None
        if release is not None:
            release()

    @property
    def finished(self) -> bool:
        return self.completion is not None


def llama_cpp_module() -> Any:
    """The llama_cpp module, imported on first use so that `runtime` imports without it."""
    try:
        import llama_cpp
    except ImportError:
        raise OuroRuntimeError("llama_cpp is not installed: run `ouro runtime build` (or scripts/bootstrap.sh) "
                               "to build and install the patched runtime") from None
    return llama_cpp


@functools.cache
def metered_llama_class() -> type:
    """llama_cpp.Llama, recording the size and duration of every eval()."""
    llama_cpp = llama_cpp_module()

    class MeteredLlama(llama_cpp.Llama):
        # Llama.generate calls eval() once for the prompt suffix it could not reuse from the KV cache,
        # then once per sampled token: these records are how stats count prefill and decode work, and
        # the loops each token used (the runtime's per-decode statistics).
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.evals: list[tuple[int, float]] = []
            self.eval_loops: list[list[int]] = []
            super().__init__(*args, **kwargs)

        def eval(self, tokens: Sequence[int]) -> None:
            start = time.perf_counter()
            super().eval(tokens)
            self.evals.append((len(tokens), time.perf_counter() - start))
            self.eval_loops.append(control.last_loops(self))

    return MeteredLlama


def end_of_turn_ids(llm: Any) -> frozenset[int]:
    """Tokens whose sampling ends the reply.

    llama.cpp's end-of-generation set: eos/eot from the file and <|im_end|>/<|endoftext|> found by name;
    the file's ids and <|endoftext|> are added so they stop whatever that detection does."""
    vocab = llm._model.vocab
    ids = {t for t in range(llm.n_vocab()) if llama_cpp_module().llama_vocab_is_eog(vocab, t)}
    ids |= {llm.token_eos(), llm._model.token_eot()}
    endoftext = llm.tokenize(b"<|endoftext|>", add_bos=False, special=True)
    if len(endoftext) == 1:
        ids.add(endoftext[0])
    return frozenset(i for i in ids if i >= 0)


def _forbid(tokens: frozenset[int]) -> Any:
    """A logits processor that never samples `tokens` (--ignore-eos)."""
    stop = np.fromiter(tokens, dtype=np.int64)

    def mask(_input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        logits[stop] = -np.inf
        return logits

    return llama_cpp_module().LogitsProcessorList([mask])


def generate_pieces(llm: Any, tokens: list[int], params: SamplingParams, limit: int, result: TextStream, *,
                    end_of_turn: frozenset[int], default_seed: int | None, kv_bytes_per_token: Callable[[], int],
                    on_finish: Callable[[Completion], None]) -> Iterator[str]:
    """Sample up to `limit` tokens after `tokens`, yielding text; at the end (however it comes) set
    `result.completion` with the statistics of this call and pass it to `on_finish`."""
    seed = params.seed if params.seed is not None else default_seed
    # set_seed is sticky: reset it even when no seed is given, or one call's seed would stay for good.
    llm.set_seed(seed if seed is not None else llama_cpp_module().LLAMA_DEFAULT_SEED)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    generated: list[int] = []
    text: list[str] = []
    finish = "interrupted"
    llm.evals.clear()
    llm.eval_loops.clear()
    steps = llm.generate(tokens, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
                         temp=params.temperature, repeat_penalty=params.repeat_penalty,
                         logits_processor=_forbid(end_of_turn) if params.ignore_eos else None)
    try:
        for token in steps:
            if token in end_of_turn:
                finish = "stop"
                break
            generated.append(token)
            # A token may end inside a multi-byte character: the decoder holds the bytes back.
            piece = decoder.decode(llm.detokenize([token]))
            if piece:
                text.append(piece)
                yield piece
            if len(generated) >= limit:
                finish = "length"
                break
        rest = decoder.decode(b"", final=True)
        if rest:
            text.append(rest)
            yield rest
    finally:
        steps.close()
        evals = list(llm.evals)
        prefill_n, prefill_s = evals[0] if evals else (0, 0.0)
        decode = evals[1:]
        # loops per generated token: those of the decode steps (the prompt's when nothing was decoded)
        loops = [k for step in (llm.eval_loops[1:] or llm.eval_loops[:1]) for k in step]
        stats = GenerationStats(
            prompt_tokens=len(tokens), prefill_tokens=prefill_n, prefill_seconds=prefill_s,
            generated_tokens=len(generated), decode_steps=sum(n for n, _ in decode),
            decode_seconds=sum(s for _, s in decode),
            mean_loops=sum(loops) / len(loops) if loops else None,
            kv_bytes=kv_bytes_per_token() * llm.n_tokens, finish_reason=finish,
        )
        result.completion = Completion("".join(text), generated, stats, result.opened_thinking)
        on_finish(result.completion)
