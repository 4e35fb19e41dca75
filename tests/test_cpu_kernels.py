"""Patched ggml CPU kernels against llama.cpp's own plain paths on the same file.

Patch 0007 replaces the AVX2 one-token Q4_K gemv over weights repacked into interleaved rows. With
repacking turned off (`use_extra_bufts`), llama.cpp multiplies the same Q4_K bytes with its plain
`vec_dot`; both quantize the activations to the same Q8_K blocks and sum integers exactly, so only the
float summation order may differ.
"""

from __future__ import annotations

import io

import llama_cpp
import llama_cpp.llama_cpp as llama_cpp_c
import numpy as np
import pytest
from rich.console import Console

from convert.convert import convert_checkpoint
from convert_support import write_wide_checkpoint
from llama_support import greedy_run
from models.synthetic import write_checkpoint

PROMPT, DECODE_STEPS = [5, 99, 300, 41, 7, 250], 12


@pytest.fixture(scope="module")
def q4_k_m_gguf(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    src = write_wide_checkpoint(write_checkpoint(root / "tiny", "tiny"), root / "wide")
    return convert_checkpoint(src, root / "wide-q4_k_m.gguf", "q4_k_m", console=Console(file=io.StringIO()))


def decode_logits(path, monkeypatch, *, repack: bool) -> np.ndarray:
    """Prefill, then greedy one-token steps; every position's logits."""
    defaults = llama_cpp_c.llama_model_default_params

    def params():
        p = defaults()
        p.use_extra_bufts = repack
        return p

    monkeypatch.setattr(llama_cpp_c, "llama_model_default_params", params)
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=2, logits_all=True, verbose=True)
    _, scores = greedy_run(llm, PROMPT, DECODE_STEPS)
    llm.close()
    return scores


def test_repacked_q4_k_one_token_gemv_matches_the_plain_dot_product(q4_k_m_gguf, monkeypatch, capfd):
    repacked = decode_logits(q4_k_m_gguf, monkeypatch, repack=True)
    assert "CPU_REPACK" in capfd.readouterr().err  # the Q4_K weights really went through the repacked kernels
    plain = decode_logits(q4_k_m_gguf, monkeypatch, repack=False)
    assert "CPU_REPACK" not in capfd.readouterr().err

    # every position: the prompt (the repacked GEMM) and the one-token steps after it (the gemv)
    assert np.abs(repacked - plain).max() <= 1e-5 * np.abs(plain).max()
    assert repacked.argmax(-1).tolist() == plain.argmax(-1).tolist()
