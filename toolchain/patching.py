"""Applying patches/ to the vendored llama.cpp, and syncing a patched tree into the persistent one.

`sync_tree` rewrites only the files whose bytes differ, so the incremental build (and ccache) recompile
just what a patch touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from toolchain.errors import BuildError, PatchError
from toolchain.inputs import LLAMA_CPP_PYTHON_VERSION

def git(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise BuildError("git is not installed (apt-get install git)") from None


def apply_patches(vendor_dir: Path, patches: Sequence[Path], *, index: bool = False,
                  on_applied: Callable[[Path], None] | None = None) -> None:
    """Apply each patch with `git apply` (into the index too when `index`); stop at the first failure."""
    for patch in patches:
        extra = ["--index"] if index else []
        result = git(["apply", "--whitespace=nowarn", *extra, str(patch.resolve())], vendor_dir)
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
