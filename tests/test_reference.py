"""Invariants of the PyTorch reference (issue 2): the oracle must itself be right."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from runtime.reference import (KVCache, Ouro, OuroConfig, apply_rope, exit_cdf, exit_probs, exit_step,
                               rms_norm, rope_cos_sin)


def make_model(cfg_dict: dict, seed: int = 0, **overrides) -> Ouro:
    torch.manual_seed(seed)
    model = Ouro(OuroConfig.from_dict({**cfg_dict, **overrides})).eval()
    with torch.no_grad():  # non-trivial norm weights so a swapped norm would show
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or "layernorm_2" in name or name == "model.norm.weight":
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model


def test_incremental_decode_equals_full_recompute(tiny_config_dict):
    model = make_model(tiny_config_dict)
    ids = torch.randint(0, 96, (1, 13))
    n = 8
    with torch.no_grad():
        full = model.read_out(model(ids))
        out = model(ids[:, :n])
        steps = [model.read_out(out)[:, -1]]
        for i in range(n, ids.shape[1]):
            out = model(ids[:, i:i + 1], cache=out.cache)
            steps.append(model.read_out(out)[:, -1])
    incremental = torch.stack(steps[:-1], dim=1)
    assert (incremental - full[:, n - 1:-1]).abs().max() <= 1e-4
    assert (steps[-1] - full[:, -1]).abs().max() <= 1e-4


def plain_sandwich_transformer(model: Ouro, ids: torch.Tensor) -> torch.Tensor:
    """One pass of an ordinary pre/post-norm transformer, written without the reference's modules."""
    cfg = model.config
    sd = {k: v.float() for k, v in model.state_dict().items()}
    eps, H, d = cfg.rms_norm_eps, cfg.num_attention_heads, cfg.head_dim
    S = ids.shape[1]

    def norm(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * sd[name]

    pos = torch.arange(S, dtype=torch.float64)
    freqs = cfg.rope_theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = pos[:, None] * freqs[None]
    cos, sin = ang.cos().float(), ang.sin().float()

    def rope(x):  # x [S, H, d], rotate_half layout: pairs (i, i + d/2)
        a, b = x[..., : d // 2], x[..., d // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat([a * c - b * s, b * c + a * s], dim=-1)

    x = sd["model.embed_tokens.weight"][ids[0]]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        hn = norm(x, p + "input_layernorm.weight")
        q = rope((hn @ sd[p + "self_attn.q_proj.weight"].T).view(S, H, d))
        k = rope((hn @ sd[p + "self_attn.k_proj.weight"].T).view(S, H, d))
        v = (hn @ sd[p + "self_attn.v_proj.weight"].T).view(S, H, d)
        scores = torch.einsum("qhd,khd->hqk", q, k) / d ** 0.5
        scores = scores.masked_fill(torch.triu(torch.ones(S, S, dtype=torch.bool), 1), float("-inf"))
        attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(S, H * d)
        x = x + norm(attn @ sd[p + "self_attn.o_proj.weight"].T, p + "input_layernorm_2.weight")
        hn = norm(x, p + "post_attention_layernorm.weight")
        m = (F.silu(hn @ sd[p + "mlp.gate_proj.weight"].T) * (hn @ sd[p + "mlp.up_proj.weight"].T))
        x = x + norm(m @ sd[p + "mlp.down_proj.weight"].T, p + "post_attention_layernorm_2.weight")
    x = norm(x, "model.norm.weight")
    return x @ sd["lm_head.weight"].T


def test_one_loop_is_a_plain_sandwich_norm_transformer(tiny_config_dict):
    model = make_model(tiny_config_dict, seed=1)
    ids = torch.randint(0, 96, (1, 11))
    with torch.no_grad():
        ours = model.read_out(model(ids, loops=1))[0]
    theirs = plain_sandwich_transformer(model, ids)
    assert (ours - theirs).abs().max() <= 1e-4


def test_loop_count_changes_logits(tiny_config_dict):
    model = make_model(tiny_config_dict, seed=2)
    ids = torch.randint(0, 96, (1, 6))
    with torch.no_grad():
        by_loops = [model.read_out(model(ids, loops=t)) for t in (1, 2, 4)]
    assert (by_loops[0] - by_loops[1]).abs().max() > 1e-3
    assert (by_loops[1] - by_loops[2]).abs().max() > 1e-3


def test_each_loop_feeds_the_next_and_the_last_loop_is_the_default_read_out(tiny_config_dict):
    model = make_model(tiny_config_dict, seed=3)
    ids = torch.randint(0, 96, (1, 5))
    with torch.no_grad():
        out4 = model(ids, loops=4)
        out2 = model(ids, loops=2)
    # Loops 0 and 1 do not depend on how many loops follow.
    assert torch.allclose(out4.hidden[:2], out2.hidden, atol=1e-6)
    assert torch.equal(model.read_out(out4), model.logits(out4.hidden[-1]))
    assert torch.equal(model.read_out(out4, "step", step=1), model.logits(out4.hidden[1]))


def test_kv_cache_holds_one_slot_per_loop_and_layer(tiny_config_dict):
    model = make_model(tiny_config_dict)
    with torch.no_grad():
        out = model(torch.randint(0, 96, (1, 7)), loops=3)
    L = tiny_config_dict["num_hidden_layers"]
    assert out.cache.n_slots == 3 * L
    assert all(k.shape == (1, 4, 7, 8) for k in out.cache.k)
    # Slots are distinct memories: the same layer in different loops stores different keys.
    assert not torch.allclose(out.cache.k[0], out.cache.k[L])
    try:
        model(torch.tensor([[1]]), cache=out.cache, loops=4)
    except ValueError as e:
        assert "slots" in str(e)
    else:
        raise AssertionError("a cache of the wrong size must be refused")


def test_q_exit_follows_the_cdf_rule_on_hand_computed_gates():
    # Three tokens, T = 4. λ values chosen by hand; gate logits = logit(λ).
    lam = torch.tensor([[0.2, 0.9, 0.05],
                        [0.5, 0.5, 0.05],
                        [0.5, 0.5, 0.05],
                        [0.5, 0.5, 0.05]])
    g = torch.log(lam / (1 - lam))[:, None, :]  # [T, B=1, S=3]
    # token 0: CDF = 0.2, 0.6, 0.8, 1; token 2: 0.05, 0.0975, 0.142625, 1 (exits last)
    cdf = exit_cdf(g)[:, 0]
    assert torch.allclose(cdf[:, 0], torch.tensor([0.2, 0.6, 0.8, 1.0]), atol=1e-6)
    assert torch.allclose(cdf[:3, 2], torch.tensor([0.05, 0.0975, 0.142625]), atol=1e-6)
    assert exit_step(g, 0.5)[0].tolist() == [1, 0, 3]
    assert exit_step(g, 0.7)[0].tolist() == [2, 0, 3]
    # token 1: CDF = 0.9, 0.95, 0.975, 1
    assert exit_step(g, 0.96)[0].tolist() == [3, 2, 3]
    # threshold 1.0 never exits early, even where λ rounds the CDF to 1.
    assert exit_step(torch.full((4, 1, 1), 40.0), 1.0).item() == 3
    p = exit_probs(g)[:, 0]
    assert torch.allclose(p.sum(0), torch.ones(3), atol=1e-6)
    assert torch.allclose(p[:, 0], torch.tensor([0.2, 0.4, 0.2, 0.2]), atol=1e-6)


def test_threshold_and_weighted_read_outs_use_the_exit_distribution(tiny_config_dict):
    model = make_model(tiny_config_dict, seed=4)
    with torch.no_grad():
        model.model.early_exit_gate.bias.fill_(0.0)
        out = model(torch.randint(0, 96, (1, 9)))
        t_out = exit_step(out.gate_logits, 0.5)[0]
        got = model.read_out(out, "threshold", threshold=0.5)[0]
        per_loop = model.logits(out.hidden)[:, 0]
        for s in range(9):
            assert torch.allclose(got[s], per_loop[t_out[s], s], atol=1e-6)
        p = exit_probs(out.gate_logits)[:, 0]
        weighted = model.read_out(out, "weighted")[0]
        assert torch.allclose(weighted, (p[..., None] * per_loop).sum(0), atol=1e-5)


def test_rms_norm_and_rope_match_their_formulas():
    x = torch.randn(3, 8)
    w = torch.randn(8)
    expected = w * x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(rms_norm(x, w, 1e-6), expected, atol=1e-6)
    # RoPE at position 0 is the identity and it preserves norms.
    cos, sin = rope_cos_sin(torch.arange(5), 8, 10000.0)
    v = torch.randn(1, 1, 5, 8)
    r = apply_rope(v, cos, sin)
    assert torch.allclose(r[..., 0, :], v[..., 0, :])
    assert torch.allclose(r.norm(dim=-1), v.norm(dim=-1), atol=1e-5)
