"""`OuroModel`: an Ouro GGUF loaded in llama.cpp, with its settings, memory, chat turns and generation.

It wraps `llama_cpp.Llama` (the patched build, `model.llama`). Its concerns live beside it: the chat
template (runtime.template), the sampling loop and statistics (runtime.generation), the lock
(runtime.locking). What stays here: applying `Settings` (on the running context, or by reloading when
the KV cache must change shape), the memory figures, and reusing the KV cache across chat turns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtime import control
from runtime.errors import OuroRuntimeError
from runtime.generation import (Completion, GenerationStats, TextStream, end_of_turn_ids, generate_pieces,
                                metered_llama_class)
from runtime.keys import KV_SHARE, MAX_LOGICAL_LAYERS, NUM_LOOPS
from runtime.kv import GGML_TYPE_IDS
from runtime.locking import ModelLock, serialized
from runtime.memory_plan import FLASH_ATTN
from runtime.sampling import SamplingParams
from runtime.settings import Settings
from runtime.template import THINK_OPEN, ChatTemplate, Message
from runtime.validate import GGUFSummary
from runtime.weights import WeightHolding, hold_weights, runtime_backend


def _open_llama(path: Path, settings: Settings, extra_loops: int | None, use_mmap: bool) -> Any:
    """Load with the settings that shape the KV cache; extra_loops: more loops than the file's (else None);
    use_mmap: runtime.weights' decision for settings.mmap."""
    overrides: dict[str, int | float] = {}
    if extra_loops is not None:
        overrides[NUM_LOOPS] = int(extra_loops)
    if settings.kv == "share":
        overrides[KV_SHARE] = True  # patch 0003
    cache_type = GGML_TYPE_IDS[settings.kv_type]
    try:
        return metered_llama_class()(
            # One thread count for decode and prompt batches: llama-cpp-python would otherwise use every
            # core for batches, which on a busy machine stalls its spinning thread barriers for seconds.
            str(path), n_ctx=settings.n_ctx, n_threads=settings.n_threads, n_threads_batch=settings.n_threads,
            kv_overrides=overrides or None, verbose=False,
            type_k=cache_type, type_v=cache_type, flash_attn=FLASH_ATTN, use_mmap=use_mmap,
        )
    except ValueError as e:
        raise OuroRuntimeError(f"{path}: llama.cpp cannot load it ({e}); is it an Ouro GGUF, and is the "
                               f"patched runtime installed (`ouro runtime status`)?") from None


