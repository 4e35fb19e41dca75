"""`ouro generate MODEL PROMPT` through Typer's test runner (issue 6)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ouro_cli.main import app

runner = CliRunner()
FIXED = ["-t", "1", "--ignore-eos", "--seed", "3", "-c", "256"]


@pytest.fixture(scope="module")
def gguf(tiny_gguf):
    return str(tiny_gguf(qtype="f16")[1])


def run(*args: str, input: str | None = None):
    return runner.invoke(app, ["generate", *args], input=input)


def test_json_output_parses_with_counts_speeds_and_loops(gguf):
    result = run(gguf, "Once upon a time", "--json", "-n", "12", *FIXED)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tokens"] == 12 and data["finish_reason"] == "length"
    assert data["prompt_tokens"] > 0 and data["prefill_tokens_per_s"] > 0 and data["decode_tokens_per_s"] > 0
    assert data["mean_loops"] == data["loops"] == 4
    assert isinstance(data["text"], str) and data["text"]


def test_loops_flag_reaches_the_model(gguf):
    data = json.loads(run(gguf, "x", "--json", "-n", "2", "--loops", "2", *FIXED).stdout)
    assert data["loops"] == 2 and data["mean_loops"] == 2.0
    data = json.loads(run(gguf, "x", "--json", "-n", "2", "--exit-threshold", "0.5", *FIXED).stdout)
    assert data["exit_threshold"] == 0.5 and 1.0 <= data["mean_loops"] <= 4.0  # each token's exit loop


def test_dash_reads_the_prompt_from_stdin(gguf):
    from_stdin = json.loads(run(gguf, "-", "--json", "-n", "5", *FIXED, input="a prompt from stdin").stdout)
    from_arg = json.loads(run(gguf, "a prompt from stdin", "--json", "-n", "5", *FIXED).stdout)
    assert from_stdin["prompt_tokens"] == from_arg["prompt_tokens"]
    assert from_stdin["text"] == from_arg["text"]  # same seed, same prompt


def test_plain_output_streams_the_text_and_reports_on_stderr(gguf):
    result = run(gguf, "hello", "-n", "6", *FIXED)
    assert result.exit_code == 0, result.output
    as_json = json.loads(run(gguf, "hello", "--json", "-n", "6", *FIXED).stdout)
    assert result.stdout == as_json["text"] + "\n"
    assert "6 tokens at" in result.stderr and "loops/token 4.00" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/model.gguf", "x"], "no such file"),
    (["{gguf}", "x", "--exit-threshold", "1.5"], "threshold"),
    (["{gguf}", "x", "--temp", "-1"], "temperature must be >= 0"),
    (["{gguf}", "x", "--loops", "0"], "loops must be"),
    (["{gguf}", "-"], "the prompt is empty"),
])
def test_bad_input_is_one_error_line_and_exit_1(gguf, args, message):
    result = run(*[a.format(gguf=gguf) for a in args], "-t", "1", input="")
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output
    assert result.stderr.count("error:") == 1
