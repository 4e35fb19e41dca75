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
