"""How fast ggml's CPU kernels run on this machine outside any model: the arithmetic ceiling beside the
memory roofline (issue 8).

    python -m benchmarks.kernel_ceiling [--rounds 3] [--threads 2] [--out FILE.json]

Decode streams every weight matrix once per loop through one kernel per weight type (KERNELS), then each
loop's attention reads its layer's K and V of every cached token (patch 0005's one-token flash attention).
Each is timed streaming from memory (far beyond any cache) and over ~4 MiB that stays in the L3 cache:
when both run at the same rate the kernel is bound by its arithmetic, not by memory, and decode cannot
reach a larger share of the copy bandwidth than its kernels do. The prompt pass's products are timed with
a 512-token activation. The harness (kernel_ceiling.cpp) is compiled against the installed runtime's ggml
in a temporary directory, and checks each result against float arithmetic on the same data, so that a
broken kernel cannot pass for a fast one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.results import record, save

SOURCE = Path(__file__).with_name("kernel_ceiling.cpp")
ROWS, COLS = 5632, 2048  # the 1.4B's FFN matrices (ggml: COLS is the dot-product length)
STREAMED_MATRICES = 40  # of ROWS x COLS: hundreds of MB
CACHED_BYTES = 4 << 20  # one matrix this size stays in the 8 MiB L3 of this machine's CPU
PROMPT_TOKENS = 512
MAX_RELATIVE_ERROR = 0.05  # the activation is quantized to 8 bits: ~0.5% is normal, a wrong kernel is ~100%
SIMD_FLAGS = ("avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8")
BYTES_PER_BLOCK = {"q8_0": (32, 34), "q4_K": (256, 144), "q6_K": (256, 210)}  # (weights, bytes) per block
ATTENTION = "attn_f16"
ATTENTION_LAYERS, ATTENTION_TOKENS = 8, 3072  # streamed: 8 layers of a 3,072-token F16 cache, 192 MiB


class KernelBenchError(RuntimeError):
    """The harness could not be built or run, or computed a wrong product."""


@dataclass(frozen=True)
class Kernel:
    type: str  # the harness's TYPE
    label: str
    repack: bool
    used_by: str

    @property
    def attention(self) -> bool:
        return self.type == ATTENTION

    def row_bytes(self) -> int:
        """Bytes a row reads: a weight row of COLS values, or one cached token's K and V (F16, all heads)."""
        if self.attention:
            return 2 * COLS * 2
        weights, nbytes = BYTES_PER_BLOCK[self.type]
        return COLS // weights * nbytes

    def streamed_shape(self) -> tuple[int, int]:
        """(matrices or layers, rows or cached tokens) of the streamed run."""
        return (ATTENTION_LAYERS, ATTENTION_TOKENS) if self.attention else (STREAMED_MATRICES, ROWS)

    def cached_rows(self) -> int:
        """Rows (cached tokens) of one CACHED_BYTES matrix (layer), a multiple of 64 (repacking takes rows in
        groups of 8)."""
        return max(64, CACHED_BYTES // self.row_bytes() // 64 * 64)


KERNELS = (
    Kernel("q8_0", "Q8_0", False, "Q8_0 files"),
    Kernel("q4_K", "Q4_K", True, "Q4_K_M files (most matrices)"),
    Kernel("q6_K", "Q6_K", False, "Q4_K_M files (some V/FFN-down matrices, the head)"),
    Kernel(ATTENTION, "attention, F16 KV", False, "every file: each loop's attention over the cache"),
)


@dataclass(frozen=True)
class HarnessRun:
    """One run of the harness (its JSON line)."""

    buffer: str  # CPU_REPACK when the repacked kernels ran
    weight_bytes: int  # what one pass reads
    median_seconds: float
    relative_error: float  # against float arithmetic on the same data


@dataclass
class KernelResult:
    type: str
    label: str
    buffer: str
    used_by: str
    streamed_gbps: list[float] = field(default_factory=list)
    cached_gbps: list[float] = field(default_factory=list)
    prompt_gops: list[float] = field(default_factory=list)  # none for attention: prompts take another path

    def medians(self) -> tuple[float, float, float | None]:
        """Streamed GB/s, in-L3 GB/s and prompt GOPS (None for attention)."""
        prompt = statistics.median(self.prompt_gops) if self.prompt_gops else None
        return statistics.median(self.streamed_gbps), statistics.median(self.cached_gbps), prompt


@dataclass(frozen=True)
class CpuFeatures:
    name: str
    family: str | None = None
    model: str | None = None
    simd: list[str] = field(default_factory=list)  # the SIMD_FLAGS this CPU has


@dataclass
class KernelCeiling:
    """The suite's stage (at this module's sizes)."""

    cpu: CpuFeatures
    threads: int
    rounds: int
    kernels: list[KernelResult]


def cpu_features() -> CpuFeatures:
    """The CPU's name, family/model and which of the SIMD extensions ggml's x86 kernels can use it has."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return CpuFeatures(platform.processor() or "unknown CPU")
    fields = dict(map(str.strip, line.split(":", 1)) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    flags = set(fields.get("flags", "").split())
    return CpuFeatures(fields.get("model name", platform.processor() or "unknown CPU"), fields.get("cpu family"),
                       fields.get("model"), [f for f in SIMD_FLAGS if f in flags])


def runtime_paths() -> tuple[Path, Path]:
    """(include dir, library dir) of the installed llama-cpp-python, which carry ggml's headers and libraries."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise KernelBenchError("llama_cpp is not installed: run `ouro runtime build` first")
    package = Path(spec.origin).parent
    include, lib = package.parent / "include", package / "lib"
    if not (include / "ggml-cpu.h").is_file() or not any(lib.glob("libggml-cpu.so*")):
        raise KernelBenchError(f"no ggml headers in {include} or libraries in {lib}")
    return include, lib


def build(workdir: Path) -> Path:
    """Compile the harness against the installed runtime's ggml."""
    include, lib = runtime_paths()
    binary = workdir / "kernel_ceiling"
    cmd = [os.environ.get("CXX", "g++"), "-O2", "-std=c++17", f"-I{include}", str(SOURCE), "-o", str(binary),
           f"-L{lib}", "-lggml", "-lggml-base", "-lggml-cpu", f"-Wl,-rpath,{lib.resolve()}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelBenchError(f"compiling {SOURCE.name} failed: {proc.stderr.strip()[-500:]}")
    return binary


def run(binary: Path, kernel: Kernel, matrices: int, rows: int, tokens: int, iters: int, threads: int) -> HarnessRun:
    """One harness run, checked."""
    cmd = [str(binary), kernel.type, str(int(kernel.repack)), str(matrices), str(rows), str(COLS), str(tokens),
           str(iters), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelBenchError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    result = record(HarnessRun, json.loads(proc.stdout.strip().splitlines()[-1]))
    if not result.relative_error <= MAX_RELATIVE_ERROR:
        raise KernelBenchError(f"{kernel.label} result is wrong: relative error {result.relative_error}")
    return result


def measure(rounds: int = 3, threads: int = 2, kernels: tuple[Kernel, ...] = KERNELS) -> KernelCeiling:
    """Every kernel streamed, cached and at prompt size, the kernels taking turns round by round."""
    with tempfile.TemporaryDirectory(prefix="ouro-kernels-") as tmp:
        binary = build(Path(tmp))
        results = {k: KernelResult(k.type, k.label, "", k.used_by) for k in kernels}
        for _ in range(rounds):
            for k, res in results.items():
                streamed = run(binary, k, *k.streamed_shape(), 1, 10, threads)
                cached = run(binary, k, 1, k.cached_rows(), 1, 300, threads)
                res.buffer = streamed.buffer
                res.streamed_gbps.append(streamed.weight_bytes / streamed.median_seconds / 1e9)
                res.cached_gbps.append(cached.weight_bytes / cached.median_seconds / 1e9)
                if not k.attention:
                    prompt = run(binary, k, 1, ROWS, PROMPT_TOKENS, 3, threads)
                    res.prompt_gops.append(2 * ROWS * COLS * PROMPT_TOKENS / prompt.median_seconds / 1e9)
        return KernelCeiling(cpu_features(), threads, rounds, list(results.values()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        raise SystemExit("error: no C++ compiler (g++, or $CXX) to build the harness")
    try:
        ceiling = measure(args.rounds, args.threads)
    except KernelBenchError as e:
        raise SystemExit(f"error: {e}") from None
    for r in ceiling.kernels:
        streamed, cached, prompt = r.medians()
        gops = f", prompt {prompt:.1f} GOPS" if prompt else ""
        print(f"{r.label} ({r.buffer}): streamed {streamed:.1f} GB/s, in L3 {cached:.1f} GB/s{gops}; {r.used_by}")
    if args.out:
        save(args.out, ceiling)


if __name__ == "__main__":
    main()
