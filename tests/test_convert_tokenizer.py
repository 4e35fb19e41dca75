"""The GGUF vocabulary, chat template and Thinking detection of `ouro convert`."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment
from rich.console import Console

from convert.convert import convert_checkpoint
from convert.errors import TokenizerError
from convert_support import gguf_fields, rewrite_safetensors
from models.synthetic import write_checkpoint
from models.tokenizer import chat_template

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}]
CHATML = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
          "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("base") / "Ouro-tiny", "tiny")


def copy_as(pristine: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / name))


def fields(src: Path, tmp_path: Path) -> dict:
    out = convert_checkpoint(src, tmp_path / "out.gguf", "q8_0", console=Console(file=io.StringIO()))
    return gguf_fields(GGUFReader(out))


def render(template: str, **kw) -> str:
    return ImmutableSandboxedEnvironment().from_string(template).render(messages=MESSAGES, **kw)


def set_template(ckpt: Path, template: str | None) -> None:
    path = ckpt / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    if template is None:
        cfg.pop("chat_template")
    else:
        cfg["chat_template"] = template
    path.write_text(json.dumps(cfg))


def test_thinking_template_sets_paper_sampling(pristine, tmp_path):
    ckpt = copy_as(pristine, tmp_path, "renamed-model")  # the name says nothing: the template decides
    set_template(ckpt, chat_template(thinking=True))
    kv = fields(ckpt, tmp_path)
    assert kv["general.sampling.temp"] == 1.0
    assert kv["general.sampling.top_p"] == pytest.approx(0.7, rel=1e-6)
    assert kv["tokenizer.chat_template"] == chat_template(thinking=True)


def test_base_template_has_no_sampling_defaults(pristine, tmp_path):
    kv = fields(copy_as(pristine, tmp_path, "Ouro-tiny"), tmp_path)
    assert "general.sampling.temp" not in kv and "general.sampling.top_p" not in kv


def test_missing_template_on_a_thinking_name_gets_chatml_with_think(pristine, tmp_path):
    ckpt = copy_as(pristine, tmp_path, "Ouro-1.4B-Thinking")
    (ckpt / "tokenizer_config.json").unlink()
    kv = fields(ckpt, tmp_path)
    assert kv["general.sampling.temp"] == 1.0
    template = kv["tokenizer.chat_template"]
    assert render(template, add_generation_prompt=True) == CHATML + "<think>\n"
    assert render(template, add_generation_prompt=True, enable_thinking=False) == CHATML
    assert render(template, add_generation_prompt=False) == CHATML.removesuffix("<|im_start|>assistant\n")


def test_missing_template_on_a_base_model_gets_plain_chatml(pristine, tmp_path):
    ckpt = copy_as(pristine, tmp_path, "Ouro-1.4B")
    set_template(ckpt, None)
    kv = fields(ckpt, tmp_path)
    assert render(kv["tokenizer.chat_template"], add_generation_prompt=True) == CHATML
    assert "general.sampling.temp" not in kv


def test_invalid_template_is_rejected(pristine, tmp_path):
    ckpt = copy_as(pristine, tmp_path, "Ouro-tiny")
    set_template(ckpt, "{% for m in messages %}{{ m['content'] }")
    with pytest.raises(TokenizerError, match="not valid Jinja"):
        fields(ckpt, tmp_path)


def test_string_merges_are_read_like_pair_merges(pristine, tmp_path):
    ckpt = copy_as(pristine, tmp_path, "Ouro-tiny")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    pairs = tok["model"]["merges"]
    assert isinstance(pairs[0], list)  # what today's `tokenizers` writes
    tok["model"]["merges"] = [" ".join(p) for p in pairs]  # the older format
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    assert fields(ckpt, tmp_path)["tokenizer.ggml.merges"] == [" ".join(p) for p in pairs]


def test_user_tokens_and_padding_rows(pristine, tmp_path):
    """Non-special added tokens are USER_DEFINED; embedding rows beyond the tokenizer become UNUSED pads."""
    ckpt = copy_as(pristine, tmp_path, "Ouro-tiny")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    n = len(tok["model"]["vocab"])
    tok["added_tokens"].append({"id": n, "content": "<tool>", "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": False})
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    vocab = n + 32  # the embedding is bigger than the tokenizer, as in many HF checkpoints
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["vocab_size"] = vocab
    (ckpt / "config.json").write_text(json.dumps(cfg))

    def grow(t):
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            dtype, data, shape = t[name]
            extra = np.zeros((32, shape[1]), dtype=np.uint16).tobytes()
            t[name] = (dtype, data + extra, [vocab, shape[1]])
    rewrite_safetensors(ckpt / "model.safetensors", grow)

    kv = fields(ckpt, tmp_path)
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == vocab
    assert tokens[n] == "<tool>" and types[n] == 4
    assert tokens[n + 1] == f"[PAD{n + 1}]" and types[n + 1] == 5
    assert types[n + 1:] == [5] * (vocab - n - 1)


def test_tokenizer_larger_than_the_embedding_is_rejected(pristine, tmp_path):
    ckpt = copy_as(pristine, tmp_path, "Ouro-tiny")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["added_tokens"].append({"id": 600, "content": "<x>", "special": True})
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(TokenizerError, match="ids up to 600 but config.json vocab_size is 512"):
        fields(ckpt, tmp_path)


def test_tokenizer_without_im_end_is_rejected(pristine, tmp_path):
    ckpt = copy_as(pristine, tmp_path, "Ouro-tiny")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["content"] != "<|im_end|>"]
    tok["model"]["vocab"] = {t: i for t, i in tok["model"]["vocab"].items() if t != "<|im_end|>"}
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(TokenizerError, match=re.escape("no <|im_end|> token")):
        fields(ckpt, tmp_path)


@pytest.mark.parametrize("pre, found", [
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": False},
                                            {"type": "ByteLevel", "add_prefix_space": False}]},
     "Sequence[Digits(individual_digits=false), ByteLevel(add_prefix_space=false)]"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated"},
                                            {"type": "ByteLevel", "add_prefix_space": False}]},
     "Sequence[Split(pattern=\\p{N}{1,3}, behavior=Isolated), ByteLevel(add_prefix_space=false)]"),
    (None, "none"),
])
def test_other_pre_tokenizers_are_named_in_the_error(pristine, tmp_path, pre, found):
    ckpt = copy_as(pristine, tmp_path, "Ouro-tiny")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = pre
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(TokenizerError) as info:
        fields(ckpt, tmp_path)
    assert f"unsupported pre-tokenizer {found};" in str(info.value)
