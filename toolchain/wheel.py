"""`ouro runtime build`: llama-cpp-python 0.3.36 plus our patches/, compiled into a wheel and installed.

1. the sdist is fetched once with pip into the cache (`$OURO_CACHE`, default ~/.cache/ouro-gguf) and its
   sha256 checked against the pinned value (toolchain.sdist);
2. it is unpacked into a staging tree, the patches are applied in sorted order with
   `git -C vendor/llama.cpp apply`, and only the files whose content changed are copied into a persistent
   source tree (toolchain.patching), so the persistent scikit-build-core build directory (one per set of
   compiler flags) and ccache recompile just what a patch touched;
3. the wheel is cached under a key hashing (version, sdist sha256, the content of every patch in order,
   the flags) (toolchain.inputs), installed with `pip install --force-reinstall --no-deps`, and the key
   is recorded in `sys.prefix/ouro-runtime.json` (toolchain.status). A build whose key is already
   installed does nothing.

`--tools` also builds the llama.cpp command-line programs (llama-cli, llama-server, llama-bench,
llama-perplexity, llama-quantize) from the same patched tree into `<cache>/tools/<key>/bin`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from runtime.cache import cache_dir
from toolchain.errors import CompileError
from toolchain.inputs import (BUILD_BACKEND, LLAMA_CPP_PYTHON_VERSION, LIBRARY, PATCHES_DIR, RUNTIME_REQUIREMENTS,
                              SDIST_SHA256, TOOLS, TOOLS_CMAKE_ARGS, VENDOR, build_flags, cache_key, flags_id,
                              patch_files, sha256_file)
from toolchain.patching import apply_patches, sync_tree
from toolchain.progress import Reporter, log_path, run_logged
from toolchain.sdist import download_sdist, fetch_sdist, unpack_sdist
from toolchain.status import installed_library, runtime_status, write_record
from toolchain.workspace import cache_lock, frozen_patches

def build_python(cache: Path, log: Path, reporter: Reporter) -> Path:
    """A private venv holding the build backend, created once per Python minor version."""
    venv = cache / f"buildenv-py{sys.version_info.major}.{sys.version_info.minor}"
    python = venv / "bin" / "python"
    marker = venv / ".ouro-ready"
    if python.exists() and marker.is_file() and marker.read_text() == BUILD_BACKEND:
        return python
    reporter.step("preparing the build environment")
    if venv.exists():
        shutil.rmtree(venv)
    run_logged([sys.executable, "-m", "venv", str(venv)], log, what="creating the build venv")
    run_logged([str(python), "-m", "pip", "install", "--quiet", BUILD_BACKEND], log,
                what="installing scikit-build-core")
    marker.write_text(BUILD_BACKEND)
    return python


def _backend_requirements(python: Path, project: Path, log: Path) -> None:
    """Install what scikit-build-core asks for on this machine (cmake or ninja from PyPI when the system
    ones are missing or too old); without build isolation pip would not do it for us."""
    probe = ("import json, scikit_build_core.build as b; "
             "print(json.dumps(b.get_requires_for_build_wheel()))")
    result = subprocess.run([str(python), "-c", probe], cwd=project, capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"scikit-build-core could not read {project / 'pyproject.toml'}: "
                           f"{result.stderr.strip().splitlines()[-1:]}")
    needed = json.loads(result.stdout.strip().splitlines()[-1])
    if needed:
        run_logged([str(python), "-m", "pip", "install", "--quiet", *needed], log,
                    what="installing build requirements")


def build_env(flags: Sequence[str], cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Our flags alone decide the build (they are part of the cache key): a stray CMAKE_ARGS in the user's
    # shell must not change what a key stands for.
    env["CMAKE_ARGS"] = " ".join(flags)
    env.setdefault("CCACHE_DIR", str(cache / "ccache"))
    return env



def prepare_sources(cache: Path, patches: Sequence[Path], log: Path, reporter: Reporter,
                    python: Path) -> Path:
    """The persistent, patched llama-cpp-python source tree for the current patches."""
    reporter.step("fetching the sdist")
    sdist = fetch_sdist(cache, lambda tmp: download_sdist(tmp, python, log))
    reporter.done(f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist verified (sha256 {SDIST_SHA256[:12]}…)")
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix=".staging-") as tmp:
        reporter.step("unpacking the sdist")
        staged = unpack_sdist(sdist, Path(tmp))
        reporter.step(f"applying {len(patches)} patch(es)")
        apply_patches(staged / VENDOR, patches)
        reporter.done(f"applied {len(patches)} patch(es)" + (": " + ", ".join(p.name for p in patches)
                                                              if patches else ""))
        reporter.step("updating the source tree")
        source = work / "src"
        changed = sync_tree(staged, source)
    reporter.done("source tree " + ("created" if changed < 0 else f"updated ({changed} file(s) changed)"))
    return source


def compile_wheel(source: Path, python: Path, flags: Sequence[str], cache: Path, key: str, log: Path,
                  reporter: Reporter, *, clean: bool) -> Path:
    """Build the wheel in the persistent build directory for `flags` and store it under `key`."""
    build_dir = cache / "build" / f"wheel-{flags_id(flags)}"
    if clean and build_dir.exists():
        shutil.rmtree(build_dir)
    _backend_requirements(python, source, log)
    reporter.step("compiling llama.cpp")
    with staged_dir(cache / "wheels" / key) as out:
        cmd = [str(python), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
               "-w", str(out), "-C", f"build-dir={build_dir}", str(source)]
        run_logged(cmd, log, what="building the llama-cpp-python wheel", env=build_env(flags, cache),
                    on_line=reporter.build_line)
        if len(list(out.glob("llama_cpp_python-*.whl"))) != 1:
            raise CompileError(f"the build produced no llama-cpp-python wheel; full log: {log}")
    wheel = cached_wheel(cache, key)
    assert wheel is not None
    return wheel


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A scratch directory beside `final` that replaces `final` only when the block succeeds, so the cache
    never holds a half-written wheel or tools directory."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def cached_wheel(cache: Path, key: str) -> Path | None:
    found = list((cache / "wheels" / key).glob("llama_cpp_python-*.whl"))
    return found[0] if len(found) == 1 else None


def compile_tools(source: Path, flags: Sequence[str], cache: Path, key: str, log: Path,
                  reporter: Reporter, *, clean: bool) -> Path:
    """Standalone CMake build of the llama.cpp programs; returns `<cache>/tools/<key>/bin`."""
    build_dir = cache / "build" / f"tools-{flags_id(flags)}"
    if clean and build_dir.exists():
        shutil.rmtree(build_dir)
    env = build_env(flags, cache)
    reporter.step("configuring the llama.cpp tools")
    run_logged(["cmake", "-S", str(source / VENDOR), "-B", str(build_dir), *cmake_generator(build_dir), *TOOLS_CMAKE_ARGS,
                 *flags], log, what="configuring the tools build", env=env)
    reporter.step("compiling the llama.cpp tools")
    jobs = env.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    run_logged(["cmake", "--build", str(build_dir), "--parallel", jobs, "--target", *TOOLS], log,
                what="compiling the tools", env=env, on_line=reporter.build_line)
    final = cache / "tools" / key / "bin"
    with staged_dir(final) as out:
        for tool in TOOLS:
            built = build_dir / "bin" / tool
            if not built.is_file():
                raise CompileError(f"the tools build produced no {tool}; full log: {log}")
            shutil.copy2(built, out / tool)
    return final


def cmake_generator(build_dir: Path) -> list[str]:
    """Ninja when it is installed; an existing build directory keeps its generator (CMake refuses to switch)."""
    return ["-G", "Ninja"] if shutil.which("ninja") and not (build_dir / "Makefile").exists() else []


def install_wheel(wheel: Path, log: Path, reporter: Reporter) -> Path:
    """Install into the running interpreter's environment, replacing any llama-cpp-python there."""
    reporter.step("installing the runtime")
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    run_logged([*pip, "--force-reinstall", "--no-deps", str(wheel)], log, what="installing the wheel")
    run_logged([*pip, *RUNTIME_REQUIREMENTS], log, what="installing llama-cpp-python's dependencies")
    importlib.invalidate_caches()
    library = installed_library()
    if library is None:
        raise CompileError(f"{wheel.name} installed, but this interpreter finds no llama_cpp/{LIBRARY}")
    return library


