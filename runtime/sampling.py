"""Sampling settings shared by `OuroModel.chat/generate`, `ouro chat`, `ouro generate` and `ouro serve`.

Defaults are llama.cpp's (llama-cli's) unless the GGUF records its own under `general.sampling.*`
(the converter writes the paper's temperature 1.0 / top-p 0.7 for Thinking models, spec §5-§6).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from runtime.errors import OuroRuntimeError

# GGUF key (general.sampling.<name>) -> SamplingParams field
_GGUF_KEYS = {
    "temp": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "penalty_repeat": "repeat_penalty",
}


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8        # 0 = greedy
    top_p: float = 0.95
    top_k: int = 40                 # 0 = all tokens
    min_p: float = 0.05
    repeat_penalty: float = 1.0     # 1 = off
    seed: int | None = None         # None = the seed given to load() (random unless set)
    max_tokens: int | None = None   # None = until the end of the turn or the context is full
    ignore_eos: bool = False        # never sample an end-of-turn token (fixed-length runs: benchmarks, tests)

    def __post_init__(self) -> None:
        checks = [
            ("temperature", math.isfinite(self.temperature) and self.temperature >= 0, ">= 0"),
            ("top_p", 0.0 < self.top_p <= 1.0, "in (0, 1]"),
            ("top_k", self.top_k >= 0, ">= 0"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "in [0, 1]"),
            ("repeat_penalty", math.isfinite(self.repeat_penalty) and self.repeat_penalty > 0, "> 0"),
            ("seed", self.seed is None or self.seed >= 0, ">= 0"),
            ("max_tokens", self.max_tokens is None or self.max_tokens >= 1, ">= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise OuroRuntimeError(f"{name} must be {expected}, got {getattr(self, name)!r}")

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, str]) -> SamplingParams:
        """The defaults, with whatever the file records under general.sampling.* taking precedence."""
        found: dict[str, float | int] = {}
        for key, field in _GGUF_KEYS.items():
            raw = metadata.get(f"general.sampling.{key}")
            if raw is not None:
                found[field] = int(float(raw)) if field == "top_k" else float(raw)
        return cls(**found)

    def updated(self, **overrides: object) -> SamplingParams:
        """A copy with the given fields replaced; None means "keep", unknown names are an error."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise OuroRuntimeError(f"unknown sampling setting(s) {', '.join(unknown)}; "
                                   f"known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
