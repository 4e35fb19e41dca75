"""Build and install the patched llama.cpp runtime: llama-cpp-python 0.3.36 plus our patches/.

    python -m runtime.build [build] [--native] [--tools] [--force]
    python -m runtime.build status
    python -m runtime.build devtree DIR

`build` turns the official llama-cpp-python source distribution into a wheel with every `patches/*.patch`
applied to its vendored llama.cpp, and installs that wheel into the running interpreter's environment:

1. the sdist is fetched once with pip into the cache (`$OURO_CACHE`, default ~/.cache/ouro-gguf) and its
   sha256 checked against the pinned value;
2. it is unpacked into a staging tree, the patches are applied in sorted order with
   `git -C vendor/llama.cpp apply`, and only the files whose content changed are copied into a persistent
   source tree, so the persistent scikit-build-core build directory (one per set of compiler flags) and
   ccache recompile just what a patch touched;
3. the wheel is cached under a key hashing (version, sdist sha256, the content of every patch in order,
   the flags), installed with `pip install --force-reinstall --no-deps`, and the key is recorded in
   `sys.prefix/ouro-runtime.json`. A build whose key is already installed does nothing.

`--tools` also builds the llama.cpp command-line programs (llama-cli, llama-server, llama-bench,
llama-perplexity, llama-quantize) from the same patched tree into `<cache>/tools/<key>/bin`.

Developer path (for whoever edits the C++ patches):

    python -m runtime.build devtree /tmp/llama-dev

makes DIR a git clone of the vendored llama.cpp with a tag `vendored` on the pristine commit and one commit
per patch on a branch `ouro-patches` (subject = the patch name without its number). Edit there (commit or
`git commit --fixup` + `git rebase -i --autosquash vendored`), build it with plain CMake if you like, then
regenerate patches/ from the checkout root:

    rm -f patches/*.patch
    git -C /tmp/llama-dev format-patch --zero-commit --no-numbered --no-signature --no-stat -o "$PWD/patches" vendored

which writes `0001-<subject>.patch`, ... in commit order; `python -m runtime.build` then picks the new
content up (the cache key changes) and rebuilds incrementally. A single squashed patch is just
`git -C /tmp/llama-dev diff vendored > patches/0001-ouro.patch`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from runtime.errors import OuroRuntimeError

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

# Compile progress in the build output: ninja prints "[12/345] ...", make prints "[ 45%] ...".
_NINJA_STEP = re.compile(r"\[(\d+)/(\d+)\]")
_MAKE_PERCENT = re.compile(r"\[\s*(\d+)%\]")


class BuildError(OuroRuntimeError):
    """The runtime cannot be built or used; the message says why and what to do."""


class SdistError(BuildError):
    """The llama-cpp-python source distribution could not be fetched or is not the pinned one."""


class PatchError(BuildError):
    """A file in patches/ does not apply to the vendored llama.cpp."""


class CompileError(BuildError):
    """A build step failed; the full output is in the log file named in the message."""


class RuntimeNotReady(BuildError):
    """llama_cpp is missing, not ours, or built from other patches than the current ones."""


# ----------------------------------------------------------------------------------------------- inputs

def cache_dir() -> Path:
    """Where sdists, build trees, wheels, tools and logs live ($OURO_CACHE, else ~/.cache/ouro-gguf)."""
    configured = os.environ.get("OURO_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ouro-gguf"


def build_flags(native: bool = False) -> tuple[str, ...]:
    return NATIVE_FLAGS if native else PORTABLE_FLAGS


def patch_files(patches_dir: Path = PATCHES_DIR) -> list[Path]:
    """The patches in the order they are applied: sorted by file name."""
    if not patches_dir.is_dir():
        return []
    return sorted((p for p in patches_dir.glob("*.patch") if p.is_file()), key=lambda p: p.name)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
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
        "patches": [_sha256_bytes(p.read_bytes()) for p in patches],
        "flags": list(flags),
    }
    return _sha256_bytes(json.dumps(material, sort_keys=True).encode())


def _flags_id(flags: Sequence[str]) -> str:
    """Names the persistent build directory: one per flag set, shared by every patch revision."""
    return _sha256_bytes("\n".join(flags).encode())[:12]


# ----------------------------------------------------------------------------------------- the sdist

def verify_sdist(path: Path, expected: str = SDIST_SHA256) -> None:
    actual = _sha256_file(path)
    if actual != expected:
        raise SdistError(
            f"{path.name} has sha256 {actual}, expected {expected}: this is not the official "
            f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} source distribution (corrupt or tampered download)"
        )


def download_sdist(dest: Path, python: Path, log: Path) -> Path:
    """Fetch the sdist with pip into `dest`. pip has to read the sdist's metadata, which needs the build
    backend: running it from the build venv with --no-build-isolation skips creating a throw-away one."""
    cmd = [str(python), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
           "--progress-bar", "off", "-d", str(dest), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"]
    _run_logged(cmd, log, what=f"downloading llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}")
    found = dest / SDIST_NAME
    if not found.is_file():
        raise SdistError(f"pip did not produce {SDIST_NAME} in {dest} (see {log})")
    return found


def fetch_sdist(cache: Path, downloader: Callable[[Path], Path], expected: str = SDIST_SHA256) -> Path:
    """The verified sdist in the cache, downloaded by `downloader(tmpdir)` when absent or damaged.
    A download that fails verification never enters the cache."""
    target = cache / "sdist" / SDIST_NAME
    if target.is_file():
        try:
            verify_sdist(target, expected)
            return target
        except SdistError:
            target.unlink()  # a damaged cached copy: fetch it again rather than fail forever
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        fetched = downloader(Path(tmp))
        verify_sdist(fetched, expected)
        os.replace(fetched, target)
    return target


def unpack_sdist(sdist: Path, dest: Path) -> Path:
    """Unpack into `dest` and return the project root (the directory holding pyproject.toml)."""
    with tarfile.open(sdist) as archive:
        # The "data" filter refuses paths outside dest and drops the archive's owners, so git does not
        # treat the extracted repository as someone else's.
        archive.extractall(dest, filter="data")
    roots = [p for p in dest.iterdir() if (p / "pyproject.toml").is_file()]
    if len(roots) != 1:
        raise SdistError(f"{sdist.name} does not unpack to a single project directory")
    return roots[0]


# --------------------------------------------------------------------------------------------- patches

def _git(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise BuildError("git is not installed (apt-get install git)") from None


def apply_patches(vendor_dir: Path, patches: Sequence[Path], *, index: bool = False,
                  on_applied: Callable[[Path], None] | None = None) -> None:
    """Apply each patch with `git apply` (into the index too when `index`); stop at the first failure."""
    for patch in patches:
        extra = ["--index"] if index else []
        result = _git(["apply", "--whitespace=nowarn", *extra, str(patch.resolve())], vendor_dir)
        if result.returncode != 0:
            detail = " ".join(result.stderr.strip().splitlines()[:4])
            raise PatchError(
                f"patch {patch.name} does not apply to the llama.cpp vendored in llama-cpp-python "
                f"{LLAMA_CPP_PYTHON_VERSION}: {detail or 'git apply failed'}"
            )
        if on_applied:
            on_applied(patch)


def sync_tree(src: Path, dst: Path) -> int:
    """Make `dst` hold exactly the content of `src`, rewriting only files whose bytes differ, so their
    modification times (and with them the incremental build) change only where the content did.
    Returns how many files were written or removed."""
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        return -1  # everything is new
    changed = 0
    wanted: set[Path] = set()
    for root, dirs, files in os.walk(src):
        rel_root = Path(root).relative_to(src)
        (dst / rel_root).mkdir(exist_ok=True)
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            rel = rel_root / name
            wanted.add(rel)
            if _copy_if_different(src / rel, dst / rel):
                changed += 1
        wanted.update(rel_root / d for d in dirs)
    for root, dirs, files in os.walk(dst, topdown=False):
        rel_root = Path(root).relative_to(dst)
        for name in files + dirs:
            rel = rel_root / name
            if rel in wanted:
                continue
            path = dst / rel
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            changed += 1
    return changed


def _copy_if_different(src: Path, dst: Path) -> bool:
    if src.is_symlink():
        target = os.readlink(src)
        if dst.is_symlink() and os.readlink(dst) == target:
            return False
        _remove(dst)
        dst.symlink_to(target)
        return True
    if dst.is_file() and not dst.is_symlink():
        if dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
            return False
    _remove(dst)
    shutil.copyfile(src, dst)  # fresh mtime: the build sees this file as changed
    shutil.copymode(src, dst)
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# ----------------------------------------------------------------------------------- running commands

def _nice() -> None:
    # The machine is shared: compiles yield to interactive work.
    os.nice(10)


def _run_logged(cmd: Sequence[str], log: Path, *, what: str, cwd: Path | None = None,
                env: dict[str, str] | None = None, on_line: Callable[[str], None] | None = None) -> None:
    """Run `cmd`, appending its output to `log` and feeding each line to `on_line`; a failure raises
    CompileError naming the log and quoting the output's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    # Line-buffered, so that `tail -f` on the log follows a long compile.
    with log.open("a", encoding="utf-8", errors="replace", buffering=1) as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", bufsize=1, preexec_fn=_nice)
        except FileNotFoundError:
            raise CompileError(f"{what} failed: {cmd[0]} is not installed") from None
        assert proc.stdout is not None
        with proc:
            for line in proc.stdout:
                handle.write(line)
                tail.append(line.rstrip())
                if on_line:
                    on_line(line)
    if proc.returncode != 0:
        last = "\n".join(f"    {line}" for line in tail)
        raise CompileError(f"{what} failed (exit {proc.returncode}); full log: {log}\n{last}")


