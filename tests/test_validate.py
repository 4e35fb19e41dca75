"""runtime.validate: the facts of a good Ouro GGUF, and one clear error for each broken rule (issue 9)."""

from __future__ import annotations

import struct
import time
from math import prod

import pytest
from gguf import GGUFReader, GGUFValueType as VT

from convert.safetensors_reader import SafetensorsFile
from gguf_edit import rewrite_gguf
from runtime.errors import OuroRuntimeError
from runtime.validate import GGUFValidationError, validate_gguf


@pytest.fixture(scope="module")
def f16(tiny_gguf):
    return tiny_gguf(qtype="f16")


def test_summary_of_a_good_file(f16, tiny_config_dict):
    ckpt, path = f16
    s = validate_gguf(path)
    assert (s.arch, s.loops, s.layers, s.vocab) == ("ouro", 4, 2, 512)
    assert (s.hidden, s.heads, s.heads_kv, s.head_dim) == (64, 4, 4, 16)
    assert s.gate_present and s.gate_bias == 0.0 and s.threshold == 1.0 and s.exit_at_step is None
    assert s.eos_token == "<|im_end|>" and s.eot_token_id == 2
    assert "<|im_start|>" in s.chat_template
    # every checkpoint tensor is counted once, the exit gate included (it travels as metadata)
    weights = SafetensorsFile(ckpt / "model.safetensors")
    assert s.n_params == sum(prod(e.shape) for e in weights.entries.values())
    assert s.n_tensors == 3 + 11 * 2
    # K+V, F16, per (loop, layer) slot: 2 x kv_heads x head_dim x 2 bytes
    assert s.kv_bytes_per_token_full == 4 * 2 * (2 * 4 * 16 * 2)
    assert s.kv_bytes_per_token_share == s.kv_bytes_per_token_full // 4
    assert s.ram_bytes(1000) == s.tensor_bytes + 1000 * s.kv_bytes_per_token_full
    assert {t.type for t in s.tensor_types} == {"F16", "F32"}
    assert sum(t.nbytes for t in s.tensor_types) == s.tensor_bytes < s.file_size


def test_quantized_types_are_reported(tiny_gguf):
    s = validate_gguf(tiny_gguf(qtype="q8_0")[1])
    types = {t.type: t for t in s.tensor_types}
    assert types["Q8_0"].count == 16 and types["F32"].count == 9  # 2-D weights vs norms


def test_is_an_ouro_runtime_error(tmp_path):
    with pytest.raises(OuroRuntimeError):
        validate_gguf(tmp_path / "missing.gguf")


def _edited(src, tmp_path, **edit):
    return rewrite_gguf(src, tmp_path / "edited.gguf", **edit)


@pytest.mark.parametrize("key,value,vtype,message", [
    ("ouro.num_loops", 0, VT.UINT32, "must be at least 1"),
    ("ouro.num_loops", 17, VT.UINT32, "outside 1..16"),
    ("ouro.num_loops", 4, VT.INT32, "must be a uint32"),
    ("ouro.block_count", 200, VT.UINT32, "exceeds llama.cpp's limit of 512"),
    ("ouro.exit_gate.weight", ([0.0] * 63, VT.FLOAT32), VT.ARRAY, "63 values, the hidden size is 64"),
    ("ouro.exit_gate.bias", "0", VT.STRING, "must be a float32"),
    ("ouro.early_exit_threshold", 1.5, VT.FLOAT32, "outside 0..1"),
    ("ouro.early_exit_threshold", float("nan"), VT.FLOAT32, "is nan"),
    ("ouro.exit_at_step", 4, VT.UINT32, "only loops 0..3 run"),
    ("ouro.exit_mode", "fast", VT.STRING, "expected 'select' or 'skip'"),
    ("ouro.min_loops", 5, VT.UINT32, "outside 1..4"),
    ("ouro.feed_forward_length", 96, VT.UINT32, "ffn_gate.weight has shape [64, 128], expected [64, 96]"),
    ("ouro.rope.scaling.type", "yarn", VT.STRING, "unknown Ouro metadata ouro.rope.scaling.type"),
    ("tokenizer.ggml.pre", "llama3", VT.STRING, "SmolLM2's"),
    ("tokenizer.ggml.eos_token_id", 512, VT.UINT32, "outside the 512-token vocabulary"),
    ("tokenizer.chat_template", "{% for m in messages %}", VT.STRING, "not valid Jinja"),
    ("general.file_type", 1, VT.INT32, "general.file_type must be a uint32"),
    # found by scripts/sanitize.sh: llama.cpp loads it into an enum (UBSan: invalid enum value)
    ("general.file_type", 0x40000007, VT.UINT32, "not a llama.cpp file type"),
])
def test_metadata_rules(f16, tmp_path, key, value, vtype, message):
    sub = None
    if vtype == VT.ARRAY:
        value, sub = value
    path = _edited(f16[1], tmp_path, replace={key: (value, vtype, sub)})
    with pytest.raises(GGUFValidationError, match=message.replace(".", r"\.").replace("[", r"\[")):
        validate_gguf(path)


