"""Measurements as typed records: a measuring child saves its dataclass as JSON, the suite keeps each stage's
in results.json with how it ran (`_meta`), and the report reads them back into the same classes. Keys that
are not fields of the class read (a median saved beside its runs, say) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
FORMAT = 2  # results.json of another format is not read (1: before the records were typed)
# The stages measured through the patched runtime: re-measured when its build key changes.
RUNTIME_STAGES = ("speed", "exit", "long_context", "prompt_tuning", "kernel_ceiling")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` in one step: a reader, or a resumed run, never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save(path: Path, measured: Any) -> None:
    write_atomic(path, json.dumps(dataclasses.asdict(measured), indent=2))


def record(cls: type[T], data: dict) -> T:
    """A `cls` from its JSON form (dataclasses.asdict's), the dataclasses inside it (alone or in a list) too."""
    def typed(hint: Any, value: Any) -> Any:
        if dataclasses.is_dataclass(hint):
            return record(hint, value)
        if typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            return [record(typing.get_args(hint)[0], v) for v in value]
        return value

    hints = typing.get_type_hints(cls)
    return cls(**{f.name: typed(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def is_runtime_stage(key: str) -> bool:
    """Whether a stage's key ("<model>/<quant>/speed", "<model>/prompt_tuning", ...) is one of RUNTIME_STAGES."""
    return key.rsplit("/", 1)[-1] in RUNTIME_STAGES


@dataclasses.dataclass(frozen=True)
class Meta:
    command: str
    load_before: list[float]  # os.getloadavg()
    load_after: list[float]
    seconds: float
    finished: str
    runtime: str | None = None  # the runtime build key

    @property
    def load(self) -> str:
        """The 1-minute load average before → after."""
        return f"{self.load_before[0]:.1f} → {self.load_after[0]:.1f}"


class Saved:
    """Typed reads of results.json's data."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def get(self, key: str, cls: type[T]) -> T | None:
        return record(cls, self.data[key]) if key in self.data else None

    def meta(self, key: str) -> Meta:
        return record(Meta, self.data[key]["_meta"])

    def metas(self) -> dict[str, Meta]:
        return {k: self.meta(k) for k, v in self.data.items() if isinstance(v, dict) and "_meta" in v}

    @property
    def threads(self) -> int | None:
        return (self.data.get("settings") or {}).get("threads")

    def commands(self, command: str) -> list[str]:
        """The suite commands whose results these are: a resumed run adds its own to the first one's."""
        return [r["command"] for r in self.data.get("invocations") or []] or [command]


class Results(Saved):
    """results.json in the work directory: one entry per finished stage, saved after each."""

    def __init__(self, path: Path, fresh: bool, settings: dict | None = None, runtime: str | None = None) -> None:
        super().__init__({} if fresh or not path.is_file() else json.loads(path.read_text()))
        self.path, self.runtime = path, runtime
        if self.data and (self.data.get("settings") != settings or self.data.get("format") != FORMAT):
            self.data = {}  # measured with other sizes, or saved in another format: start over
        self.data.update(format=FORMAT, settings=settings)

    def invoked(self, command: str) -> None:
        """Record the command of this run (a resumed run may add models, or rounds, to an earlier one's)."""
        runs = self.data.setdefault("invocations", [])
        if not runs or runs[-1]["command"] != command:
            runs.append({"command": command})
        self._save()

    def done(self, key: str) -> bool:
        # a stage measured through the patched runtime counts only if the runtime installed now (its build
        # key: llama-cpp-python, patches, flags) measured it: a new patch re-measures speeds, while the
        # conversions and the PyTorch reference are kept
        return key in self.data and (not is_runtime_stage(key) or self.meta(key).runtime == self.runtime)

    def stage(self, key: str, run: Callable[[], Any], command: str) -> dict:
        """Stage `key`'s saved result; `run` measures it (a dataclass or a dict) unless it is done."""
        if not self.done(key):
            load_before, started = os.getloadavg(), time.time()
            result = run()
            meta = Meta(command, list(load_before), list(os.getloadavg()), time.time() - started,
                        datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), self.runtime)
            self.data[key] = {**(result if isinstance(result, dict) else dataclasses.asdict(result)),
                              "_meta": dataclasses.asdict(meta)}
            self._save()
        return self.data[key]

    def _save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2))
