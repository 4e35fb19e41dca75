"""`validate_gguf(path)`: check an Ouro GGUF before llama.cpp sees it, and summarise it for `ouro info`.

GGUF files come from strangers. llama.cpp validates much of the container itself, but some inconsistencies
still reach a GGML_ASSERT that aborts the whole Python process (duplicate vocabulary entries, for one),
and others load and then produce garbage. Every load path of the CLI and the Python API therefore calls
`validate_gguf` first: the container is parsed with bounds (runtime.gguf_header), then the Ouro rules are
checked — hyper-parameters in range, the exit gate consistent, exactly the tensors the architecture needs
with the shapes the hyper-parameters imply, and a tokenizer llama.cpp can build. Any failure is one
`GGUFValidationError` naming the file and the problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType

from runtime.errors import OuroRuntimeError
from runtime.gguf_header import Field, GGUFFormatError, GGUFHeader, TensorInfo, ValueType, read_header
from runtime.keys import ARCH, EXIT_MODES, MAX_LOGICAL_LAYERS, MAX_LOOPS
from runtime.kv import kv_bytes_per_token

# Weight types llama.cpp's CPU backend can multiply with. Q8_1/Q8_K are activation formats and the
# integer/F64 types are not weights: a matmul on them aborts instead of failing cleanly.
WEIGHT_TYPES = frozenset({
    Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K,
    Q.Q6_K, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ3_XXS, Q.IQ1_S, Q.IQ4_NL, Q.IQ3_S, Q.IQ2_S, Q.IQ4_XS, Q.IQ1_M,
    Q.TQ1_0, Q.TQ2_0, Q.MXFP4,
})
EMBEDDING = "token_embd.weight"
NORM_TYPE = Q.F32  # the norms feed ggml_mul with the F32 activations: they must be F32

# Every ouro.* key llama.cpp or our runtime reads. Any other ouro.* key is refused: llama.cpp reads many
# optional generic keys (rope scaling, experts, pooling, ...) that would silently change an Ouro model.
OURO_KEYS = frozenset(f"{ARCH}.{k}" for k in (
    "context_length", "embedding_length", "block_count", "feed_forward_length", "vocab_size", "num_loops",
    "skip_loop_final_norm", "attention.head_count", "attention.head_count_kv", "attention.key_length",
    "attention.value_length", "attention.layer_norm_rms_epsilon", "rope.dimension_count", "rope.freq_base",
    "exit_gate.weight", "exit_gate.bias", "early_exit_threshold", "exit_at_step", "kv_share", "exit_mode",
    "min_loops",
))
# Keys outside ouro.* that llama.cpp reads with a fixed type when present (a wrong type makes it refuse).
_SPECIAL_TOKEN_KEYS = {
    "bos": "bos", "eos": "eos", "eot": "eot", "eom": "eom", "unk": "unknown", "sep": "seperator",
    "pad": "padding", "cls": "cls", "mask": "mask", "fim_pre": "fim_pre", "fim_suf": "fim_suf",
    "fim_mid": "fim_mid", "fim_pad": "fim_pad", "fim_rep": "fim_rep", "fim_sep": "fim_sep",
    "prefix": "prefix", "suffix": "suffix", "middle": "middle",
}  # our name -> llama.cpp's tokenizer.ggml.<name>_token_id (sic "seperator")
_FILE_TYPES = frozenset(int(t) for t in LlamaFileType)
_UINT32_KEYS = ("general.file_type", "general.quantization_version", "tokenizer.ggml.token_type_count")
_BOOL_KEYS = tuple(f"tokenizer.ggml.{k}" for k in (
    "add_bos_token", "add_eos_token", "add_sep_token", "add_space_prefix", "remove_extra_whitespaces",
    "normalizer.lowercase", "normalizer.strip_accents",
))
PRE_TOKENIZER = "smollm"  # SmolLM2's splitting (spec §5); llama.cpp refuses names it does not know

_INT_TYPES = (ValueType.UINT8, ValueType.INT8, ValueType.UINT16, ValueType.INT16, ValueType.UINT32,
              ValueType.INT32, ValueType.UINT64, ValueType.INT64)


class GGUFValidationError(OuroRuntimeError, ValueError):
    """The file cannot be run as an Ouro model; the message names the file and the problem.

    An OuroRuntimeError, so every CLI command and API caller that reports those reports this too."""


@dataclass(frozen=True)
class TensorTypeSize:
    type: str
    count: int
    nbytes: int


@dataclass(frozen=True)
class Matrices:
    """`count` weight matrices of one type and shape that llama.cpp multiplies with (MUL_MAT): every 2-D
    tensor but the token embedding, whose rows it gathers. What its CPU backend may repack (runtime.weights)."""

    type: str
    rows: int  # ne[1]: output features
    cols: int  # ne[0]: the row length
    count: int
    nbytes: int


@dataclass(frozen=True)
class GGUFSummary:
    """The checked facts of an Ouro GGUF (everything `ouro info` prints)."""

    path: Path
    file_size: int
    version: int
    arch: str
    name: str | None
    loops: int
    layers: int  # physical
    hidden: int
    ffn: int
    heads: int
    heads_kv: int
    head_dim: int
    vocab: int
    ctx_train: int
    rope_base: float
    rms_eps: float
    gate_present: bool
    gate_bias: float | None
    threshold: float
    exit_at_step: int | None
    exit_mode: str  # the file's default: "select" (all loops run) or "skip" (compute stops at the exit)
    min_loops: int  # skip mode never exits before this many loops
    kv_share: bool
    n_tensors: int
    tensor_types: tuple[TensorTypeSize, ...]  # per ggml type, largest first
    tensor_bytes: int
    matrices: tuple[Matrices, ...]  # by type and shape, largest first
    n_params: int  # tensors plus the exit gate carried as metadata
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    eot_token_id: int | None
    eos_token: str | None
    eot_token: str | None
    sampling: dict[str, float] = field(default_factory=dict)

    @property
    def kv_bytes_per_token_full(self) -> int:
        """F16 K+V of one token with every (loop, layer) slot kept."""
        return kv_bytes_per_token(layers=self.layers, loops=self.loops, heads_kv=self.heads_kv, head_dim=self.head_dim)

    @property
    def kv_bytes_per_token_share(self) -> int:
        """The same with one slot per physical layer (ouro.kv_share)."""
        return kv_bytes_per_token(layers=self.layers, loops=self.loops, heads_kv=self.heads_kv, head_dim=self.head_dim,
                                  kv="share")

    def kv_bytes(self, n_ctx: int, kv: str = "full") -> int:
        """F16 KV cache bytes for a context of n_ctx tokens; "share" keeps one slot per physical layer (patch
        0003: each loop overwrites the token's entry), T times less than "full"."""
        per_token = self.kv_bytes_per_token_full if kv == "full" else self.kv_bytes_per_token_share
        return n_ctx * per_token

    def ram_bytes(self, n_ctx: int, kv: str = "full") -> int:
        """Weights plus KV cache for n_ctx tokens (llama.cpp's compute buffers come on top)."""
        return self.tensor_bytes + self.kv_bytes(n_ctx, kv)


def validate_gguf(path: str | Path) -> GGUFSummary:
    """Check the file at `path` is a well-formed Ouro GGUF this runtime can load; return its facts.

    Raises GGUFValidationError (one line naming the file and the problem) for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise GGUFValidationError(f"{path}: no such file")
    try:
        header = read_header(path)
        return _summarise(header)
    except GGUFFormatError as e:
        raise GGUFValidationError(f"{path}: {e}") from None
    except GGUFValidationError as e:
        raise GGUFValidationError(f"{path}: {e}") from None


class _Meta:
    """Typed access to the metadata, raising GGUFValidationError with the key's name."""

    def __init__(self, fields: dict[str, Field]) -> None:
        self.fields = fields

    def has(self, key: str) -> bool:
        return key in self.fields

    def string(self, key: str, required: bool = True) -> str | None:
        f = self._get(key, required)
        if f is None:
            return None
        if f.type != ValueType.STRING:
            raise GGUFValidationError(f"metadata {key} must be a string, it is {f.type.name}")
        return f.value

    def uint(self, key: str, required: bool = True, default: int | None = None) -> int | None:
        f = self._get(key, required)
        if f is None:
            return default
        # llama.cpp reads these keys as uint32 and nothing else.
        if f.type != ValueType.UINT32:
            raise GGUFValidationError(f"metadata {key} must be a uint32, it is {_describe(f)}")
        return f.value

    def float32(self, key: str, required: bool = True, default: float | None = None) -> float | None:
        f = self._get(key, required)
        if f is None:
            return default
        if f.type != ValueType.FLOAT32:
            raise GGUFValidationError(f"metadata {key} must be a float32, it is {_describe(f)}")
        if not math.isfinite(f.value):
            raise GGUFValidationError(f"metadata {key} is {f.value}")
        return f.value

    def boolean(self, key: str, default: bool) -> bool:
        f = self._get(key, False)
        if f is None:
            return default
        if f.type != ValueType.BOOL:
            raise GGUFValidationError(f"metadata {key} must be a bool, it is {_describe(f)}")
        return f.value

    def array(self, key: str, item_types: tuple[ValueType, ...], required: bool = True):
        f = self._get(key, required)
        if f is None:
            return None
        if f.type != ValueType.ARRAY or f.item_type not in item_types:
            wanted = " or ".join(t.name for t in item_types)
            raise GGUFValidationError(f"metadata {key} must be an array of {wanted}, it is {_describe(f)}")
        return f.value

    def _get(self, key: str, required: bool) -> Field | None:
        f = self.fields.get(key)
        if f is None and required:
            raise GGUFValidationError(f"required metadata {key} is missing")
        return f


def _describe(f: Field) -> str:
    if f.type == ValueType.ARRAY:
        return f"an array of {f.item_type.name}"
    return f.type.name


@dataclass(frozen=True)
class _HParams:
    layers: int
    loops: int
    hidden: int
    ffn: int
    heads: int
    heads_kv: int
    head_dim: int
    ctx_train: int
    rope_base: float
    rms_eps: float


def _summarise(header: GGUFHeader) -> GGUFSummary:
    meta = _Meta(header.fields)
    arch = meta.string("general.architecture")
    if arch != ARCH:
        raise GGUFValidationError(
            f"architecture is {arch!r}; this runtime runs Ouro models only (general.architecture = 'ouro')"
        )
    unknown = sorted(k for k in meta.fields if k.startswith(f"{ARCH}.") and k not in OURO_KEYS)
    if unknown:
        raise GGUFValidationError(f"unknown Ouro metadata {', '.join(unknown[:3])} (this runtime would ignore or misread it)")
    for key in _UINT32_KEYS:
        meta.uint(key, required=False)
    # llama.cpp loads general.file_type straight into its llama_ftype enum: any other value is undefined
    # behaviour there (UBSan reports it in the sanitized build, scripts/sanitize.sh).
    file_type = meta.uint("general.file_type", required=False)
    if file_type is not None and file_type not in _FILE_TYPES:
        raise GGUFValidationError(f"general.file_type = {file_type} is not a llama.cpp file type")
    for key in _BOOL_KEYS:
        meta.boolean(key, False)
    hp = _hparams(meta)
    gate = meta.array(f"{ARCH}.exit_gate.weight", (ValueType.FLOAT32,), required=False)
    gate_bias = None
    if gate is not None:
        if len(gate) != hp.hidden:
            raise GGUFValidationError(
                f"{ARCH}.exit_gate.weight has {len(gate)} values, the hidden size is {hp.hidden}"
            )
        if not np.all(np.isfinite(gate)):
            raise GGUFValidationError(f"{ARCH}.exit_gate.weight holds non-finite values")
        gate_bias = meta.float32(f"{ARCH}.exit_gate.bias")
    threshold = meta.float32(f"{ARCH}.early_exit_threshold", required=False, default=1.0)
    if not 0.0 <= threshold <= 1.0:
        raise GGUFValidationError(f"{ARCH}.early_exit_threshold = {threshold} is outside 0..1")
    exit_at_step = meta.uint(f"{ARCH}.exit_at_step", required=False)
    if exit_at_step is not None and exit_at_step >= hp.loops:
        raise GGUFValidationError(
            f"{ARCH}.exit_at_step = {exit_at_step}, but only loops 0..{hp.loops - 1} run"
        )
    exit_mode = meta.string(f"{ARCH}.exit_mode", required=False) or "select"
    if exit_mode not in EXIT_MODES:
        raise GGUFValidationError(f"{ARCH}.exit_mode = {exit_mode!r}, expected 'select' or 'skip'")
    min_loops = meta.uint(f"{ARCH}.min_loops", required=False, default=1)
    if not 1 <= min_loops <= hp.loops:
        raise GGUFValidationError(f"{ARCH}.min_loops = {min_loops} is outside 1..{hp.loops}")
    kv_share = meta.boolean(f"{ARCH}.kv_share", False)
    if meta.boolean(f"{ARCH}.skip_loop_final_norm", False):
        raise GGUFValidationError(
            f"{ARCH}.skip_loop_final_norm = true is not Ouro (its shared norm runs after every loop)"
        )

    tokens = _check_tokenizer(meta)
    vocab = len(tokens)
    _check_tensors(header.tensors, hp, vocab)
    declared_vocab = meta.uint(f"{ARCH}.vocab_size", required=False)
    if declared_vocab is not None and declared_vocab != vocab:
        raise GGUFValidationError(f"{ARCH}.vocab_size = {declared_vocab} but the tokenizer has {vocab} tokens")
    chat_template = meta.string("tokenizer.chat_template", required=False)
    if chat_template is not None:
        _check_chat_template(chat_template)

    ids = {}
    for ours, theirs in _SPECIAL_TOKEN_KEYS.items():
        key = f"tokenizer.ggml.{theirs}_token_id"
        ids[ours] = tid = meta.uint(key, required=False)
        if tid is not None and tid >= vocab:
            raise GGUFValidationError(f"{key} = {tid} is outside the {vocab}-token vocabulary")
    n_gate = 0 if gate is None else hp.hidden + 1
    return GGUFSummary(
        path=header.path, file_size=header.file_size, version=header.version, arch=arch,
        name=meta.string("general.name", required=False),
        loops=hp.loops, layers=hp.layers, hidden=hp.hidden, ffn=hp.ffn, heads=hp.heads, heads_kv=hp.heads_kv,
        head_dim=hp.head_dim, vocab=vocab, ctx_train=hp.ctx_train, rope_base=hp.rope_base, rms_eps=hp.rms_eps,
        gate_present=gate is not None, gate_bias=gate_bias, threshold=threshold, exit_at_step=exit_at_step,
        exit_mode=exit_mode, min_loops=min_loops, kv_share=kv_share,
        n_tensors=len(header.tensors), tensor_types=_type_sizes(header.tensors),
        tensor_bytes=sum(t.nbytes for t in header.tensors), matrices=_matrices(header.tensors),
        n_params=sum(t.n_elements for t in header.tensors) + n_gate,
        chat_template=chat_template,
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], eot_token_id=ids["eot"],
        eos_token=None if ids["eos"] is None else tokens[ids["eos"]],
        eot_token=None if ids["eot"] is None else tokens[ids["eot"]],
        sampling=_sampling(meta),
    )