def test_duplicate_vocabulary_entry_is_refused(f16, tmp_path):
    # llama.cpp GGML_ASSERTs (aborting the process) on two ids with the same text
    tokens = GGUFReader(f16[1]).fields["tokenizer.ggml.tokens"].contents()
    tokens[100] = tokens[99]
    path = _edited(f16[1], tmp_path, replace={"tokenizer.ggml.tokens": (tokens, VT.ARRAY, VT.STRING)})
    with pytest.raises(GGUFValidationError, match="twice"):
        validate_gguf(path)


def test_missing_keys(f16, tmp_path):
    with pytest.raises(GGUFValidationError, match="required metadata ouro.embedding_length is missing"):
        validate_gguf(_edited(f16[1], tmp_path, drop=("ouro.embedding_length",)))


def _patched(src, tmp_path, old: bytes, new: bytes, name="patched.gguf"):
    raw = src.read_bytes()
    assert raw.count(old) >= 1 and len(old) == len(new)
    out = tmp_path / name
    out.write_bytes(raw.replace(old, new, 1))
    return out


def test_other_architectures_are_refused(f16, tmp_path):
    path = _patched(f16[1], tmp_path, b"\x04\x00\x00\x00\x00\x00\x00\x00ouro", b"\x04\x00\x00\x00\x00\x00\x00\x00llam")
    with pytest.raises(GGUFValidationError, match="architecture is 'llam'; this runtime runs Ouro models only"):
        validate_gguf(path)


def test_missing_and_unknown_tensors(f16, tmp_path):
    path = _patched(f16[1], tmp_path, b"blk.1.ffn_up.weight", b"blk.7.ffn_up.weight")
    with pytest.raises(GGUFValidationError, match=r"missing tensor\(s\) blk\.1\.ffn_up\.weight"):
        validate_gguf(path)
    path = _patched(f16[1], tmp_path, b"output.weight", b"outpux.weight")
    with pytest.raises(GGUFValidationError, match="missing tensor"):
        validate_gguf(path)


# --- the container: every size is checked against the file before it is used -----------------------

def _header_patch(src, tmp_path, offset: int, fmt: str, value: int):
    raw = bytearray(src.read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    out = tmp_path / "header.gguf"
    out.write_bytes(raw)
    return out


@pytest.mark.parametrize("offset,fmt,value,message", [
    (0, "<I", 0x46554747 + 1, "not a GGUF file"),
    (4, "<I", 1, "unsupported GGUF version 1"),
    (4, "<I", 3 << 24, "big-endian"),
    (8, "<q", 2**63 - 1, "tensor count"),
    (16, "<q", 2**63 - 1, "metadata count"),
    (16, "<q", -1, "metadata count"),
    (24, "<Q", 2**62, "declares"),  # the first key's length: ~4 EiB
])
def test_hostile_header_fields_fail_fast(f16, tmp_path, offset, fmt, value, message):
    path = _header_patch(f16[1], tmp_path, offset, fmt, value)
    start = time.monotonic()
    with pytest.raises(GGUFValidationError, match=message):
        validate_gguf(path)
    assert time.monotonic() - start < 1.0


def test_huge_array_length_is_checked_against_the_file(f16, tmp_path):
    reader = GGUFReader(f16[1])
    field = reader.fields["tokenizer.ggml.tokens"]
    length_offset = field.offset + sum(p.nbytes for p in field.parts[:4])  # key len, key, type, item type
    path = _header_patch(f16[1], tmp_path, length_offset, "<Q", 2**40)
    with pytest.raises(GGUFValidationError, match=r"array 'tokenizer\.ggml\.tokens' declares 1099511627776 items"):
        validate_gguf(path)


def test_tensor_info_checks(f16, tmp_path):
    t = GGUFReader(f16[1]).tensors[1]
    parts = t.field.parts  # name len, name, n_dims, dims, type, offset
    at = t.field.offset + sum(p.nbytes for p in parts[:5])
    with pytest.raises(GGUFValidationError, match="not aligned to 32 bytes"):
        validate_gguf(_header_patch(f16[1], tmp_path, at, "<Q", int(parts[5][0]) + 4))
    with pytest.raises(GGUFValidationError, match="expected"):
        validate_gguf(_header_patch(f16[1], tmp_path, at, "<Q", int(parts[5][0]) + 4096))
    dims_at = t.field.offset + sum(p.nbytes for p in parts[:3])
    with pytest.raises(GGUFValidationError, match="ends past the end of the file|shape"):
        validate_gguf(_header_patch(f16[1], tmp_path, dims_at, "<q", 2**40))
    type_at = t.field.offset + sum(p.nbytes for p in parts[:4])
    with pytest.raises(GGUFValidationError, match="unknown ggml type 1000"):
        validate_gguf(_header_patch(f16[1], tmp_path, type_at, "<i", 1000))


@pytest.mark.parametrize("keep", [0, 3, 23, 1000, -1])
def test_truncated_files(f16, tmp_path, keep):
    raw = f16[1].read_bytes()
    out = tmp_path / "cut.gguf"
    out.write_bytes(raw[:keep])
    with pytest.raises(GGUFValidationError, match="not a GGUF file|truncated"):
        validate_gguf(out)
