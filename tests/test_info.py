"""`ouro info`: the table, --json and --ctx, through Typer's test runner; bad files exit 1 without traceback."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ouro_cli.main import app

runner = CliRunner()


def test_table(tiny_gguf):
    _, path = tiny_gguf(qtype="q8_0")
    result = runner.invoke(app, ["info", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "4 × 2 physical = 8 logical layers" in out
    assert "Q8_0 ×16" in out and "F32 ×9" in out
    assert "'<|im_end|>' (id 2)" in out
    assert "148.10K (148,097)" in out
    assert "RAM at --ctx 2048" in out


def test_json_and_ctx(tiny_gguf):
    _, path = tiny_gguf(qtype="f16", loops=3)
    result = runner.invoke(app, ["info", str(path), "--json", "--ctx", "1000"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert (d["architecture"], d["loops"], d["layers"], d["vocab_size"]) == ("ouro", 3, 2, 512)
    assert d["exit_gate"] is True and d["exit_threshold"] == 1.0
    assert d["end_of_turn_token"] == {"id": 2, "text": "<|im_end|>"}
    per_token = 3 * 2 * 2 * 4 * 16 * 2  # loops x layers x (K+V) x kv heads x head dim x F16
    assert d["kv_bytes_per_token"] == {"full": per_token, "share": per_token // 3}
    assert d["kv_bytes"]["full"] == 1000 * per_token
    assert d["ram_bytes"]["full"] == d["weights_bytes"] + 1000 * per_token
    assert sum(t["bytes"] for t in d["tensor_types"]) == d["weights_bytes"]
    assert "<|im_start|>" in d["chat_template"]


def test_bad_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 1
    assert "error:" in result.output and "tensor count" in result.output
    assert "Traceback" not in result.output
