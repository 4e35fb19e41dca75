"""`ouro convert` on bad input: one clear red line, exit code 1, no traceback, no file left behind."""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import convert.writer
from convert.convert import convert_checkpoint
from convert.errors import ConvertError
from convert_support import rewrite_safetensors
from models.synthetic import write_checkpoint
from ouro_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("base") / "Ouro-tiny", "tiny")


@pytest.fixture
def ckpt(pristine, tmp_path) -> Path:
    """A private copy each test may break."""
    return Path(shutil.copytree(pristine, tmp_path / "Ouro-tiny"))


@pytest.fixture
def outdir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def run(*args: str | Path):
    return runner.invoke(app, ["convert", *map(str, args)])


def assert_fails(result, *fragments: str, outdir: Path | None = None, existing: set[str] = frozenset()) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not an escaped exception
    err = result.stderr
    assert "Traceback" not in result.output
    assert err.startswith("error: ")
    assert err.strip().count("\n") == 0, err  # one line
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    if outdir is not None:
        assert {p.name for p in outdir.iterdir()} == set(existing)  # no output, no temp file


def test_missing_directory(tmp_path, outdir):
    assert_fails(run(tmp_path / "nope", "-o", outdir / "x.gguf"), "checkpoint directory not found", "nope",
                 outdir=outdir)


def test_src_is_a_file(ckpt, outdir):
    assert_fails(run(ckpt / "config.json", "-o", outdir / "x.gguf"), "is not a directory", outdir=outdir)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_missing_file(ckpt, outdir, name):
    (ckpt / name).unlink()
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), f"missing file {name}", outdir=outdir)


def test_model_type_not_ouro(ckpt, outdir):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "llama"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "model_type is 'llama', expected 'ouro'", outdir=outdir)


def test_config_not_json(ckpt, outdir):
    (ckpt / "config.json").write_text("{ not json")
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "config.json", "not valid JSON", outdir=outdir)


def test_config_missing_loop_count(ckpt, outdir):
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["total_ut_steps"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "missing required field 'total_ut_steps'", outdir=outdir)


@pytest.mark.parametrize("key, value, message", [
    ("total_ut_steps", 17, "total_ut_steps must be an integer in 1..16"),
    ("total_ut_steps", 0, "total_ut_steps must be an integer in 1..16"),
    ("num_hidden_layers", 2**31, "num_hidden_layers must be an integer in 1..512"),  # fails fast, too
    ("num_hidden_layers", 200, "200 layers x 4 loops exceeds llama.cpp's 512 logical layers"),
    ("hidden_size", 64.0, "hidden_size must be an integer"),
    ("rope_theta", -1.0, "rope_theta must be positive"),
    ("rope_theta", 1e308, "rope_theta must be a finite float32"),
    ("rms_norm_eps", 1e-50, "rms_norm_eps must be positive (as a float32)"),
    ("early_exit_threshold", 2.0, "early_exit_threshold must be in 0..1"),
    ("bos_token_id", {"a": 1}, "bos_token_id must be an integer"),
])
def test_config_values_out_of_range(ckpt, outdir, key, value, message):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg[key] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), message, outdir=outdir)


def test_config_nan_and_deep_nesting(ckpt, outdir):
    text = (ckpt / "config.json").read_text()
    (ckpt / "config.json").write_text(text.replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": NaN'))
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "rms_norm_eps must be a finite float32", outdir=outdir)
    (ckpt / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "not valid JSON", outdir=outdir)


def test_non_finite_exit_gate(ckpt, outdir):
    def nan_bias(t):
        t["model.early_exit_gate.bias"] = ("BF16", bytes.fromhex("c07f"), [1])  # bf16 NaN
    rewrite_safetensors(ckpt / "model.safetensors", nan_bias)
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "the exit gate holds non-finite values", outdir=outdir)


def test_null_kv_heads_means_plain_mha(ckpt, outdir):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_key_value_heads"] = None
    (ckpt / "config.json").write_text(json.dumps(cfg))
    result = run(ckpt, "-o", outdir / "x.gguf", "-t", "f16")
    assert result.exit_code == 0, result.output


def test_missing_tensor(ckpt, outdir):
    rewrite_safetensors(ckpt / "model.safetensors", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "missing tensors: model.layers.1.mlp.up_proj.weight",
                 outdir=outdir)


def test_extra_tensor(ckpt, outdir):
    def add(t):
        t["model.layers.0.self_attn.q_proj.bias"] = ("BF16", b"\0" * 128, [64])
    rewrite_safetensors(ckpt / "model.safetensors", add)
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "unexpected tensors", "model.layers.0.self_attn.q_proj.bias",
                 outdir=outdir)


