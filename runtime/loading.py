"""`load(path, settings)`: check an Ouro GGUF, plan its memory, open it in llama.cpp — each once.

    from runtime import PRESETS, Settings, load
    model = load("ouro-1.4b-q8_0.gguf", Settings(n_ctx=4096, loops=3))
    model = load("ouro-1.4b-q8_0.gguf", PRESETS["phone"])
    model = load("ouro-1.4b-q8_0.gguf", n_ctx=4096)        # keyword arguments change the settings given
    print(model.chat([{"role": "user", "content": "2+2?"}]).text)

A caller that wants to look at the file or the plan before llama.cpp allocates (the CLI warns when a
setting would not fit in memory) calls `validate_gguf`, `plan_for` and `open_checked` itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runtime.errors import OuroRuntimeError
from runtime.memory_plan import MemoryPlan, plan_memory
from runtime.model import OuroModel
from runtime.settings import Settings
from runtime.validate import GGUFSummary, validate_gguf


def plan_for(summary: GGUFSummary, settings: Settings) -> MemoryPlan:
    """The memory `settings` need with this file; refuses a KV type the model's heads cannot hold."""
    return plan_memory(summary, settings.n_ctx, kv=settings.kv, kv_type=settings.kv_type, loops=settings.loops,
                       mmap=settings.mmap)


def open_checked(summary: GGUFSummary, settings: Settings, *, seed: int | None = None,
                 plan: MemoryPlan | None = None) -> OuroModel:
    """Open a file validate_gguf has checked; `plan`: plan_for's result when the caller has it."""
    if seed is not None and seed < 0:
        raise OuroRuntimeError(f"seed must be >= 0, got {seed!r}")
    if plan is None:
        plan_for(summary, settings)
    return OuroModel(summary.path, summary, settings, seed=seed)


def load(path: str | os.PathLike[str], settings: Settings | None = None, *, seed: int | None = None,
         **changes: Any) -> OuroModel:
    """Load an Ouro GGUF with `settings` (default: Settings()) changed by `changes` (Settings fields).

    seed: sampling seed (random when None). Some malformed files make llama.cpp abort the process
    instead of failing: the file is checked first (runtime.validate).
    """
    settings = (settings or Settings()).replace(**changes)
    return open_checked(validate_gguf(Path(path).expanduser()), settings, seed=seed)
