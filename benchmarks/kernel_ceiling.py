"""How fast ggml's CPU kernels run on this machine outside any model: the arithmetic ceiling beside the
memory roofline (issue 8).

    python -m benchmarks.kernel_ceiling [--rounds 3] [--threads 2] [--out FILE.json]

Decode streams every weight matrix once per loop through one kernel per weight type: Q8_0's dot product
(Q8_0 files), the repacked Q4_K gemv and Q6_K's dot product (Q4_K_M files); then each loop's attention
reads its layer's K and V of every cached token (patch 0005's one-token flash attention, F16 cache). Each
is timed twice: streaming from memory (40 matrices of the 1.4B's FFN shape, 5632 x 2048; attention: 8
layers of 3,072 cached tokens; hundreds of MB, far beyond any cache) and over ~4 MiB that stays in the
L3 cache. When both run at the same rate the kernel is bound by its arithmetic, not by memory: more
bandwidth would not make decode faster, and decode cannot reach a larger share of the copy bandwidth than
its kernels do. The prompt pass's products are timed with a 512-token activation (GOPS: 2 x rows x cols x
tokens per second).

The harness (kernel_ceiling.cpp) is compiled against the installed patched runtime's ggml (the headers
and libraries llama-cpp-python installs) in a temporary directory. It checks each result against float
arithmetic on the same data, so that a broken kernel cannot pass for a fast one.
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
from dataclasses import asdict, dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("kernel_ceiling.cpp")
ROWS, COLS = 5632, 2048  # the 1.4B's FFN matrices (ggml: COLS is the dot-product length)
STREAMED_MATRICES = 40
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


@dataclass
class KernelResult:
    type: str
    label: str
    buffer: str  # CPU_REPACK when the repacked kernels ran
    used_by: str
    streamed_gbps: list[float]
    cached_gbps: list[float]
    prompt_gops: list[float]  # none for attention: prompts run another flash-attention path

    def to_dict(self) -> dict:
        medians = {f"{k}_median": statistics.median(v) if v else None
                   for k, v in asdict(self).items() if isinstance(v, list)}
        return {**asdict(self), **medians}


def cpu_features() -> dict:
    """The CPU's name, family/model and which of the SIMD extensions ggml's x86 kernels can use it has."""
    info: dict = {"name": platform.processor() or "unknown CPU", "family": None, "model": None, "simd": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update(family=fields.get("cpu family"), model=fields.get("model"),
                simd=[f for f in SIMD_FLAGS if f in flags], name=fields.get("model name", info["name"]))
    return info


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


def run(binary: Path, kernel: Kernel, matrices: int, rows: int, tokens: int, iters: int, threads: int) -> dict:
    """One harness run; its JSON, checked."""
    cmd = [str(binary), kernel.type, str(int(kernel.repack)), str(matrices), str(rows), str(COLS), str(tokens),
           str(iters), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelBenchError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["relative_error"] <= MAX_RELATIVE_ERROR:
        raise KernelBenchError(f"{kernel.label} result is wrong: relative error {result['relative_error']}")
    return result


def measure(rounds: int = 3, threads: int = 2, kernels: tuple[Kernel, ...] = KERNELS) -> list[KernelResult]:
    """Every kernel streamed, cached and at prompt size, the kernels taking turns round by round."""
    with tempfile.TemporaryDirectory(prefix="ouro-kernels-") as tmp:
        binary = build(Path(tmp))
        results = {k: KernelResult(k.type, k.label, "", k.used_by, [], [], []) for k in kernels}
        for _ in range(rounds):
            for k, res in results.items():
                streamed = run(binary, k, *k.streamed_shape(), 1, 10, threads)
                cached = run(binary, k, 1, k.cached_rows(), 1, 300, threads)
                res.buffer = streamed["buffer"]
                res.streamed_gbps.append(streamed["weight_bytes"] / streamed["median_seconds"] / 1e9)
                res.cached_gbps.append(cached["weight_bytes"] / cached["median_seconds"] / 1e9)
                if not k.attention:
                    prompt = run(binary, k, 1, ROWS, PROMPT_TOKENS, 3, threads)
                    res.prompt_gops.append(2 * ROWS * COLS * PROMPT_TOKENS / prompt["median_seconds"] / 1e9)
        return list(results.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        raise SystemExit("error: no C++ compiler (g++, or $CXX) to build the harness")
    try:
        results = measure(args.rounds, args.threads)
    except KernelBenchError as e:
        raise SystemExit(f"error: {e}") from None
    for r in results:
        d = r.to_dict()
        prompt = f", prompt {d['prompt_gops_median']:.1f} GOPS" if r.prompt_gops else ""
        print(f"{r.label} ({r.buffer}): streamed {d['streamed_gbps_median']:.1f} GB/s, in L3 "
              f"{d['cached_gbps_median']:.1f} GB/s{prompt}; {r.used_by}")
    if args.out:
        payload = {"cpu": cpu_features(), "threads": args.threads, "rounds": args.rounds, "rows": ROWS, "cols": COLS,
                   "streamed_matrices": STREAMED_MATRICES, "cached_bytes": CACHED_BYTES,
                   "attention_layers": ATTENTION_LAYERS, "attention_tokens": ATTENTION_TOKENS,
                   "prompt_tokens": PROMPT_TOKENS, "kernels": [r.to_dict() for r in results]}
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