@dataclass(frozen=True)
class BuildResult:
    key: str
    compiled: bool      # False: the wheel came from the cache or was not needed
    installed: bool     # False: this key was already installed
    tools: Path | None
    seconds: float


def build_runtime(*, native: bool = False, tools: bool = False, force: bool = False,
                  patches_dir: Path = PATCHES_DIR, console: Console | None = None) -> BuildResult:
    """Build (or take from the cache) and install the runtime for the current patches; see the module doc.
    `force` rebuilds from a clean build directory (ccache still applies) and reinstalls."""
    console = console or Console(stderr=True, soft_wrap=True)
    started = time.monotonic()
    cache = cache_dir()
    flags = build_flags(native)
    if not force:
        # Nothing to do is decided without the lock: a no-op must not wait for someone's long compile.
        key = cache_key(patch_files(patches_dir), flags)
        status = runtime_status(patches_dir=patches_dir, cache=cache)
        if status.ok and status.installed_key == key and (not tools or status.tools is not None):
            console.print(f"[green]✓[/] runtime {key[:12]} already installed")
            return BuildResult(key=key, compiled=False, installed=False, tools=status.tools,
                               seconds=time.monotonic() - started)
    with cache_lock(cache, console), Reporter(console) as reporter, frozen_patches(patches_dir, cache) as snapshot:
        patches = patch_files(snapshot)
        key = cache_key(patches, flags)
        log = log_path(cache, "build", key)
        status = runtime_status(patches_dir=snapshot, cache=cache)
        already = status.ok and status.installed_key == key
        wheel = None if force else cached_wheel(cache, key)
        need_wheel = force or (wheel is None and not already)
        tools_bin = cache / "tools" / key / "bin"
        need_tools = tools and (force or not tools_bin.is_dir())
        if need_wheel or need_tools:
            python = build_python(cache, log, reporter)
            source = prepare_sources(cache, patches, log, reporter, python)
            if need_wheel:
                wheel = compile_wheel(source, python, flags, cache, key, log, reporter, clean=force)
                reporter.done(f"built {wheel.name} (key {key[:12]})")
            if need_tools:
                compile_tools(source, flags, cache, key, log, reporter, clean=force)
                reporter.done(f"built {', '.join(TOOLS)}")
        elif wheel is not None:
            reporter.done(f"wheel for key {key[:12]} found in the cache")
        install = need_wheel or not already
        if install:
            assert wheel is not None
            library = install_wheel(wheel, log, reporter)
            write_record({
                "key": key, "version": LLAMA_CPP_PYTHON_VERSION, "sdist_sha256": SDIST_SHA256,
                "native": native, "flags": list(flags),
                "patches": [{"name": p.name, "sha256": sha256_file(p)} for p in patches],
                "wheel": str(wheel), "library_sha256": sha256_file(library),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })
            reporter.done(f"installed into {sys.prefix}")
        else:
            reporter.done(f"runtime {key[:12]} already installed")
    return BuildResult(key=key, compiled=need_wheel, installed=install,
                       tools=tools_bin if tools_bin.is_dir() else None, seconds=time.monotonic() - started)
