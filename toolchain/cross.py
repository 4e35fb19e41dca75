"""Cross-build the patched llama.cpp for aarch64 Linux and run it under qemu user emulation.

    ouro runtime cross-build [--target aarch64-linux] [--force]
    ouro runtime cross-run MODEL.gguf TOKEN [TOKEN ...] [-n N_PREDICT] [--compare] [--phone]

`cross-build` compiles the same patched tree `ouro runtime build` puts in the wheel (llama-cpp-python
0.3.36's vendored llama.cpp + patches/, staged by toolchain.export_source) with Debian's cross toolchain
(`apt-get install g++-aarch64-linux-gnu qemu-user`) into one statically linked program of ours,
`ouro-greedy` (toolchain/native/): greedy tokens and the full logits for a prompt of token ids. Static
linking means qemu-aarch64 runs it with no sysroot, and it can be copied to any aarch64 Linux machine.

Only libllama, ggml and ouro-greedy are compiled (llama.cpp as a CMake subproject), at -j2 under nice, in
a persistent build directory with ccache, so a rebuild after a patch edit recompiles what changed. ggml
targets a generic ARMv8.2-A with dotprod and fp16 (GGML_NATIVE off: the build machine is not the target),
which qemu's `max` CPU implements. The binary is cached under a key hashing the patches, the flags and our
native sources.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from runtime.cache import cache_dir
from toolchain.errors import BuildError
from toolchain.export_source import PHONE_ARM_ARCH, staged_patched_tree
from toolchain.inputs import PATCHES_DIR, cache_key, flags_id, patch_files
from toolchain.patching import sync_tree
from toolchain.progress import Reporter, log_path, run_logged
from toolchain.wheel import build_env
from toolchain.workspace import frozen_patches

NATIVE_DIR = Path(__file__).resolve().parent / "native"
PROGRAM = "ouro-greedy"
JOBS = "2"  # the machine's two cores are shared with training and the rest of the team


@dataclass(frozen=True)
class CrossTarget:
    name: str
    triple: str          # the GNU toolchain prefix: <triple>-gcc, <triple>-g++
    processor: str       # CMAKE_SYSTEM_PROCESSOR
    sysroot: Path        # Debian's cross libc for the target
    qemu: str            # the user-mode emulator that runs the target's binaries here
    qemu_cpu: str
    cmake_flags: tuple[str, ...]

    @property
    def packages(self) -> str:
        return f"g++-{self.triple} qemu-user"


TARGETS = {
    "aarch64-linux": CrossTarget(
        name="aarch64-linux", triple="aarch64-linux-gnu", processor="aarch64",
        sysroot=Path("/usr/aarch64-linux-gnu"), qemu="qemu-aarch64", qemu_cpu="max",
        cmake_flags=(
            "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=OFF",
            f"-DGGML_CPU_ARM_ARCH={PHONE_ARM_ARCH}",
            # ggml's own thread pool: a static libgomp adds nothing here and the NDK build has none.
            "-DGGML_OPENMP=OFF", "-DCMAKE_EXE_LINKER_FLAGS=-static",
        ),
    ),
}


class CrossError(BuildError):
    """The cross toolchain or emulator is missing, or the cross-built program failed."""


def get_target(name: str) -> CrossTarget:
    try:
        return TARGETS[name]
    except KeyError:
        raise CrossError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None


def missing_tools(target: CrossTarget, *, run: bool = True) -> list[str]:
    """Commands this machine lacks to build (and, with `run`, to emulate) `target`."""
    needed = [f"{target.triple}-gcc", f"{target.triple}-g++", "cmake"] + ([target.qemu] if run else [])
    return [tool for tool in needed if shutil.which(tool) is None]


def _require(target: CrossTarget, *, run: bool) -> None:
    missing = missing_tools(target, run=run)
    if missing:
        raise CrossError(f"{', '.join(missing)} not found: install the cross toolchain "
                         f"(Debian: apt-get install {target.packages})")


def _native_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(NATIVE_DIR.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cross_key(target: CrossTarget, patches: Sequence[Path]) -> str:
    return cache_key(patches, (*target.cmake_flags, f"target={target.name}", f"native={_native_digest()}"))


def binary_path(target: CrossTarget, *, patches_dir: Path = PATCHES_DIR) -> Path:
    """Where the cross-built ouro-greedy for the current patches lives (it may not be built yet)."""
    key = cross_key(target, patch_files(patches_dir))
    return cache_dir() / "cross" / target.name / key[:16] / PROGRAM


def _toolchain_file(target: CrossTarget) -> str:
    return f"""# Written by toolchain/cross.py: Debian's {target.triple} cross toolchain.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR {target.processor})
