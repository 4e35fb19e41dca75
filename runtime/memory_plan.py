"""How much RAM an Ouro GGUF needs for a context: weights + KV cache + compute buffers + runtime.

`plan_memory(summary, n_ctx, kv=..., kv_type=..., mmap=...)` predicts what the patched llama.cpp
allocates, from the file's checked facts (runtime.validate) and the runtime's CPU features alone, so
`ouro info --ctx N --kv share --kv-type q8_0` answers "does this fit my phone?" without loading anything,
and `ouro chat` can warn before it loads a setting that would not fit the memory it sees
(`available_memory`, `fit_warning`).

The terms, as llama.cpp (in llama-cpp-python 0.3.36) sizes them:
- weights: every tensor in the file, once; and what the way they are held adds (runtime.weights): with
  mmap, the file's pages outside the tensors (the whole file is faulted in) and the file pages of every
  matrix the CPU backend repacks, which stay resident beside the repacked copy; read into memory, nothing.
  The default ("auto") reads the file exactly when something is repacked, so that term is the metadata's
  few MiB or nothing.
- KV cache: the context padded to 256 cells, times one K and one V row per KV head for each slot: T·L
  slots with full KV, L with loop-shared KV (`ouro.kv_share`), in F16 (2 bytes per value) or q8_0
  (34 bytes per 32 values; needs a head size that is a multiple of 32, and flash attention for V).
- compute: the scheduler's buffer, reserved for the worst micro-batch (n_ubatch tokens attending to the
  whole cache). Per micro-batch token, in F32 values: the attention mask (one value per cell, F16 with
  flash attention), plus the largest of the attention scores and what lives beside them (n_head values
  per cell plus 4·hidden + q + 2·kv; nothing with flash attention, which streams over the cache), the FFN
  (4·ffn + hidden) and the output head (vocab + 2·hidden). This matches the sizes llama.cpp logs to within
  a few percent (tests/test_memory_plan.py); llama.cpp touches only what a batch actually uses, so it is
  an upper bound on the resident part.
- overhead: llama.cpp's code pages, graph metadata and small buffers, measured on x86 (RSS growth of a
  tiny model), a constant. The Python interpreter itself is not counted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.errors import OuroRuntimeError
from runtime.keys import KV_MODES
from runtime.kv import KV_TYPES, kv_bytes_per_token
from runtime.validate import GGUFSummary
from runtime.weights import CpuBackend, WeightHolding, hold_weights, runtime_backend

KV_CELL_PAD = 256          # llama.cpp rounds the context up to a multiple of this many cells
DEFAULT_BATCH = 512        # llama-cpp-python's n_batch / n_ubatch
RUNTIME_OVERHEAD = 10 << 20
F32 = 4


class MemoryPlanError(OuroRuntimeError):
    """The asked-for setting cannot run (e.g. a q8_0 KV cache for a head size it cannot hold)."""


@dataclass(frozen=True)
class MemoryPlan:
    n_ctx: int
    kv_cells: int
    kv: str
    kv_type: str
    flash_attn: bool
    n_batch: int
    loops: int
    weights: int
    held: WeightHolding  # mmapped or read, what is repacked, what that adds to `weights`
    kv_cache: int
    compute: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.held.extra + self.kv_cache + self.compute + self.overhead

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "total": self.total}


# The runtime always turns flash attention on: llama.cpp stores a quantized V cache only with it, and with an
# F16 cache it is still the faster CPU path (decode of the 1.4b at 4 loops +9% at a 100-token context, more
# as the context grows: the plain path runs one small dot product per head and cached token).
FLASH_ATTN = True


def needs_flash_attn(kv_type: str) -> bool:
    """llama.cpp stores a quantized V cache only with flash attention."""
    return kv_type != "f16"


def kv_cells(n_ctx: int) -> int:
    return math.ceil(n_ctx / KV_CELL_PAD) * KV_CELL_PAD


def kv_cache_bytes(s: GGUFSummary, cells: int, kv: str, kv_type: str, loops: int) -> int:
    return cells * kv_bytes_per_token(layers=s.layers, loops=loops, heads_kv=s.heads_kv, head_dim=s.head_dim,
                                      kv=kv, kv_type=kv_type)


def compute_bytes(s: GGUFSummary, cells: int, n_ubatch: int, flash_attn: bool) -> int:
    q, kv = s.heads * s.head_dim, s.heads_kv * s.head_dim
    mask = cells / 2 if flash_attn else cells
    attention = 0 if flash_attn else cells * s.heads + 4 * s.hidden + q + 2 * kv
    ffn = 4 * s.ffn + s.hidden
    output = s.vocab + 2 * s.hidden
    return int(F32 * n_ubatch * (mask + max(attention, ffn, output)))


def plan_memory(s: GGUFSummary, n_ctx: int, *, kv: str = "full", kv_type: str = "f16", loops: int | None = None,
                n_batch: int = DEFAULT_BATCH, flash_attn: bool | None = None, mmap: str = "auto",
                backend: CpuBackend | None = None) -> MemoryPlan:
    """The memory llama.cpp needs to run `s` with a context of n_ctx tokens.

    flash_attn: None = what the runtime uses (FLASH_ATTN).
    n_batch: llama-cpp-python's n_batch (the micro-batch is min(n_ctx, n_batch) tokens).
    mmap: Settings.mmap; backend: the CPU backend that will repack (None: the installed runtime's).
    """
    if n_ctx < 1:
        raise MemoryPlanError(f"the context must be at least 1 token, got {n_ctx}")
    if kv not in KV_MODES:
        raise MemoryPlanError(f"kv must be one of {', '.join(KV_MODES)}, got {kv!r}")
    if kv_type not in KV_TYPES:
        raise MemoryPlanError(f"the KV cache type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
    block_values = KV_TYPES[kv_type][1]
    if s.head_dim % block_values:
        raise MemoryPlanError(f"a {kv_type} KV cache stores blocks of {block_values} values, which does not divide "
                              f"this model's head size {s.head_dim}: use --kv-type f16")
    flash = FLASH_ATTN if flash_attn is None else flash_attn
    if needs_flash_attn(kv_type) and not flash:
        raise MemoryPlanError(f"a {kv_type} V cache needs flash attention")
    if n_batch < 1:
        raise MemoryPlanError(f"n_batch must be at least 1, got {n_batch}")
    n_loops = loops if loops is not None else s.loops
    cells = kv_cells(n_ctx)
    n_ubatch = min(n_ctx, n_batch)
    return MemoryPlan(
        n_ctx=n_ctx, kv_cells=cells, kv=kv, kv_type=kv_type, flash_attn=flash, n_batch=n_ubatch, loops=n_loops,
        weights=s.tensor_bytes, held=hold_weights(s, mmap, backend if backend is not None else runtime_backend()),
        kv_cache=kv_cache_bytes(s, cells, kv, kv_type, n_loops),
        compute=compute_bytes(s, cells, n_ubatch, flash), overhead=RUNTIME_OVERHEAD,
    )


# ------------------------------------------------------------------------------------- the machine

def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def available_memory(proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process can still get: MemAvailable, or the cgroup's remaining limit when smaller
    (a container or an Android app may be capped below the machine's RAM). None when unknown."""
    available = None
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    limit, used = _read_int(cgroup / "memory.max"), _read_int(cgroup / "memory.current")
    if limit is not None and used is not None:
        headroom = max(limit - used, 0)
        available = headroom if available is None else min(available, headroom)
    return available


def fit_warning(plan: MemoryPlan, available: int | None) -> str | None:
    """One sentence when `plan` would not fit in `available` bytes (None: unknown, no warning)."""
    if available is None or plan.total <= available:
        return None
    return (f"this setting needs about {human_bytes(plan.total)} (weights {human_bytes(plan.weights)}, "
            f"KV {human_bytes(plan.kv_cache)}, compute {human_bytes(plan.compute)}) but only "
            f"{human_bytes(available)} of memory is available: use a smaller --ctx, --kv share, "
            f"--kv-type q8_0 (or --phone), or a smaller quantization")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def plan_rows(plan: MemoryPlan) -> list[tuple[str, str]]:
    """The plan as (label, text) rows for `ouro info`."""
    hb = human_bytes
    slots = "T·L slots" if plan.kv == "full" else "L slots, loop-shared"
    return [
        ("memory plan", f"--ctx {plan.n_ctx} --kv {plan.kv} --kv-type {plan.kv_type}"
                        f" (flash attention {'on' if plan.flash_attn else 'off'}, batch {plan.n_batch})"),
        ("  weights", f"{hb(plan.weights)} ({plan.held.describe()})"),
        *([("  file pages", f"{hb(plan.held.extra)} more: the mapped metadata"
                             + (" and the repacked matrices' source pages" if plan.held.repacked else ""))]
          if plan.held.extra else []),
        ("  KV cache", f"{hb(plan.kv_cache)} ({plan.kv_cells} cells, {slots}, {plan.kv_type})"),
        ("  compute buffers", f"{hb(plan.compute)} (worst micro-batch)"),
        ("  runtime", f"{hb(plan.overhead)} (llama.cpp code and metadata)"),
        ("  total", hb(plan.total)),
    ]

