"""KV-cache memory of an Ouro GGUF, from its metadata (spec §3: every (loop, layer) pair owns a slot).

Full KV keeps T·L slots for every token; each slot stores one K and one V row per KV head. The cache is
F16 (llama.cpp's default), 2 bytes per element.
"""

from __future__ import annotations

from collections.abc import Mapping

F16_BYTES = 2


def kv_bytes_per_token(metadata: Mapping[str, object], loops: int | None = None) -> int:
    """Bytes of F16 K+V per token at `loops` loops (default: the file's ouro.num_loops) with full KV."""
    arch = str(metadata.get("general.architecture", "ouro"))

    def get(key: str, default: int | None = None) -> int:
        value = metadata.get(f"{arch}.{key}", default)
        if value is None:
            raise KeyError(f"{arch}.{key}")
        return int(float(value))  # llama_cpp.Llama.metadata holds every value as a string

    heads = get("attention.head_count")
    kv_heads = get("attention.head_count_kv", heads)
    head_dim = get("embedding_length") // heads
    k_dim = get("attention.key_length", head_dim)
    v_dim = get("attention.value_length", head_dim)
    n_loops = loops if loops is not None else get("num_loops", 1)  # no key: llama.cpp runs one loop
    return get("block_count") * n_loops * kv_heads * (k_dim + v_dim) * F16_BYTES