class _Reporter:
    """One rich progress line for the current step, with compile progress parsed from the build output.
    Without a terminal (CI logs) it prints a line per step and per tenth of the compile instead."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=True,
        )
        self.task = self.progress.add_task("", total=None)
        self._step = ""
        self._tenth = -1

    def __enter__(self) -> _Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def step(self, description: str) -> None:
        self._step = description
        self._tenth = -1
        self.progress.update(self.task, description=description, total=None, completed=0)
        if not self.console.is_terminal:
            self.console.print(f"… {description}")

    def done(self, message: str) -> None:
        self.console.print(f"[green]✓[/] {message}")

    def build_line(self, line: str) -> None:
        match = _NINJA_STEP.search(line)
        if match:
            done, total = int(match.group(1)), int(match.group(2))
        else:
            match = _MAKE_PERCENT.match(line.strip())
            if not match:
                return
            done, total = int(match.group(1)), 100
        self.progress.update(self.task, completed=done, total=total)
        tenth = done * 10 // max(total, 1)
        if not self.console.is_terminal and tenth != self._tenth:
            self._tenth = tenth
            self.console.print(f"  {self._step}: {done}/{total}")


# -------------------------------------------------------------------------------------- build pieces

def _build_python(cache: Path, log: Path, reporter: _Reporter) -> Path:
    """A private venv holding the build backend, created once per Python minor version."""
    venv = cache / f"buildenv-py{sys.version_info.major}.{sys.version_info.minor}"
    python = venv / "bin" / "python"
    marker = venv / ".ouro-ready"
    if python.exists() and marker.is_file() and marker.read_text() == BUILD_BACKEND:
        return python
    reporter.step("preparing the build environment")
    if venv.exists():
        shutil.rmtree(venv)
    _run_logged([sys.executable, "-m", "venv", str(venv)], log, what="creating the build venv")
    _run_logged([str(python), "-m", "pip", "install", "--quiet", BUILD_BACKEND], log,
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
        _run_logged([str(python), "-m", "pip", "install", "--quiet", *needed], log,
                    what="installing build requirements")


def _build_env(flags: Sequence[str], cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Our flags alone decide the build (they are part of the cache key): a stray CMAKE_ARGS in the user's
    # shell must not change what a key stands for.
    env["CMAKE_ARGS"] = " ".join(flags)
    env.setdefault("CCACHE_DIR", str(cache / "ccache"))
    return env


def _log_path(cache: Path, what: str, key: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return cache / "logs" / f"{what}-{key[:12]}-{stamp}.log"


def prepare_sources(cache: Path, patches: Sequence[Path], log: Path, reporter: _Reporter,
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
                  reporter: _Reporter, *, clean: bool) -> Path:
    """Build the wheel in the persistent build directory for `flags` and store it under `key`."""
    build_dir = cache / "build" / f"wheel-{_flags_id(flags)}"
    if clean and build_dir.exists():
        shutil.rmtree(build_dir)
    _backend_requirements(python, source, log)
    reporter.step("compiling llama.cpp")
    with _staged_dir(cache / "wheels" / key) as out:
        cmd = [str(python), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
               "-w", str(out), "-C", f"build-dir={build_dir}", str(source)]
        _run_logged(cmd, log, what="building the llama-cpp-python wheel", env=_build_env(flags, cache),
                    on_line=reporter.build_line)
        if len(list(out.glob("llama_cpp_python-*.whl"))) != 1:
            raise CompileError(f"the build produced no llama-cpp-python wheel; full log: {log}")
    wheel = cached_wheel(cache, key)
    assert wheel is not None
    return wheel


@contextlib.contextmanager
def _staged_dir(final: Path) -> Iterator[Path]:
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
                  reporter: _Reporter, *, clean: bool) -> Path:
    """Standalone CMake build of the llama.cpp programs; returns `<cache>/tools/<key>/bin`."""
    build_dir = cache / "build" / f"tools-{_flags_id(flags)}"
    if clean and build_dir.exists():
        shutil.rmtree(build_dir)
    env = _build_env(flags, cache)
    generator = ["-G", "Ninja"] if shutil.which("ninja") and not (build_dir / "Makefile").exists() else []
    reporter.step("configuring the llama.cpp tools")
    _run_logged(["cmake", "-S", str(source / VENDOR), "-B", str(build_dir), *generator, *TOOLS_CMAKE_ARGS,
                 *flags], log, what="configuring the tools build", env=env)
    reporter.step("compiling the llama.cpp tools")
    jobs = env.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    _run_logged(["cmake", "--build", str(build_dir), "--parallel", jobs, "--target", *TOOLS], log,
                what="compiling the tools", env=env, on_line=reporter.build_line)
    final = cache / "tools" / key / "bin"
    with _staged_dir(final) as out:
        for tool in TOOLS:
            built = build_dir / "bin" / tool
            if not built.is_file():
                raise CompileError(f"the tools build produced no {tool}; full log: {log}")
            shutil.copy2(built, out / tool)
    return final


# ----------------------------------------------------------------------------- install and status

def _installed_library() -> Path | None:
    """libllama.so of the llama_cpp package the running interpreter would import (without loading it)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    library = Path(list(spec.submodule_search_locations)[0]) / LIBRARY
    return library if library.is_file() else None


