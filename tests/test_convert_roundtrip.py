"""`ouro convert` round trips on tiny checkpoints: tensors, metadata, tokenizer and exit gate.

Everything here is checked against the source files read independently of the converter (tests/
convert_support.py), with the HF -> GGUF name table and the Q/K un-permutation written out again.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q, GGUFReader, LlamaFileType
from gguf.quants import dequantize
from rich.console import Console

from convert.convert import convert_checkpoint
from convert_support import bf16_bits, gguf_fields, read_safetensors, write_safetensors
from models.synthetic import tensor_shapes, write_checkpoint

# Spec §5, written out independently of convert/tensor_map.py.
LAYER_MAP = {
    "input_layernorm": "attn_norm", "input_layernorm_2": "post_attention_norm",
    "post_attention_layernorm": "ffn_norm", "post_attention_layernorm_2": "post_ffw_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def hf_name(gguf_name: str) -> str:
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    _, i, part, _ = gguf_name.split(".")
    (hf_part,) = [k for k, v in LAYER_MAP.items() if v == part]
    return f"model.layers.{i}.{hf_part}.weight"


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Interleaved-pair rows (NORM rope) back to HF's rotate_half rows."""
    out, inp = w.shape
    return w.reshape(n_head, out // n_head // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def quiet() -> Console:
    return Console(file=io.StringIO())


def convert(src: Path, out: Path, qtype: str) -> Path:
    return convert_checkpoint(src, out, qtype, console=quiet())


def read_gguf_tensors(path: Path) -> dict[str, tuple[Q, np.ndarray]]:
    """name -> (type, float32 values in numpy [out, in] order)."""
    out = {}
    for t in GGUFReader(path).tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        out[t.name] = (t.tensor_type, dequantize(t.data, t.tensor_type).reshape(shape))
    return out


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "Ouro-tiny", "tiny", seed=3, gate_bias=0.75)


@pytest.fixture(scope="module")
def tiny_f32(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "Ouro-tiny-f32", "tiny", seed=5, dtype="f32")


def assert_round_trip(src: Path, gguf: Path, check) -> None:
    config = json.loads((src / "config.json").read_text())
    _, source = read_safetensors(src / "model.safetensors")
    written = read_gguf_tensors(gguf)
    expected_names = {n for n in source if "early_exit_gate" not in n}
    assert {hf_name(n) for n in written} == expected_names
    assert len(written) == len(expected_names)
    for name, (qtype, values) in written.items():
        if ".attn_q." in name:
            values = unpermute(values, config["num_attention_heads"])
        elif ".attn_k." in name:
            values = unpermute(values, config["num_key_value_heads"])
        ref = source[hf_name(name)]
        assert values.shape == ref.shape, name
        if ref.ndim == 1:
            assert qtype == Q.F32, name
            np.testing.assert_array_equal(values, ref, err_msg=name)
        else:
            check(name, qtype, values, ref)


def exactly(expected_type):
    def check(name, qtype, values, ref):
        assert qtype == expected_type
        np.testing.assert_array_equal(values, ref, err_msg=name)

    return check


@pytest.mark.parametrize("source", ["tiny_f32", "tiny_bf16"])
def test_f32_is_exact(source, request, tmp_path):
    src = request.getfixturevalue(source)
    assert_round_trip(src, convert(src, tmp_path / "x.gguf", "f32"), exactly(Q.F32))


def test_f16_is_within_f16_rounding(tiny_f32, tmp_path):
    def check(name, qtype, values, ref):
        assert qtype == Q.F16
        # Round to nearest: at most half an f16 ulp (2^-11 relative) away, and exactly numpy's rounding.
        assert np.all(np.abs(values - ref) <= np.abs(ref) * 2.0**-11 + 2.0**-25), name
        np.testing.assert_array_equal(values, ref.astype(np.float16).astype(np.float32), err_msg=name)

    assert_round_trip(tiny_f32, convert(tiny_f32, tmp_path / "x.gguf", "f16"), check)


