"""Ouro hyper-parameters read from an HF config.json, with the checks a conversion depends on.

Deliberately independent of runtime/reference.py's OuroConfig: that module imports torch, and the
converter must run without it. Here every field that shapes the GGUF is *required* (a silently defaulted
rope_theta or loop count would produce a file that loads and generates garbage); only fields whose
default is unambiguous in the HF model code are optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convert.errors import CheckpointError


@dataclass(frozen=True)
class OuroHParams:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int  # physical L
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    max_position_embeddings: int
    total_ut_steps: int  # loops T
    early_exit_threshold: float

    @classmethod
    def from_config(cls, cfg: dict[str, Any], source: str = "config.json") -> OuroHParams:
        model_type = cfg.get("model_type")
        if model_type != "ouro":
            raise CheckpointError(f"{source}: model_type is {model_type!r}, expected 'ouro'")

        # An explicit null means "the default" in HF configs (e.g. num_key_value_heads: null).
        def need_int(key: str, default: int | None = None) -> int:
            val = default if cfg.get(key) is None else cfg[key]
            if val is None:
                raise CheckpointError(f"{source}: missing required field {key!r}")
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise CheckpointError(f"{source}: {key} must be a positive integer, got {val!r}")
            return val

        def need_float(key: str, default: float | None = None) -> float:
            val = default if cfg.get(key) is None else cfg[key]
            if val is None:
                raise CheckpointError(f"{source}: missing required field {key!r}")
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise CheckpointError(f"{source}: {key} must be a number, got {val!r}")
            return float(val)

        if cfg.get("rope_scaling") is not None:
            raise CheckpointError(f"{source}: rope_scaling {cfg['rope_scaling']!r} is not supported (Ouro has none)")
        if cfg.get("tie_word_embeddings", False):
            raise CheckpointError(f"{source}: tie_word_embeddings=true is not supported (Ouro ships an untied lm_head)")

        hidden = need_int("hidden_size")
        heads = need_int("num_attention_heads")
        hp = cls(
            vocab_size=need_int("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need_int("intermediate_size"),
            num_hidden_layers=need_int("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=need_int("num_key_value_heads", heads),
            head_dim=need_int("head_dim", hidden // heads if hidden % heads == 0 else None),
            rope_theta=need_float("rope_theta"),
            rms_norm_eps=need_float("rms_norm_eps"),
            max_position_embeddings=need_int("max_position_embeddings"),
            total_ut_steps=need_int("total_ut_steps"),
            early_exit_threshold=need_float("early_exit_threshold", 1.0),
        )
        if hp.num_attention_heads % hp.num_key_value_heads:
            raise CheckpointError(
                f"{source}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads "
                f"({hp.num_key_value_heads})"
            )
        if hp.head_dim % 2:
            raise CheckpointError(f"{source}: head_dim must be even for RoPE, got {hp.head_dim}")
        return hp
