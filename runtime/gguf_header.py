"""A bounded reader for the GGUF container: header, key/value metadata and tensor infos (no llama.cpp).

Every count and length the file declares is checked against the bytes that remain before anything is
allocated from it, so a hostile file claiming 2^63 keys or a 4 GiB string fails with one clear
`GGUFFormatError` instead of a MemoryError, a hang or an abort inside llama.cpp. The file is memory-mapped
and only the metadata pages are touched; tensor data is never read.

The rules mirror what ggml's own reader (gguf.cpp) enforces, so a file accepted here is accepted there:
versions 2-3, no nested arrays, tensor names shorter than 64 bytes, at most 4 dimensions, rows a multiple of
the type's block size, data offsets aligned and laid out back to back in declaration order.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
GGML_MAX_NAME = 64  # including the terminating NUL
GGML_MAX_DIMS = 4
# Far above any real model (Ouro files hold ~45 keys and 11*L+3 tensors), far below what would hurt.
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 16
MAX_KEY_BYTES = 1 << 16
MAX_ARRAY_ELEMENTS = 1 << 30  # ggml's GGUF_MAX_ARRAY_ELEMENTS


class GGUFFormatError(ValueError):
    """The file is not a well-formed GGUF; the message names the problem and where it is."""


class ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_FORMATS = {
    ValueType.UINT8: "<B", ValueType.INT8: "<b", ValueType.UINT16: "<H", ValueType.INT16: "<h",
    ValueType.UINT32: "<I", ValueType.INT32: "<i", ValueType.FLOAT32: "<f", ValueType.BOOL: "<B",
    ValueType.UINT64: "<Q", ValueType.INT64: "<q", ValueType.FLOAT64: "<d",
}
_NUMPY_DTYPES = {
    ValueType.UINT8: "<u1", ValueType.INT8: "<i1", ValueType.UINT16: "<u2", ValueType.INT16: "<i2",
    ValueType.UINT32: "<u4", ValueType.INT32: "<i4", ValueType.FLOAT32: "<f4", ValueType.BOOL: "<u1",
    ValueType.UINT64: "<u8", ValueType.INT64: "<i8", ValueType.FLOAT64: "<f8",
}


@dataclass(frozen=True)
class Field:
    """One metadata value. Scalars are Python values, numeric arrays numpy arrays, string arrays lists."""

    key: str
    type: ValueType
    value: Any
    item_type: ValueType | None = None  # element type of an ARRAY


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne[0] is the row length
    type: GGMLQuantizationType
    offset: int  # relative to the start of the data section
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    file_size: int
    version: int
    alignment: int
    fields: dict[str, Field]
    tensors: list[TensorInfo]
    data_offset: int  # absolute offset of the tensor data section


class _Cursor:
    """Reads little-endian values from a byte buffer, refusing to step past its end."""

    def __init__(self, buf: bytes | mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise GGUFFormatError(
                f"truncated: {what} needs {n} bytes at offset {self.pos}, but only {self.remaining} remain"
            )
        # A copy, not a memoryview: a view left alive in a traceback would stop the mmap from closing.
        data = self.buf[self.pos:self.pos + n]
        self.pos += n
        return data

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str, limit: int | None = None) -> str:
        n = self.scalar("<Q", f"length of {what}")
        if limit is not None and n > limit:
            raise GGUFFormatError(f"{what} declares {n} bytes (limit {limit})")
        if n > self.remaining:
            raise GGUFFormatError(
                f"truncated or corrupt: {what} declares {n} bytes at offset {self.pos}, "
                f"but only {self.remaining} remain in the file"
            )
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFFormatError(f"{what} is not valid UTF-8") from None


def read_header(path: str | Path) -> GGUFHeader:
    """Parse and bounds-check everything before the tensor data of the GGUF file `path`."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = _file_size(f)
            if size < 24:  # magic + version + two counts
                raise GGUFFormatError(f"not a GGUF file: only {size} bytes")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf, size)
    except OSError as e:
        raise GGUFFormatError(f"cannot read: {e.strerror or e}") from None


def _file_size(f) -> int:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    return size


