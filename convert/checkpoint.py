"""Find an Ouro checkpoint (a directory or a repo id in the local Hugging Face cache) and validate it.

Validation happens before any output is created: config.json must describe an Ouro model, and the
safetensors file must hold exactly the tensors that config implies, with the implied shapes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convert.errors import CheckpointError
from convert.hparams import OuroHParams
from convert.safetensors_reader import SafetensorsFile
from convert.tensor_map import TensorSpec, expected_tensors

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
# Every file a conversion reads: the last two are optional (convert.tokenizer: the chat template).
SOURCE_FILES = (*REQUIRED_FILES, "tokenizer_config.json", "chat_template.jinja")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHOWN = 5  # names listed in a missing/extra error before "and N more"


@dataclass(frozen=True)
class Checkpoint:
    path: Path  # the directory holding the files
    name: str  # model name: general.name and the default output file name
    config: dict[str, Any]
    hparams: OuroHParams
    weights: SafetensorsFile
    tensors: list[TensorSpec]  # validated against `weights`, in GGUF order


def hf_hub_cache() -> Path:
    """The hub cache directory, resolved the way huggingface_hub does (HF_HUB_CACHE, then HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def locate(src: str | os.PathLike[str]) -> tuple[Path, str]:
    """The checkpoint directory for `src` and the model name to use for it."""
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a directory (SRC is a checkpoint directory or a repo id)")
        return path, _dir_model_name(path.resolve())
    text = str(src)
    if _REPO_ID.match(text):
        return _from_hf_cache(text), text.split("/")[1]
    raise CheckpointError(f"checkpoint directory not found: {path}")


def _dir_model_name(path: Path) -> str:
    """The directory's name, or the repo's name for a snapshot directory inside the HF cache."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1]
    return path.name


def _from_hf_cache(repo_id: str) -> Path:
    cache = hf_hub_cache()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        raise CheckpointError(
            f"{repo_id!r} is neither a directory nor in the local Hugging Face cache ({cache}); "
            f"to download it, install the hub extra: pip install 'ouro-gguf[hub]'"
        )
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snapshot = snapshots / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    # No usable refs/main (e.g. a cache filled by revision): take the most recently written snapshot.
    candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    if not candidates:
        raise CheckpointError(f"{repo_id!r}: the Hugging Face cache entry {repo_dir} has no snapshot")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def load_checkpoint(src: str | os.PathLike[str]) -> Checkpoint:
    path, name = locate(src)
    for fname in REQUIRED_FILES:
        if not (path / fname).is_file():
            if fname == "model.safetensors" and (path / "model.safetensors.index.json").is_file():
                raise CheckpointError(f"{path}: sharded checkpoints are not supported (Ouro ships one model.safetensors)")
            raise CheckpointError(f"{path}: missing file {fname}")
    config = read_json(path / "config.json", CheckpointError)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / 'config.json'}: expected a JSON object")
    hparams = OuroHParams.from_config(config, str(path / "config.json"))
    weights = SafetensorsFile(path / "model.safetensors")
    tensors = expected_tensors(hparams)
    _check_tensors(weights, tensors)
    return Checkpoint(path=path, name=name, config=config, hparams=hparams, weights=weights, tensors=tensors)


def read_json(path: Path, error: type[Exception]) -> Any:
    """Parse a JSON file, turning any read or syntax problem into `error` with one line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, absurd numbers, absurd nesting
        raise error(f"{path}: not valid JSON ({str(e)[:100]})") from None


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _check_tensors(weights: SafetensorsFile, tensors: list[TensorSpec]) -> None:
    where = weights.path
    expected = {t.hf_name: t for t in tensors}
    missing = [n for n in expected if n not in weights.entries]
    if missing:
        raise CheckpointError(f"{where}: missing tensors: {_listing(missing)}")
    extra = sorted(n for n in weights.entries if n not in expected)
    if extra:
        raise CheckpointError(f"{where}: unexpected tensors (not part of an Ouro model): {_listing(extra)}")
    for t in tensors:
        shape = weights.entries[t.hf_name].shape
        if shape != t.shape:
            raise CheckpointError(
                f"{where}: tensor {t.hf_name} has shape {list(shape)} but config.json implies {list(t.shape)}"
            )
