"""The locally trained SmolLM2-shaped tokenizer and Ouro's ChatML template."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from models.tokenizer import (
    BYTE_SYMBOLS,
    SPECIAL_TOKENS,
    TokenizerError,
    build_tokenizer,
    chat_template,
    write_tokenizer_files,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Then the dog sleeps again.",
    "def add(a, b):\n    return a + b  # 2024 lines of code",
    "Looped models apply the same layers again and again, then read out the last loop.",
] * 20

CONVERSATION = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
]


@pytest.fixture(scope="module")
def small():
    return build_tokenizer(TEXTS, 512)


@pytest.fixture(scope="module")
def full():
    return build_tokenizer(TEXTS, 49152)


def render(template: str, **context) -> str:
    # The environment HF transformers and llama-cpp-python both render chat templates with.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(bos_token="<|endoftext|>", eos_token="<|endoftext|>", **context)


@pytest.mark.parametrize("tokenizer_name", ["small", "full"])
def test_exact_vocab_size_and_special_ids(request, tokenizer_name):
    tok = request.getfixturevalue(tokenizer_name)
    expected = 512 if tokenizer_name == "small" else 49152
    assert tok.get_vocab_size() == expected
    assert len(SPECIAL_TOKENS) == 17
    assert tok.token_to_id("<|endoftext|>") == 0
    assert tok.token_to_id("<|im_start|>") == 1
    assert tok.token_to_id("<|im_end|>") == 2
    assert tok.token_to_id("<jupyter_script>") == 15
    assert tok.token_to_id("<empty_output>") == 16
    assert all(tok.token_to_id(s) is not None for s in BYTE_SYMBOLS)


def test_ids_are_dense_and_unique(full):
    vocab = full.get_vocab()
    assert sorted(vocab.values()) == list(range(49152))


def test_every_merge_is_valid(full):
    """llama.cpp's gpt2 loader needs both halves and the result of every merge in the vocab."""
    model = json.loads(full.to_str())["model"]
    vocab = model["vocab"]
    assert len(model["merges"]) >= 49152 - 17 - 256
    for left, right in model["merges"]:
        assert left in vocab and right in vocab and left + right in vocab
        assert " " not in left + right


def test_build_is_deterministic_across_processes(small):
    code = (
        "import sys, json; from models.tokenizer import build_tokenizer; "
        "print(build_tokenizer(json.loads(sys.stdin.read()), 512).to_str())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(TEXTS), capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == small.to_str()


def test_too_small_vocab_is_refused():
    with pytest.raises(TokenizerError, match="too small"):
        build_tokenizer(TEXTS, 100)


def test_digits_split_individually(small, full):
    for tok in (small, full):
        assert tok.encode("12345").tokens == ["1", "2", "3", "4", "5"]


ROUND_TRIP = ["héllo wörld", "你好，世界", "emoji 🙂👍🏽 and ZWJ 👩‍💻", "tabs\tand\nnewlines  ", "\x00\x7f"]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_byte_level_round_trip(small, full, text):
    for tok in (small, full):
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text


def test_special_tokens_stay_whole(small):
    ids = small.encode("<|im_start|>user\nhi<|im_end|>").ids
    assert ids[0] == 1 and ids[-1] == 2
    assert 1 not in ids[1:-1] and 2 not in ids[1:-1]


def test_think_is_ordinary_text(full):
    assert full.token_to_id("<think>") is None
    assert len(full.encode("<think>").ids) > 1


def test_chat_template_plain():
    text = render(chat_template(thinking=False), messages=CONVERSATION, add_generation_prompt=True)
    assert text == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_prompt = render(chat_template(thinking=False), messages=CONVERSATION, add_generation_prompt=False)
    assert no_prompt == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"


def test_chat_template_thinking():
    template = chat_template(thinking=True)
    head = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    assert render(template, messages=CONVERSATION, add_generation_prompt=True) == (
        head + "<|im_start|>assistant\n<think>\n"
    )
    assert render(template, messages=CONVERSATION, add_generation_prompt=True, enable_thinking=True) == (
        head + "<|im_start|>assistant\n<think>\n"
    )
    assert render(template, messages=CONVERSATION, add_generation_prompt=True, enable_thinking=False) == (
        head + "<|im_start|>assistant\n"
    )
    assert render(template, messages=CONVERSATION, add_generation_prompt=False) == head


def test_written_files(tmp_path, small):
    write_tokenizer_files(small, tmp_path, thinking=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    from tokenizers import Tokenizer

    reloaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert reloaded.encode("hello 123").ids == small.encode("hello 123").ids

    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GPT2Tokenizer"
    assert config["add_prefix_space"] is False
    assert config["bos_token"] == config["eos_token"] == "<|endoftext|>"
    assert config["chat_template"] == chat_template(thinking=True)
    assert [config["added_tokens_decoder"][str(i)]["content"] for i in range(17)] == list(SPECIAL_TOKENS)
    assert all(entry["special"] for entry in config["added_tokens_decoder"].values())

    special = json.loads((tmp_path / "special_tokens_map.json").read_text())
    assert special["eos_token"]["content"] == "<|endoftext|>"


def test_write_refuses_missing_directory(tmp_path, small):
    with pytest.raises(TokenizerError, match="does not exist"):
        write_tokenizer_files(small, tmp_path / "nope", thinking=False)
