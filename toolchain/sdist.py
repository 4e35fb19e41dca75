"""The pinned llama-cpp-python source distribution: fetched once with pip, checked, unpacked.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from toolchain.errors import SdistError
from toolchain.inputs import LLAMA_CPP_PYTHON_VERSION, SDIST_NAME, SDIST_SHA256, sha256_file
from toolchain.progress import run_logged

def verify_sdist(path: Path, expected: str = SDIST_SHA256) -> None:
    actual = sha256_file(path)
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
    run_logged(cmd, log, what=f"downloading llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}")
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
