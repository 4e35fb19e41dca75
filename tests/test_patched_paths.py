"""Every C++ path the patches add, at the shapes where an out-of-bounds access or a race would hide (issue 20).

The parity tests check numbers on F32/F16 files; a kernel reading past a buffer can still give plausible
numbers there. These tests drive each patched path over the inputs that reach its edges, so that
scripts/sanitize.sh (ASan + UBSan) sees them, and check results that stay exact whatever the path:
- the skip runner (0004) against select mode at threshold 1 and the KV layer reuse (0003), at every loop
  count, on Q8_0, Q4_0 and Q4_K_M files (0007's repacked gemv; 0006's prefetching dot products);
- 0005's one-token flash attention over caches whose length is not a multiple of its key block, F16, Q8_0
  and F32 caches, 1-4 threads (the even split gives every thread a different, odd-sized range), against
  llama.cpp's own non-flash path;
- the threaded paths repeated: the same thread count must give the same bits every time (a race changes
  them now and then), and other thread counts the same numbers up to summation order.
  OURO_STRESS_REPEAT raises the repetitions for a stress run (README, "Sanitizers").
"""

from __future__ import annotations

import io
import os

import llama_cpp
import numpy as np
import pytest
from rich.console import Console

from convert.convert import convert_checkpoint
from convert_support import write_wide_checkpoint
from llama_support import greedy_run
from models.synthetic import write_checkpoint
from runtime import control

BLOCK = 32  # 0005's key block (GGML_FA_DECODE_KV in ggml-cpu/common.h); its row step is 4
REPEAT = int(os.environ.get("OURO_STRESS_REPEAT", "3"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Factory: the tiny model in a tensor type, or its 256-wide copy (head 64): K-quant blocks are 256 wide,
    so a wide Q4_K_M file's matrices really are Q4_K and go through the repacked gemv, and a Q8_0 KV cache
    needs heads of at least one 32-value block."""
    root = tmp_path_factory.mktemp("converted")
    tiny = write_checkpoint(root / "tiny", "tiny", loops=4, layers=2, gate_bias=0.0)
    made = {}

    def make(qtype: str, *, wide: bool = False):
        if (qtype, wide) not in made:
            src = tiny
            if wide:
                src = root / "wide"
                if not src.exists():
                    write_wide_checkpoint(tiny, src)
            out = root / f"{'wide' if wide else 'tiny'}-{qtype}.gguf"
            made[qtype, wide] = convert_checkpoint(src, out, qtype, console=Console(file=io.StringIO()))
        return made[qtype, wide]

    return make


def load(path, **kw) -> llama_cpp.Llama:
    kw.setdefault("n_ctx", 256)
    return llama_cpp.Llama(str(path), logits_all=True, verbose=False, **kw)


def ids(n: int, seed: int, vocab: int = 512) -> list[int]:
    return np.random.default_rng(seed).integers(17, vocab, n).tolist()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def exit_run(path, *, loops: int, share: bool, mode: str, threshold: float, threads: int = 2):
    """A prompt, then one-token steps with the given exit; all logits and each step's loop count."""
    llm = load(path, n_threads=threads, flash_attn=True,
               kv_overrides={"ouro.num_loops": loops, "ouro.kv_share": share})
    control.set_exit(llm, mode=mode, threshold=threshold)
    llm.eval(ids(13, loops))
    used = []
    for _ in range(6):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        used += control.last_loops(llm)
    scores = np.array(llm.scores[: llm.n_tokens])
    llm.close()
    return scores, used


@pytest.mark.parametrize("share", [False, True], ids=["full-kv", "shared-kv"])
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_k_m"])
def test_skip_runner_at_every_loop_count_on_quantized_files(converted, qtype, share):
    path = converted(qtype, wide=qtype == "q4_k_m")
    for loops in (1, 2, 3, 4):
        select, select_loops = exit_run(path, loops=loops, share=share, mode="select", threshold=1.0)
        skip, skip_loops = exit_run(path, loops=loops, share=share, mode="skip", threshold=1.0)
        # all loops run either way: the skip runner's node ranges compute exactly the select graph
        assert select_loops == skip_loops == [loops] * 6
        assert rel(skip, select) <= 1e-6
        # exiting early: the host-side gate read-out, the back-fill of the skipped loops' KV
        early, early_loops = exit_run(path, loops=loops, share=share, mode="skip", threshold=0.5)
        assert np.isfinite(early).all() and all(1 <= n <= loops for n in early_loops)


def attention_decode(path, *, prompt: int, threads: int, flash: bool, cache_type: int) -> np.ndarray:
    """Every position's logits of a prompt and 7 one-token steps (cache lengths prompt+1 .. prompt+7)."""
    llm = load(path, n_threads=threads, flash_attn=flash, type_k=cache_type, type_v=cache_type)
    _, scores = greedy_run(llm, ids(prompt, prompt), 7)
    llm.close()
    return scores


# (cache type, tolerance against llama.cpp's non-flash path over the same cache type; Q8_0 V needs flash
# attention, so a Q8_0 cache is compared with the non-flash F16 cache, and differs by its quantization).
# Measured: 5-7e-4 (F32, F16), 4e-3 (Q8_0) at every thread count.
CACHES = {"f32": (llama_cpp.GGML_TYPE_F32, 2e-3), "f16": (llama_cpp.GGML_TYPE_F16, 2e-3),
          "q8_0": (llama_cpp.GGML_TYPE_Q8_0, 1e-2)}


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("cache", list(CACHES))
def test_one_token_flash_attention_at_contexts_off_the_block_size(converted, cache, threads):
    gguf = converted("f16", wide=True)
    cache_type, tolerance = CACHES[cache]
    # 3*BLOCK+5: the steps see 98..104 keys, every one a partial last block (104 = 3.25 blocks)
    prompt = 3 * BLOCK + 5
    flash = attention_decode(gguf, prompt=prompt, threads=threads, flash=True, cache_type=cache_type)
    plain_type = llama_cpp.GGML_TYPE_F16 if cache == "q8_0" else cache_type
    plain = attention_decode(gguf, prompt=prompt, threads=1, flash=False, cache_type=plain_type)
    steps = slice(prompt, None)
    assert rel(flash[steps], plain[steps]) <= tolerance
    assert flash[steps].argmax(-1).tolist() == plain[steps].argmax(-1).tolist()


@pytest.mark.parametrize("threads", [2, 4])
def test_threaded_paths_give_the_same_bits_every_run(tiny_gguf, threads):
    _, gguf = tiny_gguf(loops=4, layers=2)
    # the skip runner exiting at varying loops, over a cache long enough for 0005 to split it between threads
    first, first_loops = exit_run(gguf, loops=4, share=False, mode="skip", threshold=0.5, threads=threads)
    for _ in range(REPEAT):
        again, again_loops = exit_run(gguf, loops=4, share=False, mode="skip", threshold=0.5, threads=threads)
        assert again_loops == first_loops and np.array_equal(again, first)
    one, one_loops = exit_run(gguf, loops=4, share=False, mode="skip", threshold=0.5, threads=1)
    assert one_loops == first_loops and rel(first, one) <= 1e-5

    long = attention_decode(gguf, prompt=5 * BLOCK + 11, threads=threads, flash=True, cache_type=llama_cpp.GGML_TYPE_F16)
    for _ in range(REPEAT):
        assert np.array_equal(attention_decode(gguf, prompt=5 * BLOCK + 11, threads=threads, flash=True,
                                               cache_type=llama_cpp.GGML_TYPE_F16), long)