def record_path(prefix: Path | None = None) -> Path:
    return Path(prefix or sys.prefix) / RECORD_NAME


def read_record(prefix: Path | None = None) -> dict | None:
    try:
        return json.loads(record_path(prefix).read_text())
    except (OSError, ValueError):
        return None


def write_record(record: dict, prefix: Path | None = None) -> None:
    path = record_path(prefix)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def install_wheel(wheel: Path, log: Path, reporter: _Reporter) -> Path:
    """Install into the running interpreter's environment, replacing any llama-cpp-python there."""
    reporter.step("installing the runtime")
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    _run_logged([*pip, "--force-reinstall", "--no-deps", str(wheel)], log, what="installing the wheel")
    _run_logged([*pip, *RUNTIME_REQUIREMENTS], log, what="installing llama-cpp-python's dependencies")
    importlib.invalidate_caches()
    library = _installed_library()
    if library is None:
        raise CompileError(f"{wheel.name} installed, but this interpreter finds no llama_cpp/{LIBRARY}")
    return library


UP_TO_DATE = "installed, up to date"
STALE = "installed, stale (patches changed)"
FOREIGN = "installed, but not built by ouro (a stock llama-cpp-python?)"
MISSING = "not installed"


@dataclass(frozen=True)
class RuntimeStatus:
    state: str                       # one of UP_TO_DATE, STALE, FOREIGN, MISSING
    expected_key: str                # key for the current patches and the installed (or default) flags
    installed_key: str | None
    native: bool
    patches: tuple[str, ...]         # current patches/ files, in order
    patch_changes: tuple[str, ...]   # since the installed build: "+added", "~changed", "-removed" patch names
    library: Path | None
    tools: Path | None

    @property
    def ok(self) -> bool:
        return self.state == UP_TO_DATE


