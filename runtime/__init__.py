"""Running Ouro GGUFs: `load` (the Python API) and what it stands on. Building the runtime is toolchain/'s job.

    settings  Settings and PRESETS: loops, exit, KV cache, context, threads — validated once
    keys      the ouro.* GGUF keys and their limits
    loading   load(): validate, plan memory, open — once each
    model     OuroModel; template (chat template), generation (sampling loop, statistics), locking
    control   run-time exit control of the patched llama.cpp; kv + memory_plan: what a setting costs;
              weights: how llama.cpp will hold the weights (mapped or read, repacked or not)
    validate  checking a GGUF before llama.cpp sees it; reference: the PyTorch reference of Ouro
"""

from runtime.errors import OuroRuntimeError
from runtime.generation import Completion, GenerationStats, TextStream
from runtime.loading import load
from runtime.model import OuroModel
from runtime.sampling import SamplingParams
from runtime.settings import PRESETS, Settings

__all__ = ["PRESETS", "Completion", "GenerationStats", "OuroModel", "OuroRuntimeError", "SamplingParams",
           "Settings", "TextStream", "load"]
