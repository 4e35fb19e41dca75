"""What the Hugging Face cache holds, read without asking the Hub; removing one file from it.

The layout is huggingface_hub's: models--OWNER--NAME/{refs/BRANCH, snapshots/COMMIT/PATH -> ../../blobs/ETAG}.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from hub.reference import HubRef

_COMMIT = re.compile(r"[0-9a-f]{40}")


def root() -> Path:
    from hub.hf import huggingface_hub

    return Path(huggingface_hub().constants.HF_HUB_CACHE)


def repo_folder(repo_id: str) -> Path:
    return root() / ("models--" + repo_id.replace("/", "--"))


def cached_files(ref: HubRef) -> tuple[str, dict[str, int]] | None:
    """(commit, path -> bytes) of the snapshot `ref` names in the cache, or None if it holds none."""
    folder = repo_folder(ref.repo_id)
    revision = ref.revision or "main"
    if _COMMIT.fullmatch(revision):
        commit = revision
    else:
        ref_file = folder / "refs" / revision
        if not ref_file.is_file():
            return None
        commit = ref_file.read_text().strip()
    snapshot = folder / "snapshots" / commit
    files = {p.relative_to(snapshot).as_posix(): p.stat().st_size
             for p in snapshot.rglob("*") if p.is_file()} if snapshot.is_dir() else {}
    return (commit, files) if files else None


def remove_file(path: Path) -> None:
    """Remove a snapshot file and its blob (unless another snapshot links to it), then what is left empty."""
    snapshots = next(p for p in path.parents if p.name == "snapshots")
    blob = path.resolve()
    path.unlink()
    if blob != path and not any(p.is_symlink() and p.resolve() == blob for p in snapshots.rglob("*")):
        blob.unlink(missing_ok=True)
    for parent in path.parents:
        if parent == snapshots or any(parent.iterdir()):
            break
        parent.rmdir()
        if parent.parent == snapshots:  # the whole snapshot is gone: so are the branches pointing at it
            for ref_file in (snapshots.parent / "refs").rglob("*"):
                if ref_file.is_file() and ref_file.read_text().strip() == parent.name:
                    ref_file.unlink()
    forget_if_empty(snapshots.parent)


def forget_if_empty(folder: Path) -> None:
    """Remove a repo's cache folder that holds no downloaded file (after a failed or undone download).

    Its refs, tree listings and .no_exist markers then describe nothing, and `ouro list` would show a
    repo that is not there."""
    blobs = folder / "blobs"
    if folder.is_dir() and not (blobs.is_dir() and any(blobs.iterdir())):
        shutil.rmtree(folder, ignore_errors=True)
