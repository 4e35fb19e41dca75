"""K-quants (Q4_K_M, Q5_K_M, Q6_K) through llama.cpp's own quantizer.

The gguf Python package cannot write K-quants, so the converter writes an F16 GGUF and hands it to
`llama_model_quantize` from the (patched) llama-cpp-python. That function loads the model's hparams, so
the library must know the `ouro` architecture: a stock build fails, and the user is told to build ours.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

from gguf import LlamaFileType

from convert.errors import RuntimeMissingError

BUILD_HINT = "run `ouro runtime build` first"

Quantizer = Callable[[Path, Path, LlamaFileType], None]


def load_quantizer() -> Quantizer:
    """llama.cpp's quantizer, or a RuntimeMissingError before any work is done."""
    try:
        import llama_cpp
    except Exception as e:  # ImportError, or OSError when the shared library cannot be loaded
        raise RuntimeMissingError(f"K-quants need the patched llama.cpp runtime, which is not importable "
                                  f"({type(e).__name__}: {e}); {BUILD_HINT}") from None

    def quantize(src: Path, dst: Path, ftype: LlamaFileType) -> None:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = int(ftype)
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        if rc != 0:
            # llama.cpp logs the cause to stderr; by far the likeliest is a build without the ouro arch.
            raise RuntimeMissingError(f"llama.cpp could not quantize to {ftype.name.removeprefix('MOSTLY_')} (error {rc}; most likely "
                                      f"this llama.cpp does not know the `ouro` architecture yet): {BUILD_HINT}")

    return quantize
