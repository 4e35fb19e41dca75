"""`ouro runtime export-source DIR`: the patched llama.cpp tree, ready to build on a phone or for one.

DIR receives the llama.cpp that llama-cpp-python 0.3.36 vendors with every `patches/*.patch` applied (the
same sources `ouro runtime build` compiles into the wheel) plus an `ouro/` folder:

    ouro/build-android.sh   cross build with the Android NDK (arm64-v8a) on a computer
    ouro/build-termux.sh    native build inside Termux on the phone
    ouro/IOS.md             notes for iOS / macOS on Apple silicon
    ouro/README.md          what the tree is, which patches it holds, how to run an Ouro GGUF on a phone
    ouro/patches/           the patches themselves (what differs from upstream's commit 0c1e570)

`staged_patched_tree` is shared with toolchain.cross, which builds the same tree for aarch64 Linux.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console

from runtime.cache import cache_dir
from toolchain.errors import BuildError
from toolchain.inputs import (LLAMA_CPP_PYTHON_VERSION, PATCHES_DIR, SDIST_SHA256, TOOLS_CMAKE_ARGS, VENDOR, cache_key,
                              patch_files, sha256_file)
from toolchain.patching import apply_patches
from toolchain.progress import Reporter, log_path
from toolchain.sdist import download_sdist, fetch_sdist, unpack_sdist
from toolchain.wheel import build_python

SCRIPTS_DIR = "ouro"
# The ggml CPU baseline for phone builds: ARMv8.2-A with the int8 dot product and fp16 arithmetic that
# the q8_0 / q4 kernels use; every phone SoC since ~2019 (Cortex-A55/A75 and later) has them.
PHONE_ARM_ARCH = "armv8.2-a+dotprod+fp16"
# What a phone needs: the chat CLI, the OpenAI-compatible server, the benchmark and the quantizer.
PHONE_TOOLS = ("llama-cli", "llama-server", "llama-bench", "llama-quantize")
# Run-time flags for small memory (the same settings as `ouro chat --phone`): loop-shared KV (T x less
# KV), q8_0 K/V cache (half of F16; V quantization needs flash attention), a small context, 4 threads.
PHONE_RUN_FLAGS = "-c 2048 -t 4 -fa on -ctk q8_0 -ctv q8_0 --override-kv ouro.kv_share=bool:true"


@contextlib.contextmanager
def staged_patched_tree(workdir: Path, reporter: Reporter, log: Path,
                        patches: Sequence[Path]) -> Iterator[Path]:
    """A scratch copy of the vendored llama.cpp with `patches` applied, inside a temporary directory
    under `workdir` (deleted on exit; move or sync the tree out before the block ends)."""
    cache = cache_dir()
    reporter.step("fetching the sdist")
    # The build venv (needed only to download) is created lazily: a cached sdist needs no venv.
    sdist = fetch_sdist(cache, lambda tmp: download_sdist(tmp, build_python(cache, log, reporter), log))
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".ouro-llama-") as tmp:
        reporter.step("unpacking the sdist")
        vendor = unpack_sdist(sdist, Path(tmp)) / VENDOR
        reporter.step(f"applying {len(patches)} patch(es)")
        apply_patches(vendor, patches)
        # In the sdist, vendor/llama.cpp/.git is a submodule link into the sdist's own .git: it points
        # nowhere once the tree moves, and would make git fail there.
        gitlink = vendor / ".git"
        if gitlink.is_file():
            gitlink.unlink()
        reporter.done(f"llama.cpp from llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} + {len(patches)} patch(es)")
        yield vendor


def export_source(target: Path, *, patches_dir: Path = PATCHES_DIR, console: Console | None = None) -> Path:
    """Write the patched tree and the phone build scripts into `target` (new or empty); nothing is left
    half-written: everything is staged beside `target` and renamed into place at the end."""
    console = console or Console(stderr=True, soft_wrap=True)
    target = target.expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BuildError(f"{target} exists and is not an empty directory: choose a new one")
    patches = patch_files(patches_dir)
    log = log_path(cache_dir(), "export-source", cache_key(patches, ()))
    with Reporter(console) as reporter, staged_patched_tree(target.parent, reporter, log, patches) as tree:
        write_phone_files(tree / SCRIPTS_DIR, patches)
        reporter.step(f"moving the tree to {target}")
        if target.exists():
            target.rmdir()  # empty (checked above): rename needs the name free
        os.replace(tree, target)
    return target


def write_phone_files(folder: Path, patches: Sequence[Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "build-android.sh": _android_script(),
        "build-termux.sh": _termux_script(),
        "IOS.md": _ios_notes(),
        "README.md": _readme(patches),
    }
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        if name.endswith(".sh"):
            path.chmod(0o755)
    (folder / "patches").mkdir(exist_ok=True)
    for patch in patches:
        shutil.copyfile(patch, folder / "patches" / patch.name)


def _common_cmake_args() -> str:
    # toolchain.inputs' standalone-tools flags (static, no UI download, no tests), minus the ones every
    # script sets itself, plus OpenSSL off: neither the NDK nor a bare Termux has it.
    keep = [a for a in TOOLS_CMAKE_ARGS if not a.startswith("-DCMAKE_BUILD_TYPE")]
    return " \\\n    ".join(["-DCMAKE_BUILD_TYPE=Release", *keep])


def _android_script() -> str:
    return f"""#!/usr/bin/env bash
