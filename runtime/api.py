"""The Python API: `load(path, ...)` -> `OuroModel`, an Ouro GGUF ready to chat and generate.

    from runtime import load
    model = load("ouro-1.4b-q8_0.gguf", n_ctx=4096, loops=3)
    print(model.chat([{"role": "user", "content": "2+2?"}]).text)
    for piece in model.generate("Once upon a time", stream=True, max_tokens=64):
        print(piece, end="", flush=True)
    print(model.stats)

`OuroModel` wraps `llama_cpp.Llama` (the patched build, `model.llama`). Prompts go through
`Llama.generate`, which keeps the KV cache of the longest common token prefix of its previous run, so a
new chat turn evaluates only the tokens after that prefix; `chat` hands it the exact tokens of the
previous turn (prompt + sampled answer) so the prefix covers the whole conversation so far. That
matters more for Ouro than for a dense model: every prompt token costs T loops.
"""

from __future__ import annotations

import codecs
import functools
import gc
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runtime import control
from runtime.errors import OuroRuntimeError
from runtime.memory_plan import FLASH_ATTN, GGML_TYPE_IDS, KV_TYPES, plan_memory
from runtime.sampling import SamplingParams
from runtime.validate import MAX_LOGICAL_LAYERS, MAX_LOOPS, GGUFSummary, validate_gguf

EXIT_MODES = ("select", "skip")
KV_MODES = ("full", "share")
# Thinking templates open the block after the assistant header; the model writes the rest and "</think>".
THINK_OPEN = "<think>\n"
Message = Mapping[str, str]
# Small-memory settings (`ouro chat --phone`), as load() arguments: loop-shared KV (T x less KV), a q8_0
# KV cache (half of F16 again; it runs with flash attention), a small context, 4 threads.
PHONE_PRESET: Mapping[str, Any] = {"n_ctx": 2048, "kv": "share", "kv_type": "q8_0", "n_threads": 4}


# ------------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class RuntimeSettings:
    """The loop/exit knobs. None means "as the GGUF says" (ouro.num_loops, ouro.early_exit_threshold)."""

    loops: int | None = None
    exit_threshold: float | None = None
    exit_mode: str = "select"
    kv: str = "full"
    kv_type: str = "f16"  # KV cache element type (runtime.memory_plan.KV_TYPES)

    def __post_init__(self) -> None:
        if self.loops is not None and (isinstance(self.loops, bool) or not 1 <= self.loops <= MAX_LOOPS):
            raise OuroRuntimeError(f"loops must be an integer in 1..{MAX_LOOPS}, got {self.loops!r}")
        if self.exit_threshold is not None and not 0.0 <= self.exit_threshold <= 1.0:
            raise OuroRuntimeError(f"the exit threshold must be in [0, 1], got {self.exit_threshold!r}")
        if self.exit_mode not in EXIT_MODES:
            raise OuroRuntimeError(f"exit mode must be one of {', '.join(EXIT_MODES)}, got {self.exit_mode!r}")
        if self.kv not in KV_MODES:
            raise OuroRuntimeError(f"kv must be one of {', '.join(KV_MODES)}, got {self.kv!r}")
        if self.kv_type not in KV_TYPES:
            raise OuroRuntimeError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {self.kv_type!r}")


