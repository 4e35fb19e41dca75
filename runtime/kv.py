"""KV-cache bytes per token: the one formula, used by validation, the memory plan and `ouro info`.

Spec §3: every (loop, layer) pair owns a KV slot, so full KV keeps T·L slots per token; loop-shared KV
(`ouro.kv_share`, patch 0003) keeps L. Each slot stores one K and one V row per KV head, in the cache's
element type: F16 (llama.cpp's default, 2 bytes a value) or q8_0 (34 bytes per block of 32 values; it
needs a head size that is a multiple of 32).
"""

from __future__ import annotations

# KV cache element types: (bytes, values) per block, and ggml's type id (llama_cpp's type_k / type_v).
KV_TYPES: dict[str, tuple[int, int]] = {"f16": (2, 1), "q8_0": (34, 32)}
GGML_TYPE_IDS = {"f16": 1, "q8_0": 8}


def kv_bytes_per_token(*, layers: int, loops: int, heads_kv: int, head_dim: int, kv: str = "full",
                       kv_type: str = "f16") -> int:
    block_bytes, block_values = KV_TYPES[kv_type]
    slots = layers * (loops if kv == "full" else 1)
    return slots * 2 * heads_kv * head_dim // block_values * block_bytes
