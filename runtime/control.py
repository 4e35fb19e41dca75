"""ctypes bindings of the run-time exit control our patches export from libllama (patches/0004).

They act on one `llama_cpp.Llama` object's context without reloading the model:

    from runtime import control
    control.set_exit(llm, mode="skip", threshold=0.9, min_loops=1)
    control.set_loops(llm, 2)
    control.last_loops(llm), control.histogram(llm), control.kv_bytes(llm)

`None` for a setting keeps the value from the GGUF metadata (`ouro.exit_mode`, `ouro.early_exit_threshold`,
`ouro.min_loops`), which `kv_overrides` / `--override-kv` can also set at load time.
"""

from __future__ import annotations

import ctypes
from functools import cache

from runtime.keys import EXIT_MODES, MAX_LOOPS


class ControlError(RuntimeError):
    """The runtime refused a setting, or the library lacks Ouro's control functions."""


@cache
def _lib() -> ctypes.CDLL:
    from llama_cpp import llama_cpp as bindings

    lib = bindings._lib
    if not hasattr(lib, "llama_ouro_set_exit"):
        raise ControlError("this llama-cpp-python has no Ouro exit control: run `ouro runtime build`")
    ctx, i32 = ctypes.c_void_p, ctypes.c_int32
    signatures = {
        "llama_ouro_set_exit": ([ctx, i32, ctypes.c_float, i32], i32),
        "llama_ouro_set_loops": ([ctx, i32], i32),
        "llama_ouro_last_loops": ([ctx, ctypes.POINTER(i32), i32], i32),
        "llama_ouro_loop_histogram": ([ctx, ctypes.POINTER(ctypes.c_int64), i32], i32),
        "llama_ouro_reset_stats": ([ctx], None),
        "llama_ouro_kv_size": ([ctx], ctypes.c_size_t),
    }
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


def _ctx(llm) -> int:
    return llm._ctx.ctx


def set_exit(llm, *, mode: str | None = None, threshold: float | None = None, min_loops: int | None = None) -> None:
    if mode is not None and mode not in EXIT_MODES:
        raise ControlError(f"exit mode must be one of {sorted(EXIT_MODES)}, got {mode!r}")
    code = _lib().llama_ouro_set_exit(
        _ctx(llm), -1 if mode is None else EXIT_MODES.index(mode),
        -1.0 if threshold is None else float(threshold), 0 if min_loops is None else int(min_loops))
    if code != 0:
        raise ControlError(f"invalid exit settings: mode={mode}, threshold={threshold}, min_loops={min_loops}")


def set_loops(llm, n_loops: int | None) -> None:
    """Loops to run, at most the file's `ouro.num_loops`; None runs them all."""
    if _lib().llama_ouro_set_loops(_ctx(llm), 0 if n_loops is None else int(n_loops)) != 0:
        raise ControlError(f"cannot run {n_loops} loops with this model")


def last_loops(llm) -> list[int]:
    """Loops used by each token of the last decode (select mode: the loop read out; skip: loops run)."""
    lib = _lib()
    n = lib.llama_ouro_last_loops(_ctx(llm), None, 0)
    buf = (ctypes.c_int32 * max(n, 1))()
    lib.llama_ouro_last_loops(_ctx(llm), buf, n)
    return list(buf[:n])


def histogram(llm) -> list[int]:
    """Tokens by loops used since the last reset: index k counts tokens that used k loops."""
    buf = (ctypes.c_int64 * (MAX_LOOPS + 1))()
    n = _lib().llama_ouro_loop_histogram(_ctx(llm), buf, MAX_LOOPS + 1)
    return list(buf[:n])


def reset_stats(llm) -> None:
    _lib().llama_ouro_reset_stats(_ctx(llm))


def kv_bytes(llm) -> int:
    """Bytes of the context's KV cache buffers."""
    return int(_lib().llama_ouro_kv_size(_ctx(llm)))
