"""The build cache's shared working areas: one build per cache at a time, and a frozen copy of patches/.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from toolchain.inputs import PATCHES_DIR, patch_files

@contextlib.contextmanager
def cache_lock(cache: Path, console: Console) -> Iterator[None]:
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
def frozen_patches(patches_dir: Path, cache: Path) -> Iterator[Path]:
    """A private copy of the patches taken once, so that the key, the applied patches and the record agree
    even when someone edits patches/ during a long build."""
    (cache / "work").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache / "work", prefix=".patches-") as tmp:
        for patch in patch_files(patches_dir):
            shutil.copyfile(patch, Path(tmp) / patch.name)
        yield Path(tmp)
