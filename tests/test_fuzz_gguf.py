"""Fuzz the GGUF load path: >= 1,000 mutated Ouro files, 0 crashes (issue 9).

Every mutated file goes through what `ouro` and runtime.load do: validate_gguf, then, if it passes,
llama_cpp.Llama plus a two-token eval, in worker subprocesses (tests/fuzz_runner.py) so that an abort
inside llama.cpp is caught and counted instead of killing pytest. Mutations (fixed seed):
- integers rewritten in place in the header (magic, version, counts), in every metadata entry (key lengths,
  value types, array types and lengths, values) and in every tensor info (name length, dims, type, offset);
- random bytes flipped in the metadata region and in the tensor data;
- truncation at random offsets;
- metadata rewritten with a well-formed file around it: Ouro keys set to out-of-range values or other types,
  the gate array resized, broken tokenizer and chat template, random keys given random typed values.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from gguf import GGUFReader, GGUFValueType as VT

from fuzz_runner import run_cases
from gguf_edit import rewrite_gguf

pytest.importorskip("llama_cpp")

SEED = 20261125
N_SITE_INTS = 440
N_BYTE_FLIPS = 200
N_DATA_FLIPS = 30
N_TRUNCATIONS = 160
N_RANDOM_KEYS = 200


def _sites(path: Path) -> list[tuple[int, int, str]]:
    """(offset, size, label) of every integer field of the header, the metadata and the tensor infos."""
    reader = GGUFReader(path)
    sites = [(0, 4, "magic"), (4, 4, "version"), (8, 8, "tensor count"), (16, 8, "kv count")]
    fields = [f for name, f in reader.fields.items() if not name.startswith("GGUF.")]
    for f in fields + [t.field for t in reader.tensors]:
        pos = f.offset
        for j, part in enumerate(f.parts):
            # Parts of a huge array (tokens) are many; only the first 12 parts carry structure.
            if j < 12 and part.dtype.kind in "uif" and part.nbytes in (1, 2, 4, 8):
                sites.append((pos, part.nbytes, f"{f.name} part {j}"))
            pos += part.nbytes
    return sites


def _interesting(rng: random.Random, size: int, old: int) -> int:
    bits = size * 8
    choices = [0, 1, 2, 3, 4, 16, 17, 31, 64, 511, 513, old + 1, old - 1, old * 2, old ^ (1 << rng.randrange(bits)),
               (1 << (bits - 1)) - 1, 1 << (bits - 1), (1 << bits) - 1, rng.getrandbits(bits)]
    return rng.choice(choices) & ((1 << bits) - 1)


def _semantic_edits(hidden: int, vocab: int) -> list[tuple[str, dict]]:
    """Well-formed files with one Ouro rule broken (or, for a few, a legal change)."""
    u32, i32, f32, s, b = VT.UINT32, VT.INT32, VT.FLOAT32, VT.STRING, VT.BOOL
    edits: list[tuple[str, dict]] = []

    def rep(key, value, vtype, sub=None):
        edits.append((f"{key}={value!r:.40}", {"replace": {key: (value, vtype, sub)}}))

    for v in (0, 1, 2, 16, 17, 1000, 2**32 - 1):
        rep("ouro.num_loops", v, u32)
    rep("ouro.num_loops", 4, i32)
    rep("ouro.num_loops", 4.0, f32)
    rep("ouro.num_loops", "4", s)
    for v in (0, 1, 3, 256, 512, 2**31):
        rep("ouro.block_count", v, u32)
    for v in (0, hidden - 1, hidden + 1, 2**32 - 1):
        rep("ouro.embedding_length", v, u32)
    for key in ("ouro.attention.head_count", "ouro.attention.head_count_kv"):
        for v in (0, 3, 5, 64):
            rep(key, v, u32)
    for v in (0, 8, 2**32 - 1):
        rep("ouro.attention.key_length", v, u32)
        rep("ouro.rope.dimension_count", v, u32)
    for v in (0, 1, 2**32 - 1):
        rep("ouro.context_length", v, u32)
        rep("ouro.feed_forward_length", v, u32)
    for v in (0.0, float("nan"), float("inf"), -1.0):
        rep("ouro.rope.freq_base", v, f32)
        rep("ouro.attention.layer_norm_rms_epsilon", v, f32)
    # (Empty arrays come from the in-place length mutations: gguf's writer refuses to write them.)
    for n in (1, hidden - 1, hidden + 1, 4 * hidden):
        rep("ouro.exit_gate.weight", [0.5] * n, VT.ARRAY, f32)
    rep("ouro.exit_gate.weight", [1] * hidden, VT.ARRAY, i32)
    rep("ouro.exit_gate.weight", [float("nan")] * hidden, VT.ARRAY, f32)
    rep("ouro.exit_gate.weight", 0.5, f32)
    for v in (float("nan"), float("inf"), 1e30):
        rep("ouro.exit_gate.bias", v, f32)
    rep("ouro.exit_gate.bias", "x", s)
    edits.append(("drop gate bias", {"drop": ("ouro.exit_gate.bias",)}))
    edits.append(("drop gate", {"drop": ("ouro.exit_gate.weight", "ouro.exit_gate.bias")}))
    for v in (-0.1, 0.0, 0.5, 1.0, 1.5, float("nan"), float("inf")):
        rep("ouro.early_exit_threshold", v, f32)
    rep("ouro.early_exit_threshold", 1, u32)
    for v in (0, 3, 4, 2**32 - 1):
        rep("ouro.exit_at_step", v, u32)
    rep("ouro.exit_at_step", -1, i32)
    rep("ouro.kv_share", True, b)
    rep("ouro.kv_share", 1, u32)
    rep("ouro.skip_loop_final_norm", True, b)
    rep("general.alignment", 64, u32)
    rep("general.alignment", 0, u32)
    rep("general.alignment", 3, u32)
    rep("general.alignment", "32", s)
    for v in ("llama", "bert", "", "none"):
        rep("tokenizer.ggml.model", v, s)
    rep("tokenizer.ggml.pre", "no-such-pre", s)
    tokens = [f"t{i}" for i in range(vocab)]
    rep("tokenizer.ggml.tokens", tokens[:-1] + ["t0"], VT.ARRAY, s)
    rep("tokenizer.ggml.tokens", tokens[:-1] + [""], VT.ARRAY, s)
    rep("tokenizer.ggml.tokens", tokens[: vocab // 2], VT.ARRAY, s)
    rep("tokenizer.ggml.tokens", list(range(vocab)), VT.ARRAY, i32)
    rep("tokenizer.ggml.token_type", [1] * (vocab - 1), VT.ARRAY, i32)
    rep("tokenizer.ggml.token_type", [99] * vocab, VT.ARRAY, i32)
    rep("tokenizer.ggml.token_type", [1.0] * vocab, VT.ARRAY, f32)
    rep("tokenizer.ggml.merges", ["", " ", "a", "  b", "\u00e9 \u00e9"] * 10, VT.ARRAY, s)
    edits.append(("drop merges", {"drop": ("tokenizer.ggml.merges",)}))
    edits.append(("drop tokens", {"drop": ("tokenizer.ggml.tokens",)}))
    for key in ("bos", "eos", "eot", "pad"):
        for v in (vocab, 2**31, 2**32 - 1):
            rep(f"tokenizer.ggml.{key}_token_id", v, u32)
    for tpl in ("{% for m in messages %}", "{{ ", "{% raw %}", "{{" * 200 + "x" + "}}" * 200,
                "{{ messages[0]['content'] }}", "\u0000"):
        rep("tokenizer.chat_template", tpl, s)
    rep("tokenizer.chat_template", 7, u32)
    for key in ("ouro.block_count", "ouro.embedding_length", "ouro.num_loops",
                "ouro.attention.head_count", "ouro.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model"):
        edits.append((f"drop {key}", {"drop": (key,)}))
    return edits


def _random_value(rng: random.Random):
    kind = rng.choice(["u32", "i32", "f32", "str", "bool", "arr_f32", "arr_str", "u64", "u8", "f64"])
    if kind == "u32":
        return rng.choice([0, 1, 2**31, 2**32 - 1, rng.getrandbits(32)]), VT.UINT32, None
    if kind == "i32":
        return rng.choice([-1, 0, 2**31 - 1, -(2**31)]), VT.INT32, None
    if kind == "f32":
        return rng.choice([0.0, -1.0, 1e38, float("nan"), float("-inf")]), VT.FLOAT32, None
    if kind == "str":
        return rng.choice(["", "ouro", "\u2603" * 50, "x" * 5000]), VT.STRING, None
    if kind == "bool":
        return rng.choice([True, False]), VT.BOOL, None
    if kind == "arr_f32":
        return [rng.random() for _ in range(rng.choice([1, 63, 64, 65]))], VT.ARRAY, VT.FLOAT32
    if kind == "arr_str":
        return ["a"] * rng.choice([1, 3]), VT.ARRAY, VT.STRING
    if kind == "u64":
        return rng.getrandbits(64), VT.UINT64, None
    if kind == "u8":
        return rng.getrandbits(8), VT.UINT8, None
    return rng.choice([0.5, float("nan")]), VT.FLOAT64, None


def make_cases(base: Path, editable: Path, outdir: Path, seed: int = SEED) -> list[Path]:
    """The fuzz files: byte-level mutations of `base`, metadata rewrites of `editable` (F16/F32 only,
    which tests/gguf_edit can copy)."""
    rng = random.Random(seed)
    raw = base.read_bytes()
    reader = GGUFReader(base)
    data_start = min(t.data_offset for t in reader.tensors)
    hidden = int(reader.fields["ouro.embedding_length"].contents())
    vocab = len(reader.fields["tokenizer.ggml.tokens"].contents())
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    del reader
    sites = _sites(base)
    cases: list[Path] = []

    def emit(data: bytes | bytearray, tag: str) -> None:
        p = outdir / f"{len(cases):05d}-{tag}.gguf"
        p.write_bytes(data)
        cases.append(p)

    for _ in range(N_SITE_INTS):
        off, size, _label = rng.choice(sites)
        buf = bytearray(raw)
        fmt = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[size]
        (old,) = struct.unpack_from(fmt, buf, off)
        struct.pack_into(fmt, buf, off, _interesting(rng, size, old))
        emit(buf, "int")
    for _ in range(N_BYTE_FLIPS):
        buf = bytearray(raw)
        for _ in range(rng.choice([1, 1, 2, 8])):
            buf[rng.randrange(data_start)] = rng.getrandbits(8)
        emit(buf, "meta-bytes")
    for _ in range(N_DATA_FLIPS):
        buf = bytearray(raw)
        for _ in range(rng.choice([1, 64, 4096])):
            buf[rng.randrange(data_start, len(buf))] = rng.getrandbits(8)
        emit(buf, "data-bytes")
    for _ in range(N_TRUNCATIONS):
        cut = rng.choice([rng.randrange(64), rng.randrange(data_start), rng.randrange(len(raw))])
        emit(raw[:cut], "trunc")
    emit(raw + b"\x00" * 7, "tail")
    # gguf_edit keeps the architecture, so change it (and its key) in place, length for length.
    for old, new in ((b"\x04\x00\x00\x00\x00\x00\x00\x00ouro", b"\x04\x00\x00\x00\x00\x00\x00\x00llam"),
                     (b"\x04\x00\x00\x00\x00\x00\x00\x00ouro", b"\x04\x00\x00\x00\x00\x00\x00\x00ou\xffo"),
                     (b"general.architecture", b"general.architecturf")):
        emit(raw.replace(old, new, 1), "arch")
    for i, (label, edit) in enumerate(_semantic_edits(hidden, vocab)):
        cases.append(rewrite_gguf(editable, outdir / f"{len(cases):05d}-sem{i}.gguf", **edit))
    for _ in range(N_RANDOM_KEYS):
        key = rng.choice(keys + ["ouro.exit_at_step", "ouro.kv_share", "general.alignment"])
        if key == "general.architecture":  # gguf_edit cannot change it (see above)
            continue
        edit = {"replace": {key: _random_value(rng)}}
        cases.append(rewrite_gguf(editable, outdir / f"{len(cases):05d}-key.gguf", **edit))
    return cases


def test_fuzz_gguf_load_path(tiny_gguf, tmp_path):
    cases = make_cases(tiny_gguf(qtype="q8_0")[1], tiny_gguf(qtype="f16")[1], tmp_path)
    assert len(cases) >= 1000
    report = run_cases(cases, tmp_path / "cases.txt")
    counts = report.counts()
    print(f"\nGGUF fuzz: {len(cases)} cases, {dict(counts)}, {len(report.crashes)} crashes, "
          f"{report.workers_started} workers")
    for case, how in report.crashes:
        print(f"  CRASH {cases[case].name}: {how}")
    for path, outcome in zip(cases, report.outcomes):
        if outcome and outcome[0] in ("bug", "refused"):
            print(f"  {outcome[0].upper()} {path.name}: {outcome[1]}")
    assert report.crashes == []
    assert None not in report.outcomes, "some cases never ran"
    assert counts["bug"] == 0
    # The fuzzer really reaches both sides: most files are refused, some still load and run.
    assert counts["rejected"] > len(cases) // 2
    assert counts["loaded"] > 20

