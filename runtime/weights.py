"""How llama.cpp will hold a file's weights: mmapped file pages or read into memory, repacked or not.

At load, llama.cpp's CPU backend places every matrix its kernels can use in a rearranged layout in an
"extra" buffer type (ggml-cpu's CPU_REPACK, or AMX), copying it there from the file; the rest it uses where
it lies. With mmap (llama-cpp-python's default) the mapping is populated whole (MAP_POPULATE) and only
its ends beyond the first and last tensor used in place are unmapped, so the pages a repacked matrix came
from stay resident beside its copy: a Q4_K_M file of the 1.4B shape peaked at 1.73 GB instead of 1.17 GB.
Releasing those pages after each repack (madvise in llama-model-loader's load loop) would need a C++
change, and doing it from Python after the load returns cannot lower the peak, which is reached during
the load. So the "auto" policy reads the file into memory (use_mmap=False) when this CPU backend repacks
any of its matrices — llama.cpp then stages each repacked matrix through one temporary buffer, largest
first, and the peak is the weights once — and mmaps it otherwise (nothing held twice, a faster load, and
pages shared between processes).

Which matrices get repacked is decided here from the file's matrices (type, rows, row length) and the
features the loaded CPU backend reports (`llama_print_system_info`; ggml decides at compile time, so these
are the build's, i.e. the CPU variant's): the rules below restate, for the llama.cpp in llama-cpp-python
0.3.36, `ggml_repack_get_optimal_repack_type` (ggml-cpu/repack.cpp) and the AMX buffer's `supports_op`
(ggml-cpu/amx/amx.cpp). The token embedding is never a candidate: llama.cpp picks a buffer by the op a
tensor feeds, and it feeds GET_ROWS, which no extra buffer type takes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.errors import OuroRuntimeError
from runtime.settings import MMAP_MODES
from runtime.validate import GGUFSummary, Matrices


@dataclass(frozen=True)
class CpuBackend:
    """The loaded ggml CPU backend's features, as `llama_print_system_info` names them ("AVX2", "NEON",
    "REPACK", ...), with the two that carry a number: SVE_CNT (SVE vector bytes), RVV_VLEN (RVV bytes)."""

    features: frozenset[str]
    sve_cnt: int = 0
    rvv_vlen: int = 0

    @classmethod
    def parse(cls, system_info: str) -> CpuBackend:
        """From `llama_print_system_info()`: "CPU : SSE3 = 1 | AVX2 = 1 | ... | REPACK = 1 | "."""
        cpu = system_info.split("CPU :", 1)[1] if "CPU :" in system_info else system_info
        values = {}
        for item in cpu.split("|"):
            name, _, value = item.partition("=")
            if value.strip():
                values[name.strip()] = value.strip()
        numbers = {k: int(values.pop(k)) for k in ("SVE_CNT", "RVV_VLEN") if values.get(k, "").isdigit()}
        return cls(frozenset(k for k, v in values.items() if v == "1"),
                   sve_cnt=numbers.get("SVE_CNT", 0), rvv_vlen=numbers.get("RVV_VLEN", 0))

    def __str__(self) -> str:
        shown = [f for f in ("AVX2", "AVX512", "AMX_INT8", "NEON", "DOTPROD", "MATMUL_INT8", "SVE", "RISCV_V")
                 if f in self.features]
        return "+".join(shown) or "no SIMD"


@functools.lru_cache(maxsize=1)
def runtime_backend() -> CpuBackend | None:
    """The installed runtime's CPU backend; None when llama-cpp-python is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return CpuBackend.parse(llama_cpp.llama_print_system_info().decode(errors="replace"))


# ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type: per weight type, the (features, row multiple)
# of each layout it tries in order. A layout whose features the backend has but whose row multiple the
# matrix misses falls through to the next, so a matrix is repacked when any entry matches.
_SVE_256 = "SVE_256"   # SVE with MATMUL_INT8 and 32-byte vectors (ggml_cpu_get_sve_cnt() == QK8_0)
_RVV_256 = "RVV_256"   # RISC-V vectors of 256 bits: the 16x1 layouts (built with zvfh, which the features
                       # do not report: assumed, which can only make "auto" read a file it could have mapped)
