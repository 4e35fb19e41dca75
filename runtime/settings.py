"""`Settings`: how a model runs (loops, exit, KV cache, context, threads, mmap), validated once, passed whole.

The CLI builds one from its flags (or a preset), `runtime.load` plans memory and opens llama.cpp with it,
and `OuroModel` applies it: what shapes the KV cache (kv, kv_type, loops beyond the file's, n_ctx) and
how the weights are held (mmap) at load time, the rest on the running context (runtime.control). None
means "as the GGUF says" (ouro.num_loops, ouro.early_exit_threshold, ouro.min_loops).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from runtime.errors import OuroRuntimeError
from runtime.keys import EXIT_MODES, KV_MODES, MAX_LOOPS
from runtime.kv import KV_TYPES

DEFAULT_CTX = 2048
# How the weights are held (runtime.weights): "auto" reads the file into memory when llama.cpp's CPU backend
# repacks any of its matrices (mmap would keep their file pages resident beside the copies) and maps it
# otherwise; "on" always maps it (llama-cpp-python's default), "off" always reads it.
MMAP_MODES = ("auto", "on", "off")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Settings:
    n_ctx: int = DEFAULT_CTX        # context in tokens; its whole KV cache is allocated up front. Never 0:
                                    # llama.cpp would take the 64K training context
    n_threads: int | None = None    # CPU threads for decode and prompt (None: llama-cpp-python's default)
    loops: int | None = None
    exit_threshold: float | None = None
    exit_mode: str = "select"       # "select": every loop runs, the exit loop is read out; "skip": stop there
    min_loops: int | None = None    # skip mode never exits before this many loops
    kv: str = "full"                # "full": a slot per (loop, layer); "share": one per layer
    kv_type: str = "f16"            # KV cache element type (runtime.kv.KV_TYPES)
    mmap: str = "auto"              # MMAP_MODES

    def __post_init__(self) -> None:
        if not _is_int(self.n_ctx) or self.n_ctx < 1:
            raise OuroRuntimeError(f"n_ctx must be a positive number of tokens, got {self.n_ctx!r}")
        if self.n_threads is not None and (not _is_int(self.n_threads) or self.n_threads < 1):
            raise OuroRuntimeError(f"n_threads must be >= 1, got {self.n_threads!r}")
        for name in ("loops", "min_loops"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 1 <= value <= MAX_LOOPS):
                raise OuroRuntimeError(f"{name} must be an integer in 1..{MAX_LOOPS}, got {value!r}")
        if self.exit_threshold is not None and not 0.0 <= self.exit_threshold <= 1.0:
            raise OuroRuntimeError(f"the exit threshold must be in [0, 1], got {self.exit_threshold!r}")
        if self.exit_mode not in EXIT_MODES:
            raise OuroRuntimeError(f"exit mode must be one of {', '.join(EXIT_MODES)}, got {self.exit_mode!r}")
        if self.kv not in KV_MODES:
            raise OuroRuntimeError(f"kv must be one of {', '.join(KV_MODES)}, got {self.kv!r}")
        if self.kv_type not in KV_TYPES:
            raise OuroRuntimeError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {self.kv_type!r}")
        if self.mmap not in MMAP_MODES:
            raise OuroRuntimeError(f"mmap must be one of {', '.join(MMAP_MODES)}, got {self.mmap!r}")

    def replace(self, **changes: object) -> Settings:
        """A copy with `changes`, validated again."""
        return dataclasses.replace(self, **changes)


# Named starting points; flags given with a preset override it.
PRESETS: dict[str, Settings] = {
    "default": Settings(),
    # Small memory (`--phone`): loop-shared KV (T x less KV), a q8_0 KV cache (half of F16 again; it runs
    # with flash attention), a small context, 4 threads.
    "phone": Settings(n_ctx=2048, n_threads=4, kv="share", kv_type="q8_0"),
}
