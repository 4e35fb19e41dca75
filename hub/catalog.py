"""`ouro list` and `ouro rm`: the models converted into $OURO_CACHE/models/ and those downloaded from the Hub.

Downloaded means in the Hugging Face cache: Ouro GGUF files (any file there that validates) and Ouro
checkpoints (config.json with model_type "ouro"). Each gets the NAME `ouro chat` accepts, with its commit:
OWNER/REPO@COMMIT:TYPE (converted), OWNER/REPO@COMMIT/FILE.gguf and OWNER/REPO@COMMIT (downloaded).
`ouro rm` also takes a NAME without @COMMIT when only one revision matches.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gguf import LlamaFileType

from convert.checkpoint import REQUIRED_FILES
from hub import hf, hf_cache, store
from hub.errors import HubError
from runtime.gguf_header import read_header
from runtime.validate import GGUFValidationError, validate_gguf

_SHORT_COMMIT = 12


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "converted", "embedded" (the built-in model's conversion), "gguf" or "checkpoint" (downloaded)
    type: str
    size: int
    loops: int | None
    path: Path


def entries() -> list[Entry]:
    found = [e for p in sorted(store.models_dir().glob("*.gguf")) if (e := _gguf_entry(p, p.stem, "embedded"))]
    for path in sorted(store.hub_dir().glob("*/*/*.gguf")):
        repo = path.parent.parent.name.replace("--", "/", 1)
        type_name = path.stem.rsplit("-", 1)[-1]
        entry = _gguf_entry(path, f"{repo}@{path.parent.name[:_SHORT_COMMIT]}:{type_name}", "converted")
        found += [entry] if entry else []
    if hf.installed() and hf_cache.root().is_dir():
        found += _downloaded()
    return found


def remove(name: str) -> Entry:
    """Delete the model `name` (see the module doc) and return what it was."""
    matches = [e for e in entries() if name in (e.name, re.sub(r"@[0-9a-f]+", "", e.name))]
    if not matches:
        raise HubError(f"no model named {name!r} (`ouro list` shows the names)")
    if len(matches) > 1:
        raise HubError(f"{name!r} names {len(matches)} models: {', '.join(e.name for e in matches)}; give one of those")
    entry = matches[0]
    if entry.kind in ("converted", "embedded"):
        store.remove(entry.path)
    elif entry.kind == "gguf":
        hf_cache.remove_file(entry.path)
    else:
        for file in [p for p in entry.path.rglob("*") if p.is_file()]:
            hf_cache.remove_file(file)
    return entry


def _gguf_entry(path: Path, name: str, kind: str) -> Entry | None:
    try:
        summary = validate_gguf(path)
        file_type = read_header(path).fields["general.file_type"].value
    except (GGUFValidationError, KeyError):  # KeyError: no general.file_type
        return None  # not an Ouro GGUF this runtime runs: not a model `ouro chat` could be given by name
    type_name = LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    return Entry(name=name, kind=kind, type=type_name, size=summary.file_size, loops=summary.loops, path=path)


def _downloaded() -> list[Entry]:
    found = []
    for folder in sorted(hf_cache.root().glob("models--*--*")):
        repo = folder.name.removeprefix("models--").replace("--", "/", 1)
        for snapshot in sorted(p for p in (folder / "snapshots").glob("*") if p.is_dir()):
            at = f"{repo}@{snapshot.name[:_SHORT_COMMIT]}"
            for path in sorted(snapshot.rglob("*.gguf")):
                entry = _gguf_entry(path, f"{at}/{path.relative_to(snapshot).as_posix()}", "gguf")
                found += [entry] if entry else []
            config = _ouro_config(snapshot / "config.json")
            # A snapshot without its weights is not a model: huggingface_hub keeps the small files an
            # interrupted download finished (for the next run) and links the large one only once it is whole.
            if config is not None and all((snapshot / f).is_file() for f in REQUIRED_FILES):
                found.append(Entry(name=at, kind="checkpoint", type=str(config.get("torch_dtype", "?")),
                                   size=sum(p.stat().st_size for p in snapshot.rglob("*") if p.is_file()),
                                   loops=config.get("total_ut_steps"), path=snapshot))
    return found


def _ouro_config(path: Path) -> dict | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and config.get("model_type") == "ouro" else None
