"""`ouro bench`: the structure of its table and JSON on a tiny model (never wall-clock values)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ouro_cli.main import app

pytest.importorskip("llama_cpp")
runner = CliRunner()
FAST = ["-p", "8", "-n", "4", "-r", "2", "-t", "1"]


def test_json_rows_for_each_loop_count(tiny_gguf):
    _, path = tiny_gguf(qtype="q8_0", loops=3)
    result = runner.invoke(app, ["bench", str(path), "--json", *FAST])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    select = [r for r in d["rows"] if r["mode"] == "select"]
    assert [r["loops"] for r in select] == [1, 2, 3]  # default: 1..the file's loops
    for r in select:
        assert r["prompt_tokens"] == 8 and r["gen_tokens"] == 4
        assert len(r["prompt_tps_runs"]) == len(r["decode_tps_runs"]) == 2
        assert r["prompt_tps"] > 0 and r["decode_tps"] > 0
        assert min(r["decode_tps_runs"]) <= r["decode_tps"] <= max(r["decode_tps_runs"])
        assert r["mean_loops"] == r["loops"]
    assert all(r["threshold"] is None for r in select)
    skip = [r for r in d["rows"] if r["mode"] == "skip"]
    assert d["skip_mode"] == "measured"
    assert [(r["loops"], r["threshold"]) for r in skip] == [(3, 0.5), (3, 0.9)]  # the default thresholds
    for r in skip:  # skip mode never runs more loops than select mode at the same depth
        assert 1 <= r["mean_loops"] <= 3


def test_table_and_loop_selection(tiny_gguf):
    _, path = tiny_gguf(qtype="q8_0", loops=3)
    result = runner.invoke(app, ["bench", str(path), "--loops", "1,3", "--skip-thresholds", "", *FAST],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "prompt tok/s" in result.stdout and "decode tok/s" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "│ select" in line]
    assert len(lines) == 2 and "1.00×" in lines[0]  # the 1-loop row is the reference
    assert "│ skip" not in result.stdout and "skip mode not measured: no --skip-thresholds" in " ".join(result.stdout.split())
    assert "medians of 2 runs" in result.stdout


def test_bad_input(tiny_gguf, tmp_path):
    _, path = tiny_gguf(qtype="q8_0", loops=3)
    result = runner.invoke(app, ["bench", str(path), "--loops", "1,x"])
    assert result.exit_code == 1 and "comma-separated ints" in result.output
    result = runner.invoke(app, ["bench", str(path), "--skip-thresholds", "0.5,2"])
    assert result.exit_code == 1 and "values in 0..1" in result.output
    result = runner.invoke(app, ["bench", str(tmp_path / "none.gguf")])
    assert result.exit_code == 1 and "no such file" in result.output