def _parse(path: Path, buf: mmap.mmap, size: int) -> GGUFHeader:
    cur = _Cursor(buf, size)
    magic = bytes(cur.take(4, "magic"))
    if magic != MAGIC:
        raise GGUFFormatError(f"not a GGUF file: magic is {magic!r}, expected b'GGUF'")
    version = cur.scalar("<I", "version")
    if version not in SUPPORTED_VERSIONS:
        hint = " (big-endian file?)" if version & 0xFFFF == 0 else ""
        raise GGUFFormatError(f"unsupported GGUF version {version}{hint}; supported: 2, 3")
    n_tensors = cur.scalar("<q", "tensor count")
    n_kv = cur.scalar("<q", "metadata count")
    if not 0 <= n_tensors <= MAX_TENSORS:
        raise GGUFFormatError(f"corrupt header: tensor count {n_tensors} (allowed 0..{MAX_TENSORS})")
    if not 0 <= n_kv <= MAX_KV:
        raise GGUFFormatError(f"corrupt header: metadata count {n_kv} (allowed 0..{MAX_KV})")

    fields: dict[str, Field] = {}
    for i in range(n_kv):
        field = _read_field(cur, i)
        if field.key in fields:
            raise GGUFFormatError(f"duplicate metadata key {field.key!r}")
        fields[field.key] = field

    alignment = _alignment(fields)
    tensors = [_read_tensor_info(cur, i) for i in range(n_tensors)]
    names = set()
    for t in tensors:
        if t.name in names:
            raise GGUFFormatError(f"duplicate tensor name {t.name!r}")
        names.add(t.name)

    data_offset = _pad(cur.pos, alignment)
    _check_layout(tensors, alignment, data_offset, size)
    return GGUFHeader(path=path, file_size=size, version=version, alignment=alignment, fields=fields,
                      tensors=tensors, data_offset=data_offset)


def _value_type(raw: int, what: str) -> ValueType:
    try:
        return ValueType(raw)
    except ValueError:
        raise GGUFFormatError(f"{what} has an invalid value type {raw}") from None


def _read_field(cur: _Cursor, index: int) -> Field:
    key = cur.string(f"metadata key #{index}", limit=MAX_KEY_BYTES)
    if not key:
        raise GGUFFormatError(f"metadata key #{index} is empty")
    vtype = _value_type(cur.scalar("<i", f"type of {key!r}"), f"metadata {key!r}")
    if vtype != ValueType.ARRAY:
        return Field(key, vtype, _read_scalar(cur, vtype, key))

    item_type = _value_type(cur.scalar("<i", f"array type of {key!r}"), f"array {key!r}")
    if item_type == ValueType.ARRAY:
        raise GGUFFormatError(f"metadata {key!r} is a nested array (not allowed in GGUF)")
    n = cur.scalar("<Q", f"length of array {key!r}")
    # The smallest possible encoding of n items must fit in what is left (a string is >= 8 bytes).
    min_item = 8 if item_type == ValueType.STRING else struct.calcsize(_SCALAR_FORMATS[item_type])
    if n > MAX_ARRAY_ELEMENTS or n * min_item > cur.remaining:
        raise GGUFFormatError(
            f"truncated or corrupt: array {key!r} declares {n} items but only {cur.remaining} bytes remain"
        )
    if item_type == ValueType.STRING:
        value: Any = _string_array(cur, n, key)
    else:
        dtype = np.dtype(_NUMPY_DTYPES[item_type])
        value = np.frombuffer(cur.take(n * dtype.itemsize, f"array {key!r}"), dtype=dtype).copy()
        if item_type == ValueType.BOOL and value.size and value.max() > 1:
            raise GGUFFormatError(f"array {key!r} holds a boolean that is neither 0 nor 1")
    return Field(key, ValueType.ARRAY, value, item_type)


_U64 = struct.Struct("<Q")


