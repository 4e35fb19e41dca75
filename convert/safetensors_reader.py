"""A defensive, memory-mapped reader for one safetensors file (no torch).

The header is validated against the file size before anything sized by the file's claims is allocated:
the header length, well-formed JSON, known dtypes, offsets inside the data section, byte spans that match
shape x dtype size, no overlapping tensors. A truncated or corrupt file therefore fails with one clear
`SafetensorsError` instead of a numpy error, a huge allocation or a SIGBUS half-way through a conversion.

Tensor data is returned as `np.memmap` views: pages are read lazily and the mapping is released as soon as
the caller drops the array, which keeps the converter's resident memory near one tensor.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from convert.errors import SafetensorsError

# Bytes per element of every dtype the safetensors format defines; only SUPPORTED ones can be converted,
# the others are recognised so the error can say "unsupported" rather than "corrupt".
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
# BF16 has no numpy dtype: its raw bits are read as uint16 and widened by `to_float32`.
SUPPORTED_DTYPES = {"BF16": np.dtype("<u2"), "F16": np.dtype("<f2"), "F32": np.dtype("<f4")}

# The safetensors library refuses headers above 100 MB; a larger length field means a corrupt file.
MAX_HEADER_BYTES = 100 * 1024 * 1024
_LEN_PREFIX = 8


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute offset of the first byte in the file
    nbytes: int

    @property
    def numel(self) -> int:
        return prod(self.shape)


class SafetensorsFile:
    """A validated safetensors file: `entries` from the header, `mmap(name)` for the data."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, TensorEntry] = _read_header(self.path)

    def mmap(self, name: str) -> np.ndarray:
        """The tensor `name` memory-mapped read-only, in its stored dtype (BF16 as uint16 bits)."""
        entry = self.entries[name]
        dtype = SUPPORTED_DTYPES[entry.dtype]
        if entry.numel == 0:  # mmap cannot map zero bytes
            return np.empty(entry.shape, dtype=dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=entry.offset, shape=entry.shape)


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Widen stored values (safetensors dtype name `dtype`) to float32; exact for all supported dtypes."""
    if dtype == "BF16":
        # A bfloat16 is the upper half of the float32 with the same value.
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(raw, dtype=np.float32)


def _read_header(path: Path) -> dict[str, TensorEntry]:
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(_LEN_PREFIX)
            if len(prefix) < _LEN_PREFIX:
                raise SafetensorsError(f"{path}: truncated safetensors file ({file_size} bytes, no header)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > file_size - _LEN_PREFIX:
                raise SafetensorsError(
                    f"{path}: truncated or corrupt safetensors file: the header claims {header_len} bytes "
                    f"but the file has {file_size} bytes"
                )
            if header_len > MAX_HEADER_BYTES:
                raise SafetensorsError(f"{path}: corrupt safetensors header (length field {header_len} bytes)")
            raw_header = f.read(header_len)
    except OSError as e:
        raise SafetensorsError(f"{path}: cannot read: {e.strerror or e}") from None

    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, absurd numbers, absurd nesting
        raise SafetensorsError(f"{path}: corrupt safetensors header: not valid JSON ({str(e)[:100]})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: corrupt safetensors header: expected a JSON object")

    data_start = _LEN_PREFIX + header_len
    data_size = file_size - data_start
    entries = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        entries[name] = _parse_entry(path, name, spec, data_start, data_size)
    _check_no_overlap(path, entries.values())
    _check_supported(path, entries.values())
    return entries


def _is_uint(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _parse_entry(path: Path, name: str, spec: object, data_start: int, data_size: int) -> TensorEntry:
    def corrupt(why: str) -> SafetensorsError:
        return SafetensorsError(f"{path}: corrupt safetensors header: tensor {name!r} {why}")

    if not isinstance(spec, dict):
        raise corrupt("is not a JSON object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise corrupt(f"has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise corrupt(f"has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise corrupt(f"has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if end > data_size:
        raise SafetensorsError(
            f"{path}: truncated safetensors file: tensor {name!r} ends at byte {data_start + end} "
            f"but the file has {data_start + data_size} bytes"
        )
    expected = prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise corrupt(f"spans {end - begin} bytes but shape {shape} of {dtype} needs {expected}")
    return TensorEntry(name=name, dtype=dtype, shape=tuple(shape), offset=data_start + begin, nbytes=end - begin)


def _check_no_overlap(path: Path, entries) -> None:
    ordered = sorted((e for e in entries if e.nbytes), key=lambda e: e.offset)
    for prev, cur in zip(ordered, ordered[1:]):
        if cur.offset < prev.offset + prev.nbytes:
            raise SafetensorsError(
                f"{path}: corrupt safetensors header: tensors {prev.name!r} and {cur.name!r} overlap"
            )


def _check_supported(path: Path, entries) -> None:
    for e in entries:
        if e.dtype not in SUPPORTED_DTYPES:
            raise SafetensorsError(
                f"{path}: tensor {e.name!r} has dtype {e.dtype}; only "
                f"{', '.join(SUPPORTED_DTYPES)} checkpoints can be converted"
            )