def test_bf16_is_exact_from_bf16_source(tiny_bf16, tmp_path):
    assert_round_trip(tiny_bf16, convert(tiny_bf16, tmp_path / "x.gguf", "bf16"), exactly(Q.BF16))


def block_amax(ref: np.ndarray) -> np.ndarray:
    blocks = np.abs(ref).reshape(ref.shape[0], -1, 32)
    return np.repeat(blocks.max(axis=-1), 32, axis=-1).reshape(ref.shape)


def q8_bound(ref: np.ndarray) -> np.ndarray:
    # Q8_0: x ~ round(x/d)*d with d = amax/127 stored in f16: |err| <= d/2 + 127*|d - f16(d)|.
    return block_amax(ref) / 127 * (0.5 + 127 * 2.0**-11) + 1e-7


def q4_bound(ref: np.ndarray) -> np.ndarray:
    # Q4_0: d = amax/8, 16 levels -8..7: |err| <= d/2 inside the range, d at the clipped extreme.
    return block_amax(ref) / 8 * (1 + 16 * 2.0**-11) + 1e-7


def test_q8_0_is_within_the_format_bound(tiny_bf16, tmp_path):
    def check(name, qtype, values, ref):
        assert qtype == Q.Q8_0, name  # embeddings and the output head are Q8_0 too
        assert np.all(np.abs(values - ref) <= q8_bound(ref)), name
        assert not np.array_equal(values, ref)  # it really was quantized

    out = convert(tiny_bf16, tmp_path / "x.gguf", "q8_0")
    assert_round_trip(tiny_bf16, out, check)
    assert gguf_fields(GGUFReader(out))["general.file_type"] == LlamaFileType.MOSTLY_Q8_0


def test_q4_0_is_within_the_format_bound_and_keeps_the_head_in_q8_0(tiny_bf16, tmp_path):
    def check(name, qtype, values, ref):
        if name == "output.weight":
            assert qtype == Q.Q8_0
            assert np.all(np.abs(values - ref) <= q8_bound(ref))
        else:
            assert qtype == Q.Q4_0, name
            assert np.all(np.abs(values - ref) <= q4_bound(ref)), name

    out = convert(tiny_bf16, tmp_path / "x.gguf", "q4_0")
    assert_round_trip(tiny_bf16, out, check)
    assert gguf_fields(GGUFReader(out))["general.file_type"] == LlamaFileType.MOSTLY_Q4_0


def rope_neox(x: np.ndarray, pos: int, theta: float) -> np.ndarray:
    """HF rotate_half rope on one head vector."""
    half = x.shape[0] // 2
    ang = pos * theta ** (-np.arange(half) * 2.0 / x.shape[0])
    cos, sin = np.concatenate([np.cos(ang)] * 2), np.concatenate([np.sin(ang)] * 2)
    rot = np.concatenate([-x[half:], x[:half]])
    return x * cos + rot * sin


