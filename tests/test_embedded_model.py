"""The committed embedded model answers held-out problems through the GGUF runtime as well as its card says."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from models.card import N_TEST, N_TEST_TURN3, read_floors
from models.data import held_out_problems
from models.evaluate import Setting, apply, is_capability_sentence, off_task, opened, score

pytest.importorskip("llama_cpp")

CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "ouro-tiny-arith"
MAX_BYTES = 30 * 1024 * 1024


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    if not (CHECKPOINT / "model.safetensors").exists():
        pytest.fail(f"the embedded model is not committed at {CHECKPOINT}")
    return CHECKPOINT


@pytest.fixture(scope="module")
def model(checkpoint: Path, tmp_path_factory):
    """The checkpoint as `ouro chat` runs it: converted to F16, loaded at the file's loops."""
    from convert.convert import convert_checkpoint

    gguf = convert_checkpoint(checkpoint, tmp_path_factory.mktemp("embedded") / "tiny-f16.gguf", "f16",
                              console=Console(file=io.StringIO()))
    with opened(gguf) as loaded:
        apply(loaded, Setting())
        yield loaded


def test_checkpoint_is_an_hf_ouro_within_size(checkpoint: Path):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "ouro"
    assert config["architectures"] == ["OuroForCausalLM"]
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md",
                 "training.json", "training_curve.png"):
        assert (checkpoint / name).is_file(), name
    assert "<|im_start|>" in json.loads((checkpoint / "tokenizer_config.json").read_text())["chat_template"]
    assert (checkpoint / "model.safetensors").stat().st_size <= MAX_BYTES


def test_first_turn_accuracy_is_above_the_card_floor(checkpoint: Path, model):
    floor, _ = read_floors((checkpoint / "README.md").read_text())
    result = score(model, held_out_problems(N_TEST))
    assert result.total == N_TEST
    assert result.accuracy >= floor, f"accuracy {result.accuracy:.2f} at the file's loops is below the card's {floor}"


def test_third_turn_accuracy_is_above_the_card_floor(checkpoint: Path, model):
    _, floor = read_floors((checkpoint / "README.md").read_text())
    result = score(model, held_out_problems(N_TEST_TURN3), turn=3)
    assert result.total == N_TEST_TURN3
    assert result.accuracy >= floor, f"third-turn accuracy {result.accuracy:.2f} is below the card's {floor}"


def test_off_task_messages_get_a_sentence_not_a_number(model):
    answers = off_task(model, ["hello", "who are you?", "tell me a joke"])
    assert all(ok for _, _, ok in answers), answers


@pytest.mark.parametrize("text, ok", [
    ("I can add, subtract, compare and count numbers.", True),
    ("Hello, I can add, subtract, compare and count numbers.", True),
    ("86", False), (" 1 ", False), ("", False),
    ("I can add. I can count.", False),  # two sentences
    ("I like turtles.", False),  # says nothing of what it can do
])
def test_the_off_task_rule(text: str, ok: bool):
    assert is_capability_sentence(text) is ok


def test_kv_drift_is_measured_against_the_last_loop(checkpoint: Path):
    """The card's explanation of the shared-KV cost: the last loop compared with itself is exact, and the
    earlier a loop, the further its keys are from the last loop's."""
    pytest.importorskip("torch")
    from models.kv_sharing import loop_drift

    drift = loop_drift(checkpoint, held_out_problems(10))
    T = json.loads((checkpoint / "config.json").read_text())["total_ut_steps"]
    assert [d.loop for d in drift] == list(range(1, T + 1))
    assert drift[-1].key_cosine == pytest.approx(1.0, abs=1e-5) and drift[-1].key_distance == pytest.approx(0.0, abs=1e-5)
    assert all(-1.0 <= d.key_cosine <= 1.0 + 1e-6 and -1.0 <= d.value_cosine <= 1.0 + 1e-6 for d in drift)
    distances = [d.key_distance for d in drift]
    assert distances == sorted(distances, reverse=True), distances
