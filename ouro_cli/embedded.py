"""The model `ouro chat` runs when given none: the checkpoint in models/, converted on first use.

The checkpoint ships in the repository (models/ouro-tiny-arith/, trained by models/train.py); it is
converted to an F16 GGUF (small enough at this size, and exact) into the cache,
$OURO_CACHE/models/<name>-<hash of the checkpoint files>.gguf (~/.cache/ouro-gguf by default), and that
file is reused until the checkpoint changes.

Until the trained checkpoint is committed, a random-weight checkpoint from models.synthetic stands in
(it needs the `tokenizers` package of the dev extra); it produces noise, and `synthetic` says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from hub.store import convert_once, models_dir
from runtime.cache import cache_dir
from runtime.errors import OuroRuntimeError

TRAINED_NAME = "ouro-tiny-arith"
TRAINED_DIR = Path(__file__).resolve().parents[1] / "models" / TRAINED_NAME
SYNTHETIC_NAME = "synthetic-tiny"
GGUF_TYPE = "f16"
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    checkpoint: Path
    gguf: Path
    synthetic: bool  # a random-weight stand-in, not a trained model

    @property
    def label(self) -> str:
        if self.synthetic:
            return f"{self.name} (random weights standing in for models/{TRAINED_NAME}, not trained yet)"
        return f"{self.name} (embedded)"


def _is_checkpoint(path: Path) -> bool:
    return all((path / name).is_file() for name in _CHECKPOINT_FILES)


def _synthetic_checkpoint(root: Path) -> Path:
    path = root / "checkpoints" / SYNTHETIC_NAME
    if _is_checkpoint(path):
        return path
    try:
        from models.synthetic import write_checkpoint
    except ImportError as e:
        raise OuroRuntimeError(f"models/{TRAINED_NAME} is missing and the random stand-in needs the dev "
                               f"extra ({e.name} is not installed): pass a GGUF to `ouro chat`") from None
    return write_checkpoint(path, "tiny", seed=0)


def checkpoint_digest(path: Path) -> str:
    """A hash of every file in the checkpoint directory (names and contents)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def embedded_model(console: Console | None = None) -> EmbeddedModel:
    """The embedded model's GGUF, converted now (progress on stderr) unless the cache has it."""
    models = models_dir()
    synthetic = not _is_checkpoint(TRAINED_DIR)
    checkpoint = _synthetic_checkpoint(cache_dir()) if synthetic else TRAINED_DIR
    name = SYNTHETIC_NAME if synthetic else TRAINED_NAME
    gguf = models / f"{name}-{GGUF_TYPE}-{checkpoint_digest(checkpoint)}.gguf"
    # hub/store.py converts Hub checkpoints the same way: once, under a lock, removed again on failure.
    convert_once(checkpoint, gguf, GGUF_TYPE, console or Console(stderr=True), label=f"the embedded model {checkpoint}")
    return EmbeddedModel(name=name, checkpoint=checkpoint, gguf=gguf, synthetic=synthetic)