_REPACK_RULES: dict[str, tuple[tuple[frozenset[str], int], ...]] = {
    "Q4_0": ((frozenset({"AVX2"}), 8), (frozenset({_SVE_256}), 8), (frozenset({"NEON", "MATMUL_INT8"}), 4),
             (frozenset({"NEON", "DOTPROD"}), 4), (frozenset({"VXE"}), 4), (frozenset({_RVV_256}), 16)),
    "Q4_K": ((frozenset({"AVX2"}), 8), (frozenset({"NEON", "MATMUL_INT8"}), 8), (frozenset({"NEON", "DOTPROD"}), 8),
             (frozenset({_RVV_256}), 16)),
    "Q2_K": ((frozenset({"AVX512"}), 8), (frozenset({_RVV_256}), 16)),
    "Q5_K": ((frozenset({"NEON", "MATMUL_INT8"}), 8), (frozenset({"NEON", "DOTPROD"}), 8)),
    "Q6_K": ((frozenset({"NEON", "MATMUL_INT8"}), 8), (frozenset({"NEON", "DOTPROD"}), 8)),
    "IQ4_NL": ((frozenset({"AVX2"}), 8), (frozenset({"NEON", "DOTPROD"}), 4), (frozenset({_RVV_256}), 16)),
    "MXFP4": ((frozenset({"AVX2"}), 8), (frozenset({"NEON", "DOTPROD"}), 4)),
    "Q8_0": ((frozenset({"NEON", "MATMUL_INT8"}), 4), (frozenset({"NEON", "DOTPROD"}), 4), (frozenset({_RVV_256}), 16)),
}
# ggml-cpu/amx/amx.cpp (built with AMX_INT8 and AVX512_VNNI): these types, row length a multiple of the
# value, rows a multiple of 32 (2 x TILE_N). It comes before CPU_REPACK in the buffer list. F16 has no AMX
# kernel but is still copied into the AMX buffer, so its file pages are held twice all the same.
_AMX_ROW_LENGTH = {"Q4_0": 32, "Q4_1": 32, "Q8_0": 32, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "IQ4_XS": 256,
                   "F16": 16}


def _features(backend: CpuBackend) -> frozenset[str]:
    derived = set()
    if {"SVE", "MATMUL_INT8"} <= backend.features and backend.sve_cnt == 32:
        derived.add(_SVE_256)
    if "RISCV_V" in backend.features and backend.rvv_vlen == 32:
        derived.add(_RVV_256)
    return backend.features | derived


def extra_buffer(m: Matrices, backend: CpuBackend) -> str | None:
    """The extra buffer type llama.cpp puts matrices of this type and shape in ("AMX", "CPU_REPACK"), or None
    when they are used in place (mmapped) or in the plain CPU buffer."""
    features = _features(backend)
    if {"AMX_INT8", "AVX512_VNNI"} <= features and m.type in _AMX_ROW_LENGTH:
        if m.cols % _AMX_ROW_LENGTH[m.type] == 0 and m.rows % 32 == 0:
            return "AMX"
    if "REPACK" in features and any(need <= features and m.rows % multiple == 0
                                    for need, multiple in _REPACK_RULES.get(m.type, ())):
        return "CPU_REPACK"
    return None


def repacked_bytes(matrices: Iterable[Matrices], backend: CpuBackend) -> int:
    return sum(m.nbytes for m in matrices if extra_buffer(m, backend) is not None)


@dataclass(frozen=True)
class WeightHolding:
    """How the weights will be held. `extra`: bytes resident on top of one copy of the tensors."""

    mmap: bool
    repacked: int            # bytes of matrices copied into a repacked layout at load
    extra: int
    backend: str             # the CPU backend it was decided for ("unknown": runtime not installed)

    def describe(self) -> str:
        how = "mmapped file pages" if self.mmap else "read into memory"
        if self.backend == "unknown":
            return f"{how} (the CPU backend is unknown: is the runtime installed?)"
        if not self.repacked:
            return f"{how}, none repacked for {self.backend}"
        twice = ", whose file pages stay resident beside the copy" if self.mmap else ""
        return f"{how}, {self.repacked / 2**20:.0f} MiB repacked at load for {self.backend}{twice}"


def hold_weights(s: GGUFSummary, mmap: str, backend: CpuBackend | None) -> WeightHolding:
    """How `s`'s weights are held with the mmap setting `mmap` on `backend` (None: unknown).

    "auto": read them when any matrix is repacked (mmap would keep its file pages resident as well),
    mmap otherwise. With mmap the whole file is faulted in, the metadata too.
    """
    if mmap not in MMAP_MODES:
        raise OuroRuntimeError(f"mmap must be one of {', '.join(MMAP_MODES)}, got {mmap!r}")
    repacked = repacked_bytes(s.matrices, backend) if backend is not None else 0
    use_mmap = mmap == "on" or (mmap == "auto" and not repacked)
    extra = (s.file_size - s.tensor_bytes + repacked) if use_mmap else 0
    return WeightHolding(use_mmap, repacked, extra, str(backend) if backend is not None else "unknown")
