"""Model references: `REPO_ID[@REVISION][:TYPE]` or `REPO_ID[@REVISION]/PATH.gguf`.

TYPE is the converter's output type for a checkpoint repo (q8_0, q4_k_m, ...) and the quantization named
in the file name for a repo of GGUF files (Q4_K_M picks `model-Q4_K_M.gguf`), as llama.cpp's `-hf` does.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from hub.errors import HubError

_REFERENCE = re.compile(
    r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)"
    r"(?:@(?P<revision>[\w.-]+))?"
    r"(?::(?P<tag>[\w.-]+)|/(?P<file>[\w./-]+\.gguf))?",
)


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None  # None: the repo's default branch
    tag: str | None  # the part after ':'
    filename: str | None  # a .gguf file inside the repo

    def __str__(self) -> str:
        text = self.repo_id + (f"@{self.revision}" if self.revision else "")
        if self.tag:
            return f"{text}:{self.tag}"
        return f"{text}/{self.filename}" if self.filename else text


def parse_reference(text: str) -> HubRef | None:
    """The reference `text` spells, or None when it cannot be one (then it is a local path)."""
    m = _REFERENCE.fullmatch(text)
    # `dir/model.gguf` is a local file that does not exist, not a repo named model.gguf.
    if m is None or m["repo"].endswith(".gguf") or ".." in m["repo"] or (m["file"] and "/../" in f"/{m['file']}"):
        return None
    return HubRef(repo_id=m["repo"], revision=m["revision"], tag=m["tag"], filename=m["file"])


def with_type(ref: HubRef, type_name: str) -> HubRef:
    """`ref` with the TYPE given as `--type`, which means the same as the `:TYPE` suffix (and must not
    contradict one; the case does not matter, as everywhere a type is named)."""
    if ref.filename is not None:
        raise HubError(f"{ref} names a file; --type {type_name} cannot apply to it")
    if ref.tag is not None and ref.tag.lower() != type_name.lower():
        raise HubError(f"{ref} asks for type {ref.tag} and --type for {type_name}; give only one")
    return dataclasses.replace(ref, tag=ref.tag or type_name)
