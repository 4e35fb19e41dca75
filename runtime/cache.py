"""Where ouro keeps what it builds or converts: $OURO_CACHE, else ~/.cache/ouro-gguf.

The runtime build (sdists, build trees, wheels, tools, logs) and the embedded model's GGUF share it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    configured = os.environ.get("OURO_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ouro-gguf"
