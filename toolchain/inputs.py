"""What a runtime build is made of, and the cache key naming it.

The key hashes the pinned llama-cpp-python sdist (version, sha256), the content of every patch in
order and the compiler flags: a wheel in the cache under that key is the build for those inputs, wherever
the checkout is and whatever the patch files are called.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# llama-cpp-python's own runtime requirements (from its pyproject), installed normally since the wheel goes
# in with --no-deps.
RUNTIME_REQUIREMENTS = ("typing-extensions>=4.5.0", "numpy>=1.20.0", "diskcache>=5.6.1", "jinja2>=2.11.3")
# The build backend llama-cpp-python declares; it lives in a private build venv so that the CMake cache in
# the persistent build directory always sees the same interpreter and tool paths.
BUILD_BACKEND = "scikit-build-core>=0.9.2"

# A wheel built with GGML_NATIVE on an AVX-512 machine dies with SIGILL on an older CPU: the default is a
# portable x86-64-v3 set. LLAVA_BUILD=OFF skips the multimodal library we never load.
PORTABLE_FLAGS = (
    "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON", "-DLLAVA_BUILD=OFF",
)
NATIVE_FLAGS = ("-DGGML_NATIVE=ON", "-DLLAVA_BUILD=OFF")
# `ouro runtime build --sanitize`: the portable set with AddressSanitizer and UndefinedBehaviorSanitizer in
# both llama (LLAMA_SANITIZE_*, cmake/common.cmake) and ggml (GGML_SANITIZE_*, ggml/src/CMakeLists.txt),
# frame pointers and debug info everywhere so that a report's stack names our patched lines. Being part of the
# flags, they are part of the cache key: a sanitized build never shares a key (or a build directory) with the
# normal runtime.
SANITIZE_FLAGS = (
    *PORTABLE_FLAGS, "-DLLAMA_SANITIZE_ADDRESS=ON", "-DLLAMA_SANITIZE_UNDEFINED=ON",
    "-DGGML_SANITIZE_ADDRESS=ON", "-DGGML_SANITIZE_UNDEFINED=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
    "-DCMAKE_C_FLAGS=-fno-omit-frame-pointer", "-DCMAKE_CXX_FLAGS=-fno-omit-frame-pointer",
)
# The sanitized build makes only the shared libraries llama_cpp loads (libllama and the ggml ones), with plain
# CMake: the tests point llama-cpp-python at them (LLAMA_CPP_LIB_PATH) instead of installing a second wheel.
# Their RUNPATH is $ORIGIN, so a copied libllama loads the ggml libraries beside it, not the build directory's.
SANITIZE_CMAKE_ARGS = (
    "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
    "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_COMMON=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF",
)
TOOLS = ("llama-cli", "llama-server", "llama-bench", "llama-perplexity", "llama-quantize")
# Standalone build of the programs: static libraries so the binaries can be copied anywhere; no web UI
# download (the build would fetch it from a hub), no HTTPS, no tests or examples.
TOOLS_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF",
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PATCHES_DIR = REPO_ROOT / "patches"
RECORD_NAME = "ouro-runtime.json"
VENDOR = Path("vendor") / "llama.cpp"
LIBRARY = Path("lib") / "libllama.so"  # inside the installed llama_cpp package; the architectures live here
BUILD_COMMAND = "ouro runtime build"

def build_flags(native: bool = False) -> tuple[str, ...]:
    return NATIVE_FLAGS if native else PORTABLE_FLAGS


def patch_files(patches_dir: Path = PATCHES_DIR) -> list[Path]:
    """The patches in the order they are applied: sorted by file name."""
    if not patches_dir.is_dir():
        return []
    return sorted((p for p in patches_dir.glob("*.patch") if p.is_file()), key=lambda p: p.name)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(patches: Sequence[Path], flags: Sequence[str], *, version: str = LLAMA_CPP_PYTHON_VERSION,
              sdist_sha256: str = SDIST_SHA256) -> str:
    """Identity of a built runtime: what went into it, not where the patch files happen to be named."""
    material = {
        "version": version,
        "sdist_sha256": sdist_sha256,
        "patches": [sha256_bytes(p.read_bytes()) for p in patches],
        "flags": list(flags),
    }
    return sha256_bytes(json.dumps(material, sort_keys=True).encode())


def flags_id(flags: Sequence[str]) -> str:
    """Names the persistent build directory: one per flag set, shared by every patch revision."""
    return sha256_bytes("\n".join(flags).encode())[:12]
