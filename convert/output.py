"""Where the GGUF goes, and writing it atomically: a temp file in the target directory, then os.replace.

An interrupted or failed conversion therefore never leaves a partial .gguf behind (nor the temp file).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from convert.errors import OutputError


def default_output_name(model_name: str, type_name: str) -> str:
    return f"{model_name}-{type_name}.gguf"


def resolve_output(outfile: str | os.PathLike[str] | None, model_name: str, type_name: str, force: bool) -> Path:
    """The output path, after checking it can be written (before any work is done)."""
    out = Path(outfile).expanduser() if outfile is not None else Path.cwd() / default_output_name(model_name, type_name)
    if out.is_dir():
        raise OutputError(f"output path {out} is a directory")
    if out.exists() and not force:
        raise OutputError(f"output file {out} already exists (use --force to overwrite it)")
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory {parent} is not writable")
    return out


@contextmanager
def temp_sibling(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh hidden temp file next to `path`, always removed on exit."""
    # Not tempfile.mkstemp: its files are mode 0600 and os.replace would keep that; O_EXCL with the
    # default mode honours the user's umask like any other file they create.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        raise OutputError(f"cannot write to {path.parent}: {e.strerror or e}") from None
    try:
        yield tmp
    except OSError as e:  # disk full, permissions changed under us, ...
        where = f"{e.filename}: " if e.filename else ""
        raise OutputError(f"writing {path} failed: {where}{e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it becomes `path`, on any failure it is removed."""
    with temp_sibling(path) as tmp:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise OutputError(f"cannot create {path}: {e.strerror or e}") from None
