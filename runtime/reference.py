"""The PyTorch reference of Ouro, written from ../shared/ouro-spec.md.

It is the oracle every parity test compares the GGUF runtime against, and the model definition that
`models/` trains. Readability wins over speed here; the fast path is llama.cpp.

Shape conventions: B batch, S sequence, D hidden, T loops, L physical layers, H heads, d head_dim.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class OuroConfig:
    vocab_size: int = 49152
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 128
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 65536
    total_ut_steps: int = 4
    early_exit_threshold: float = 1.0
    tie_word_embeddings: bool = False
    bos_token_id: int = 0
    eos_token_id: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> OuroConfig:
        # Real config.json files carry many keys that do not matter for inference (auto_map,
        # layer_types, ...): take ours and ignore the rest.
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if "head_dim" not in d:
            cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> OuroConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return asdict(self)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """w * x / sqrt(mean(x^2) + eps), in fp32 whatever the storage dtype (spec §3)."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (weight.float() * y).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [S, d] for HF's rotate_half layout over the whole head_dim."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.double()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class KVCache:
    """One K/V store per (loop, layer) pair: slot = loop * L + layer (spec §3)."""

    def __init__(self, n_slots: int):
        self.k: list[torch.Tensor | None] = [None] * n_slots
        self.v: list[torch.Tensor | None] = [None] * n_slots

    @property
    def n_slots(self) -> int:
        return len(self.k)

    @property
    def seq_len(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[-2]

    def append(self, slot: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k[slot] is not None:
            k = torch.cat([self.k[slot], k], dim=-2)
            v = torch.cat([self.v[slot], v], dim=-2)
        self.k[slot], self.v[slot] = k, v
        return k, v


class Attention(nn.Module):
    def __init__(self, cfg: OuroConfig):
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        D = cfg.hidden_size
        self.q_proj = nn.Linear(D, self.n_head * self.head_dim, bias=False)
        self.k_proj = nn.Linear(D, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(D, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, D, bias=False)

    def forward(self, x, cos, sin, cache: KVCache, slot: int) -> torch.Tensor:
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, S, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0 if cache.k[slot] is None else cache.k[slot].shape[-2]
        k, v = cache.append(slot, k, v)
        if self.n_kv != self.n_head:
            rep = self.n_head // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        # Query i (absolute position past + i) sees keys 0..past + i.
        mask = torch.ones(S, past + S, dtype=torch.bool).tril(diagonal=past)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, -1))


class MLP(nn.Module):
    def __init__(self, cfg: OuroConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Sandwich norm: each sub-block's input and output are normed (spec §3, mind the names)."""

    def __init__(self, cfg: OuroConfig):
        super().__init__()
        eps = cfg.rms_norm_eps
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps)  # before attention
        self.input_layernorm_2 = RMSNorm(cfg.hidden_size, eps)  # on the attention output
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps)  # before the MLP
        self.post_attention_layernorm_2 = RMSNorm(cfg.hidden_size, eps)  # on the MLP output

    def forward(self, x, cos, sin, cache: KVCache, slot: int) -> torch.Tensor:
        a = self.self_attn(self.input_layernorm(x), cos, sin, cache, slot)
        h = x + self.input_layernorm_2(a)
        m = self.mlp(self.post_attention_layernorm(h))
        return h + self.post_attention_layernorm_2(m)