def _hparams(meta: _Meta) -> _HParams:
    def positive(key: str, required: bool = True, default: int | None = None) -> int:
        v = meta.uint(f"{ARCH}.{key}", required=required, default=default)
        if v is None or v < 1:
            raise GGUFValidationError(f"metadata {ARCH}.{key} = {v} must be at least 1")
        return v

    layers = positive("block_count")
    # Upstream's convention: a file without num_loops runs a single loop.
    loops = positive("num_loops", required=False, default=1)
    if loops > MAX_LOOPS:
        raise GGUFValidationError(f"{ARCH}.num_loops = {loops} is outside 1..{MAX_LOOPS}")
    if loops * layers > MAX_LOGICAL_LAYERS:
        raise GGUFValidationError(
            f"{layers} layers x {loops} loops = {loops * layers} logical layers exceeds llama.cpp's limit of "
            f"{MAX_LOGICAL_LAYERS}"
        )
    hidden = positive("embedding_length")
    heads = positive("attention.head_count")
    heads_kv = positive("attention.head_count_kv", required=False, default=heads)
    if heads % heads_kv:
        raise GGUFValidationError(f"{heads} attention heads is not a multiple of {heads_kv} KV heads")
    default_head_dim = hidden // heads if hidden % heads == 0 else None
    head_dim = positive("attention.key_length", required=default_head_dim is None, default=default_head_dim)
    value_dim = positive("attention.value_length", required=False, default=head_dim)
    if value_dim != head_dim:
        raise GGUFValidationError(f"key length {head_dim} differs from value length {value_dim}")
    rope_dims = meta.uint(f"{ARCH}.rope.dimension_count", required=False, default=head_dim)
    if rope_dims != head_dim:
        raise GGUFValidationError(
            f"{ARCH}.rope.dimension_count = {rope_dims}, but Ouro ropes the full head dimension ({head_dim})"
        )
    rope_base = meta.float32(f"{ARCH}.rope.freq_base", required=False, default=10000.0)
    rms_eps = meta.float32(f"{ARCH}.attention.layer_norm_rms_epsilon")
    if rope_base <= 0 or rms_eps < 0:
        raise GGUFValidationError(f"rope.freq_base = {rope_base} / layer_norm_rms_epsilon = {rms_eps} out of range")
    return _HParams(layers=layers, loops=loops, hidden=hidden, ffn=positive("feed_forward_length"), heads=heads,
                    heads_kv=heads_kv, head_dim=head_dim, ctx_train=positive("context_length"),
                    rope_base=rope_base, rms_eps=rms_eps)


