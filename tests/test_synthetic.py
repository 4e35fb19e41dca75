"""Synthetic checkpoints: the published layout, byte for byte, without writing gigabytes."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file as numpy_save_file

import models.synthetic as synthetic
from models.synthetic import PRESETS, CheckpointError, safetensors_layout, tensor_shapes, write_checkpoint

PER_LAYER = [
    "input_layernorm.weight",
    "input_layernorm_2.weight",
    "mlp.down_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "post_attention_layernorm.weight",
    "post_attention_layernorm_2.weight",
    "self_attn.k_proj.weight",
    "self_attn.o_proj.weight",
    "self_attn.q_proj.weight",
    "self_attn.v_proj.weight",
]
GLOBAL = [
    "lm_head.weight",
    "model.early_exit_gate.bias",
    "model.early_exit_gate.weight",
    "model.embed_tokens.weight",
    "model.norm.weight",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)


def read_header(path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


@pytest.mark.parametrize(
    ("preset", "size", "params"),
    [
        ("1.4b", 2_869_336_434, 1_434_652_673),
        ("1.4b-thinking", 2_869_336_434, 1_434_652_673),
        ("2.6b", 5_336_011_242, 2_667_974_657),
        ("2.6b-thinking", 5_336_011_242, 2_667_974_657),
    ],
)
def test_published_sizes(preset, size, params):
    header, total = safetensors_layout(PRESETS[preset])
    assert total == size
    assert header % 8 == 0
    assert sum(math.prod(shape) for _, shape in tensor_shapes(PRESETS[preset])) == params
    assert total == 8 + header + 2 * params


@pytest.mark.parametrize(("preset", "layers"), [("1.4b", 24), ("2.6b", 48), ("tiny", 2)])
def test_tensor_names_are_exactly_the_hf_ones(preset, layers):
    names = [name for name, _ in tensor_shapes(PRESETS[preset])]
    expected = GLOBAL + [f"model.layers.{i}.{suffix}" for i in range(layers) for suffix in PER_LAYER]
    assert len(names) == 11 * layers + 5
    assert names == sorted(expected)


def test_full_shape_tensor_shapes():
    shapes = dict(tensor_shapes(PRESETS["1.4b"]))
    assert shapes["model.embed_tokens.weight"] == (49152, 2048)
    assert shapes["lm_head.weight"] == (49152, 2048)
    assert shapes["model.layers.7.self_attn.q_proj.weight"] == (2048, 2048)
    assert shapes["model.layers.7.self_attn.k_proj.weight"] == (2048, 2048)
    assert shapes["model.layers.7.self_attn.o_proj.weight"] == (2048, 2048)
    assert shapes["model.layers.7.mlp.gate_proj.weight"] == (5632, 2048)
    assert shapes["model.layers.7.mlp.up_proj.weight"] == (5632, 2048)
    assert shapes["model.layers.7.mlp.down_proj.weight"] == (2048, 5632)
    assert shapes["model.layers.7.post_attention_layernorm_2.weight"] == (2048,)
    assert shapes["model.early_exit_gate.weight"] == (1, 2048)
    assert shapes["model.early_exit_gate.bias"] == (1,)


@pytest.mark.parametrize("preset", ["1.4b", "2.6b", "1.4b-thinking", "2.6b-thinking"])
def test_full_shape_configs(preset):
    c = PRESETS[preset]
    assert c["architectures"] == ["OuroForCausalLM"] and c["model_type"] == "ouro"
    assert (c["hidden_size"], c["intermediate_size"], c["head_dim"]) == (2048, 5632, 128)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["vocab_size"]) == (16, 16, 49152)
    assert c["num_hidden_layers"] == (48 if preset.startswith("2.6b") else 24)
    assert len(c["layer_types"]) == c["num_hidden_layers"]
    assert set(c["layer_types"]) == {"full_attention"}
    assert (c["rope_theta"], c["rope_scaling"], c["rms_norm_eps"]) == (1e6, None, 1e-6)
    assert (c["total_ut_steps"], c["early_exit_threshold"]) == (4, 1.0)
    assert (c["bos_token_id"], c["eos_token_id"], c["tie_word_embeddings"]) == (0, 0, False)
    assert c["max_position_embeddings"] == 65536
    assert c["torch_dtype"] == "bfloat16" and c["use_sliding_window"] is False
    assert "auto_map" in c and c["sliding_window"] is None


def test_generation_config_sampling():
    thinking = synthetic._generation_config(PRESETS["1.4b-thinking"], thinking=True)
    assert (thinking["do_sample"], thinking["temperature"], thinking["top_p"]) == (True, 1.0, 0.7)
    base = synthetic._generation_config(PRESETS["1.4b"], thinking=False)
    assert "do_sample" not in base and base["eos_token_id"] == 0


def test_tiny_files(tiny):
    assert sorted(p.name for p in tiny.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((tiny / "config.json").read_text())
    assert config == PRESETS["tiny"]
    tok = json.loads((tiny / "tokenizer.json").read_text())
    assert len(tok["model"]["vocab"]) == config["vocab_size"] == 512
    assert (tiny / "model.safetensors").stat().st_size == safetensors_layout(config)[1]
    assert not list(tiny.parent.glob(".*partial*"))


def test_tiny_header_layout(tiny):
    n, header = read_header(tiny / "model.safetensors")
    assert n == safetensors_layout(PRESETS["tiny"])[0]
    assert "__metadata__" not in header
    assert list(header) == sorted(header)
    assert all(info["dtype"] == "BF16" for info in header.values())
    with safe_open(tiny / "model.safetensors", "numpy") as f:
        assert f.metadata() is None
        assert sorted(f.keys()) == [name for name, _ in tensor_shapes(PRESETS["tiny"])]


def test_tiny_bytes_equal_safetensors_torch(tiny, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    with safe_open(tiny / "model.safetensors", "pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    save_file(tensors, tmp_path / "ref.safetensors")
    assert (tmp_path / "ref.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()


def test_f32_bytes_equal_safetensors_numpy(tmp_path):
    path = write_checkpoint(tmp_path / "f32", "tiny", dtype="f32", layers=1)
    with safe_open(path / "model.safetensors", "numpy") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    numpy_save_file(tensors, tmp_path / "ref.safetensors")
    assert (tmp_path / "ref.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == "float32"


def test_bf16_rounding_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    values = np.concatenate(
        [
            rng.standard_normal(10000).astype(np.float32) * 3,
            # exact ties between two bf16 values round to the even one
            np.array([1.00390625, 1.01171875, -1.00390625, 0.0, -0.0, 65504.0, 1e-40], dtype=np.float32),
        ]
    )
    ours = synthetic._to_bf16(values.copy())
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(ours, theirs)


def test_weights_scales_and_gate_bias(tmp_path):
    path = write_checkpoint(tmp_path / "g", "tiny", gate_bias=4.0)
    with safe_open(path / "model.safetensors", "pt") as f:
        get = lambda name: f.get_tensor(name).float().numpy()  # noqa: E731
        assert get("model.early_exit_gate.bias").tolist() == [4.0]
        assert abs(get("model.layers.0.self_attn.q_proj.weight").std() - 1 / 8) < 0.02
        norm = get("model.layers.1.post_attention_layernorm_2.weight")
        assert abs(norm.mean() - 1) < 0.05 and 0 < norm.std() < 0.1
        assert abs(get("model.embed_tokens.weight").std() - 1) < 0.05


def test_deterministic_and_seeded(tiny, tmp_path):
    again = write_checkpoint(tmp_path / "again", "tiny", seed=0)
    assert (again / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (tiny / "tokenizer.json").read_bytes()
    other = write_checkpoint(tmp_path / "other", "tiny", seed=1)
    assert (other / "model.safetensors").read_bytes() != (tiny / "model.safetensors").read_bytes()


def test_overrides(tiny, tmp_path):
    path = write_checkpoint(tmp_path / "o", "tiny", loops=2, layers=1)
    config = json.loads((path / "config.json").read_text())
    assert (config["total_ut_steps"], config["num_hidden_layers"]) == (2, 1)
    assert config["layer_types"] == ["full_attention"]
    _, header = read_header(path / "model.safetensors")
    assert len(header) == 16
    # Each tensor draws from its own (seed, name) stream: layer 0 is the same in both files.
    name = "model.layers.0.mlp.up_proj.weight"
    with safe_open(path / "model.safetensors", "pt") as a, safe_open(tiny / "model.safetensors", "pt") as b:
        assert a.get_tensor(name).equal(b.get_tensor(name))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "7b"}, "unknown preset"),
        ({"loops": 0}, "--loops"),
        ({"layers": 0}, "--layers"),
        ({"dtype": "int8"}, "unknown dtype"),
        ({"gate_bias": float("nan")}, "--gate-bias"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(CheckpointError, match=message):
        write_checkpoint(tmp_path / "bad", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    def boom(x, dtype):
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "_encode", boom)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path / "ckpt", "tiny")
    assert list(tmp_path.iterdir()) == []


def test_cli(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "models.synthetic", str(tmp_path / "cli"), "--preset", "tiny", "--loops", "3",
         "--gate-bias", "-2", "--seed", "5"],
        capture_output=True, text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["total_ut_steps"] == 3

    bad = subprocess.run(
        [sys.executable, "-m", "models.synthetic", str(tmp_path / "bad"), "--preset", "huge"],
        capture_output=True, text=True,
    )
    assert bad.returncode != 0
    assert "unknown preset" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()
