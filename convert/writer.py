"""Stream an Ouro GGUF to disk one tensor at a time.

gguf's GGUFWriter normally keeps every tensor in memory until `write_tensors_to_file`. Here all tensor
infos are declared up front (shapes and types are known from the plan), the header, KV data and tensor
infos are written, and then each tensor is produced and written with `write_tensor_data` in the declared
order. Each tensor is itself converted in row chunks, so peak memory is one output tensor plus one chunk's
temporaries, never the model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from gguf import GGUFWriter
from gguf.quants import quantize

from convert.checkpoint import Checkpoint
from convert.metadata import FileMetadata, add_metadata
from runtime.keys import ARCH
from convert.plan import TensorPlan
from convert.safetensors_reader import SafetensorsFile, to_float32
from convert.tokenizer import GGUFVocab

# Elements converted per chunk: 4M float32 = 16 MiB, so the quantizer's temporaries stay ~100 MiB.
CHUNK_ELEMENTS = 4 * 1024 * 1024

Advance = Callable[[TensorPlan, int], None]  # (tensor being written, source bytes just consumed)


def write_gguf(path: Path, ckpt: Checkpoint, vocab: GGUFVocab, meta: FileMetadata, plans: list[TensorPlan],
               advance: Advance) -> int:
    """Write the file; returns the offset where tensor data starts (everything before is metadata)."""
    writer = GGUFWriter(path, ARCH)
    add_metadata(writer, ckpt, vocab, meta)
    for plan in plans:
        # tensor_dtype only matters to GGUFWriter when it is uint8 (then the shape is a byte shape);
        # we always pass the logical [out, in] shape and the exact GGML type.
        writer.add_tensor_info(plan.name, plan.src.shape, np.dtype(np.float32), plan.nbytes, raw_dtype=plan.ggml_type)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        data_offset = GGUFWriter.ggml_pad(writer.fout[0].tell(), writer.data_alignment)
        for plan in plans:
            writer.write_tensor_data(encode_tensor(ckpt.weights, plan, advance))
    finally:
        writer.close()
    return data_offset


def encode_tensor(weights: SafetensorsFile, plan: TensorPlan, advance: Advance) -> np.ndarray:
    """The tensor's bytes in its GGML type (rows permuted if needed), as a flat uint8 array."""
    entry = weights.entries[plan.src.hf_name]
    raw = weights.mmap(entry.name)
    rows = raw.reshape(-1, raw.shape[-1]) if raw.ndim > 1 else raw.reshape(1, -1)
    n_rows, n_cols = rows.shape
    out = np.empty((n_rows, plan.nbytes // n_rows), dtype=np.uint8)
    perm = plan.row_perm
    step = max(1, CHUNK_ELEMENTS // max(n_cols, 1))
    src_row_bytes = entry.nbytes // n_rows
    for r0 in range(0, n_rows, step):
        r1 = min(r0 + step, n_rows)
        chunk = rows[r0:r1] if perm is None else rows[perm[r0:r1]]
        encoded = quantize(to_float32(chunk, entry.dtype), plan.ggml_type)
        out[r0:r1] = encoded.view(np.uint8).reshape(r1 - r0, -1)
        advance(plan, (r1 - r0) * src_row_bytes)
    return out.reshape(-1)
