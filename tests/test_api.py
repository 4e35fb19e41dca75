"""runtime.load / OuroModel (issue 6): chat and generate on tiny GGUFs through the patched llama.cpp."""

from __future__ import annotations

import io
import json

import llama_cpp
import pytest
from rich.console import Console

import runtime
from convert.chat_template import chatml_template
from convert.convert import convert_checkpoint
from models.synthetic import PRESETS, write_checkpoint
from runtime import OuroRuntimeError, SamplingParams, load

TINY = PRESETS["tiny"]
# Fixed-length, reproducible runs: the random model's end of turn would make lengths random.
FIXED = dict(ignore_eos=True, seed=7)


@pytest.fixture(scope="module")
def gguf(tiny_gguf):
    return tiny_gguf(qtype="f16")[1]


@pytest.fixture(scope="module")
def model(gguf):
    with load(gguf, n_ctx=512, n_threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def thinking_gguf(tmp_path_factory):
    """A tiny checkpoint whose template is the Thinking one (opens <think> unless enable_thinking=false)."""
    root = tmp_path_factory.mktemp("thinking")
    ckpt = write_checkpoint(root / "tiny-Thinking", "tiny", seed=1)
    config_path = ckpt / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = chatml_template(thinking=True)
    config_path.write_text(json.dumps(config))
    return convert_checkpoint(ckpt, root / "thinking.gguf", "f16", console=Console(file=io.StringIO()))


def test_load_exports_and_file_settings(model):
    assert runtime.load is load
    assert (model.loops, model.file_loops, model.exit_threshold) == (TINY["total_ut_steps"], TINY["total_ut_steps"], 1.0)
    assert (model.exit_mode, model.kv, model.n_ctx) == ("select", "full", 512)
    assert isinstance(model.llama, llama_cpp.Llama)
    # <|endoftext|> = 0 and <|im_end|> = 2 end a turn (spec §6)
    assert {0, 2} <= model.end_of_turn_tokens


def test_kv_bytes_follow_the_spec_formula(model):
    per_token = 2 * TINY["num_hidden_layers"] * model.loops * TINY["num_key_value_heads"] * TINY["head_dim"] * 2
    assert model.kv_bytes_per_token == per_token
    assert model.kv_bytes_capacity == per_token * 512  # a multiple of 256 tokens: llama.cpp allocates that
    model.reset()
    assert model.kv_bytes_in_use == 0
    done = model.generate("one two three", max_tokens=5, **FIXED)
    assert done.stats.kv_bytes == model.kv_bytes_in_use == per_token * model.llama.n_tokens > 0


@pytest.mark.parametrize("bad, message", [
    (dict(n_ctx=0), "n_ctx"),
    (dict(loops=0), "loops"),
    (dict(loops=17), "loops must be an integer in 1..16"),  # more would make llama.cpp refuse the file
    (dict(exit_threshold=1.5), "threshold"),
    (dict(exit_mode="fast"), "exit mode"),
    (dict(kv="half"), "kv"),
    (dict(n_threads=0), "n_threads"),
])
def test_bad_load_arguments_raise_our_error(gguf, bad, message):
    with pytest.raises(OuroRuntimeError, match=message):
        load(gguf, **bad)


def test_missing_and_foreign_files_are_rejected_before_llama_cpp(tmp_path):  # by runtime.validate
    with pytest.raises(OuroRuntimeError, match="no such file"):
        load(tmp_path / "absent.gguf")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf at all")
    with pytest.raises(OuroRuntimeError, match="not a GGUF"):
        load(fake)


def test_skip_exit_runs_fewer_loops_and_shared_kv_holds_a_quarter(gguf):
    with load(gguf, n_ctx=64, n_threads=1, exit_mode="skip", exit_threshold=0.0) as skip:
        # threshold 0: every token may leave after its first loop, and skip mode really stops there
        assert skip.generate("gate", max_tokens=4, **FIXED).stats.mean_loops == 1.0
        llm = skip.llama
        skip.set_exit_mode("select")
        skip.set_exit_threshold(None)
        assert skip.llama is llm  # changed on the running context, no reload
        assert skip.generate("gate", max_tokens=4, **FIXED).stats.mean_loops == 4.0
    with load(gguf, n_ctx=256, kv="share") as share, load(gguf, n_ctx=256) as full:
        assert share.kv_bytes_per_token * 4 == full.kv_bytes_per_token
    with pytest.raises(OuroRuntimeError):
        load(gguf, n_ctx=64, exit_mode="sometimes")


def test_second_chat_turn_prefills_only_the_new_tokens(model):
    model.reset()
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 12+30?"}]
    first = model.chat(messages, max_tokens=12, **FIXED)
    assert first.stats.prefill_tokens == first.stats.prompt_tokens  # nothing cached yet
    in_cache = list(model.llama._input_ids)

    messages += [first.message, {"role": "user", "content": "And 7+8?"}]
    second = model.chat(messages, max_tokens=12, **FIXED)
    # The KV cache held turn 1's prompt and all sampled tokens but the last (a token is evaluated when
    # the next one is needed; "length" stopped before that): everything else is new.
    assert len(in_cache) == first.stats.prompt_tokens + first.stats.generated_tokens - 1
    assert second.stats.prefill_tokens == second.stats.prompt_tokens - len(in_cache)
    assert second.stats.prefill_tokens < 30 < second.stats.prompt_tokens
    assert list(model.llama._input_ids[:len(in_cache)]) == in_cache

    model.reset()  # without the cache the same conversation is evaluated in full
    again = model.chat(messages, max_tokens=1, **FIXED)
    assert again.stats.prefill_tokens == again.stats.prompt_tokens > second.stats.prefill_tokens


def test_generate_reuses_a_common_prompt_prefix(model):
    model.reset()
    model.generate("The quick brown fox jumps over the lazy dog", max_tokens=2, **FIXED)
    cached = model.stats.prompt_tokens
    longer = model.generate("The quick brown fox jumps over the lazy dog and runs", max_tokens=2, **FIXED)
    assert 0 < longer.stats.prefill_tokens <= longer.stats.prompt_tokens - cached + 1


def test_stats_count_prefill_and_decode_work(model):
    model.reset()
    done = model.generate("count these tokens", max_tokens=9, **FIXED)
    s = done.stats
    assert s.prompt_tokens == len(model.tokenize("count these tokens")) == s.prefill_tokens
    assert (s.generated_tokens, len(done.tokens), s.finish_reason) == (9, 9, "length")
    assert s.decode_steps == 8  # the first token comes from the prefill's logits; the last is never evaluated
    assert s.prefill_tps > 0 and s.decode_tps > 0
    assert s.mean_loops == float(model.loops)
    assert set(s.to_dict()) >= {"prompt_tokens", "prefill_tps", "decode_tps", "mean_loops", "kv_bytes"}


def test_streamed_pieces_are_whole_utf8_characters(model):
    """Byte-level tokens split multi-byte characters; the stream must hold them back, not mangle them."""
    stream = model.generate("Grüße aus Köln: ", stream=True, max_tokens=400, temperature=1.0, **FIXED)
    pieces = list(stream)
    done = stream.completion
    raw = b"".join(model.llama.detokenize([t]) for t in done.tokens)
    assert "".join(pieces) == done.text == raw.decode("utf-8", errors="replace")
    naive = "".join(model.llama.detokenize([t]).decode("utf-8", errors="replace") for t in done.tokens)
    assert naive != done.text  # this run does split characters across tokens
    assert any(ord(ch) >= 0x80 and ch != "\ufffd" for ch in done.text)


def test_closing_a_stream_records_an_interrupted_generation(model):
    stream = model.generate("stop me", stream=True, max_tokens=200, **FIXED)
    taken = [next(stream) for _ in range(3)]
    stream.close()
    assert stream.completion.stats.finish_reason == "interrupted"
    assert stream.completion.text.startswith("".join(taken))
    assert model.generate("still works", max_tokens=3, **FIXED).stats.generated_tokens == 3


def test_a_new_generation_ends_an_unfinished_stream(model):
    stream = model.generate("first", stream=True, max_tokens=50, **FIXED)
    next(stream)
    model.generate("second", max_tokens=2, **FIXED)
    assert stream.completion.stats.finish_reason == "interrupted"


def test_same_seed_same_text_different_seed_different_text(model):
    def run(seed: int) -> list[int]:
        # From an empty cache each time: a prompt re-evaluated on top of the cache runs in smaller batches,
        # which changes the logits in the last bits, enough to flip a sample now and then.
        model.reset()
        return model.generate("seeded", max_tokens=20, ignore_eos=True, seed=seed, temperature=1.0).tokens

    assert run(1) == run(1) != run(2)


def test_context_limits(gguf):
    with load(gguf, n_ctx=32, n_threads=1) as small:  # llama.cpp allocates 256 tokens; 32 are used
        assert small.n_ctx == 32 and small.kv_bytes_capacity == 256 * small.kv_bytes_per_token
        with pytest.raises(OuroRuntimeError, match="context holds 32"):
            small.generate("word " * 40)
        done = small.generate("a b c", **FIXED)  # no max_tokens: runs until the context is full
        assert done.stats.finish_reason == "length"
        assert done.stats.prompt_tokens + done.stats.generated_tokens == 32


def test_set_loops_changes_the_depth_without_reloading(gguf):
    with load(gguf, n_ctx=128, n_threads=1) as m, load(gguf, n_ctx=128, n_threads=1, loops=2) as two:
        greedy = dict(max_tokens=12, ignore_eos=True, temperature=0.0)
        at_four = m.generate("depth test", **greedy).tokens
        llm, kv = m.llama, m.kv_bytes_per_token
        m.set_loops(2)
        assert (m.loops, m.llama, m.kv_bytes_per_token) == (2, llm, kv)
        at_two = m.generate("depth test", **greedy)
        assert at_two.tokens == two.generate("depth test", **greedy).tokens != at_four
        assert at_two.stats.mean_loops == 2.0
        m.set_loops(None)
        assert m.loops == 4 and m.generate("depth test", **greedy).tokens == at_four


def test_threshold_below_one_measures_each_tokens_exit_loop(gguf):
    with load(gguf, n_ctx=64, n_threads=1) as m:
        m.set_exit_threshold(0.5)
        assert m.exit_threshold == 0.5
        mean = m.generate("gate", max_tokens=3, **FIXED).stats.mean_loops
        assert mean is not None and 1.0 <= mean <= 4.0
        with pytest.raises(OuroRuntimeError, match="threshold"):
            m.set_exit_threshold(-0.1)
        assert m.exit_threshold == 0.5


def test_sampling_settings_are_checked(model):
    with pytest.raises(OuroRuntimeError, match="unknown sampling setting"):
        model.generate("x", temp=0.5)
    with pytest.raises(OuroRuntimeError, match="top_p"):
        model.generate("x", top_p=0.0)
    assert SamplingParams.from_gguf({"general.sampling.temp": "0.3", "general.sampling.top_k": "7"}) == \
        SamplingParams(temperature=0.3, top_k=7)


def test_thinking_template_opens_think_and_keeps_the_kv_reuse(thinking_gguf):
    with load(thinking_gguf, n_ctx=512, n_threads=1) as m:
        assert m.thinking
        assert (m.default_sampling.temperature, m.default_sampling.top_p) == (1.0, 0.7)  # written by the converter
        messages = [{"role": "user", "content": "think first"}]
        first = m.chat(messages, max_tokens=6, **FIXED)
        assert first.opened_thinking and first.message["content"] == "<think>\n" + first.text
        cached = m.llama.n_tokens
        second = m.chat([*messages, first.message, {"role": "user", "content": "again"}], max_tokens=6, **FIXED)
        assert second.stats.prefill_tokens == second.stats.prompt_tokens - cached
        off = m.chat(messages, enable_thinking=False, max_tokens=2, **FIXED)
        assert not off.opened_thinking and off.message["content"] == off.text
        assert "<think>" not in m.render_chat(messages, enable_thinking=False)
