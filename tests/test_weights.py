"""runtime.weights: which matrices llama.cpp's CPU backend repacks, and the mmap policy that follows.

The decisions are checked against CPU backend descriptions (what `llama_print_system_info` prints) for
the 1.4B's matrices as a Q8_0 and a Q4_K_M file hold them; one test loads a small Q4_0 file both ways on
this machine and compares the logits.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from runtime.errors import OuroRuntimeError
from runtime.settings import Settings
from runtime.validate import Matrices, validate_gguf
from runtime.weights import CpuBackend, extra_buffer, hold_weights, runtime_backend

# As the portable wheel's libllama prints it (toolchain/inputs.py's flag set).
AVX2 = CpuBackend.parse("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
                        "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
AVX512 = CpuBackend(AVX2.features | {"AVX512", "AVX512_VNNI", "AVX512_BF16"})
AMX = CpuBackend(AVX512.features | {"AMX_INT8"})
PHONE = CpuBackend.parse("CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | OPENMP = 1 | REPACK = 1 | ")
NO_REPACK = CpuBackend(AVX2.features - {"REPACK"})

D, F, V = 2048, 5632, 49152  # the 1.4B: hidden, FFN, vocabulary; 24 layers


def shapes(attn: str, ffn_down: str, ffn: str, head: str) -> tuple[Matrices, ...]:
    """The 1.4B's matrices (token embedding excluded), sized as ggml stores the given types."""
    row_bytes = {"Q8_0": 34 / 32, "Q4_K": 144 / 256, "Q6_K": 210 / 256, "Q4_0": 18 / 32}

    def m(t: str, rows: int, cols: int, count: int) -> Matrices:
        return Matrices(t, rows, cols, count, int(rows * cols * row_bytes[t]) * count)

    return (m(attn, D, D, 4 * 24), m(ffn, F, D, 2 * 24), m(ffn_down, D, F, 24), m(head, V, D, 1))


Q8_0_FILE = shapes("Q8_0", "Q8_0", "Q8_0", "Q8_0")
# llama-quantize's Q4_K_M keeps some ffn_down (and attn_v) in Q6_K and the head in Q6_K.
Q4_K_M_FILE = shapes("Q4_K", "Q6_K", "Q4_K", "Q6_K")
METADATA = 3 << 20


@pytest.fixture(scope="module")
def summary(tiny_gguf):
    """A real summary to carry the matrices under test (only matrices, file and tensor bytes are read)."""
    return validate_gguf(tiny_gguf(qtype="q8_0")[1])


def file_with(summary, matrices: tuple[Matrices, ...]):
    tensor_bytes = sum(m.nbytes for m in matrices)
    return dataclasses.replace(summary, matrices=matrices, tensor_bytes=tensor_bytes,
                               file_size=tensor_bytes + METADATA)


def test_the_backend_description_is_parsed_from_system_info():
    assert {"AVX2", "REPACK"} <= AVX2.features and "SSE3" in AVX2.features
    assert str(AVX2) == "AVX2" and str(PHONE) == "NEON+DOTPROD"
    sve = CpuBackend.parse("CPU : NEON = 1 | SVE = 1 | MATMUL_INT8 = 1 | SVE_CNT = 32 | REPACK = 1 | ")
    assert sve.sve_cnt == 32 and "SVE_CNT" not in sve.features
    here = runtime_backend()
    assert here is None or "REPACK" in here.features  # the toolchain builds ggml-cpu with repacking


def test_avx2_maps_a_q8_0_file_and_reads_a_q4_k_m_file(summary):
    q8 = hold_weights(file_with(summary, Q8_0_FILE), "auto", AVX2)
    assert (q8.mmap, q8.repacked, q8.extra) == (True, 0, METADATA)  # nothing repacked: only the metadata
    q4 = file_with(summary, Q4_K_M_FILE)
    held = hold_weights(q4, "auto", AVX2)
    q4_k = sum(m.nbytes for m in Q4_K_M_FILE if m.type == "Q4_K")  # Q6_K has no AVX2 layout
    assert (held.mmap, held.repacked, held.extra) == (False, q4_k, 0)
    assert "read into memory" in held.describe() and "AVX2" in held.describe()
    # Forcing mmap keeps the file pages of every repacked matrix resident beside its copy.
    forced = hold_weights(q4, "on", AVX2)
    assert (forced.mmap, forced.extra) == (True, METADATA + q4_k)
    assert "stay resident" in forced.describe()
    assert hold_weights(file_with(summary, Q8_0_FILE), "off", AVX2).extra == 0


