"""BENCHMARKS.md's generated sections: one writer for every stage, and the table and figure helpers.

Each generator owns the text between its two markers; everything else in the file (sections other helpers
or people wrote) is kept as it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FIGURES = Path("benchmarks") / "figures"  # relative to BENCHMARKS.md's directory


@dataclass(frozen=True)
class Markers:
    """`<!-- benchmarks:NAME:begin (WRITER rewrites this part) -->` ... `<!-- benchmarks:NAME:end -->`."""

    name: str
    writer: str

    @property
    def begin(self) -> str:
        return f"{self._begin_prefix} ({self.writer} rewrites this part) -->"

    @property
    def end(self) -> str:
        return f"<!-- benchmarks:{self.name}:end -->"

    @property
    def _begin_prefix(self) -> str:  # found even when the writer's text in the marker has changed
        return f"<!-- benchmarks:{self.name}:begin"


def _is_end_marker(line: str) -> bool:
    return line.startswith("<!-- benchmarks:") and line.endswith(":end -->")


def replace_section(document: str, section: str, markers: Markers, after_heading: str | None = None) -> str:
    """`document` with the text between `markers` replaced. Markers absent: the block goes after the section
    whose heading contains `after_heading` (it ends at the next heading of its level or above, or at the end
    of the generated part it lies in), else at the end; an empty document gets a title first."""
    block = f"{markers.begin}\n{section.rstrip()}\n{markers.end}"
    if markers._begin_prefix in document and markers.end in document:
        head, rest = document.split(markers._begin_prefix, 1)
        return head + block + rest.split(markers.end, 1)[1]
    lines = document.splitlines()
    start = next((i for i, line in enumerate(lines) if after_heading and line.startswith("#")
                  and after_heading in line), None)
    if start is not None:
        level = len(lines[start]) - len(lines[start].lstrip("#"))
        for i in range(start + 1, len(lines)):
            line = lines[i]
            if _is_end_marker(line.strip()):
                return "\n".join(lines[:i + 1] + ["", block, ""] + lines[i + 1:]) + "\n"
            if line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
                return "\n".join(lines[:i] + [block, ""] + lines[i:]) + "\n"
    return (document.rstrip() or "# Benchmarks") + "\n\n" + block + "\n"


def write_section(output: Path, section: str, markers: Markers, after_heading: str | None = None) -> None:
    """Rewrite `markers`' section of `output` in place (atomically: a reader never sees half a file)."""
    old = output.read_text() if output.is_file() else ""
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(replace_section(old, section, markers, after_heading))
    os.replace(tmp, output)


def table(header: Sequence[str], rows: Sequence[Sequence[object]], right_from: int = 1) -> list[str]:
    """A Markdown table's lines; columns from `right_from` on are right-aligned (numbers)."""
    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    return [row(header), row(align), *(row(r) for r in rows)]


def pyplot():
    """matplotlib.pyplot drawing into files only, or None when matplotlib (the dev extra) is missing: the
    tables are the results, the figures only show them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: Path, relative_to: Path) -> str:
    """Save and close `fig` at `path` (atomically); its path relative to `relative_to`, for a Markdown link."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path.relative_to(relative_to))
