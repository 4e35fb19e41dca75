"""Which tensors an Ouro checkpoint holds, their shapes from the config, and their GGUF names (spec §2, §5).

The exit gate is listed with `gguf_name=None`: it travels as metadata (`ouro.exit_gate.*`) because
upstream llama.cpp refuses files holding tensors it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convert.hparams import OuroHParams

GATE_WEIGHT = "model.early_exit_gate.weight"
GATE_BIAS = "model.early_exit_gate.bias"

# HF per-layer suffix -> GGUF per-block suffix. Note the sandwich-norm naming trap: HF's
# post_attention_layernorm is the norm *before* the MLP, i.e. llama.cpp's ffn_norm.
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "input_layernorm_2.weight": "post_attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_attention_layernorm_2.weight": "post_ffw_norm.weight",
}


@dataclass(frozen=True)
class TensorSpec:
    hf_name: str
    gguf_name: str | None  # None: stored as metadata, not as a GGUF tensor
    shape: tuple[int, ...]  # HF/numpy order [out, in]
    rope_heads: int = 0  # > 0: rows are permuted for llama.cpp's NORM rope, with this many heads


def expected_tensors(hp: OuroHParams) -> list[TensorSpec]:
    """Every tensor of the checkpoint, in the order the GGUF writes them (gate last, metadata only)."""
    d, f, v = hp.hidden_size, hp.intermediate_size, hp.vocab_size
    q_rows = hp.num_attention_heads * hp.head_dim
    kv_rows = hp.num_key_value_heads * hp.head_dim
    layer_shapes = {
        "input_layernorm.weight": (d,),
        "self_attn.q_proj.weight": (q_rows, d),
        "self_attn.k_proj.weight": (kv_rows, d),
        "self_attn.v_proj.weight": (kv_rows, d),
        "self_attn.o_proj.weight": (d, q_rows),
        "input_layernorm_2.weight": (d,),
        "post_attention_layernorm.weight": (d,),
        "mlp.gate_proj.weight": (f, d),
        "mlp.up_proj.weight": (f, d),
        "mlp.down_proj.weight": (d, f),
        "post_attention_layernorm_2.weight": (d,),
    }
    rope_heads = {"self_attn.q_proj.weight": hp.num_attention_heads,
                  "self_attn.k_proj.weight": hp.num_key_value_heads}

    specs = [TensorSpec("model.embed_tokens.weight", "token_embd.weight", (v, d))]
    for i in range(hp.num_hidden_layers):
        for suffix, shape in layer_shapes.items():
            specs.append(TensorSpec(f"model.layers.{i}.{suffix}", f"blk.{i}.{_LAYER_NAMES[suffix]}", shape,
                                    rope_heads.get(suffix, 0)))
    specs += [
        TensorSpec("model.norm.weight", "output_norm.weight", (d,)),
        TensorSpec("lm_head.weight", "output.weight", (v, d)),
        TensorSpec(GATE_WEIGHT, None, (1, d)),
        TensorSpec(GATE_BIAS, None, (1,)),
    ]
    return specs


def rope_row_permutation(n_rows: int, n_heads: int) -> np.ndarray:
    """Source row index for every output row, turning HF's rotate_half layout into interleaved pairs.

    Within a head HF rotates dimension j with j + head_dim/2; llama.cpp's NORM rope rotates 2j with 2j+1
    at the same frequency. So output row 2j takes source row j and output row 2j+1 takes j + head_dim/2.
    """
    half = n_rows // n_heads // 2
    return np.arange(n_rows).reshape(n_heads, 2, half).swapaxes(1, 2).reshape(-1)