def test_arm_dotprod_repacks_q8_0_and_q6_k_too(summary):
    assert not hold_weights(file_with(summary, Q8_0_FILE), "auto", PHONE).mmap
    held = hold_weights(file_with(summary, Q4_K_M_FILE), "auto", PHONE)
    assert held.repacked == sum(m.nbytes for m in Q4_K_M_FILE)


def test_no_repack_buffer_means_mmap(summary):
    held = hold_weights(file_with(summary, Q4_K_M_FILE), "auto", NO_REPACK)
    assert held.mmap and held.repacked == 0
    unknown = hold_weights(file_with(summary, Q4_K_M_FILE), "auto", None)
    assert unknown.mmap and "unknown" in unknown.describe()


def test_row_multiples_and_isa_specific_layouts():
    q4_0_12_rows = Matrices("Q4_0", 12, 64, 1, 432)
    assert extra_buffer(q4_0_12_rows, AVX2) is None            # the AVX2 layout interleaves 8 rows
    assert extra_buffer(q4_0_12_rows, PHONE) == "CPU_REPACK"   # NEON's interleaves 4
    q2_k = Matrices("Q2_K", 256, 256, 1, 21504)
    assert extra_buffer(q2_k, AVX2) is None and extra_buffer(q2_k, AVX512) == "CPU_REPACK"
    assert extra_buffer(Matrices("IQ4_NL", 8, 64, 1, 288), AVX2) == "CPU_REPACK"
    # AMX takes the 8-bit, 4-bit and K types (and F16) whose shapes fit its tiles; it comes first.
    assert extra_buffer(Matrices("Q8_0", 64, 64, 1, 4352), AMX) == "AMX"
    assert extra_buffer(Matrices("F16", 64, 64, 1, 8192), AMX) == "AMX"
    assert extra_buffer(Matrices("Q4_K", 16, 256, 1, 2304), AMX) == "CPU_REPACK"  # 16 rows: not AMX tiles
    assert extra_buffer(Matrices("F16", 64, 64, 1, 8192), AVX512) is None


def test_the_file_facts_list_every_multiplied_matrix(tiny_gguf):
    s = validate_gguf(tiny_gguf(qtype="q8_0")[1])
    assert sum(m.count for m in s.matrices) == 7 * s.layers + 1  # q, k, v, o, gate, up, down; the head
    assert all(m.cols in (s.hidden, s.ffn) for m in s.matrices)  # no token embedding (it gathers rows)
    assert sum(m.nbytes for m in s.matrices) < s.tensor_bytes


def test_settings_refuse_an_unknown_mmap_mode():
    assert Settings().mmap == "auto"
    with pytest.raises(OuroRuntimeError, match="mmap must be one of auto, on, off"):
        Settings(mmap="maybe")


def last_logits(llm) -> np.ndarray:
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
def test_the_repacked_bytes_are_what_llama_cpp_puts_in_its_repack_buffer(tiny_gguf, qtype, capfd):
    backend = runtime_backend()
    if backend is None:
        pytest.skip("needs the runtime")
    import llama_cpp

    path = tiny_gguf(qtype=qtype)[1]
    capfd.readouterr()
    llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=True).close()
    logged = re.search(r"CPU_REPACK model buffer size =\s*([0-9.]+) MiB", capfd.readouterr().err)
    predicted = hold_weights(validate_gguf(path), "auto", backend).repacked
    assert (logged is not None) == (predicted > 0)
    if logged:
        assert abs(float(logged.group(1)) - predicted / 2**20) <= 0.006  # llama.cpp prints two decimals


def test_a_repacked_file_is_read_and_computes_what_the_mapped_one_does(tiny_gguf):
    backend = runtime_backend()
    if backend is None or "AVX2" not in backend.features:
        pytest.skip("needs the runtime's AVX2 CPU backend (its Q4_0 layout)")
    from runtime import load

    path = tiny_gguf(qtype="q4_0")[1]
    logits = {}
    for mode in ("auto", "on"):
        with load(path, n_ctx=256, n_threads=1, mmap=mode) as model:
            assert model.weights_held.mmap == (mode == "on")
            assert model.weights_held.repacked > 0
            model.llama.eval([5, 17, 42, 99, 3])
            logits[mode] = last_logits(model.llama)
    assert np.isfinite(logits["on"]).all() and logits["on"].std() > 0
    np.testing.assert_array_equal(logits["auto"], logits["on"])