def runtime_status(*, prefix: Path | None = None, patches_dir: Path = PATCHES_DIR,
                   cache: Path | None = None) -> RuntimeStatus:
    record = read_record(prefix)
    native = bool(record and record.get("native"))
    patches = patch_files(patches_dir)
    expected = cache_key(patches, build_flags(native))
    library = _installed_library()
    installed_key = record.get("key") if record else None
    if library is None:
        state = MISSING
    elif record is None or record.get("library_sha256") != _sha256_file(library):
        state = FOREIGN  # llama_cpp is there, but not the library our build installed
    elif installed_key != expected:
        state = STALE
    else:
        state = UP_TO_DATE
    tools = (cache or cache_dir()) / "tools" / expected / "bin"
    return RuntimeStatus(
        state=state, expected_key=expected, installed_key=installed_key, native=native,
        patches=tuple(p.name for p in patches),
        patch_changes=_patch_changes(record.get("patches", []) if record else [], patches),
        library=library, tools=tools if tools.is_dir() else None,
    )


def _patch_changes(recorded: list[dict], patches: Sequence[Path]) -> tuple[str, ...]:
    before = {entry.get("name"): entry.get("sha256") for entry in recorded}
    now = {p.name: _sha256_file(p) for p in patches}
    changes = [("+" if name not in before else "~") + name for name, sha in now.items() if before.get(name) != sha]
    return tuple(changes + [f"-{name}" for name in before if name not in now])


