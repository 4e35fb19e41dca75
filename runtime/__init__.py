"""Running Ouro GGUFs: `load` (the Python API) and what it stands on. Building the runtime is toolchain/'s job."""

from runtime.api import Completion, GenerationStats, OuroModel, TextStream, load
from runtime.errors import OuroRuntimeError
from runtime.sampling import SamplingParams

__all__ = ["Completion", "GenerationStats", "OuroModel", "OuroRuntimeError", "SamplingParams", "TextStream", "load"]
