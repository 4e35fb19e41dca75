"""A SmolLM2-shaped byte-level BPE tokenizer, trained locally, plus Ouro's ChatML template.

The published Ouro checkpoints reuse SmolLM2's tokenizer (49,152 ids, specials at 0..16). We cannot
download it, so we build one with the same *structure*: the same pre-tokenizer (single digits, then
GPT-2 byte-level splitting; llama.cpp's `smollm` pre-tokenizer), the same special tokens at the same
ids, the same HF file set. Only the learned merges differ, which no runtime test depends on.

`<think>` / `</think>` are deliberately *not* added tokens: Ouro-Thinking's vocabulary is exactly
SmolLM2's 49,152 ids, which has no room for them, so they are ordinary text there too.
"""

from __future__ import annotations

import json
import os
import string
from collections import deque
from collections.abc import Iterable
from pathlib import Path

# The one ChatML template of the project lives with the converter, which must not need `tokenizers`.
from convert.chat_template import chatml_template as chat_template  # noqa: F401  (re-exported)
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# SmolLM2's special tokens, in id order (ids 0..16).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<repo_name>",
    "<reponame>",
    "<file_sep>",
    "<filename>",
    "<gh_stars>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<jupyter_script>",
    "<empty_output>",
)
ENDOFTEXT, IM_START, IM_END = SPECIAL_TOKENS[:3]

# The published tokenizer_config.json files name <|endoftext|> for every role; chat turns still
# end with <|im_end|>, which the GGUF converter records as the end-of-generation token.
_ROLE_TOKEN = ENDOFTEXT

# Not recorded in anything we can read; the checkpoints' max_position_embeddings is the natural value.
MODEL_MAX_LENGTH = 65536

MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256


class TokenizerError(ValueError):
    """A tokenizer cannot be built or written as asked."""


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    shifted = 256
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(shifted)
            shifted += 1
    return [symbols[b] for b in range(256)]


BYTE_SYMBOLS: tuple[str, ...] = tuple(_byte_symbols())


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """SmolLM2's pre-tokenizer: every digit alone, then GPT-2's regex and byte mapping."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def _train_merges(texts: list[str], vocab_size: int) -> list[tuple[str, str]]:
    """Merges the `tokenizers` BPE trainer learns from `texts`, in rank order."""
    scratch = Tokenizer(models.BPE())
    scratch.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(BYTE_SYMBOLS),
        min_frequency=2,
        show_progress=False,
    )
    scratch.train_from_iterator(texts, trainer)
    raw = json.loads(scratch.to_str())["model"]["merges"]
    # tokenizers >= 0.20 stores merges as pairs, older versions as "a b" strings.
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in raw]


def _is_word_piece(token: str) -> bool:
    """True for tokens GPT-2's regex can produce inside one word: optional space symbol + letters."""
    body = token[1:] if token.startswith("Ġ") else token
    return all(c in string.ascii_letters for c in body)


def _extend(vocab: dict[str, int], merges: list[tuple[str, str]], vocab_size: int) -> None:
    """Grow vocab and merges to exactly `vocab_size` with valid, deterministic merges.

    A small corpus runs out of pairs long before 49,152 tokens. Each extra merge appends one
    lowercase letter to an existing word piece (breadth-first, in id order), so both halves are
    already in the vocabulary, the result is new, and the token is one the pre-tokenizer can
    actually produce — the file is a well-formed BPE tokenizer that llama.cpp accepts.
    """
    queue = deque(t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if _is_word_piece(t))
    while len(vocab) < vocab_size:
        left = queue.popleft()
        for letter in string.ascii_lowercase:
            token = left + letter
            if token in vocab:
                continue
            vocab[token] = len(vocab)
            merges.append((left, letter))
            queue.append(token)
            if len(vocab) == vocab_size:
                return


def _assemble(trained: list[tuple[str, str]], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Ids: specials 0..16, the 256 byte symbols in byte order, then merge results in rank order."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *BYTE_SYMBOLS):
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    for left, right in trained:
        if len(vocab) == vocab_size:
            break
        merges.append((left, right))
        # Two different pairs may spell the same token (e.g. "ab"+"c" and "a"+"bc"): one id.
        vocab.setdefault(left + right, len(vocab))
    _extend(vocab, merges, vocab_size)
    return vocab, merges


def build_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a SmolLM2-shaped byte-level BPE on `texts` with exactly `vocab_size` ids."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise TokenizerError(
            f"vocab_size {vocab_size} is too small: the {len(SPECIAL_TOKENS)} special tokens and "
            f"256 byte symbols alone need {MIN_VOCAB_SIZE}"
        )
    vocab, merges = _assemble(_train_merges(list(texts), vocab_size), vocab_size)

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    # Already in the BPE vocab at ids 0..16; registering them keeps them whole in any text.
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    assert tokenizer.get_vocab_size() == vocab_size
    return tokenizer


def _token_entry(content: str) -> dict[str, object]:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def write_json(path: Path, data: object) -> None:
    """Write JSON to a temp file beside `path`, then rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_tokenizer_files(tokenizer: Tokenizer, outdir: str | os.PathLike[str], *, thinking: bool) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json as HF lays them out."""
    out = Path(outdir)
    if not out.is_dir():
        raise TokenizerError(f"output directory {out} does not exist")
    for token_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != token_id:
            raise TokenizerError(f"tokenizer does not have {token} at id {token_id}")

    write_json(out / "tokenizer.json", json.loads(tokenizer.to_str()))
    write_json(
        out / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(i): {**_token_entry(t), "special": True} for i, t in enumerate(SPECIAL_TOKENS)
            },
            "additional_special_tokens": list(SPECIAL_TOKENS),
            "bos_token": _ROLE_TOKEN,
            "chat_template": chat_template(thinking),
            "clean_up_tokenization_spaces": False,
            "eos_token": _ROLE_TOKEN,
            "model_max_length": MODEL_MAX_LENGTH,
            "pad_token": _ROLE_TOKEN,
            "tokenizer_class": "GPT2Tokenizer",
            "unk_token": _ROLE_TOKEN,
            "vocab_size": tokenizer.get_vocab_size(),
        },
    )
    write_json(
        out / "special_tokens_map.json",
        {
            "additional_special_tokens": list(SPECIAL_TOKENS),
            **{role: _token_entry(_ROLE_TOKEN) for role in ("bos_token", "eos_token", "pad_token", "unk_token")},
        },
    )
