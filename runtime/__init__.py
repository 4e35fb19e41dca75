"""Running Ouro GGUFs: `load` (the Python API), the patched llama.cpp build, the PyTorch reference."""

from runtime.api import Completion, GenerationStats, OuroModel, TextStream, load
from runtime.errors import OuroRuntimeError
from runtime.sampling import SamplingParams

__all__ = ["Completion", "GenerationStats", "OuroModel", "OuroRuntimeError", "SamplingParams", "TextStream", "load"]
