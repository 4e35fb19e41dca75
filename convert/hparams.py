"""Ouro hyper-parameters read from an HF config.json, with the checks a conversion depends on.

Deliberately independent of runtime/reference.py's OuroConfig: that module imports torch, and the
converter must run without it. Here every field that shapes the GGUF is *required* (a silently defaulted
rope_theta or loop count would produce a file that loads and generates garbage); only fields whose
default is unambiguous in the HF model code are optional.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from convert.errors import CheckpointError
from runtime.keys import MAX_LOGICAL_LAYERS, MAX_LOOPS


# GGUF stores these as uint32 and llama.cpp often as int32.
MAX_INT = 2**31 - 1
_F32_MAX = float(np.finfo(np.float32).max)


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
    bos_token_id: int | None

    @classmethod
    def from_config(cls, cfg: dict[str, Any], source: str = "config.json") -> OuroHParams:
        model_type = cfg.get("model_type")
        if model_type != "ouro":
            raise CheckpointError(f"{source}: model_type is {model_type!r}, expected 'ouro'")

        def bad(key: str, why: str) -> CheckpointError:
            return CheckpointError(f"{source}: {key} {why}, got {_short(cfg.get(key))}")

        # An explicit null means "the default" in HF configs (e.g. num_key_value_heads: null).
        def need_int(key: str, default: int | None = None, lo: int = 1, hi: int = MAX_INT) -> int:
            val = default if cfg.get(key) is None else cfg[key]
            if val is None:
                raise CheckpointError(f"{source}: missing required field {key!r}")
            if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
                raise bad(key, f"must be an integer in {lo}..{hi}")
            return val

        def need_float(key: str, default: float | None = None, *, positive: bool = False,
                       unit: bool = False) -> float:
            val = default if cfg.get(key) is None else cfg[key]
            if val is None:
                raise CheckpointError(f"{source}: missing required field {key!r}")
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise bad(key, "must be a number")
            f32 = float(np.float32(val)) if abs(val) <= _F32_MAX else math.inf  # what the GGUF will hold
            if not math.isfinite(f32):
                raise bad(key, "must be a finite float32")
            if positive and not f32 > 0:
                raise bad(key, "must be positive (as a float32)")
            if unit and not 0.0 <= f32 <= 1.0:
                raise bad(key, "must be in 0..1")
            return float(val)

        if cfg.get("rope_scaling") is not None:
            raise CheckpointError(f"{source}: rope_scaling {_short(cfg['rope_scaling'])} is not supported (Ouro has none)")
        if cfg.get("tie_word_embeddings", False):
            raise CheckpointError(f"{source}: tie_word_embeddings=true is not supported (Ouro ships an untied lm_head)")

        hidden = need_int("hidden_size")
        heads = need_int("num_attention_heads")
        layers = need_int("num_hidden_layers", hi=MAX_LOGICAL_LAYERS)
        loops = need_int("total_ut_steps", hi=MAX_LOOPS)
        if layers * loops > MAX_LOGICAL_LAYERS:
            raise CheckpointError(f"{source}: {layers} layers x {loops} loops exceeds llama.cpp's "
                                  f"{MAX_LOGICAL_LAYERS} logical layers")
        hp = cls(
            vocab_size=need_int("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need_int("intermediate_size"),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=need_int("num_key_value_heads", heads),
            head_dim=need_int("head_dim", hidden // heads if hidden % heads == 0 else None),
            rope_theta=need_float("rope_theta", positive=True),
            rms_norm_eps=need_float("rms_norm_eps", positive=True),
            max_position_embeddings=need_int("max_position_embeddings"),
            total_ut_steps=loops,
            early_exit_threshold=need_float("early_exit_threshold", 1.0, unit=True),
            bos_token_id=None if cfg.get("bos_token_id") is None else need_int("bos_token_id", lo=0),
        )
        if hp.num_attention_heads % hp.num_key_value_heads:
            raise CheckpointError(
                f"{source}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads "
                f"({hp.num_key_value_heads})"
            )
        if hp.head_dim % 2:
            raise CheckpointError(f"{source}: head_dim must be even for RoPE, got {hp.head_dim}")
        return hp


def _short(val: Any) -> str:
    text = repr(val)
    return text if len(text) <= 60 else text[:57] + "..."
