"""Skip-mode early exit, the shared KV cache and run-time control (issue 5), against the reference."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest
import torch

from runtime import control
from runtime.reference import exit_step, load_checkpoint

F32_KV = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
PROMPT_LEN, STEPS = 24, 12


def load(path, **kw):
    kw.setdefault("n_ctx", 128)
    return llama_cpp.Llama(str(path), logits_all=True, verbose=False, **F32_KV, **kw)


def prompt(seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(17, 512, PROMPT_LEN).tolist()


def decode(llm, ids: list[int], steps: int = STEPS):
    """Greedy decode; returns tokens, all logits, and the loops each decoded token used."""
    llm.eval(ids)
    tokens, loops = list(ids), []
    for _ in range(steps):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        tokens.append(token)
        llm.eval([token])
        loops += control.last_loops(llm)
    return tokens, np.array(llm.scores[: llm.n_tokens]), loops


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_skip_at_threshold_one_is_select(tiny_gguf):
    _, gguf = tiny_gguf(loops=4, layers=2)
    runs = []
    for mode in ("select", "skip"):
        llm = load(gguf)
        control.set_exit(llm, mode=mode, threshold=1.0)
        runs.append(decode(llm, prompt(0)))
    (tok_a, log_a, loops_a), (tok_b, log_b, loops_b) = runs
    assert tok_a == tok_b
    assert rel(log_b, log_a) <= 1e-6
    assert loops_a == loops_b == [4] * STEPS


def reference_skip_decode(model, tokens: list[int], q: float):
    """The reference, decoding token by token the way skip mode does: after a token exits at loop t, the
    KV slots of loops t+1.. are back-filled with loop t's K/V for its position."""
    L, T = model.config.num_hidden_layers, model.config.total_ut_steps
    with torch.no_grad():
        out = model(torch.tensor([tokens[:PROMPT_LEN]]))
        logits = [model.read_out(out, "threshold", threshold=q)[0, -1]]
        exits = []
        for token in tokens[PROMPT_LEN:]:
            out = model(torch.tensor([[token]]), cache=out.cache)
            t = int(exit_step(out.gate_logits, q)[0, 0])
            exits.append(t + 1)
            logits.append(model.logits(out.hidden[t])[0, 0])
            for later in range(t + 1, T):
                for l in range(L):
                    out.cache.k[later * L + l][:, :, -1] = out.cache.k[t * L + l][:, :, -1]
                    out.cache.v[later * L + l][:, :, -1] = out.cache.v[t * L + l][:, :, -1]
    return torch.stack(logits).numpy(), exits


def test_skip_exits_early_reads_the_exit_loop_and_back_fills_its_kv(tiny_gguf):
    q = 0.5
    ckpt, gguf = tiny_gguf(loops=4, layers=2, gate_bias=0.0)
    llm = load(gguf)
    control.set_exit(llm, mode="skip", threshold=q)
    tokens, ours, loops = decode(llm, prompt(1))
    ref, ref_loops = reference_skip_decode(load_checkpoint(ckpt), tokens, q)

    # the gate fires: tokens really stop before the last loop, at the loops the reference picks
    assert min(loops) < 4 and len(set(loops)) > 1
    assert loops == ref_loops
    # the first decoded token sees only the prompt's (complete) cache: its logits are the exit loop's
    assert rel(ours[PROMPT_LEN], ref[1]) <= 1e-4
    # later tokens attend to back-filled slots: equal to the reference only if those hold the exit loop's K/V
    assert rel(ours[PROMPT_LEN - 1:], ref) <= 1e-3


def test_statistics_report_the_loops_actually_run(tiny_gguf):
    _, gguf = tiny_gguf(loops=4, layers=2, gate_bias=0.0)
    for k in (1, 2, 3):
        llm = load(gguf)
        # threshold 0: every token may exit, so the minimum loop count decides
        control.set_exit(llm, mode="skip", threshold=0.0, min_loops=k)
        control.reset_stats(llm)
        _, _, loops = decode(llm, prompt(2), steps=5)
        assert loops == [k] * 5
        hist = control.histogram(llm)
        assert hist[k] >= 5 and sum(hist) == PROMPT_LEN + 5


def test_select_statistics_are_the_reference_exit_loops(tiny_gguf):
    q = 0.5
    ckpt, gguf = tiny_gguf(loops=4, layers=2, gate_bias=0.0)
    llm = load(gguf)
    control.set_exit(llm, mode="select", threshold=q)
    ids = prompt(3)
    llm.eval(ids)
    model = load_checkpoint(ckpt)
    with torch.no_grad():
        expected = (exit_step(model(torch.tensor([ids])).gate_logits, q)[0] + 1).tolist()
    assert control.last_loops(llm) == expected


def test_set_loops_at_run_time_matches_the_reference_at_that_depth(tiny_gguf):
    ckpt, gguf = tiny_gguf(loops=4, layers=2)
    llm = load(gguf)
    control.set_loops(llm, 2)
    ids = prompt(4)
    llm.eval(ids)
    model = load_checkpoint(ckpt)
    with torch.no_grad():
        ref = model.read_out(model(torch.tensor([ids]), loops=2))[0].numpy()
    assert rel(np.array(llm.scores[:PROMPT_LEN]), ref) <= 1e-3
    assert control.last_loops(llm) == [2] * PROMPT_LEN
    with pytest.raises(control.ControlError):
        control.set_loops(llm, 5)


def test_shared_kv_gives_the_full_cache_first_token_and_a_quarter_of_the_memory(tiny_gguf):
    _, gguf = tiny_gguf(loops=4, layers=2)
    full, share = load(gguf), load(gguf, kv_overrides={"ouro.kv_share": True})
    ids = prompt(5)
    full.eval(ids)
    share.eval(ids)
    assert rel(np.array(share.scores[:PROMPT_LEN]), np.array(full.scores[:PROMPT_LEN])) <= 1e-6
    assert control.kv_bytes(share) * 4 == control.kv_bytes(full) > 0


def test_skip_with_shared_kv_runs(tiny_gguf):
    _, gguf = tiny_gguf(loops=4, layers=2, gate_bias=0.0)
    llm = load(gguf, kv_overrides={"ouro.kv_share": True})
    control.set_exit(llm, mode="skip", threshold=0.0, min_loops=2)
    _, logits, loops = decode(llm, prompt(6), steps=4)
    assert loops == [2] * 4 and np.isfinite(logits).all()
