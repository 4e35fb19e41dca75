"""BENCHMARKS.md's generated sections: the one writer every generator uses, and its table and figure helpers.

Each generator owns the text between its two markers; everything else in the file (sections other helpers
or people wrote) is kept as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.results import write_atomic

FIGURES = Path("benchmarks") / "figures"  # relative to BENCHMARKS.md's directory


@dataclass(frozen=True)
class Markers:
    """`<!-- benchmarks:NAME:begin (WRITER rewrites this part) -->` ... `<!-- benchmarks:NAME:end -->`."""

    name: str
    writer: str

    @property
    def begin_prefix(self) -> str:  # found even when the writer's text in the marker has changed
        return f"<!-- benchmarks:{self.name}:begin"

    @property
    def begin(self) -> str:
        return f"{self.begin_prefix} ({self.writer} rewrites this part) -->"

    @property
    def end(self) -> str:
        return f"<!-- benchmarks:{self.name}:end -->"


def _heading_level(line: str) -> int:
    return len(line) - len(line.lstrip("#"))


def replace_section(document: str, section: str, markers: Markers, after_heading: str | None = None) -> str:
    """`document` with the text between `markers` replaced. Markers absent: the block goes after the section
    whose heading contains `after_heading` (it ends at the next heading of its level or above, or at the end
    of the generated part it lies in), else at the end; an empty document gets a title first."""
    block = f"{markers.begin}\n{section.rstrip()}\n{markers.end}"
    if markers.begin_prefix in document and markers.end in document:
        head, rest = document.split(markers.begin_prefix, 1)
        return head + block + rest.split(markers.end, 1)[1]
    lines = document.splitlines()
    start = next((i for i, line in enumerate(lines) if after_heading and line.startswith("#")
                  and after_heading in line), None)
    if start is not None:
        for i in range(start + 1, len(lines)):
            line = lines[i].strip()
            if line.startswith("<!-- benchmarks:") and line.endswith(":end -->"):
                return "\n".join(lines[:i + 1] + ["", block, ""] + lines[i + 1:]) + "\n"
            if lines[i].startswith("#") and _heading_level(lines[i]) <= _heading_level(lines[start]):
                return "\n".join(lines[:i] + [block, ""] + lines[i:]) + "\n"
    return (document.rstrip() or "# Benchmarks") + "\n\n" + block + "\n"


def write_section(output: Path, section: str, markers: Markers, after_heading: str | None = None) -> None:
    """Rewrite `markers`' section of `output` in place."""
    old = output.read_text() if output.is_file() else ""
    write_atomic(output, replace_section(old, section, markers, after_heading))


def table(header: Sequence[str], rows: Sequence[Sequence[object]], right_from: int = 1) -> list[str]:
    """A Markdown table's lines, then a blank one; columns from `right_from` on are right-aligned (numbers)."""
    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    return [row(header), row(align), *(row(r) for r in rows), ""]


def plot(output: Path, name: str, draw: Callable[[Any], Any]) -> str | None:
    """The figure `draw(pyplot)` returns, saved as FIGURES/name next to `output`; its path relative to
    output's directory (for a Markdown link), or None when matplotlib (the dev extra) is missing: the tables
    are the results, the figures only show them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = draw(plt)
    path = output.parent / FIGURES / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return str(FIGURES / name)


def figure(link: str | None, alt: str, caption: str) -> list[str]:
    """A drawn figure's Markdown lines, none when it was not drawn."""
    return [f"![{alt}]({link})", "", f"Figure: {caption}", ""] if link else []
