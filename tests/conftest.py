"""Shared fixtures: tiny Ouro models and checkpoints the tests make themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_config_dict() -> dict:
    return dict(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, head_dim=8, rope_theta=10000.0,
        rms_norm_eps=1e-6, max_position_embeddings=512, total_ut_steps=4, early_exit_threshold=1.0,
    )


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """Factory: a tiny random checkpoint converted to GGUF, cached per parameter set.

    Returns (checkpoint_dir, gguf_path)."""
    import io

    from rich.console import Console

    from convert.convert import convert_checkpoint
    from models.synthetic import write_checkpoint

    made: dict[tuple, tuple[Path, Path]] = {}

    def make(*, loops: int = 4, layers: int = 2, gate_bias: float = 0.0, qtype: str = "f32", seed: int = 0):
        key = (loops, layers, gate_bias, qtype, seed)
        if key not in made:
            root = tmp_path_factory.mktemp("tiny")
            ckpt = write_checkpoint(root / "ckpt", "tiny", loops=loops, layers=layers, seed=seed,
                                    gate_bias=gate_bias)
            gguf = convert_checkpoint(ckpt, root / f"tiny-{qtype}.gguf", qtype,
                                      console=Console(file=io.StringIO()))
            made[key] = (ckpt, gguf)
        return made[key]

    return make
