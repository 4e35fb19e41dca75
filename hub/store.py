"""$OURO_CACHE/models/hub/: each checkpoint repo converted once per commit and output type.

The key is in the path: hub/OWNER--NAME/COMMIT/NAME-TYPE.gguf. A branch or tag is resolved to its commit
first, so a new commit on the branch is converted anew and an old one is never served for it.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from hub.errors import HubError
from runtime.cache import cache_dir


def models_dir() -> Path:
    """Where converted models live (the embedded model's conversions too, at the top level)."""
    return cache_dir() / "models"


def hub_dir() -> Path:
    return models_dir() / "hub"


def converted_path(repo_id: str, commit: str, type_name: str) -> Path:
    name = repo_id.split("/")[1]
    return hub_dir() / repo_id.replace("/", "--") / commit / f"{name}-{type_name}.gguf"


def convert_once(checkpoint: Path, out: Path, type_name: str, console: Console, *, label: str = "") -> Path:
    """`out`, converted from `checkpoint` now unless it exists (the converter writes it atomically).

    Also converts the embedded model (ouro_cli/embedded.py); `label` names the model in the message."""
    from convert.convert import convert_checkpoint
    from convert.errors import ConvertError

    out.parent.mkdir(parents=True, exist_ok=True)
    # Two commands started at once must not both convert (the second would find the output there).
    with (out.parent / f".{out.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.is_file():
            console.print(f"converting {escape(label or str(checkpoint))} to {escape(str(out))} (once)")
            try:
                convert_checkpoint(checkpoint, out, type_name, console=console)
            except ConvertError as e:
                raise HubError(f"cannot convert {checkpoint}: {e}") from None
            finally:
                if not out.is_file():
                    remove(out)
    return out


def remove(path: Path) -> None:
    """Remove a converted file, its lock and the directories left empty up to hub/."""
    path.unlink(missing_ok=True)
    (path.parent / f".{path.name}.lock").unlink(missing_ok=True)
    for parent in path.parents:
        if parent in (hub_dir(), models_dir()) or any(parent.iterdir()):
            break
        parent.rmdir()