class OuroBody(nn.Module):
    def __init__(self, cfg: OuroConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.early_exit_gate = nn.Linear(cfg.hidden_size, 1, bias=True)


@dataclass
class OuroOutput:
    hidden: torch.Tensor  # [T, B, S, D]: the normed state after each loop
    gate_logits: torch.Tensor  # [T, B, S] fp32
    cache: KVCache


class Ouro(nn.Module):
    def __init__(self, cfg: OuroConfig):
        super().__init__()
        self.config = cfg
        self.model = OuroBody(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, loops: int | None = None) -> OuroOutput:
        cfg = self.config
        T = loops or cfg.total_ut_steps
        L = cfg.num_hidden_layers
        if cache is None:
            cache = KVCache(T * L)
        elif cache.n_slots != T * L:
            raise ValueError(f"cache has {cache.n_slots} slots, {T} loops x {L} layers need {T * L}")
        past = cache.seq_len
        positions = torch.arange(past, past + input_ids.shape[1])
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)

        x = self.model.embed_tokens(input_ids)
        hidden, gates = [], []
        for t in range(T):
            for l, layer in enumerate(self.model.layers):
                x = layer(x, cos, sin, cache, slot=t * L + l)
            # The shared norm runs after every loop and its output feeds the next loop.
            x = self.model.norm(x)
            hidden.append(x)
            gate = self.model.early_exit_gate
            gates.append((x.float() @ gate.weight.float().T + gate.bias.float()).squeeze(-1))
        return OuroOutput(torch.stack(hidden), torch.stack(gates), cache)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()

    def read_out(self, out: OuroOutput, mode: str = "last", step: int | None = None,
                 threshold: float | None = None) -> torch.Tensor:
        """Logits [B, S, V] by one of the spec's read-outs (§4)."""
        T = out.hidden.shape[0]
        if mode == "last":
            return self.logits(out.hidden[-1])
        if mode == "step":
            if step is None or not 0 <= step < T:
                raise ValueError(f"exit step must be in 0..{T - 1}, got {step}")
            return self.logits(out.hidden[step])
        if mode == "threshold":
            q = self.config.early_exit_threshold if threshold is None else threshold
            t_out = exit_step(out.gate_logits, q)  # [B, S]
            index = t_out[None, :, :, None].expand(1, *out.hidden.shape[1:])
            return self.logits(out.hidden.gather(0, index)[0])
        if mode == "weighted":
            p = exit_probs(out.gate_logits)  # [T, B, S]
            return (p[..., None] * self.logits(out.hidden)).sum(0)
        raise ValueError(f"unknown read-out mode {mode!r}")


def exit_probs(gate_logits: torch.Tensor) -> torch.Tensor:
    """p_t = λ_t Π_{j<t}(1-λ_j) for t < T-1; the last loop takes the remaining mass. fp32."""
    lam = torch.sigmoid(gate_logits.float())
    survival = torch.cumprod(1 - lam, dim=0)  # survival[t] = Π_{j<=t}(1-λ_j)
    before = torch.cat([torch.ones_like(survival[:1]), survival[:-1]])  # Π_{j<t}(1-λ_j)
    p = lam * before
    p[-1] = before[-1]
    return p


def exit_cdf(gate_logits: torch.Tensor) -> torch.Tensor:
    """CDF(t) = 1 - Π_{j<=t}(1-λ_j), with CDF(T-1) = 1. fp32: in bf16 0.998 rounds to 1 (spec §4)."""
    lam = torch.sigmoid(gate_logits.float())
    cdf = 1 - torch.cumprod(1 - lam, dim=0)
    cdf[-1] = 1.0
    return cdf


def exit_step(gate_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Q-exit: the first loop whose CDF reaches the threshold, per token.

    A threshold of 1.0 or more means "never exit early": the last loop, even where the fp32 CDF of an
    earlier loop rounds up to exactly 1 — the runtime builds no gate nodes at all then.
    """
    T = gate_logits.shape[0]
    if threshold >= 1.0:
        return torch.full(gate_logits.shape[1:], T - 1, dtype=torch.long)
    reached = exit_cdf(gate_logits) >= threshold
    return reached.long().argmax(dim=0)  # the first True; the last loop's CDF is 1 so one exists


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32) -> Ouro:
    """An HF-layout Ouro checkpoint directory (config.json + model.safetensors in BF16/F16/F32)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = OuroConfig.from_file(path / "config.json")
    model = Ouro(cfg)
    state = {k: v.to(dtype) for k, v in load_file(path / "model.safetensors").items()}
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval().requires_grad_(False)


@torch.no_grad()
def generate(model: Ouro, prompt_ids: list[int], max_new_tokens: int, stop_ids: tuple[int, ...] = (),
             mode: str = "last", step: int | None = None, threshold: float | None = None,
             loops: int | None = None) -> tuple[list[int], list[int]]:
    """Greedy decoding with the KV cache. Returns (new token ids, exit loop index of each new token)."""
    out = model(torch.tensor([prompt_ids]), loops=loops)
    tokens, exits = [], []
    for _ in range(max_new_tokens):
        logits = model.read_out(out, mode, step=step, threshold=threshold)[0, -1]
        if mode == "threshold":
            q = model.config.early_exit_threshold if threshold is None else threshold
            exits.append(int(exit_step(out.gate_logits[:, :, -1:], q)[0, 0]))
        else:
            exits.append(out.hidden.shape[0] - 1 if mode != "step" else step)
        token = int(logits.argmax())
        tokens.append(token)
        if token in stop_ids:
            break
        out = model(torch.tensor([[token]]), cache=out.cache, loops=loops)
    return tokens, exits