# Cross-compile llama.cpp with Ouro support for Android phones (arm64-v8a) with the Android NDK.
#   ANDROID_NDK=/path/to/android-ndk-r27 ouro/build-android.sh
# Environment: ANDROID_NDK (required), ANDROID_PLATFORM (default android-28), ARM_ARCH (ggml's CPU
# baseline, default {PHONE_ARM_ARCH}; use armv8-a for phones older than ~2019), JOBS (default 4).
# Output: build-android/bin/{{{",".join(PHONE_TOOLS)}}}, with llama.cpp linked in (no .so files to copy): push them with adb.
set -euo pipefail
cd "$(dirname "${{BASH_SOURCE[0]}}")/.."
: "${{ANDROID_NDK:?set ANDROID_NDK to the NDK root (the folder holding build/cmake/android.toolchain.cmake)}}"
# GGML_NATIVE=OFF: the build machine is not the phone. OpenMP off: the NDK's is not found by CMake
# (ggml uses its own thread pool). llamafile's sgemm is not supported on Android.
cmake -S . -B build-android \\
    -DCMAKE_TOOLCHAIN_FILE="$ANDROID_NDK/build/cmake/android.toolchain.cmake" \\
    -DANDROID_ABI=arm64-v8a -DANDROID_PLATFORM="${{ANDROID_PLATFORM:-android-28}}" \\
    -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH="${{ARM_ARCH:-{PHONE_ARM_ARCH}}}" \\
    -DGGML_OPENMP=OFF -DGGML_LLAMAFILE=OFF \\
    {_common_cmake_args()}
cmake --build build-android --parallel "${{JOBS:-4}}" --target {" ".join(PHONE_TOOLS)}
echo
echo "built: build-android/bin/ ({", ".join(PHONE_TOOLS)})"
echo "on the phone:  adb push build-android/bin/llama-cli model.gguf /data/local/tmp/ && adb shell"
echo "  cd /data/local/tmp && ./llama-cli -m model.gguf {PHONE_RUN_FLAGS}"
"""


def _termux_script() -> str:
    return f"""#!/data/data/com.termux/files/usr/bin/bash
