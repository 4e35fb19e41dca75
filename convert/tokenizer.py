"""tokenizer.json (+ tokenizer_config.json) -> the GGUF vocabulary of a `gpt2`/`smollm` tokenizer.

llama.cpp re-implements the tokenizer from the GGUF alone, choosing the pre-tokenizer by name. Writing
`smollm` is only right if the checkpoint really splits text like SmolLM2, so the pre-tokenizer is checked,
not assumed: anything else is a clear error naming what was found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import TokenType

from convert.chat_template import check_template
from convert.checkpoint import read_json
from convert.errors import TokenizerError

IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
EXPECTED_PRE_TOKENIZER = "Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false)]"


@dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]  # by id, padded to the config's vocab_size
    token_types: list[int]  # gguf.TokenType values
    merges: list[str]  # "left right", in rank order
    bos_id: int
    eos_id: int  # <|im_end|>: a chat turn ends there (spec §6); also written as the end-of-turn id
    pad_id: int
    chat_template: str | None  # the checkpoint's own template, None when it ships none


def read_vocab(ckpt_dir: Path, vocab_size: int, bos_token_id: int | None) -> GGUFVocab:
    tok_path = ckpt_dir / "tokenizer.json"
    tok = read_json(tok_path, TokenizerError)
    if not isinstance(tok, dict) or not isinstance(tok.get("model"), dict):
        raise TokenizerError(f"{tok_path}: not a Hugging Face tokenizer.json (no 'model' object)")
    model = tok["model"]
    if model.get("type") != "BPE":
        raise TokenizerError(f"{tok_path}: model type is {model.get('type')!r}, expected byte-level 'BPE'")
    if tok.get("normalizer") is not None:
        raise TokenizerError(
            f"{tok_path}: has a normalizer ({_describe(tok['normalizer'])}); SmolLM's tokenizer has none"
        )
    _check_pre_tokenizer(tok.get("pre_tokenizer"), tok_path)

    tokens, token_types = _tokens_by_id(tok, vocab_size, tok_path)
    ids = {t: i for i, t in enumerate(tokens) if token_types[i] != TokenType.UNUSED}
    if IM_END not in ids:
        raise TokenizerError(f"{tok_path}: no {IM_END} token; Ouro's chat format ends every turn with it")
    tok_cfg = _read_tokenizer_config(ckpt_dir)
    endoftext = ids.get(ENDOFTEXT, ids[IM_END])
    bos_id = bos_token_id if bos_token_id is not None and 0 <= bos_token_id < len(tokens) else endoftext
    pad_id = ids.get(_token_text(tok_cfg.get("pad_token")) or "", endoftext)
    return GGUFVocab(
        tokens=tokens,
        token_types=token_types,
        merges=_merges(model.get("merges"), tok_path),
        bos_id=bos_id,
        eos_id=ids[IM_END],
        pad_id=pad_id,
        chat_template=_chat_template(ckpt_dir, tok_cfg),
    )


def _describe(node: Any) -> str:
    """A short readable rendering of a tokenizers component, for error messages."""
    if not isinstance(node, dict):
        return "none" if node is None else repr(node)[:60]
    kind = node.get("type", "?")
    children = node.get("pretokenizers") or node.get("normalizers")
    if isinstance(children, list):
        return f"{kind}[{', '.join(_describe(c) for c in children)}]"
    args = []
    for key in ("individual_digits", "add_prefix_space", "pattern", "behavior"):
        if key in node:
            val = node[key]
            if isinstance(val, dict):  # Split patterns are {"Regex": ...} or {"String": ...}
                val = next(iter(val.values()), val)
            text = str(val).lower() if isinstance(val, bool) else str(val)
            args.append(f"{key}={text[:40]}")
    return f"{kind}({', '.join(args)})" if args else kind


def _check_pre_tokenizer(pt: Any, tok_path: Path) -> None:
    ok = (
        isinstance(pt, dict)
        and pt.get("type") == "Sequence"
        and isinstance(pt.get("pretokenizers"), list)
        and len(pt["pretokenizers"]) == 2
    )
    if ok:
        digits, byte_level = pt["pretokenizers"]
        ok = (
            isinstance(digits, dict) and digits.get("type") == "Digits" and digits.get("individual_digits") is True
            and isinstance(byte_level, dict) and byte_level.get("type") == "ByteLevel"
            and byte_level.get("add_prefix_space", False) is False
            and byte_level.get("use_regex", True) is True
        )
    if not ok:
        raise TokenizerError(
            f"{tok_path}: unsupported pre-tokenizer {_describe(pt)}; only SmolLM's {EXPECTED_PRE_TOKENIZER} "
            f"maps to llama.cpp's 'smollm'"
        )


def _tokens_by_id(tok: dict[str, Any], vocab_size: int, tok_path: Path) -> tuple[list[str], list[int]]:
    vocab = tok["model"].get("vocab")
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{tok_path}: model.vocab is not a token -> id object")
    by_id: dict[int, str] = {}
    types: dict[int, int] = {}

    def put(token: Any, idx: Any, ttype: int) -> None:
        if not isinstance(token, str) or isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise TokenizerError(f"{tok_path}: invalid vocabulary entry {token!r} -> {idx!r}")
        if by_id.get(idx, token) != token:
            raise TokenizerError(f"{tok_path}: id {idx} is both {by_id[idx]!r} and {token!r}")
        by_id[idx] = token
        types[idx] = ttype

    for token, idx in vocab.items():
        put(token, idx, TokenType.NORMAL)
    for added in tok.get("added_tokens") or []:
        if not isinstance(added, dict):
            raise TokenizerError(f"{tok_path}: invalid added_tokens entry {added!r}")
        # Specials are control tokens: never produced by splitting text, rendered only on request.
        put(added.get("content"), added.get("id"), TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)

    n = max(by_id, default=-1) + 1
    if n > vocab_size:
        raise TokenizerError(f"{tok_path}: the tokenizer has ids up to {n - 1} but config.json vocab_size is {vocab_size}")
    # The embedding has vocab_size rows and llama.cpp requires one token per row: unused rows get
    # placeholder tokens that the tokenizer can never produce.
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    token_types = [int(types.get(i, TokenType.UNUSED)) for i in range(vocab_size)]
    return tokens, token_types


def _merges(raw: Any, tok_path: Path) -> list[str]:
    if not isinstance(raw, list) or not raw:
        raise TokenizerError(f"{tok_path}: no BPE merges (llama.cpp's gpt2 tokenizer requires them)")
    merges = []
    for m in raw:
        # tokenizers >= 0.20 writes merges as [left, right] pairs, older versions as "left right".
        if isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) and p and " " not in p for p in m):
            merges.append(f"{m[0]} {m[1]}")
        elif isinstance(m, str) and m.count(" ") == 1 and not m.startswith(" ") and not m.endswith(" "):
            merges.append(m)
        else:
            raise TokenizerError(f"{tok_path}: invalid merge {m!r}")
    return merges


def _read_tokenizer_config(ckpt_dir: Path) -> dict[str, Any]:
    path = ckpt_dir / "tokenizer_config.json"
    if not path.is_file():
        return {}
    cfg = read_json(path, TokenizerError)
    if not isinstance(cfg, dict):
        raise TokenizerError(f"{path}: expected a JSON object")
    return cfg


def _token_text(entry: Any) -> str | None:
    """A special-token field of tokenizer_config.json: a string or a serialized AddedToken."""
    if isinstance(entry, dict):
        entry = entry.get("content")
    return entry if isinstance(entry, str) else None


def _chat_template(ckpt_dir: Path, tok_cfg: dict[str, Any]) -> str | None:
    template = tok_cfg.get("chat_template")
    source = str(ckpt_dir / "tokenizer_config.json")
    if isinstance(template, list):  # several named templates: the default one is the chat template
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is None and (ckpt_dir / "chat_template.jinja").is_file():
        source = str(ckpt_dir / "chat_template.jinja")
        template = (ckpt_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if template is None:
        return None
    if not isinstance(template, str) or not template.strip():
        raise TokenizerError(f"{source}: chat_template is not a non-empty string")
    check_template(template, source)
    return template