# -------------------------------------------------------------------------------------------- results

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
        self._release: Callable[[], None] | None = None  # set by _serialized: frees the model at the end

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
        if self._release is not None:
            self.close()

    def _end(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    @property
    def finished(self) -> bool:
        return self.completion is not None


# ------------------------------------------------------------------------------------------ llama_cpp

def _llama_cpp() -> Any:
    """The llama_cpp module, imported on first use so that `runtime` imports without it."""
    try:
        import llama_cpp
    except ImportError:
        raise OuroRuntimeError("llama_cpp is not installed: run `ouro runtime build` (or scripts/bootstrap.sh) "
                               "to build and install the patched runtime") from None
    return llama_cpp


@functools.cache
def _metered_llama_class() -> type:
    """llama_cpp.Llama, recording the size and duration of every eval()."""
    llama_cpp = _llama_cpp()

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


def _open_llama(path: Path, settings: RuntimeSettings, n_loops: int | None, n_ctx: int,
                n_threads: int | None) -> Any:
    """Load with the settings that shape the KV cache; n_loops: more loops than the file's (else None)."""
    overrides: dict[str, int | float] = {}
    if n_loops is not None:
        overrides["ouro.num_loops"] = int(n_loops)
    if settings.kv == "share":
        overrides["ouro.kv_share"] = True  # patch 0003
    cache_type = GGML_TYPE_IDS[settings.kv_type]
    try:
        return _metered_llama_class()(
            # One thread count for decode and prompt batches: llama-cpp-python would otherwise use every
            # core for batches, which on a busy machine stalls its spinning thread barriers for seconds.
            str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
            kv_overrides=overrides or None, verbose=False,
            type_k=cache_type, type_v=cache_type, flash_attn=FLASH_ATTN,
        )
    except ValueError as e:
        raise OuroRuntimeError(f"{path}: llama.cpp cannot load it ({e}); is it an Ouro GGUF, and is the "
                               f"patched runtime installed (`ouro runtime status`)?") from None


# ------------------------------------------------------------------------- one thread at a time (issue 9)
# A llama.cpp context is not thread-safe, and a second thread's call would also end the first one's stream.
# So every public call that drives the context holds OuroModel._lock for its duration, and a returned
# stream holds it until it is exhausted, closed or garbage-collected: other threads wait (serialized, not
# refused). A thread's own unfinished stream never blocks it: its next call ends that stream first, as
# before. A plain Lock, not an RLock: a stream may be finished (and release) on another thread.
# The model keeps only a weak reference to its current stream (OuroModel._active), so a stream its caller
# dropped can be collected; a stream and its generator refer to each other, so a caller about to wait
# first runs the cycle collector, which releases the model if the holder was abandoned.

def _serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: OuroModel, *args: Any, **kwargs: Any) -> Any:
        if self._own_stream_is_open():
            self._close_active()  # releases the lock that stream holds
        # No reference to the current stream may be held here: the collector must be free to reclaim it.
        if not self._lock.acquire(blocking=False):
            gc.collect()  # an abandoned stream releases the model in its __del__
            self._lock.acquire()
        try:
            result = method(self, *args, **kwargs)
        except BaseException:
            self._lock.release()
            raise
        if isinstance(result, TextStream) and not result.finished:
            result._release = self._lock.release  # the stream holds the model until it ends
        else:
            self._lock.release()
        return result

    return wrapper


def _weak_active(self: OuroModel) -> TextStream | None:
    return self._active_ref() if self._active_ref is not None else None


def _set_weak_active(self: OuroModel, stream: TextStream | None) -> None:
    self._active_ref = weakref.ref(stream) if stream is not None else None


# ---------------------------------------------------------------------------------------------- model