set(CMAKE_C_COMPILER {target.triple}-gcc)
set(CMAKE_CXX_COMPILER {target.triple}-g++)
set(CMAKE_FIND_ROOT_PATH {target.sysroot})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
"""


def _write_if_changed(path: Path, text: str) -> None:
    # An unchanged toolchain file keeps its mtime, so CMake does not reconfigure from scratch.
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


@contextlib.contextmanager
def _target_lock(directory: Path) -> Iterator[None]:
    """One cross build per target at a time: they share its source and build directories. Not the cache
    lock of toolchain.wheel: a long cross compile need not hold up the wheel build (staging the sources
    only reads the cached sdist, in a private temporary directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_cross(target_name: str = "aarch64-linux", *, force: bool = False, patches_dir: Path = PATCHES_DIR,
                console: Console | None = None) -> Path:
    """Build (or find in the cache) ouro-greedy for `target_name`; returns the binary's path."""
    console = console or Console(stderr=True, soft_wrap=True)
    target = get_target(target_name)
    _require(target, run=False)
    cache = cache_dir()
    out = binary_path(target, patches_dir=patches_dir)
    if out.is_file() and not force:
        return out
    root = cache / "cross" / target.name
    build_dir = cache / "build" / f"cross-{target.name}-{flags_id(target.cmake_flags)}"
    # The patches are read once (toolchain.workspace.frozen_patches): the key names what was compiled even if
    # patches/ is edited during the build.
    with _target_lock(root), Reporter(console) as reporter, frozen_patches(patches_dir, cache) as snapshot:
        patches = patch_files(snapshot)
        out = binary_path(target, patches_dir=snapshot)
        if out.is_file() and not force:
            return out  # built by a concurrent run while we waited
        log = log_path(cache, f"cross-{target.name}", cross_key(target, patches))
        with staged_patched_tree(cache / "work", reporter, log, patches) as tree:
            changed = sync_tree(tree, root / "src")
        # CMake binds a build directory to one source path: configure from a copy in the cache, not from
        # this checkout, so that other checkouts (CI's fresh clone) reuse the same build directory.
        (root / "native").mkdir(parents=True, exist_ok=True)  # an existing target: sync copies, never moves
        sync_tree(NATIVE_DIR, root / "native")
        reporter.done("source tree " + ("created" if changed < 0 else f"updated ({changed} file(s) changed)"))
        if force and build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True, exist_ok=True)
        toolchain = build_dir / f"{target.name}.toolchain.cmake"
        _write_if_changed(toolchain, _toolchain_file(target))
        env = build_env(target.cmake_flags, cache)
        generator = ["-G", "Ninja"] if shutil.which("ninja") and not (build_dir / "Makefile").exists() else []
        reporter.step(f"configuring the {target.name} build")
        run_logged(["cmake", "-S", str(root / "native"), "-B", str(build_dir), *generator,
                        f"-DCMAKE_TOOLCHAIN_FILE={toolchain}", f"-DLLAMA_CPP_DIR={root / 'src'}",
                        *target.cmake_flags], log, what=f"configuring the {target.name} build", env=env)
        reporter.step(f"cross-compiling llama.cpp for {target.name}")
        run_logged(["cmake", "--build", str(build_dir), "--parallel", JOBS, "--target", PROGRAM], log,
                       what=f"cross-compiling for {target.name}", env=env, on_line=reporter.build_line)
        built = build_dir / PROGRAM
        if not built.is_file():
            raise CrossError(f"the {target.name} build produced no {PROGRAM}; full log: {log}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{PROGRAM}.{os.getpid()}")
        shutil.copy2(built, tmp)
        os.replace(tmp, out)
        reporter.done(f"built {out}")
    return out


# ------------------------------------------------------------------------------------------- running

@dataclass(frozen=True)
class GreedyRun:
    tokens: list[int]     # the argmax of each step (step 0: after the prompt)
    logits: np.ndarray    # [steps, n_vocab] float32
    seconds: float        # wall time of the whole run (load included; under emulation)