def test_shape_disagrees_with_config(ckpt, outdir):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["intermediate_size"] = 96  # the file holds 128
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "has shape [128, 64] but config.json implies [96, 64]",
                 outdir=outdir)


def test_truncated_safetensors(ckpt, outdir):
    path = ckpt / "model.safetensors"
    os.truncate(path, path.stat().st_size - 100)
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "truncated safetensors file", outdir=outdir)


def test_truncated_inside_the_header(ckpt, outdir):
    path = ckpt / "model.safetensors"
    os.truncate(path, 200)
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "truncated or corrupt", outdir=outdir)


def test_corrupt_header(ckpt, outdir):
    path = ckpt / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[8:24] = b"\xff" * 16  # garbage where the JSON starts
    path.write_bytes(bytes(raw))
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "corrupt safetensors header", outdir=outdir)


def test_corrupt_header_length(ckpt, outdir):
    path = ckpt / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[:8] = struct.pack("<Q", 2**62)
    path.write_bytes(bytes(raw))
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "the header claims", outdir=outdir)


def test_unsupported_dtype(ckpt, outdir):
    def to_i64(t):
        dtype, data, shape = t["model.norm.weight"]
        t["model.norm.weight"] = ("I64", b"\0" * (len(data) * 4), shape)
    rewrite_safetensors(ckpt / "model.safetensors", to_i64)
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "'model.norm.weight' has dtype I64", outdir=outdir)


def test_pre_tokenizer_not_smollm(ckpt, outdir):
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "unsupported pre-tokenizer ByteLevel(add_prefix_space=true)",
                 "smollm", outdir=outdir)


def test_output_exists_without_force(ckpt, outdir):
    target = outdir / "x.gguf"
    target.write_bytes(b"precious")
    assert_fails(run(ckpt, "-o", target), "already exists", "--force", outdir=outdir, existing={"x.gguf"})
    assert target.read_bytes() == b"precious"
    result = run(ckpt, "-o", target, "--force")
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:4] == b"GGUF"
    assert {p.name for p in outdir.iterdir()} == {"x.gguf"}


def test_output_directory_missing(ckpt, tmp_path):
    assert_fails(run(ckpt, "-o", tmp_path / "no" / "such" / "x.gguf"), "does not exist")


def test_unwritable_output_directory(ckpt, tmp_path):
    if os.geteuid() == 0:
        # root ignores permission bits; sysfs refuses file creation even to root.
        if not sys.platform.startswith("linux") or not os.path.isdir("/sys/kernel"):
            pytest.skip("needs a non-root user or Linux sysfs")
        target = Path("/sys/kernel/x.gguf")
        assert_fails(run(ckpt, "-o", target), "/sys/kernel")
        assert not target.exists()
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert_fails(run(ckpt, "-o", locked / "x.gguf"), "not writable", outdir=locked)
    finally:
        locked.chmod(0o755)


def test_unknown_type_is_a_usage_error(ckpt, outdir):
    result = run(ckpt, "-o", outdir / "x.gguf", "-t", "q3_xx")
    assert result.exit_code == 2
    assert "q3_xx" in result.output
    assert list(outdir.iterdir()) == []


def test_kquant_without_runtime_says_to_build_it(ckpt, outdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` raise ImportError
    assert_fails(run(ckpt, "-o", outdir / "x.gguf", "-t", "q4_k_m"), "run `ouro runtime build` first", outdir=outdir)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failure_mid_write_leaves_no_file(ckpt, outdir, monkeypatch, exc):
    real = convert.writer.encode_tensor
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise exc("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(convert.writer, "encode_tensor", failing)
    with pytest.raises(exc):
        convert_checkpoint(ckpt, outdir / "x.gguf", "q8_0")
    assert len(calls) == 5  # it did fail half-way, with a temp file open
    assert list(outdir.iterdir()) == []


def test_write_error_is_one_line_and_leaves_no_file(ckpt, outdir, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert.writer, "encode_tensor", disk_full)
    assert_fails(run(ckpt, "-o", outdir / "x.gguf"), "No space left on device", outdir=outdir)


def test_convert_error_is_the_base_class(tmp_path):
    with pytest.raises(ConvertError):
        convert_checkpoint(tmp_path / "nope")


def test_failed_forced_overwrite_keeps_the_old_file(ckpt, outdir, monkeypatch):
    target = outdir / "x.gguf"
    target.write_bytes(b"previous conversion")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert.writer, "encode_tensor", disk_full)
    assert_fails(run(ckpt, "-o", target, "--force"), "No space left on device", outdir=outdir, existing={"x.gguf"})
    assert target.read_bytes() == b"previous conversion"