class OuroModel:
    """An Ouro GGUF loaded in llama.cpp. Build it with `runtime.load`."""

    def __init__(self, path: Path, summary: GGUFSummary, settings: Settings, *, seed: int | None) -> None:
        self.path = path
        self.summary = summary  # the file's checked facts (runtime.validate)
        self._lock = ModelLock()
        self._seed = seed
        self._llm: Any = None
        self.weights_held: WeightHolding  # how the weights are held in the loaded llama.cpp (runtime.weights)
        self._settings = Settings()
        self._apply(self._checked(settings))
        self.metadata: dict[str, str] = dict(self._llm.metadata)
        self.template = ChatTemplate(self.metadata.get("tokenizer.chat_template"), path,
                                     self._token_text(self._llm.token_bos()), self._token_text(self._llm.token_eos()))
        self.default_sampling = SamplingParams.from_gguf(self.metadata)
        self.stats: GenerationStats | None = None
        self.end_of_turn_tokens = end_of_turn_ids(self._llm)  # sampling one ends the reply
        # (rendered conversation, its exact tokens) after the last chat turn; see _chat_tokens.
        self._chat_prefix: tuple[str, list[int]] | None = None

    # -- settings -----------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    def _load_time(self, settings: Settings) -> tuple:
        """What only a reload can change: how the weights are held, the KV cache's shape and type, and more
        loops than the file's (each loop needs its KV slots; last, for _open_llama)."""
        extra_loops = settings.loops if settings.loops is not None and settings.loops > self.summary.loops else None
        return settings.mmap, settings.kv, settings.kv_type, settings.n_ctx, settings.n_threads, extra_loops

    def _open(self, settings: Settings) -> Any:
        held = hold_weights(self.summary, settings.mmap, runtime_backend())
        llm = _open_llama(self.path, settings, self._load_time(settings)[-1], held.mmap)
        self.weights_held = held
        return llm

    def _apply(self, settings: Settings) -> None:
        """Make `settings` the ones in effect; on failure the previous ones stay.

        Loops (up to the file's), the exit mode, threshold and minimum loops are set on the running
        context (runtime.control); the KV policy and type, mmap, and loops beyond the file's reload the
        model (from mapped or page-cached file pages, so that is quick; the KV cache starts empty).
        """
        reloading = self._llm is not None and self._load_time(settings) != self._load_time(self._settings)
        if self._llm is None or reloading:
            if reloading:  # close first: two contexts at once would hold two KV caches
                self._lock.close_active()
                self._llm.close()
                self._llm = None
            try:
                self._llm = self._open(settings)
            except OuroRuntimeError:
                if reloading:
                    self._llm = self._open(self._settings)
                raise
        elif settings.loops != self._settings.loops:
            # The cached tokens have K/V only for the loops they ran: start the conversation over.
            self._lock.close_active()
            self._llm.reset()
            self._chat_prefix = None
        loops = settings.loops if settings.loops is not None and settings.loops <= self.summary.loops else None
        try:
            control.set_loops(self._llm, loops)
            control.set_exit(self._llm, mode=settings.exit_mode, threshold=settings.exit_threshold,
                             min_loops=settings.min_loops)
        except control.ControlError as e:
            raise OuroRuntimeError(str(e)) from None
        self._settings = settings

    def _checked(self, settings: Settings) -> Settings:
        loops = settings.loops if settings.loops is not None else self.summary.loops
        if loops * self.summary.layers > MAX_LOGICAL_LAYERS:
            raise OuroRuntimeError(f"{loops} loops x {self.summary.layers} layers exceeds llama.cpp's "
                                   f"{MAX_LOGICAL_LAYERS} logical layers")
        return settings

    def _update(self, settings: Settings | None = None, **changes: Any) -> None:
        new = (settings or self._settings).replace(**changes)
        if new != self._settings:
            self._apply(self._checked(new))

    @serialized
    def configure(self, settings: Settings) -> None:
        """Run with `settings` from now on (reloading only when the KV cache must change)."""
        self._update(settings)

    @serialized
    def set_loops(self, loops: int | None) -> None:
        """Run `loops` loops per token (None: the file's ouro.num_loops)."""
        self._update(loops=loops)

    @serialized
    def set_exit_threshold(self, threshold: float | None) -> None:
        """Q-exit threshold q in [0, 1] (1: read the last loop; None: the file's value)."""
        self._update(exit_threshold=threshold)

    @serialized
    def set_exit_mode(self, mode: str) -> None:
        """'select' (run every loop, read out the exit loop) or 'skip' (stop computing at the exit)."""
        self._update(exit_mode=mode)

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
    def kv_type(self) -> str:
        return self._settings.kv_type

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
        """The underlying llama_cpp.Llama (a new object after a setting that reloads)."""
        return self._llm

    @property
    def n_ctx(self) -> int:
        """Tokens the context holds: the n_ctx asked for (llama.cpp may allocate more, see below)."""
        return min(self._settings.n_ctx, self._llm.n_ctx())

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

    @serialized
    def reset(self) -> None:
        """Forget the KV cache (the next prompt is evaluated from scratch)."""
        self._lock.close_active()
        self._llm.reset()
        self._chat_prefix = None

    @serialized
    def close(self) -> None:
        if self._llm is not None:
            self._lock.close_active()
            self._llm.close()
            self._llm = None

    def __enter__(self) -> OuroModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- text in, text out --------------------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        return self.template.source

    @property
    def thinking(self) -> bool:
        return self.template.thinking

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written out (<|im_start|>) become their ids."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    @serialized
    def generate(self, prompt: str, stream: bool = False, *, settings: Settings | None = None,
                 **sampling: Any) -> Completion | TextStream:
        """Continue `prompt` as it is (no chat template). Sampling settings: see SamplingParams;
        `settings`: run this and the following calls with them (one step, under the model's lock)."""
        params = self.default_sampling.updated(**sampling)
        if settings is not None:
            self._update(settings)
        tokens = self.tokenize(prompt, add_bos=self._llm._model.add_bos_token())
        return self._run(tokens, params, stream, opened_thinking=False)

    @serialized
    def chat(self, messages: Sequence[Message], stream: bool = False, *, enable_thinking: bool | None = None,
             settings: Settings | None = None, **sampling: Any) -> Completion | TextStream:
        """The assistant's reply to `messages` ({"role", "content"} dicts) through the GGUF's template.

        enable_thinking is passed to the template (Thinking models: False skips the <think> block;
        None leaves the template's default). `settings`: as for generate().
        """
        params = self.default_sampling.updated(**sampling)
        if settings is not None:
            self._update(settings)
        messages = [dict(m) for m in messages]
        text = self.render_chat(messages, enable_thinking=enable_thinking)
        tokens = self._chat_tokens(text)

        def remember(completion: Completion) -> None:
            self._remember_turn(messages, enable_thinking, text, tokens, completion)

        return self._run(tokens, params, stream, text.endswith(THINK_OPEN), remember)

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                    enable_thinking: bool | None = None) -> str:
        """The prompt text the GGUF's chat template makes of `messages`."""
        return self.template.render(messages, add_generation_prompt=add_generation_prompt,
                                    enable_thinking=enable_thinking)

    # -- internals ----------------------------------------------------------------------------------

    def _token_text(self, token: int) -> str:
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

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

    def _run(self, tokens: list[int], params: SamplingParams, stream: bool, opened_thinking: bool,
             remember: Callable[[Completion], None] | None = None) -> Completion | TextStream:
        self._lock.close_active()  # one generation at a time: a new one ends an unfinished stream
        if not tokens:
            raise OuroRuntimeError("the prompt is empty")
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise OuroRuntimeError(f"the prompt is {len(tokens)} tokens but the context holds {self.n_ctx}: "
                                   f"use a larger context (n_ctx / --ctx) or a shorter conversation (/clear)")
        limit = min(params.max_tokens or room, room)

        def finished(completion: Completion) -> None:
            self.stats = completion.stats
            if remember is not None:
                remember(completion)

        result = TextStream(lambda owner: generate_pieces(
            self._llm, tokens, params, limit, owner, end_of_turn=self.end_of_turn_tokens, default_seed=self._seed,
            kv_bytes_per_token=lambda: self.kv_bytes_per_token, on_finish=finished), opened_thinking)
        self._lock.active = result
        if stream:
            return result
        for _ in result:
            pass
        assert result.completion is not None
        return result.completion
