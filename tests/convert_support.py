"""Helpers for the converter tests: raw safetensors writing (to make broken files) and GGUF reading."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType

ST_DTYPES = {"BF16": "<u2", "F16": "<f2", "F32": "<f4", "I64": "<i8"}


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits by truncation (exact when x came from bf16)."""
    return (np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def read_safetensors(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, name -> float32 array), independent of the converter's reader."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        b, e = spec["data_offsets"]
        buf = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=ST_DTYPES[spec["dtype"]])
        if spec["dtype"] == "BF16":
            buf = (buf.astype(np.uint32) << 16).view(np.float32)
        out[name] = buf.astype(np.float32).reshape(spec["shape"])
    return header, out


def write_safetensors(path: Path, tensors: dict[str, tuple[str, bytes, list[int]]], header_patch=None) -> None:
    """Write name -> (dtype, raw bytes, shape) in sorted order; header_patch(header) may break it."""
    header: dict = {}
    offset = 0
    for name in sorted(tensors):
        dtype, data, shape = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    if header_patch:
        header_patch(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in sorted(tensors):
            f.write(tensors[name][1])


def rewrite_safetensors(path: Path, edit) -> None:
    """Load a checkpoint's safetensors as raw entries, let `edit(entries)` change them, write it back."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    entries = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        b, e = spec["data_offsets"]
        entries[name] = (spec["dtype"], raw[8 + n + b:8 + n + e], spec["shape"])
    edit(entries)
    write_safetensors(path, entries)


def gguf_fields(reader: GGUFReader) -> dict[str, object]:
    """All KV pairs as Python values (arrays as lists)."""
    out = {}
    for name, field in reader.fields.items():
        if not field.types:
            continue
        if field.types[0] == GGUFValueType.ARRAY:
            if field.types[-1] == GGUFValueType.STRING:
                out[name] = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                out[name] = [field.parts[i][0].item() for i in field.data]
        elif field.types[0] == GGUFValueType.STRING:
            out[name] = bytes(field.parts[field.data[0]]).decode("utf-8")
        else:
            out[name] = field.parts[field.data[0]][0].item()
    return out


def write_wide_checkpoint(tiny: Path, dst: Path, **config_changes) -> Path:
    """A copy of the `tiny` checkpoint `tiny` with hidden 256, intermediate 512 and head 64 (K-quant blocks
    are 256 wide, so every matrix can really be K-quantized), other config changes applied, and new random
    BF16 weights of those shapes."""
    from models.synthetic import tensor_shapes

    dst.mkdir(parents=True)
    config = json.loads((tiny / "config.json").read_text())
    config.update(hidden_size=256, intermediate_size=512, head_dim=64, **config_changes)
    (dst / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, dst / name)
    rng = np.random.default_rng(0)
    write_safetensors(dst / "model.safetensors", {
        name: ("BF16", bf16_bits(rng.standard_normal(shape, dtype=np.float32) * 0.05).tobytes(), list(shape))
        for name, shape in tensor_shapes(config)
    })
    return dst