class OuroModel:
    """An Ouro GGUF loaded in llama.cpp. Build it with `runtime.load`."""

    # The generation in progress, held weakly (see _serialized).
    _active = property(_weak_active, _set_weak_active)

    def __init__(self, path: Path, summary: GGUFSummary, *, n_ctx: int, settings: RuntimeSettings,
                 n_threads: int | None, seed: int | None) -> None:
        self.path = path
        self.summary = summary  # the file's checked facts (runtime.validate)
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._lock = threading.Lock()  # see _serialized
        self._active_ref: weakref.ref[TextStream] | None = None  # behind the _active property
        self._seed = seed
        self._llm: Any = None
        self._settings = RuntimeSettings()
        self._apply_runtime_settings(self._checked(settings))
        self.metadata: dict[str, str] = dict(self._llm.metadata)
        self.chat_template: str | None = self.metadata.get("tokenizer.chat_template")
        self.thinking = bool(self.chat_template) and ("enable_thinking" in self.chat_template
                                                     or "<think>" in self.chat_template)
        self.default_sampling = SamplingParams.from_gguf(self.metadata)
        self.stats: GenerationStats | None = None
        self._template: jinja2.Template | None = None
        self.end_of_turn_tokens = self._end_of_turn_ids()  # sampling one ends the reply
        # (rendered conversation, its exact tokens) after the last chat turn; see _chat_tokens.
        self._chat_prefix: tuple[str, list[int]] | None = None
        self._active: TextStream | None = None

    # -- the loop/exit knobs ------------------------------------------------------------------------

    def _load_time(self, settings: RuntimeSettings) -> tuple:
        """What only a reload can change: the KV cache's shape and type, and more loops than the file's
        (each loop needs its KV slots)."""
        extra_loops = settings.loops if settings.loops is not None and settings.loops > self.summary.loops else None
        return settings.kv, settings.kv_type, extra_loops

    def _apply_runtime_settings(self, settings: RuntimeSettings) -> None:
        """Make `settings` the ones in effect; on failure the previous ones stay.

        Loops (up to the file's), the exit mode and the threshold are set on the running context
        (runtime.control); the KV policy and type, and loops beyond the file's, reload the model (the
        weights are mmapped, so that is quick; the KV cache starts empty).
        """
        reloading = self._llm is not None and self._load_time(settings) != self._load_time(self._settings)
        if self._llm is None or reloading:
            if reloading:  # close first: two contexts at once would hold two KV caches
                self._close_active()
                self._llm.close()
                self._llm = None
            try:
                self._llm = _open_llama(self.path, settings, self._load_time(settings)[2], self._n_ctx, self._n_threads)
            except OuroRuntimeError:
                if reloading:
                    self._llm = _open_llama(self.path, self._settings, self._load_time(self._settings)[2],
                                            self._n_ctx, self._n_threads)
                raise
        elif settings.loops != self._settings.loops:
            # The cached tokens have K/V only for the loops they ran: start the conversation over.
            self._close_active()
            self._llm.reset()
            self._chat_prefix = None
        loops = settings.loops if settings.loops is not None and settings.loops <= self.summary.loops else None
        try:
            control.set_loops(self._llm, loops)
            control.set_exit(self._llm, mode=settings.exit_mode, threshold=settings.exit_threshold)
        except control.ControlError as e:
            raise OuroRuntimeError(str(e)) from None
        self._settings = settings

    def _checked(self, settings: RuntimeSettings) -> RuntimeSettings:
        loops = settings.loops if settings.loops is not None else self.summary.loops
        if loops * self.summary.layers > MAX_LOGICAL_LAYERS:
            raise OuroRuntimeError(f"{loops} loops x {self.summary.layers} layers exceeds llama.cpp's "
                                   f"{MAX_LOGICAL_LAYERS} logical layers")
        return settings

    @_serialized
    def set_loops(self, loops: int | None) -> None:
        """Run `loops` loops per token (None: the file's ouro.num_loops)."""
        self._apply_runtime_settings(self._checked(replace(self._settings, loops=loops)))

    @_serialized
    def set_exit_threshold(self, threshold: float | None) -> None:
        """Q-exit threshold q in [0, 1] (1: read the last loop; None: the file's value)."""
        self._apply_runtime_settings(self._checked(replace(self._settings, exit_threshold=threshold)))

    @_serialized
    def set_exit_mode(self, mode: str) -> None:
        """'select' (run every loop, read out the exit loop) or 'skip' (stop computing at the exit)."""
        self._apply_runtime_settings(self._checked(replace(self._settings, exit_mode=mode)))

    @property
    def file_loops(self) -> int:
        return self.summary.loops

    @property
    def loops(self) -> int:
        return self._settings.loops if self._settings.loops is not None else self.file_loops

    @property
    def exit_threshold(self) -> float:
        if self._settings.exit_threshold is not None:
            return self._settings.exit_threshold
        return self.summary.threshold

    @property
    def exit_mode(self) -> str:
        return self._settings.exit_mode

    @property
    def kv(self) -> str:
        return self._settings.kv

    @property
    def mean_loops(self) -> float | None:
        """Mean loops per token over every token evaluated since the model was loaded (select mode: the
        loop each token was read out from, all loops ran; skip mode: the loops that ran). None before any."""
        hist = control.histogram(self._llm)
        n = sum(hist)
        return sum(k * c for k, c in enumerate(hist)) / n if n else None

    # -- memory -------------------------------------------------------------------------------------

    @property
    def llama(self) -> Any:
        """The underlying llama_cpp.Llama (a new object after each setter call)."""
        return self._llm

    @property
    def n_ctx(self) -> int:
        """Tokens the context holds: the n_ctx asked for (llama.cpp may allocate more, see below)."""
        return min(self._n_ctx, self._llm.n_ctx())

    @property
    def kv_bytes_per_token(self) -> int:
        """What one cached token costs, as allocated (loops, KV policy and KV type included)."""
        return self.kv_bytes_capacity // self._llm.n_ctx()

    @property
    def kv_bytes_capacity(self) -> int:
        """The KV cache llama.cpp allocated up front (its context is padded to a multiple of 256 tokens)."""
        return control.kv_bytes(self._llm)

    @property
    def kv_bytes_in_use(self) -> int:
        return self.kv_bytes_per_token * self._llm.n_tokens

    @_serialized
    def reset(self) -> None:
        """Forget the KV cache (the next prompt is evaluated from scratch)."""
        self._close_active()
        self._llm.reset()
        self._chat_prefix = None

    @_serialized
    def close(self) -> None:
        if self._llm is not None:
            self._close_active()
            self._llm.close()
            self._llm = None

    def __enter__(self) -> OuroModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- text in, text out --------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written out (<|im_start|>) become their ids."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    @_serialized
    def generate(self, prompt: str, stream: bool = False, **sampling: Any) -> Completion | TextStream:
        """Continue `prompt` as it is (no chat template). Sampling settings: see SamplingParams."""
        tokens = self.tokenize(prompt, add_bos=self._llm._model.add_bos_token())
        return self._run(tokens, self.default_sampling.updated(**sampling), stream, opened_thinking=False)

    @_serialized
    def chat(self, messages: Sequence[Message], stream: bool = False, *, enable_thinking: bool | None = None,
             **sampling: Any) -> Completion | TextStream:
        """The assistant's reply to `messages` ({"role", "content"} dicts) through the GGUF's template.

        enable_thinking is passed to the template (Thinking models: False skips the <think> block;
        None leaves the template's default).
        """
        messages = [dict(m) for m in messages]
        text = self.render_chat(messages, enable_thinking=enable_thinking)
        tokens = self._chat_tokens(text)

        def remember(completion: Completion) -> None:
            self._remember_turn(messages, enable_thinking, text, tokens, completion)

        opened = text.endswith(THINK_OPEN)
        return self._run(tokens, self.default_sampling.updated(**sampling), stream, opened, remember)

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                    enable_thinking: bool | None = None) -> str:
        """The prompt text the GGUF's chat template makes of `messages`."""
        if not self.chat_template:
            raise OuroRuntimeError(f"{self.path} has no chat template (tokenizer.chat_template): use generate()")
        if self._template is None:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise_template_error
            try:
                self._template = env.from_string(self.chat_template)
            except jinja2.TemplateError as e:
                raise OuroRuntimeError(f"{self.path}: the chat template is not valid Jinja ({e})") from None
        variables: dict[str, Any] = dict(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         bos_token=self._token_text(self._llm.token_bos()),
                                         eos_token=self._token_text(self._llm.token_eos()))
        if enable_thinking is not None:
            variables["enable_thinking"] = enable_thinking
        try:
            return self._template.render(**variables)
        except jinja2.TemplateError as e:
            raise OuroRuntimeError(f"the chat template failed on these messages: {e}") from None

    # -- internals ----------------------------------------------------------------------------------

    def _token_text(self, token: int) -> str:
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def _end_of_turn_ids(self) -> frozenset[int]:
        # llama.cpp's end-of-generation set: eos/eot from the file and <|im_end|>/<|endoftext|> found by
        # name; the file's ids and <|endoftext|> are added so they stop whatever that detection does.
        vocab = self._llm._model.vocab
        ids = {t for t in range(self._llm.n_vocab()) if _llama_cpp().llama_vocab_is_eog(vocab, t)}
        ids |= {self._llm.token_eos(), self._llm._model.token_eot()}
        endoftext = self._llm.tokenize(b"<|endoftext|>", add_bos=False, special=True)
        if len(endoftext) == 1:
            ids.add(endoftext[0])
        return frozenset(i for i in ids if i >= 0)

    def _forbid_end_of_turn(self) -> Any:
        stop = np.fromiter(self.end_of_turn_tokens, dtype=np.int64)

        def mask(_input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
            logits[stop] = -np.inf
            return logits

        return _llama_cpp().LogitsProcessorList([mask])

    def _chat_tokens(self, text: str) -> list[int]:
        # A conversation that extends the previous turn's is tokenized as that turn's exact tokens (the
        # sampled answer included) plus the new text, so the KV cache of the whole previous turn is reused;
        # re-tokenizing the answer's text could split it differently and lose the cache from there on.
        if self._chat_prefix is not None:
            previous_text, previous_tokens = self._chat_prefix
            if text.startswith(previous_text):
                return previous_tokens + self.tokenize(text[len(previous_text):])
        return self.tokenize(text)

    def _remember_turn(self, messages: list[dict], enable_thinking: bool | None, prompt_text: str,
                       prompt_tokens: list[int], completion: Completion) -> None:
        # The next turn's prompt renders this reply as an assistant message. When that rendering is this
        # prompt + the reply + a tail (ChatML: "<|im_end|>\n"), the tokens in the KV cache followed by
        # the tail's tokens are that rendering's tokens.
        history = self.render_chat([*messages, completion.message], add_generation_prompt=False,
                                   enable_thinking=enable_thinking)
        head = prompt_text + completion.text
        if history.startswith(head):
            self._chat_prefix = (history, prompt_tokens + completion.tokens + self.tokenize(history[len(head):]))
        else:
            self._chat_prefix = None

    def _own_stream_is_open(self) -> bool:
        active = self._active
        return active is not None and active.owner == threading.get_ident() and not active.finished

    def _close_active(self) -> None:
        if self._active is not None and not self._active.finished:
            self._active.close()
        self._active = None

    def _run(self, tokens: list[int], params: SamplingParams, stream: bool, opened_thinking: bool,
             on_finish: Callable[[Completion], None] | None = None) -> Completion | TextStream:
        self._close_active()  # one generation at a time: a new one ends an unfinished stream
        if not tokens:
            raise OuroRuntimeError("the prompt is empty")
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise OuroRuntimeError(f"the prompt is {len(tokens)} tokens but the context holds {self.n_ctx}: "
                                   f"use a larger context (n_ctx / --ctx) or a shorter conversation (/clear)")
        limit = min(params.max_tokens or room, room)
        result = TextStream(lambda owner: self._pieces(tokens, params, limit, owner, on_finish), opened_thinking)
        self._active = result
        if stream:
            return result
        for _ in result:
            pass
        assert result.completion is not None
        return result.completion

    def _pieces(self, tokens: list[int], params: SamplingParams, limit: int, result: TextStream,
                on_finish: Callable[[Completion], None] | None) -> Iterator[str]:
        llm = self._llm
        seed = params.seed if params.seed is not None else self._seed
        # set_seed is sticky: reset it even when no seed is given, or one call's seed would stay for good.
        llm.set_seed(seed if seed is not None else _llama_cpp().LLAMA_DEFAULT_SEED)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated: list[int] = []
        text: list[str] = []
        finish = "interrupted"
        llm.evals.clear()
        llm.eval_loops.clear()
        steps = llm.generate(tokens, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
                             temp=params.temperature, repeat_penalty=params.repeat_penalty,
                             logits_processor=self._forbid_end_of_turn() if params.ignore_eos else None)
        try:
            for token in steps:
                if token in self.end_of_turn_tokens:
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
                kv_bytes=self.kv_bytes_in_use, finish_reason=finish,
            )
            self.stats = stats
            result.completion = Completion("".join(text), generated, stats, result.opened_thinking)
            if on_finish is not None:
                on_finish(result.completion)