def _string_array(cur: _Cursor, n: int, key: str) -> list[str]:
    """n length-prefixed strings: the same checks as _Cursor.string in one tight loop (a vocabulary
    and its merges are ~100k strings)."""
    buf, pos, size = cur.buf, cur.pos, cur.size
    raw = []
    for j in range(n):
        if size - pos < 8:
            raise GGUFFormatError(f"truncated: item {j} of {key!r} at offset {pos}")
        (length,) = _U64.unpack_from(buf, pos)
        pos += 8
        if length > size - pos:
            raise GGUFFormatError(
                f"truncated or corrupt: item {j} of {key!r} declares {length} bytes at offset {pos}, "
                f"but only {size - pos} remain in the file"
            )
        raw.append(buf[pos:pos + length])
        pos += length
    cur.pos = pos
    try:
        return [b.decode("utf-8") for b in raw]
    except UnicodeDecodeError:
        bad = next(j for j, b in enumerate(raw) if not _is_utf8(b))
        raise GGUFFormatError(f"item {bad} of {key!r} is not valid UTF-8") from None


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_scalar(cur: _Cursor, vtype: ValueType, key: str) -> Any:
    if vtype == ValueType.STRING:
        return cur.string(f"value of {key!r}")
    value = cur.scalar(_SCALAR_FORMATS[vtype], f"value of {key!r}")
    if vtype == ValueType.BOOL:
        if value > 1:
            raise GGUFFormatError(f"metadata {key!r} is a boolean of value {value} (must be 0 or 1)")
        return bool(value)
    return value


def _alignment(fields: dict[str, Field]) -> int:
    field = fields.get("general.alignment")
    if field is None:
        return DEFAULT_ALIGNMENT
    if field.type != ValueType.UINT32:
        raise GGUFFormatError(f"general.alignment must be a uint32, it is {field.type.name}")
    a = field.value
    if a == 0 or a & (a - 1):
        raise GGUFFormatError(f"general.alignment = {a} is not a power of two")
    return a


def _read_tensor_info(cur: _Cursor, index: int) -> TensorInfo:
    name = cur.string(f"name of tensor #{index}", limit=MAX_KEY_BYTES)
    if len(name.encode("utf-8")) >= GGML_MAX_NAME:
        raise GGUFFormatError(f"tensor #{index} name {name[:80]!r} is longer than {GGML_MAX_NAME - 1} bytes")
    n_dims = cur.scalar("<I", f"dimension count of {name!r}")
    if n_dims > GGML_MAX_DIMS:
        raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions (at most {GGML_MAX_DIMS})")
    shape = tuple(cur.scalar("<q", f"shape of {name!r}") for _ in range(n_dims))
    if any(d < 0 for d in shape):
        raise GGUFFormatError(f"tensor {name!r} has a negative dimension in {list(shape)}")
    raw_type = cur.scalar("<i", f"type of {name!r}")
    try:
        qtype = GGMLQuantizationType(raw_type)
    except ValueError:
        raise GGUFFormatError(f"tensor {name!r} has an unknown ggml type {raw_type}") from None
    if qtype not in GGML_QUANT_SIZES:
        raise GGUFFormatError(f"tensor {name!r} has ggml type {qtype.name}, which has no known size")
    block, type_size = GGML_QUANT_SIZES[qtype]
    n_elements = 1
    for d in shape:
        n_elements *= d  # Python ints: no overflow; the file-size check below bounds the result
    if shape and shape[0] % block:
        raise GGUFFormatError(
            f"tensor {name!r} of type {qtype.name} has rows of {shape[0]} values, not a multiple of {block}"
        )
    offset = cur.scalar("<Q", f"data offset of {name!r}")
    return TensorInfo(name=name, shape=shape, type=qtype, offset=offset,
                      nbytes=n_elements // block * type_size)


def _pad(x: int, alignment: int) -> int:
    return (x + alignment - 1) // alignment * alignment


def _check_layout(tensors: list[TensorInfo], alignment: int, data_offset: int, file_size: int) -> None:
    data_size = file_size - data_offset
    if tensors and data_size < 0:
        raise GGUFFormatError(f"truncated: the tensor data section would start at byte {data_offset}, "
                              f"past the end of the {file_size}-byte file")
    expected = 0
    for t in tensors:
        if t.offset % alignment:
            raise GGUFFormatError(f"tensor {t.name!r} data offset {t.offset} is not aligned to {alignment} bytes")
        if t.offset != expected:
            # ggml requires the data laid out back to back, in declaration order.
            raise GGUFFormatError(f"tensor {t.name!r} has data offset {t.offset}, expected {expected} "
                                  "(overlapping or out-of-order tensor data)")
        if t.offset + t.nbytes > data_size:
            raise GGUFFormatError(
                f"truncated or corrupt: tensor {t.name!r} ({t.nbytes} bytes at data offset {t.offset}) "
                f"ends past the end of the file ({max(data_size, 0)} bytes of tensor data)"
            )
        expected = _pad(t.offset + t.nbytes, alignment)