# Build llama.cpp with Ouro support on the phone itself, inside Termux (no root needed):
#   pkg install -y git cmake clang ninja libandroid-spawn && ouro/build-termux.sh
# GGML_NATIVE=ON: the compiler targets exactly this phone's CPU. Environment: JOBS (default 4).
set -euo pipefail
cd "$(dirname "${{BASH_SOURCE[0]}}")/.."
for tool in cmake clang; do
    command -v "$tool" >/dev/null || {{ echo "missing $tool: pkg install -y git cmake clang ninja libandroid-spawn" >&2; exit 1; }}
done
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B build "${{generator[@]}}" -DGGML_NATIVE=ON \\
    {_common_cmake_args()}
cmake --build build --parallel "${{JOBS:-4}}" --target {" ".join(PHONE_TOOLS)}
echo
echo "built: build/bin/ ({", ".join(PHONE_TOOLS)}); keep the model in ~ (faster storage), then:"
echo "  ./build/bin/llama-cli -m ~/model.gguf {PHONE_RUN_FLAGS}"
"""


def _ios_notes() -> str:
    return f"""# iOS and Apple silicon

Not built or tested by this project (no Apple machine here); what should work, from llama.cpp's own
support:

- **macOS on Apple silicon** (a terminal build of the CLI tools):
  `cmake -S . -B build -DGGML_METAL=OFF -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF && cmake --build build -j --target {" ".join(PHONE_TOOLS)}`
- **iOS apps**: `./build-xcframework.sh` in this tree builds `build-apple/llama.xcframework` (iOS, iOS
  simulator, macOS, visionOS, tvOS) from these patched sources; link it from Xcode and use the C API in
  `include/llama.h` (the Swift example `examples/llama.swiftui` shows the calls).
- **CPU vs Metal**: the Ouro "skip" early exit computes node ranges on the CPU backend only; keep
  `GGML_METAL=OFF` (or offload no layers, `-ngl 0`) for it. The default "select" exit and plain loops
  are ordinary ggml graphs; Metal may run them, but that has not been verified against the reference.
- Memory: an iPhone app gets a fraction of the RAM (jetsam limits). Use the small-memory settings:
  loop-shared KV (`ouro.kv_share=bool:true`), q8_0 K/V cache, context 2048, and check the figure from
  `ouro info MODEL.gguf --ctx 2048 --kv share --kv-type q8_0` first.
"""


def _readme(patches: Sequence[Path]) -> str:
    rows = "\n".join(f"| `{p.name}` | `{sha256_file(p)[:16]}` |" for p in patches)
    return f"""# llama.cpp with Ouro support

This is the llama.cpp vendored by llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} (sdist sha256
`{SDIST_SHA256[:16]}…`, llama.cpp commit 0c1e570) with the ouro-gguf patches applied: the `ouro`
architecture (looped layers, exit gate, loop-shared KV, run-time exit control). The patches are in
`ouro/patches/`.

| patch | sha256 (first 16) |
|---|---|
{rows}

## Build

- Android phone, from a computer with the NDK: `ANDROID_NDK=... ouro/build-android.sh`
- Android phone, on the phone in Termux: `pkg install -y git cmake clang ninja libandroid-spawn && ouro/build-termux.sh`
- iOS / Apple silicon: see `ouro/IOS.md`
- Any Linux/macOS machine: `cmake -B build && cmake --build build -j --target llama-cli llama-server`

## Run on a phone

    llama-cli -m ouro.gguf {PHONE_RUN_FLAGS}

`--override-kv ouro.kv_share=bool:true` keeps one KV slot per physical layer instead of one per
(loop, layer): T times less KV memory. `-ctk q8_0 -ctv q8_0` halves the rest (quantized V needs
`-fa on`). Other run-time keys: `ouro.num_loops=int:N` (fewer loops: faster, weaker),
`ouro.exit_mode=str:skip` with `ouro.early_exit_threshold=float:0.5` (stop computing a token at its exit
loop). `ouro info MODEL.gguf --ctx 2048 --kv share --kv-type q8_0` (on a computer) prints the memory a
setting needs; prefer a Q8_0 or Q4_K_M GGUF on a phone.
"""