def parse_greedy_output(text: str) -> tuple[list[int], np.ndarray]:
    """ouro-greedy's lines `step i token t logits v...` -> (tokens, logits[steps, vocab])."""
    tokens: list[int] = []
    rows: list[np.ndarray] = []
    for number, line in enumerate(text.splitlines()):
        parts = line.split()
        try:
            if len(parts) < 5 or parts[0:5:2] != ["step", "token", "logits"] or int(parts[1]) != number:
                raise ValueError(line)
            tokens.append(int(parts[3]))
            rows.append(np.array(parts[5:], dtype=np.float32))
        except ValueError:
            raise CrossError(f"unexpected output line {number} from {PROGRAM}: {line[:80]!r}") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise CrossError(f"{PROGRAM} printed no steps, or steps of different vocabulary sizes")
    return tokens, np.stack(rows)


def run_greedy(model: Path, prompt: Sequence[int], n_predict: int, *, target_name: str = "aarch64-linux",
               binary: Path | None = None, threads: int = 1, phone: bool = False, timeout: float = 600) -> GreedyRun:
    """Run the cross-built ouro-greedy under qemu on `model` (built first if needed); `phone`: the
    small-memory settings (shared KV, q8_0 KV cache, flash attention)."""
    target = get_target(target_name)
    _require(target, run=True)
    binary = binary or build_cross(target_name)
    cmd = [target.qemu, "-cpu", target.qemu_cpu, str(binary), *(["--phone"] if phone else []), str(model),
           str(n_predict), str(threads), *map(str, prompt)]
    start = time.monotonic()
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CrossError(f"{PROGRAM} under {target.qemu} took longer than {timeout:.0f} s") from None
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise CrossError(f"{PROGRAM} under {target.qemu} failed (exit {result.returncode}): "
                         f"{result.stderr.strip()[-500:]}")
    tokens, logits = parse_greedy_output(result.stdout)
    return GreedyRun(tokens=tokens, logits=logits, seconds=seconds)


def run_greedy_host(model: Path, prompt: Sequence[int], n_predict: int, *, threads: int = 1,
                    phone: bool = False) -> GreedyRun:
    """What ouro-greedy does, on this machine through llama_cpp (the x86 runtime): the reference run."""
    import llama_cpp

    from runtime.kv import GGML_TYPE_IDS

    start = time.monotonic()
    cache_type = GGML_TYPE_IDS["q8_0" if phone else "f16"]
    llm = llama_cpp.Llama(str(model), n_ctx=len(prompt) + n_predict + 1, n_batch=len(prompt) + n_predict + 1,
                          n_threads=threads, n_threads_batch=threads, verbose=False, type_k=cache_type,
                          type_v=cache_type, flash_attn=phone, kv_overrides={"ouro.kv_share": True} if phone else None)
    try:
        tokens: list[int] = []
        rows: list[np.ndarray] = []
        batch = list(prompt)
        for _ in range(n_predict + 1):
            llm.eval(batch)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
            rows.append(logits.astype(np.float32).copy())
            tokens.append(int(np.argmax(rows[-1])))  # the lowest id on ties, as in ouro-greedy
            batch = [tokens[-1]]
    finally:
        llm.close()
    return GreedyRun(tokens=tokens, logits=np.stack(rows), seconds=time.monotonic() - start)


@dataclass(frozen=True)
class Comparison:
    tokens_equal: bool
    steps_compared: int       # logits are compared up to the first step whose tokens differ, included:
                              # after it the two runs continue from different contexts
    max_abs_diff: float       # over the compared steps' logits
    max_rel_diff: float       # max_abs_diff / the largest |logit| of the reference in those steps
    target: GreedyRun
    host: GreedyRun


def compare(model: Path, prompt: Sequence[int], n_predict: int, *, target_name: str = "aarch64-linux",
            phone: bool = False) -> Comparison:
    """ouro-greedy under emulation against the host runtime on the same file, prompt and settings."""
    target = run_greedy(model, prompt, n_predict, target_name=target_name, phone=phone)
    host = run_greedy_host(model, prompt, n_predict, phone=phone)
    if target.logits.shape != host.logits.shape:
        raise CrossError(f"{target_name} produced logits of shape {target.logits.shape}, the host {host.logits.shape}")
    same = [a == b for a, b in zip(target.tokens, host.tokens)]
    steps = same.index(False) + 1 if False in same else len(same)
    diff = float(np.max(np.abs(target.logits[:steps] - host.logits[:steps])))
    scale = max(float(np.max(np.abs(host.logits[:steps]))), 1e-30)
    return Comparison(tokens_equal=all(same), steps_compared=steps, max_abs_diff=diff, max_rel_diff=diff / scale,
                      target=target, host=host)