def expected_tensor_shapes(hp: _HParams, vocab: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor an Ouro file must hold, with its ggml shape (ne[0] first: the input dimension)."""
    d, f = hp.hidden, hp.ffn
    q, kv = hp.heads * hp.head_dim, hp.heads_kv * hp.head_dim
    yield EMBEDDING, (d, vocab)
    yield "output_norm.weight", (d,)
    yield "output.weight", (d, vocab)
    for i in range(hp.layers):
        for norm in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            yield f"blk.{i}.{norm}.weight", (d,)
        yield f"blk.{i}.attn_q.weight", (d, q)
        yield f"blk.{i}.attn_k.weight", (d, kv)
        yield f"blk.{i}.attn_v.weight", (d, kv)
        yield f"blk.{i}.attn_output.weight", (q, d)
        yield f"blk.{i}.ffn_gate.weight", (d, f)
        yield f"blk.{i}.ffn_up.weight", (d, f)
        yield f"blk.{i}.ffn_down.weight", (f, d)


def _check_tensors(tensors: list[TensorInfo], hp: _HParams, vocab: int) -> None:
    by_name = {t.name: t for t in tensors}
    expected = dict(expected_tensor_shapes(hp, vocab))
    missing = [n for n in expected if n not in by_name]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise GGUFValidationError(f"missing tensor(s) {', '.join(missing[:3])}{more}")
    extra = [t.name for t in tensors if t.name not in expected]
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise GGUFValidationError(f"unknown tensor(s) {', '.join(extra[:3])}{more} (not part of an Ouro model)")
    for name, shape in expected.items():
        t = by_name[name]
        # ggml pads shapes with trailing 1s; a [D] tensor may be stored as [D, 1].
        got = _strip_ones(t.shape)
        if got != _strip_ones(shape):
            raise GGUFValidationError(f"tensor {name} has shape {list(t.shape)}, expected {list(shape)}")
        allowed = (NORM_TYPE,) if len(shape) == 1 else WEIGHT_TYPES
        if t.type not in allowed:
            raise GGUFValidationError(f"tensor {name} has type {t.type.name}, which cannot be used for this weight")


def _strip_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    s = list(shape)
    while len(s) > 1 and s[-1] == 1:
        s.pop()
    return tuple(s)


def _check_tokenizer(meta: _Meta) -> list[str]:
    model = meta.string("tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFValidationError(f"tokenizer.ggml.model is {model!r}; Ouro uses SmolLM's byte-level BPE ('gpt2')")
    pre = meta.string("tokenizer.ggml.pre", required=False)
    if pre is not None and pre != PRE_TOKENIZER:
        raise GGUFValidationError(f"tokenizer.ggml.pre is {pre!r}; Ouro's tokenizer is SmolLM2's ({PRE_TOKENIZER!r})")
    tokens = meta.array("tokenizer.ggml.tokens", (ValueType.STRING,))
    if not tokens:
        raise GGUFValidationError("tokenizer.ggml.tokens is empty")
    # llama.cpp asserts (aborting the process) when two ids share a text; it renames empty tokens first.
    seen: set[str] = set()
    for i, tok in enumerate(tokens):
        text = tok or f"[EMPTY_{i}]"
        if text in seen:
            raise GGUFValidationError(f"tokenizer.ggml.tokens holds {text!r} twice (second at id {i})")
        seen.add(text)
    n = len(tokens)
    for key, types in (("token_type", (ValueType.INT32,)), ("scores", (ValueType.FLOAT32, ValueType.INT32))):
        arr = meta.array(f"tokenizer.ggml.{key}", types, required=False)
        if arr is not None and len(arr) < n:
            raise GGUFValidationError(f"tokenizer.ggml.{key} has {len(arr)} entries for {n} tokens")
    if meta.array("tokenizer.ggml.merges", (ValueType.STRING,)) is None:
        raise GGUFValidationError("tokenizer.ggml.merges is missing")
    return tokens


def _check_chat_template(template: str) -> None:
    """The template must parse as Jinja: llama-cpp-python compiles it when the model loads."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ImmutableSandboxedEnvironment().parse(template)
    except TemplateSyntaxError as e:
        raise GGUFValidationError(f"tokenizer.chat_template is not valid Jinja (line {e.lineno}: {e.message})") from None
    except (RecursionError, MemoryError):
        raise GGUFValidationError("tokenizer.chat_template is too deeply nested to parse") from None


def _type_sizes(tensors: list[TensorInfo]) -> tuple[TensorTypeSize, ...]:
    acc: dict[str, list[int]] = {}
    for t in tensors:
        entry = acc.setdefault(t.type.name, [0, 0])
        entry[0] += 1
        entry[1] += t.nbytes
    return tuple(sorted((TensorTypeSize(k, c, b) for k, (c, b) in acc.items()), key=lambda s: -s.nbytes))


def _matrices(tensors: list[TensorInfo]) -> tuple[Matrices, ...]:
    acc: dict[tuple[str, int, int], list[int]] = {}
    for t in tensors:
        shape = _strip_ones(t.shape)
        if len(shape) == 2 and t.name != EMBEDDING:
            entry = acc.setdefault((t.type.name, shape[1], shape[0]), [0, 0])
            entry[0] += 1
            entry[1] += t.nbytes
    return tuple(sorted((Matrices(k, rows, cols, c, b) for (k, rows, cols), (c, b) in acc.items()),
                        key=lambda m: -m.nbytes))


def _sampling(meta: _Meta) -> dict[str, float]:
    out = {}
    for key, f in meta.fields.items():
        if key.startswith("general.sampling.") and f.type in (ValueType.FLOAT32, *_INT_TYPES):
            out[key.removeprefix("general.sampling.")] = f.value
    return out
