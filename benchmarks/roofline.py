"""Bytes a decoded token reads, from a GGUF's tensor table: the denominator of the bandwidth roofline.

Each loop re-reads every physical block's weights, the output head is read once, and the embedding
lookup reads one row (spec §7): bytes/token = T·block + head + row. KV-cache reads are left out: at the
benchmark's contexts (≤ 640 tokens) they are under 2% of the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.gguf_header import read_header


@dataclass(frozen=True)
class WeightBytes:
    block: int  # all blk.* tensors: what one loop reads
    head: int  # output.weight and output_norm.weight
    embedding_row: int  # one row of token_embd.weight

    def per_token(self, loops: int) -> int:
        return loops * self.block + self.head + self.embedding_row

    def loop_scaling(self, loops: int) -> float:
        """Expected decode time at `loops` over that at 1 loop if only the weight bytes cost time:
        the '4 × (one loop) + head' yardstick for the loop overhead."""
        return self.per_token(loops) / self.per_token(1)

    def to_dict(self) -> dict:
        return asdict(self)


def weight_bytes(path: str | Path) -> WeightBytes:
    tensors = {t.name: t for t in read_header(path).tensors}
    embd = tensors["token_embd.weight"]
    n_rows = embd.shape[1]  # ggml order: ne[0] is the row length (hidden), ne[1] the vocabulary
    return WeightBytes(
        block=sum(t.nbytes for name, t in tensors.items() if name.startswith("blk.")),
        head=sum(tensors[n].nbytes for n in ("output.weight", "output_norm.weight") if n in tensors),
        embedding_row=embd.nbytes // n_rows,
    )


def roofline_tps(bandwidth_gbps: float, bytes_per_token: int) -> float:
    """Decode tokens/s if every weight byte were read once at the copy benchmark's rate."""
    return bandwidth_gbps * 1e9 / bytes_per_token
