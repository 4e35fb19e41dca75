"""`ouro runtime build --sanitize`: the patched llama.cpp with AddressSanitizer + UndefinedBehaviorSanitizer.

The patches add hand-written SIMD kernels, a host-side skip runner computing graph node ranges and a KV
layer-reuse mapping: an out-of-bounds read there gives plausible numbers and passes parity tests most of
the time. This build holds them to llama.cpp's own CI bar. It is never installed: the shared libraries
llama_cpp loads (libllama, libggml*) are built with plain CMake from the same patched source tree as the
wheel and stored under `<cache>/sanitize/<key>/lib`, where `key` hashes the patches and SANITIZE_FLAGS (so
it never equals the normal runtime's key). scripts/sanitize.sh points llama-cpp-python at that directory
(LLAMA_CPP_LIB_PATH) with the sanitizer runtimes preloaded into the uninstrumented Python.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from runtime.cache import cache_dir
from toolchain.errors import CompileError
from toolchain.inputs import (PATCHES_DIR, SANITIZE_CMAKE_ARGS, SANITIZE_FLAGS, VENDOR, cache_key, flags_id,
                              patch_files)
from toolchain.progress import Reporter, log_path, run_logged
from toolchain.wheel import build_env, build_python, cmake_generator, prepare_sources, staged_dir
from toolchain.workspace import cache_lock, frozen_patches

# What llama_cpp.llama_cpp loads: libllama, which pulls in the ggml libraries through its RUNPATH ($ORIGIN).
LIBRARIES = ("libllama.so*", "libggml*.so*")


@dataclass(frozen=True)
class SanitizedBuild:
    key: str
    lib_dir: Path       # for LLAMA_CPP_LIB_PATH
    compiled: bool      # False: the cache already held this key
    seconds: float


def sanitized_lib_dir(cache: Path, key: str) -> Path:
    return cache / "sanitize" / key / "lib"


def current_sanitized(patches_dir: Path = PATCHES_DIR) -> Path | None:
    """The library directory of the sanitized build for the current patches, if it was built."""
    lib_dir = sanitized_lib_dir(cache_dir(), cache_key(patch_files(patches_dir), SANITIZE_FLAGS))
    return lib_dir if (lib_dir / "libllama.so").is_file() else None


def build_sanitized(*, force: bool = False, patches_dir: Path = PATCHES_DIR,
                    console: Console | None = None) -> SanitizedBuild:
    """Build (or find in the cache) the sanitized libraries for the current patches; see the module doc."""
    console = console or Console(stderr=True, soft_wrap=True)
    started = time.monotonic()
    cache = cache_dir()
    key = cache_key(patch_files(patches_dir), SANITIZE_FLAGS)
    if not force and current_sanitized(patches_dir) is not None:
        return SanitizedBuild(key, sanitized_lib_dir(cache, key), False, time.monotonic() - started)
    with cache_lock(cache, console), Reporter(console) as reporter, frozen_patches(patches_dir, cache) as snapshot:
        patches = patch_files(snapshot)
        key = cache_key(patches, SANITIZE_FLAGS)
        log = log_path(cache, "sanitize", key)
        python = build_python(cache, log, reporter)
        source = prepare_sources(cache, patches, log, reporter, python)
        build_dir = cache / "build" / f"sanitize-{flags_id(SANITIZE_FLAGS)}"
        if force and build_dir.exists():
            shutil.rmtree(build_dir)
        env = build_env(SANITIZE_FLAGS, cache)
        reporter.step("configuring the sanitized build")
        run_logged(["cmake", "-S", str(source / VENDOR), "-B", str(build_dir), *cmake_generator(build_dir),
                    *SANITIZE_CMAKE_ARGS, *SANITIZE_FLAGS], log, what="configuring the sanitized build", env=env)
        reporter.step("compiling llama.cpp with ASan + UBSan")
        jobs = env.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        run_logged(["cmake", "--build", str(build_dir), "--parallel", jobs, "--target", "llama"], log,
                   what="compiling the sanitized libraries", env=env, on_line=reporter.build_line)
        lib_dir = sanitized_lib_dir(cache, key)
        with staged_dir(lib_dir) as out:
            for pattern in LIBRARIES:
                for built in (build_dir / "bin").glob(pattern):
                    shutil.copy2(built, out / built.name, follow_symlinks=False)
            if not (out / "libllama.so").exists():
                raise CompileError(f"the sanitized build produced no libllama.so; full log: {log}")
        reporter.done(f"built the sanitized libraries (key {key[:12]})")
    return SanitizedBuild(key, lib_dir, True, time.monotonic() - started)

