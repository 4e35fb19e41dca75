"""Bytes a decoded token reads, from a GGUF's tensor table: the denominator of the bandwidth roofline.

Each loop re-reads every physical block's weights, the output head is read once, and the embedding
lookup reads one row (spec §7): T·block + head + row. Each loop's attention also reads its own K and V of
every cached token: at the benchmark's 512-640 tokens that is ~9% of the weights of the 1.4b at Q8_0 (768
KiB per token over 4 loops), so it is counted too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from runtime.gguf_header import read_header


@dataclass(frozen=True)
class WeightBytes:
    block: int  # all blk.* tensors: what one loop reads
    head: int  # output.weight and output_norm.weight
    embedding_row: int  # one row of token_embd.weight
    # A digest of the tensor table (names, shapes, types, sizes): two files with the same digest read the
    # same bytes per token with the same kernels, so they decode at the same speed.
    layout: str = ""

    def per_token(self, loops: int) -> int:
        return loops * self.block + self.head + self.embedding_row


def weight_bytes(path: str | Path) -> WeightBytes:
    listed = read_header(path).tensors
    tensors = {t.name: t for t in listed}
    embd = tensors["token_embd.weight"]
    n_rows = embd.shape[1]  # ggml order: ne[0] is the row length (hidden), ne[1] the vocabulary
    layout = sorted((t.name, t.shape, t.type.name, t.nbytes) for t in listed)
    return WeightBytes(
        block=sum(t.nbytes for name, t in tensors.items() if name.startswith("blk.")),
        head=sum(tensors[n].nbytes for n in ("output.weight", "output_norm.weight") if n in tensors),
        embedding_row=embd.nbytes // n_rows,
        layout=hashlib.sha256(repr(layout).encode()).hexdigest(),
    )


def kv_bytes_read(kv_bytes_per_token: float, file_loops: int, loops: int, context: float) -> float:
    """KV-cache bytes a decode step at `loops` loops reads with `context` cached tokens
    (kv_bytes_per_token: a token's K and V over all the file's loops, as the full cache stores them)."""
    return kv_bytes_per_token / file_loops * loops * context


def roofline_tps(bandwidth_gbps: float, bytes_per_token: float) -> float:
    """Decode tokens/s if every byte were read once at the copy benchmark's rate."""
    return bandwidth_gbps * 1e9 / bytes_per_token