def _raise_template_error(message: str) -> None:
    raise OuroRuntimeError(f"the chat template refused these messages: {message}")


# ----------------------------------------------------------------------------------------------- load

def load(path: str | os.PathLike[str], n_ctx: int = 2048, loops: int | None = None,
         exit_threshold: float | None = None, exit_mode: str = "select", kv: str = "full",
         n_threads: int | None = None, seed: int | None = None, kv_type: str = "f16") -> OuroModel:
    """Load an Ouro GGUF.

    n_ctx: context length in tokens; the KV cache for all of it is allocated up front
        (model.kv_bytes_capacity). Never 0: llama.cpp would take the 64K training context.
    loops, exit_threshold: override the file's ouro.num_loops / ouro.early_exit_threshold.
    exit_mode: "select" (every loop runs, the exit loop is read out) or "skip"; kv: "full" or "share".
    kv_type: "f16" or "q8_0" (half the KV memory; needs a head size divisible by 32). `load(path,
        **PHONE_PRESET)` is the small-memory setting.
    n_threads: CPU threads for decode and prompt (llama-cpp-python's defaults when None). seed: sampling seed (random when None).
    """
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
        raise OuroRuntimeError(f"n_ctx must be a positive number of tokens, got {n_ctx!r}")
    if n_threads is not None and n_threads < 1:
        raise OuroRuntimeError(f"n_threads must be >= 1, got {n_threads!r}")
    if seed is not None and seed < 0:
        raise OuroRuntimeError(f"seed must be >= 0, got {seed!r}")
    settings = RuntimeSettings(loops=loops, exit_threshold=exit_threshold, exit_mode=exit_mode, kv=kv,
                               kv_type=kv_type)
    file = Path(path).expanduser()
    # Some malformed files make llama.cpp abort the process instead of failing: check them first.
    summary = validate_gguf(file)
    plan_memory(summary, n_ctx, kv=kv, kv_type=kv_type, loops=loops)  # refuses a KV type this model cannot hold
    return OuroModel(file, summary, n_ctx=n_ctx, settings=settings, n_threads=n_threads, seed=seed)