def ensure_runtime(*, prefix: Path | None = None, patches_dir: Path = PATCHES_DIR) -> RuntimeStatus:
    """Fail with one actionable sentence unless our patched llama_cpp is installed for the current patches."""
    status = runtime_status(prefix=prefix, patches_dir=patches_dir)
    if not status.ok:
        raise RuntimeNotReady(f"the patched llama.cpp runtime is {status.state}: run `{BUILD_COMMAND}` "
                              f"(or scripts/bootstrap.sh) first")
    return status


def tools_dir() -> Path | None:
    """The directory holding llama-cli & co. built from the current patches, if `--tools` was built."""
    return runtime_status().tools


# ------------------------------------------------------------------------------------- entry points

@contextlib.contextmanager
def _cache_lock(cache: Path, console: Console) -> Iterator[None]:
    """One build per cache at a time: they share the source tree and build directories."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print("waiting for another build using this cache to finish…")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _snapshot(patches_dir: Path, cache: Path) -> Iterator[Path]:
    """A private copy of the patches taken once, so that the key, the applied patches and the record agree
    even when someone edits patches/ during a long build."""
    (cache / "work").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache / "work", prefix=".patches-") as tmp:
        for patch in patch_files(patches_dir):
            shutil.copyfile(patch, Path(tmp) / patch.name)
        yield Path(tmp)


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
    with _cache_lock(cache, console), _Reporter(console) as reporter, _snapshot(patches_dir, cache) as snapshot:
        patches = patch_files(snapshot)
        key = cache_key(patches, flags)
        log = _log_path(cache, "build", key)
        status = runtime_status(patches_dir=snapshot, cache=cache)
        already = status.ok and status.installed_key == key
        wheel = None if force else cached_wheel(cache, key)
        need_wheel = force or (wheel is None and not already)
        tools_bin = cache / "tools" / key / "bin"
        need_tools = tools and (force or not tools_bin.is_dir())
        if need_wheel or need_tools:
            python = _build_python(cache, log, reporter)
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
                "patches": [{"name": p.name, "sha256": _sha256_file(p)} for p in patches],
                "wheel": str(wheel), "library_sha256": _sha256_file(library),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })
            reporter.done(f"installed into {sys.prefix}")
        else:
            reporter.done(f"runtime {key[:12]} already installed")
    return BuildResult(key=key, compiled=need_wheel, installed=install,
                       tools=tools_bin if tools_bin.is_dir() else None, seconds=time.monotonic() - started)


def make_devtree(target: Path, *, patches_dir: Path = PATCHES_DIR, console: Console | None = None) -> Path:
    """Clone the vendored llama.cpp into `target` with one commit per patch (see the module doc)."""
    console = console or Console(stderr=True, soft_wrap=True)
    target = target.resolve()
    if target.exists() and any(target.iterdir()):
        raise BuildError(f"{target} exists and is not empty: choose a new directory")
    cache = cache_dir()
    patches = patch_files(patches_dir)
    log = _log_path(cache, "devtree", cache_key(patches, ()))
    # Fixed identity and dates: regenerating an unchanged patch gives identical bytes (same cache key).
    env = dict(os.environ, GIT_AUTHOR_NAME="ouro devtree", GIT_AUTHOR_EMAIL="devtree@ouro.invalid",
               GIT_COMMITTER_NAME="ouro devtree", GIT_COMMITTER_EMAIL="devtree@ouro.invalid",
               GIT_AUTHOR_DATE="2026-01-01T00:00:00+0000", GIT_COMMITTER_DATE="2026-01-01T00:00:00+0000")
    with _cache_lock(cache, console), _Reporter(console) as reporter:
        python = _build_python(cache, log, reporter)
        reporter.step("fetching the sdist")
        sdist = fetch_sdist(cache, lambda tmp: download_sdist(tmp, python, log))
        (cache / "work").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache / "work", prefix=".devtree-") as tmp:
            reporter.step("unpacking the sdist")
            vendor = unpack_sdist(sdist, Path(tmp)) / VENDOR
            reporter.step(f"cloning the vendored llama.cpp into {target}")
            _run_logged(["git", "-c", "advice.detachedHead=false", "clone", "--quiet", str(vendor),
                         str(target)], log, what="cloning the vendored llama.cpp")
        for args in (["remote", "remove", "origin"], ["tag", "vendored"], ["checkout", "-q", "-b", "ouro-patches"]):
            if _git(args, target).returncode != 0:
                raise BuildError(f"git {' '.join(args)} failed in {target}")

        def commit(patch: Path) -> None:
            subject = re.sub(r"^\d+-", "", patch.stem)
            if _git(["commit", "-q", "-m", subject], target, env=env).returncode != 0:
                raise PatchError(f"patch {patch.name} applied but could not be committed (empty patch?)")
            reporter.done(f"{patch.name} → commit '{subject}'")

        reporter.step(f"applying {len(patches)} patch(es)")
        apply_patches(target, patches, index=True, on_applied=commit)
    return target


def print_status(status: RuntimeStatus, console: Console) -> None:
    colour = "green" if status.ok else "yellow"
    mode = "native" if status.native else "portable"
    console.print(f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} + {len(status.patches)} patch(es), "
                  f"{mode} CPU build: [{colour}]{status.state}[/]")
    console.print(f"  patches:   {', '.join(status.patches) or '(none)'}")
    if status.state == STALE:
        console.print(f"  changed:   {', '.join(status.patch_changes) or '(no patch: the flags or sdist differ)'} "
                      f"(installed key {str(status.installed_key)[:12]}, current {status.expected_key[:12]})")
    if status.library:
        console.print(f"  library:   {status.library}")
    console.print(f"  tools:     {status.tools or 'not built (ouro runtime build --tools)'}")
    if not status.ok:
        console.print(f"  run `{BUILD_COMMAND}` to fix")


def run_for_cli(work: Callable[[Console], list[str]]) -> int:
    """Run a build step for a command line: `work` gets the console for its progress and returns the lines
    that report its result. An error is one message without a traceback; returns the exit code."""
    console = Console(stderr=True, soft_wrap=True)
    try:
        lines = work(console)
    except BuildError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    for line in lines:
        console.print(line, highlight=False)
    return 0


def cli_build(*, native: bool, tools: bool, force: bool) -> int:
    """`build` for both command lines."""
    def work(console: Console) -> list[str]:
        result = build_runtime(native=native, tools=tools, force=force, console=console)
        return [f"runtime ready in {result.seconds:.1f} s (key {result.key[:12]})",
                *([f"tools: {result.tools}"] if result.tools else [])]

    return run_for_cli(work)


def cli_status() -> int:
    """`status`: exit 0 when the runtime is up to date, 1 otherwise (scripts can test it)."""
    status = runtime_status()
    print_status(status, Console(soft_wrap=True))
    return 0 if status.ok else 1


def cli_devtree(directory: Path) -> int:
    console = Console(stderr=True, soft_wrap=True)
    try:
        target = make_devtree(directory, console=console)
    except BuildError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        return 1
    console.print(f"dev tree ready: {target} (branch ouro-patches, base tag vendored)", highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.build", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    build = sub.add_parser("build", help="build and install the patched runtime (the default)")
    for p, default in ((parser, False), (build, argparse.SUPPRESS)):  # flags work before or after "build"
        p.add_argument("--native", action="store_true", default=default,
                       help="tune for this CPU (GGML_NATIVE) instead of the portable AVX2 set")
        p.add_argument("--tools", action="store_true", default=default,
                       help="also build llama-cli, llama-server, llama-bench, llama-perplexity, llama-quantize")
        p.add_argument("--force", action="store_true", default=default,
                       help="rebuild from a clean build directory and reinstall")
    sub.add_parser("status", help="tell whether the installed runtime matches patches/")
    devtree = sub.add_parser("devtree", help="a git checkout of the vendored llama.cpp with the patches as commits")
    devtree.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.command == "status":
        return cli_status()
    if args.command == "devtree":
        return cli_devtree(args.directory)
    return cli_build(native=args.native, tools=args.tools, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
