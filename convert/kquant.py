"""K-quants (Q4_K_M, Q5_K_M, Q6_K) through llama.cpp's own quantizer.

The gguf Python package cannot write K-quants, so the converter writes an F16 GGUF and hands it to
`llama_model_quantize` from the (patched) llama-cpp-python. That function loads the model's hparams, so
the library must know the `ouro` architecture: a stock build fails, and the user is told to build ours.

llama.cpp's log is captured while it runs: its per-tensor lines drive our progress bar, and its error
lines become the reason in our one-line error instead of a wall of text on stderr.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from gguf import LlamaFileType

from convert.errors import ConvertError, RuntimeMissingError

BUILD_HINT = "run `ouro runtime build` first"
_GGML_LOG_LEVEL_ERROR = 3
_TENSOR_LINE = re.compile(rb"^\[\s*(\d+)/\s*(\d+)\]")  # "[  16/ 269] blk.1.attn_q.weight - ..."

Progress = Callable[[int, int], None]  # (tensors done, total)
Quantizer = Callable[[Path, Path, LlamaFileType, Progress], None]


def load_quantizer() -> Quantizer:
    """llama.cpp's quantizer, or a RuntimeMissingError before any work is done."""
    try:
        import llama_cpp
    except Exception as e:  # ImportError, or OSError when the shared library cannot be loaded
        raise RuntimeMissingError(f"K-quants need the patched llama.cpp runtime, which is not importable "
                                  f"({type(e).__name__}: {e}); {BUILD_HINT}") from None

    def quantize(src: Path, dst: Path, ftype: LlamaFileType, progress: Progress) -> None:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = int(ftype)
        with _llama_log(llama_cpp, progress) as errors:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        if rc == 0:
            return
        name = ftype.name.removeprefix("MOSTLY_")
        reason = errors[-1] if errors else f"error {rc}"
        if "unknown model architecture" in reason:
            raise RuntimeMissingError(f"this llama.cpp does not know the `ouro` architecture; {BUILD_HINT}")
        raise ConvertError(f"llama.cpp could not quantize to {name}: {reason}")

    return quantize


@contextmanager
def _llama_log(llama_cpp: ModuleType, progress: Progress) -> Iterator[list[str]]:
    """Route llama.cpp's log to `progress` and a list of error lines; restore llama-cpp-python's on exit."""
    errors: list[str] = []

    @llama_cpp.llama_log_callback
    def on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        if level == _GGML_LOG_LEVEL_ERROR:
            errors.append(text.decode("utf-8", "replace").strip().removeprefix("llama_model_quantize: "))
        elif m := _TENSOR_LINE.match(text):
            progress(int(m.group(1)), int(m.group(2)))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    try:
        yield errors
    finally:
        # llama-cpp-python installs its own logger at import; without one, NULL means plain stderr.
        previous = getattr(getattr(llama_cpp, "_logger", None), "llama_log_callback", None)
        llama_cpp.llama_log_set(previous, ctypes.c_void_p(0))
