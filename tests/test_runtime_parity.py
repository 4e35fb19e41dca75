"""The patched llama.cpp (through llama_cpp.Llama) against runtime/reference.py (issue 4).

F32 files run with an F32 KV cache so that the only differences left are summation order; F16 files
run as users run them (F16 KV cache).
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import torch
from gguf import GGUFValueType

from gguf_edit import rewrite_gguf
from llama_support import greedy_run
from runtime.reference import exit_cdf, exit_step, load_checkpoint

PROMPT_LEN, DECODE_STEPS = 24, 16
F32_KV = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)


def load(path: Path, **kw) -> "llama_cpp.Llama":
    kw.setdefault("n_ctx", 128)
    return llama_cpp.Llama(str(path), logits_all=True, verbose=False, **kw)


def prompt_ids(vocab: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(17, vocab, PROMPT_LEN).tolist()


def reference_logits(ckpt: Path, tokens: list[int], **read_out) -> np.ndarray:
    """The reference over the same tokens in one pass (equal to incremental decoding, see test_reference)."""
    model = load_checkpoint(ckpt)
    loops = read_out.pop("loops", None)
    with torch.no_grad():
        out = model(torch.tensor([tokens]), loops=loops)
        return model.read_out(out, **read_out)[0].numpy()


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


GRID = [(loops, layers) for loops in (1, 2, 4) for layers in (1, 3)]


@pytest.mark.parametrize("loops,layers", GRID)
def test_f32_prompt_and_decode_logits_match_the_reference(tiny_gguf, loops, layers):
    ckpt, gguf = tiny_gguf(loops=loops, layers=layers)
    tokens, ours = greedy_run(load(gguf, **F32_KV), prompt_ids(512), DECODE_STEPS)
    ref = reference_logits(ckpt, tokens)
    assert ours.shape == ref.shape == (PROMPT_LEN + DECODE_STEPS, 512)
    assert rel_err(ours, ref) <= 1e-3


@pytest.mark.parametrize("loops,layers", GRID)
def test_f16_same_greedy_tokens_and_close_logits(tiny_gguf, loops, layers):
    ckpt, gguf = tiny_gguf(loops=loops, layers=layers, qtype="f16")
    tokens, ours = greedy_run(load(gguf), prompt_ids(512), DECODE_STEPS)
    ref = reference_logits(ckpt, tokens)
    assert rel_err(ours, ref) <= 2e-2
    # the runtime's greedy choices are the reference's at every decode step
    assert ours[PROMPT_LEN - 1:-1].argmax(-1).tolist() == ref[PROMPT_LEN - 1:-1].argmax(-1).tolist()


def test_loop_count_override_matches_the_reference_at_that_depth(tiny_gguf):
    ckpt, gguf = tiny_gguf(loops=4, layers=2)
    tokens, ours = greedy_run(load(gguf, kv_overrides={"ouro.num_loops": 2}, **F32_KV), prompt_ids(512, 1), DECODE_STEPS)
    assert rel_err(ours, reference_logits(ckpt, tokens, loops=2)) <= 1e-3
    # and it is really a different depth than the file's own
    assert rel_err(ours, reference_logits(ckpt, tokens, loops=4)) > 1e-2


def test_select_mode_reads_the_q_exit_loop_token_by_token(tiny_gguf):
    q = 0.5
    ckpt, gguf = tiny_gguf(loops=4, layers=2, gate_bias=0.0)
    llm = load(gguf, kv_overrides={"ouro.early_exit_threshold": q}, **F32_KV)
    tokens, ours = greedy_run(llm, prompt_ids(512, 2), DECODE_STEPS)

    model = load_checkpoint(ckpt)
    with torch.no_grad():
        out = model(torch.tensor([tokens]))
    steps = exit_step(out.gate_logits, q)[0]
    # The test only means something if tokens exit at different loops, some before the last one...
    assert (steps < 3).any() and len(set(steps.tolist())) > 1
    # ...and if no token's CDF sits so close to q that summation order could flip its exit.
    assert (exit_cdf(out.gate_logits)[:-1] - q).abs().min() > 1e-4

    ref = model.read_out(out, "threshold", threshold=q)[0].numpy()
    last = model.read_out(out, "last")[0].numpy()
    assert rel_err(ours, ref) <= 1e-3
    assert rel_err(ours, last) > 1e-2


def test_exit_at_step_forces_one_loop(tiny_gguf):
    ckpt, gguf = tiny_gguf(loops=4, layers=2)
    tokens, ours = greedy_run(load(gguf, kv_overrides={"ouro.exit_at_step": 1}, **F32_KV), prompt_ids(512, 3), DECODE_STEPS)
    assert rel_err(ours, reference_logits(ckpt, tokens, mode="step", step=1)) <= 1e-3


def test_prompt_split_over_micro_batches_equals_one_batch(tiny_gguf):
    _, gguf = tiny_gguf(loops=4, layers=3)
    prompt = prompt_ids(512, 4)
    one = load(gguf, n_batch=64, n_ubatch=64, **F32_KV)
    one.eval(prompt)
    split = load(gguf, n_batch=5, n_ubatch=5, **F32_KV)
    split.eval(prompt)
    a, b = np.array(one.scores[:PROMPT_LEN]), np.array(split.scores[:PROMPT_LEN])
    assert rel_err(b, a) <= 1e-5


def test_file_without_gate_keys_loads_and_reads_the_last_loop(tiny_gguf, tmp_path):
    ckpt, gguf = tiny_gguf(loops=4, layers=2, gate_bias=0.0)
    upstream_style = rewrite_gguf(gguf, tmp_path / "no-gate.gguf", drop=(
        "ouro.exit_gate.weight", "ouro.exit_gate.bias", "ouro.early_exit_threshold"))
    # even a threshold override cannot select anything without a gate
    llm = load(upstream_style, kv_overrides={"ouro.early_exit_threshold": 0.5}, **F32_KV)
    tokens, ours = greedy_run(llm, prompt_ids(512, 5), DECODE_STEPS)
    assert rel_err(ours, reference_logits(ckpt, tokens)) <= 1e-3


@pytest.mark.parametrize("override", [{"ouro.num_loops": 0}, {"ouro.num_loops": 17},
                                      {"ouro.exit_at_step": 4}, {"ouro.early_exit_threshold": 1.5}])
def test_bad_loop_metadata_is_a_python_error(tiny_gguf, override):
    _, gguf = tiny_gguf(loops=4, layers=2)
    with pytest.raises(ValueError):
        load(gguf, kv_overrides=override)
    assert load(gguf).n_vocab() == 512  # the process survived and still loads good files


def test_mis_sized_gate_is_a_python_error(tiny_gguf, tmp_path):
    _, gguf = tiny_gguf(loops=4, layers=2)
    bad = rewrite_gguf(gguf, tmp_path / "bad-gate.gguf", replace={
        "ouro.exit_gate.weight": ([0.1] * 63, GGUFValueType.ARRAY, GGUFValueType.FLOAT32)})
    with pytest.raises(ValueError):
        load(bad)
    assert load(gguf).n_vocab() == 512


# Patch 0005: one-token steps run flash attention over every head at once, the visible keys split evenly
# between threads, in blocks; a cache past 512 cells (several blocks, a masked padded tail) on 2 threads.
LONG_PROMPT = 600


@pytest.mark.parametrize("qtype,kv,tolerance", [("f32", F32_KV, 1e-3), ("f16", {}, 2e-2)])
def test_flash_attention_decode_over_a_long_cache_matches_the_reference(tiny_gguf, qtype, kv, tolerance):
    ckpt, gguf = tiny_gguf(loops=2, layers=2, qtype=qtype)
    llm = load(gguf, n_ctx=1024, n_threads=2, flash_attn=True, **kv)
    tokens, scores = greedy_run(llm, np.random.default_rng(7).integers(17, 512, LONG_PROMPT).tolist(), steps=8)
    ours = scores[LONG_PROMPT:]
    ref = reference_logits(ckpt, tokens)[LONG_PROMPT:]
    assert rel_err(ours, ref) <= tolerance
    assert ours.argmax(-1).tolist() == ref.argmax(-1).tolist()
