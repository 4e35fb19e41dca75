"""Rewrite a GGUF file with some metadata keys dropped or replaced: test files with odd metadata.

Tensors are copied byte for byte; only the key/value section changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gguf import GGUFReader, GGUFValueType, GGUFWriter


def rewrite_gguf(src: Path, dst: Path, *, drop: tuple[str, ...] = (),
                 replace: dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]] | None = None) -> Path:
    """Copy `src` to `dst` without the keys in `drop`; `replace` maps key -> (value, type, array sub-type)."""
    replace = dict(replace or {})
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop:
            continue
        if name in replace:
            writer.add_key_value(name, *replace.pop(name))
            continue
        main = field.types[0]
        sub = field.types[-1] if main == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), main, sub_type=sub)
    for name, (value, vtype, sub) in replace.items():  # keys that were not there before
        writer.add_key_value(name, value, vtype, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_shape=list(reversed(t.shape.tolist())), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
