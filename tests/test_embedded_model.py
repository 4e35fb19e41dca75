"""The committed embedded model (issue 7) still solves held-out problems as well as its card promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.data import held_out_problems
from models.evaluate import N_TEST, Chat, fixed_loops, read_floor, score
from runtime.reference import load_checkpoint

CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "ouro-tiny-arith"
MAX_BYTES = 30 * 1024 * 1024


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    if not (CHECKPOINT / "model.safetensors").exists():
        pytest.fail(f"the embedded model is not committed at {CHECKPOINT}")
    return CHECKPOINT


def test_checkpoint_is_an_hf_ouro_within_size(checkpoint: Path):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "ouro"
    assert config["architectures"] == ["OuroForCausalLM"]
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md"):
        assert (checkpoint / name).is_file(), name
    assert "<|im_start|>" in json.loads((checkpoint / "tokenizer_config.json").read_text())["chat_template"]
    assert (checkpoint / "model.safetensors").stat().st_size <= MAX_BYTES


def test_accuracy_at_four_loops_is_above_the_card_floor(checkpoint: Path):
    torch.set_num_threads(2)
    floor = read_floor((checkpoint / "README.md").read_text())
    model = load_checkpoint(checkpoint)
    T = model.config.total_ut_steps
    result = score(model, Chat(checkpoint), held_out_problems(N_TEST), **fixed_loops(T))
    assert result.total == N_TEST
    assert result.accuracy >= floor, f"accuracy {result.accuracy:.2f} at T = {T} is below the card's floor {floor}"
