"""Which runtime is installed: the record a build leaves in sys.prefix, compared with the current patches/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from runtime.cache import cache_dir
from toolchain.errors import RuntimeNotReady
from toolchain.inputs import (BUILD_COMMAND, LIBRARY, LLAMA_CPP_PYTHON_VERSION, PATCHES_DIR, RECORD_NAME, build_flags,
                              cache_key, patch_files, sha256_file)

def installed_library() -> Path | None:
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
    library = installed_library()
    installed_key = record.get("key") if record else None
    if library is None:
        state = MISSING
    elif record is None or record.get("library_sha256") != sha256_file(library):
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
    now = {p.name: sha256_file(p) for p in patches}
    changes = [("+" if name not in before else "~") + name for name, sha in now.items() if before.get(name) != sha]
    return tuple(changes + [f"-{name}" for name in before if name not in now])


def ensure_runtime(*, prefix: Path | None = None, patches_dir: Path = PATCHES_DIR) -> RuntimeStatus:
    """Fail with one actionable sentence unless our patched llama_cpp is installed for the current patches."""
    status = runtime_status(prefix=prefix, patches_dir=patches_dir)
    if not status.ok:
        raise RuntimeNotReady(f"the patched llama.cpp runtime is {status.state}: run `{BUILD_COMMAND}` "
                              f"(or scripts/bootstrap.sh) first")
    return status


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
