"""Random-weight Ouro checkpoints in the exact published HF layout.

No machine of this project can download the real checkpoints, so every test and benchmark runs on
files made here: the same config.json keys, the same 11·L+5 tensors with the same names, shapes and
dtype, the same safetensors byte layout (so a full-shape preset has exactly the published file
size), and a SmolLM2-shaped tokenizer. Only the weights are random.

    python -m models.synthetic OUTDIR --preset 1.4b [--loops N] [--layers N] [--seed N]
                                      [--gate-bias B] [--dtype bf16|f16|f32]
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from models.tokenizer import TokenizerError, build_tokenizer, write_json, write_tokenizer_files

__all__ = [
    "PRESETS",
    "CheckpointError",
    "safetensors_header",
    "safetensors_layout",
    "tensor_shapes",
    "write_checkpoint",
]


class CheckpointError(ValueError):
    """A checkpoint cannot be made as asked."""


def _ouro_config(
    *,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    vocab: int,
    loops: int,
    max_positions: int,
) -> dict:
    """config.json as the published checkpoints have it, keys in their (alphabetical) order."""
    return {
        "architectures": ["OuroForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_ouro.OuroConfig",
            "AutoModel": "modeling_ouro.OuroModel",
            "AutoModelForCausalLM": "modeling_ouro.OuroForCausalLM",
        },
        "bos_token_id": 0,
        "early_exit_threshold": 1.0,
        "eos_token_id": 0,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "layer_types": ["full_attention"] * layers,
        "max_position_embeddings": max_positions,
        "max_window_layers": layers,
        "model_type": "ouro",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "total_ut_steps": loops,
        "transformers_version": "4.55.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab,
    }


_FULL_SHAPE = dict(hidden=2048, intermediate=5632, heads=16, kv_heads=16, head_dim=128, vocab=49152, loops=4,
                   max_positions=65536)

PRESETS: dict[str, dict] = {
    "tiny": _ouro_config(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=4, head_dim=16, vocab=512,
                         loops=4, max_positions=4096),
    "1.4b": _ouro_config(layers=24, **_FULL_SHAPE),
    "2.6b": _ouro_config(layers=48, **_FULL_SHAPE),
    "1.4b-thinking": _ouro_config(layers=24, **_FULL_SHAPE),
    "2.6b-thinking": _ouro_config(layers=48, **_FULL_SHAPE),
}

# The paper's sampling for the reasoning models; base models decode greedily (HF's default).
_THINKING_SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.7}

# name -> (safetensors dtype tag, bytes per element, config torch_dtype)
_DTYPES: dict[str, tuple[str, int, str]] = {
    "bf16": ("BF16", 2, "bfloat16"),
    "f16": ("F16", 2, "float16"),
    "f32": ("F32", 4, "float32"),
}

# The gate's default bias: λ ≈ 0.5 per loop, so exits spread over the loops token by token.
DEFAULT_GATE_BIAS = 0.0

# A few lines to train the tokenizer on; the byte fallback covers everything else.
_TOKENIZER_CORPUS = [
    "The quick brown fox jumps over the lazy dog, and the dog sleeps in the warm afternoon sun.",
    "Looped language models apply the same stack of layers again and again before they answer.",
    "Each loop refines the hidden state; an exit gate decides when the answer is good enough.",
    "What is the capital of France? The capital of France is Paris, a city on the Seine.",
    "Solve 12 + 35 = 47, then 47 * 3 = 141, so the answer is 141.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < count; i++) { total += values[i]; }",
    "<think>\nThe user asks for a short answer. Let me think step by step.\n</think>\nHere it is.",
    "Il était une fois une petite ville où les gens aimaient lire des livres le soir.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "机器学习模型在很多任务上表现很好。",
    "Thank you! 🙂 Let me know if there is anything else I can help with.",
] * 8


def _num_layers(config: dict) -> int:
    return int(config["num_hidden_layers"])


def tensor_shapes(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """The 11·L+5 HF tensors of an Ouro checkpoint, sorted by name as they sit in the file."""
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q_rows = config["num_attention_heads"] * config["head_dim"]
    kv_rows = config["num_key_value_heads"] * config["head_dim"]
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("model.embed_tokens.weight", (v, d)),
        ("model.norm.weight", (d,)),
        ("model.early_exit_gate.weight", (1, d)),
        ("model.early_exit_gate.bias", (1,)),
        ("lm_head.weight", (v, d)),
    ]
    for i in range(_num_layers(config)):
        p = f"model.layers.{i}."
        shapes += [
            (p + "self_attn.q_proj.weight", (q_rows, d)),
            (p + "self_attn.k_proj.weight", (kv_rows, d)),
            (p + "self_attn.v_proj.weight", (kv_rows, d)),
            (p + "self_attn.o_proj.weight", (d, q_rows)),
            (p + "mlp.gate_proj.weight", (f, d)),
            (p + "mlp.up_proj.weight", (f, d)),
            (p + "mlp.down_proj.weight", (d, f)),
            (p + "input_layernorm.weight", (d,)),
            (p + "input_layernorm_2.weight", (d,)),
            (p + "post_attention_layernorm.weight", (d,)),
            (p + "post_attention_layernorm_2.weight", (d,)),
        ]
    return sorted(shapes)


def _check_dtype(dtype: str) -> tuple[str, int, str]:
    if dtype not in _DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def safetensors_header(shapes: list[tuple[str, tuple[int, ...]]], dtype: str = "bf16") -> bytes:
    """The header bytes the safetensors library writes for these tensors (one dtype, sorted names).

    Compact JSON, tensors in file order with dtype/shape/data_offsets, no __metadata__, padded
    with spaces to a multiple of 8 so the data that follows the 8-byte length stays aligned.
    """
    tag, itemsize, _ = _check_dtype(dtype)
    entries: dict[str, dict] = {}
    offset = 0
    for name, shape in shapes:
        size = math.prod(shape) * itemsize
        entries[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps(entries, separators=(",", ":")).encode()
    return header + b" " * (-len(header) % 8)


def safetensors_layout(config: dict, dtype: str = "bf16") -> tuple[int, int]:
    """(header length N as stored in the first 8 bytes, total file size 8 + N + data)."""
    _, itemsize, _ = _check_dtype(dtype)
    shapes = tensor_shapes(config)
    header = safetensors_header(shapes, dtype)
    data = sum(math.prod(shape) for _, shape in shapes) * itemsize
    return len(header), 8 + len(header) + data


def _to_bf16(x: np.ndarray) -> np.ndarray:
    """fp32 -> bf16 bits (uint16), round to nearest even, as torch does for finite values."""
    bits = x.astype(np.float32, copy=False).view(np.uint32)
    bits += np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (bits >> np.uint32(16)).astype("<u2")


def _encode(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bf16":
        return _to_bf16(x)
    return x.astype("<f2" if dtype == "f16" else "<f4")


_CHUNK_ELEMENTS = 1 << 23  # 32 MiB of fp32 at a time: a 5 GB model never sits in memory


def _init_chunks(name: str, shape: tuple[int, ...], seed: int, gate_bias: float) -> Iterator[np.ndarray]:
    """The tensor's fp32 values, row block by row block.

    Every tensor draws from its own stream, keyed by (seed, name): a layer's weights do not change
    when --layers changes. Scales keep activations near unit RMS at any width: projections have
    std 1/sqrt(fan_in) (0.022 at hidden 2048, the real initializer_range), embeddings unit std,
    norm weights 1 with a little noise, and the gate weight small enough that the logit noise is
    about ±0.5, so --gate-bias alone sets how early the gate fires (+4: λ ≈ 0.98 from loop 0).
    """
    if name == "model.early_exit_gate.bias":
        yield np.full(shape, gate_bias, dtype=np.float32)
        return
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())])))
    if name.endswith("norm.weight") or "layernorm" in name:
        yield np.float32(1.0) + np.float32(0.05) * rng.standard_normal(shape, dtype=np.float32)
        return
    if name == "model.embed_tokens.weight":
        std = 1.0
    elif name == "model.early_exit_gate.weight":
        std = 0.5 / math.sqrt(shape[1])
    else:
        std = 1.0 / math.sqrt(shape[1])
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // shape[1])
    for start in range(0, shape[0], rows_per_chunk):
        rows = min(rows_per_chunk, shape[0] - start)
        chunk = rng.standard_normal((rows, shape[1]), dtype=np.float32)
        chunk *= np.float32(std)
        yield chunk


def _write_safetensors(
    f: BinaryIO, config: dict, *, seed: int, gate_bias: float, dtype: str, advance: Callable[[int], None]
) -> None:
    shapes = tensor_shapes(config)
    header = safetensors_header(shapes, dtype)
    f.write(len(header).to_bytes(8, "little"))
    f.write(header)
    for name, shape in shapes:
        for chunk in _init_chunks(name, shape, seed, gate_bias):
            data = _encode(chunk, dtype)
            f.write(data.tobytes())
            advance(data.nbytes)


def _resolve_config(preset: str, loops: int | None, layers: int | None, dtype: str) -> dict:
    if preset not in PRESETS:
        raise CheckpointError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = json.loads(json.dumps(PRESETS[preset]))  # deep copy: PRESETS stays pristine
    if loops is not None:
        if loops < 1:
            raise CheckpointError(f"--loops must be at least 1, got {loops}")
        config["total_ut_steps"] = loops
    if layers is not None:
        if layers < 1:
            raise CheckpointError(f"--layers must be at least 1, got {layers}")
        config.update(num_hidden_layers=layers, max_window_layers=layers, layer_types=["full_attention"] * layers)
    config["torch_dtype"] = _check_dtype(dtype)[2]
    return config


def _generation_config(config: dict, thinking: bool) -> dict:
    return {
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        **(_THINKING_SAMPLING if thinking else {}),
        "transformers_version": config["transformers_version"],
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(staging: Path, outdir: Path) -> None:
    """Move a fully written staging directory into place."""
    if not outdir.exists():
        os.replace(staging, outdir)
        return
    for item in staging.iterdir():
        os.replace(item, outdir / item.name)
    staging.rmdir()


def write_checkpoint(
    outdir: str | os.PathLike[str],
    preset: str = "tiny",
    *,
    loops: int | None = None,
    layers: int | None = None,
    seed: int = 0,
    gate_bias: float | None = None,
    dtype: str = "bf16",
    show_progress: bool = False,
) -> Path:
    """Write config.json, model.safetensors, generation_config.json and the tokenizer files.

    Everything is written into a staging directory beside `outdir` and moved into place at the end,
    so a failure leaves no half-written checkpoint behind.
    """
    config = _resolve_config(preset, loops, layers, dtype)
    thinking = preset.endswith("-thinking")
    bias = DEFAULT_GATE_BIAS if gate_bias is None else float(gate_bias)
    if not math.isfinite(bias):
        raise CheckpointError(f"--gate-bias must be finite, got {gate_bias}")
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the checkpoint should not be
        write_json(staging / "config.json", config)
        write_json(staging / "generation_config.json", _generation_config(config, thinking))
        write_tokenizer_files(build_tokenizer(_TOKENIZER_CORPUS, config["vocab_size"]), staging, thinking=thinking)
        total = safetensors_layout(config, dtype)[1]
        with open(staging / "model.safetensors", "wb") as f, Progress(
            TextColumn("model.safetensors"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not show_progress,
            transient=True,
        ) as progress:
            task = progress.add_task("write", total=total)
            _write_safetensors(
                f, config, seed=seed, gate_bias=bias, dtype=dtype, advance=lambda n: progress.advance(task, n)
            )
        written = (staging / "model.safetensors").stat().st_size
        if written != total:
            raise CheckpointError(f"model.safetensors has {written} bytes, expected {total}")
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def main(
    outdir: Annotated[Path, typer.Argument(help="Directory to write the checkpoint into.")],
    preset: Annotated[str, typer.Option(help=f"One of: {', '.join(PRESETS)}.")] = "tiny",
    loops: Annotated[int | None, typer.Option(help="Override total_ut_steps (T).")] = None,
    layers: Annotated[int | None, typer.Option(help="Override num_hidden_layers (L).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
    gate_bias: Annotated[
        float | None, typer.Option(help=f"Exit gate bias (default {DEFAULT_GATE_BIAS}); +4 exits after loop 0.")
    ] = None,
    dtype: Annotated[str, typer.Option(help="Tensor dtype: bf16 (published), f16 or f32.")] = "bf16",
) -> None:
    """Write a random-weight Ouro checkpoint in the published HF layout."""
    try:
        path = write_checkpoint(
            outdir, preset, loops=loops, layers=layers, seed=seed, gate_bias=gate_bias, dtype=dtype,
            show_progress=True,
        )
    except (CheckpointError, TokenizerError, OSError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    Console(stderr=True).print(f"wrote {path}")


if __name__ == "__main__":
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(main)
    sys.exit(app())