def rope_norm(x: np.ndarray, pos: int, theta: float) -> np.ndarray:
    """llama.cpp NORM rope: pairs (2j, 2j+1) rotated by the angle of frequency j."""
    ang = pos * theta ** (-np.arange(x.shape[0] // 2) * 2.0 / x.shape[0])
    a, b = x[0::2], x[1::2]
    out = np.empty_like(x)
    out[0::2] = a * np.cos(ang) - b * np.sin(ang)
    out[1::2] = a * np.sin(ang) + b * np.cos(ang)
    return out


def test_permuted_q_and_k_give_hf_attention_scores_under_norm_rope(tiny_f32, tmp_path):
    """The point of the permutation: NORM rope on the GGUF rows == HF's rotate_half rope on HF rows."""
    config = json.loads((tiny_f32 / "config.json").read_text())
    _, source = read_safetensors(tiny_f32 / "model.safetensors")
    written = read_gguf_tensors(convert(tiny_f32, tmp_path / "x.gguf", "f32"))
    hd, theta = config["head_dim"], config["rope_theta"]
    rng = np.random.default_rng(0)
    x_q, x_k = rng.standard_normal(config["hidden_size"]), rng.standard_normal(config["hidden_size"])
    q_hf = source["model.layers.1.self_attn.q_proj.weight"] @ x_q
    k_hf = source["model.layers.1.self_attn.k_proj.weight"] @ x_k
    q_gg = written["blk.1.attn_q.weight"][1] @ x_q
    k_gg = written["blk.1.attn_k.weight"][1] @ x_k
    for head in range(config["num_attention_heads"]):
        h = slice(head * hd, (head + 1) * hd)
        for pq, pk in [(0, 0), (5, 2), (37, 36)]:
            hf_score = rope_neox(q_hf[h], pq, theta) @ rope_neox(k_hf[h], pk, theta)
            gg_score = rope_norm(q_gg[h], pq, theta) @ rope_norm(k_gg[h], pk, theta)
            assert gg_score == pytest.approx(hf_score, rel=1e-9, abs=1e-9)
    # ... and the un-permuted rows alone would not (so the test would catch a missing permutation).
    q_raw = source["model.layers.1.self_attn.q_proj.weight"] @ x_q
    k_raw = source["model.layers.1.self_attn.k_proj.weight"] @ x_k
    h = slice(0, hd)
    assert rope_norm(q_raw[h], 37, theta) @ rope_norm(k_raw[h], 3, theta) != pytest.approx(
        rope_neox(q_hf[h], 37, theta) @ rope_neox(k_hf[h], 3, theta), rel=1e-6)


def test_metadata_keys_and_values(tiny_bf16, tmp_path):
    config = json.loads((tiny_bf16 / "config.json").read_text())
    tok = json.loads((tiny_bf16 / "tokenizer.json").read_text())
    tok_cfg = json.loads((tiny_bf16 / "tokenizer_config.json").read_text())
    _, source = read_safetensors(tiny_bf16 / "model.safetensors")
    kv = gguf_fields(GGUFReader(convert(tiny_bf16, tmp_path / "x.gguf", "q8_0")))

    assert kv["general.architecture"] == "ouro"
    assert kv["general.name"] == "Ouro-tiny"
    expected = {
        "ouro.block_count": config["num_hidden_layers"],
        "ouro.num_loops": config["total_ut_steps"],
        "ouro.skip_loop_final_norm": False,
        "ouro.context_length": config["max_position_embeddings"],
        "ouro.embedding_length": config["hidden_size"],
        "ouro.feed_forward_length": config["intermediate_size"],
        "ouro.attention.head_count": config["num_attention_heads"],
        "ouro.attention.head_count_kv": config["num_key_value_heads"],
        "ouro.rope.dimension_count": config["head_dim"],
        "ouro.rope.freq_base": config["rope_theta"],
        "ouro.early_exit_threshold": config["early_exit_threshold"],
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.eot_token_id": 2,
        "tokenizer.ggml.bos_token_id": config["bos_token_id"],
        "tokenizer.chat_template": tok_cfg["chat_template"],
    }
    for key, value in expected.items():
        assert kv[key] == value, key
    assert kv["ouro.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"], rel=1e-6)
    assert "tokenizer.ggml.padding_token_id" in kv
    assert not any(k.startswith("general.sampling.") for k in kv)  # a base model decodes greedily

    # The exit gate travels as metadata, bit-exact, and not as a tensor.
    assert np.array_equal(np.array(kv["ouro.exit_gate.weight"], dtype=np.float32),
                          source["model.early_exit_gate.weight"].reshape(-1))
    assert kv["ouro.exit_gate.bias"] == 0.75

    # Tokens by id (vocab + added tokens), merges in rank order, specials as control tokens.
    by_id = {i: t for t, i in tok["model"]["vocab"].items()} | {a["id"]: a["content"] for a in tok["added_tokens"]}
    assert kv["tokenizer.ggml.tokens"] == [by_id[i] for i in range(config["vocab_size"])]
    assert kv["tokenizer.ggml.tokens"][2] == "<|im_end|>"
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    assert kv["tokenizer.ggml.merges"] == merges
    special = {a["id"] for a in tok["added_tokens"] if a["special"]}
    assert special == set(range(17))
    assert kv["tokenizer.ggml.token_type"] == [3 if i in special else 1 for i in range(config["vocab_size"])]


def test_loops_threshold_and_shapes_follow_the_config(tmp_path):
    src = write_checkpoint(tmp_path / "Ouro-odd", "tiny", loops=3, layers=3, gate_bias=-1.5)
    config = json.loads((src / "config.json").read_text())
    config["early_exit_threshold"] = 0.875
    (src / "config.json").write_text(json.dumps(config))
    out = convert(src, tmp_path / "odd.gguf", "f16")
    kv = gguf_fields(GGUFReader(out))
    assert kv["ouro.num_loops"] == 3
    assert kv["ouro.block_count"] == 3
    assert kv["ouro.early_exit_threshold"] == 0.875
    assert kv["ouro.exit_gate.bias"] == -1.5
    assert {t.name for t in GGUFReader(out).tensors} >= {"blk.2.post_ffw_norm.weight", "blk.2.attn_q.weight"}


def test_default_output_name_is_model_and_type_in_cwd(tiny_bf16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = convert_checkpoint(tiny_bf16, qtype="q4_0", console=quiet())
    assert out == tmp_path / "Ouro-tiny-q4_0.gguf"
    assert out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Ouro-tiny-q4_0.gguf"]  # no temp file left


def test_summary_reports_size_bits_per_weight_and_time(tiny_bf16, tmp_path):
    console = Console(file=io.StringIO(), width=200)
    out = convert_checkpoint(tiny_bf16, tmp_path / "x.gguf", "q8_0", console=console)
    text = console.file.getvalue()
    _, source = read_safetensors(tiny_bf16 / "model.safetensors")
    weights = [t for n, t in source.items() if "early_exit_gate" not in n]
    # Q8_0 stores 34 bytes per 32 weights (8.5 bits); the norms stay F32 (32 bits).
    bits = sum(t.size * (8.5 if t.ndim == 2 else 32) for t in weights) / sum(t.size for t in weights)
    assert f"{out.stat().st_size:,} bytes" in text
    assert f"bits per weight │ {bits:.2f}" in text
    assert "time" in text


def test_rows_not_a_multiple_of_the_block_fall_back_to_f16(tiny_bf16, tmp_path):
    """hidden 48: every matrix with 48-long rows becomes F16; ffn_down (rows of 96) stays Q8_0."""
    src = tmp_path / "Ouro-odd"
    src.mkdir()
    config = json.loads((tiny_bf16 / "config.json").read_text())
    config.update(hidden_size=48, head_dim=12)
    (src / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (src / name).write_bytes((tiny_bf16 / name).read_bytes())
    rng = np.random.default_rng(1)
    write_safetensors(src / "model.safetensors", {
        name: ("BF16", bf16_bits(rng.standard_normal(shape).astype(np.float32) * 0.1).tobytes(), list(shape))
        for name, shape in tensor_shapes(config)
    })
    console = Console(file=io.StringIO(), width=200)
    out = convert_checkpoint(src, tmp_path / "odd.gguf", "q8_0", console=console)

    def check(name, qtype, values, ref):
        if ".ffn_down." in name:
            assert qtype == Q.Q8_0
            assert np.all(np.abs(values - ref) <= q8_bound(ref)), name
        else:
            assert qtype == Q.F16, name
            np.testing.assert_array_equal(values, ref.astype(np.float16).astype(np.float32), err_msg=name)

    assert_round_trip(src, out, check)
    text = console.file.getvalue()
    assert "token_embd.weight: row length 48 is not a multiple of the Q8_0 block size 32: written as F16" in text
