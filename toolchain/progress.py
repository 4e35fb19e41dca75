"""Running build commands with their output logged, and one progress line for the user.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from toolchain.errors import CompileError

# Compile progress in the build output: ninja prints "[12/345] ...", make prints "[ 45%] ...".
_NINJA_STEP = re.compile(r"\[(\d+)/(\d+)\]")
_MAKE_PERCENT = re.compile(r"\[\s*(\d+)%\]")

def _nice() -> None:
    # The machine is shared: compiles yield to interactive work.
    os.nice(10)


def run_logged(cmd: Sequence[str], log: Path, *, what: str, cwd: Path | None = None,
                env: dict[str, str] | None = None, on_line: Callable[[str], None] | None = None) -> None:
    """Run `cmd`, appending its output to `log` and feeding each line to `on_line`; a failure raises
    CompileError naming the log and quoting the output's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    # Line-buffered, so that `tail -f` on the log follows a long compile.
    with log.open("a", encoding="utf-8", errors="replace", buffering=1) as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", bufsize=1, preexec_fn=_nice)
        except FileNotFoundError:
            raise CompileError(f"{what} failed: {cmd[0]} is not installed") from None
        assert proc.stdout is not None
        with proc:
            for line in proc.stdout:
                handle.write(line)
                tail.append(line.rstrip())
                if on_line:
                    on_line(line)
    if proc.returncode != 0:
        last = "\n".join(f"    {line}" for line in tail)
        raise CompileError(f"{what} failed (exit {proc.returncode}); full log: {log}\n{last}")


class Reporter:
    """One rich progress line for the current step, with compile progress parsed from the build output.
    Without a terminal (CI logs) it prints a line per step and per tenth of the compile instead."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=True,
        )
        self.task = self.progress.add_task("", total=None)
        self._step = ""
        self._tenth = -1

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def step(self, description: str) -> None:
        self._step = description
        self._tenth = -1
        self.progress.update(self.task, description=description, total=None, completed=0)
        if not self.console.is_terminal:
            self.console.print(f"… {description}")

    def done(self, message: str) -> None:
        self.console.print(f"[green]✓[/] {message}")

    def build_line(self, line: str) -> None:
        match = _NINJA_STEP.search(line)
        if match:
            done, total = int(match.group(1)), int(match.group(2))
        else:
            match = _MAKE_PERCENT.match(line.strip())
            if not match:
                return
            done, total = int(match.group(1)), 100
        self.progress.update(self.task, completed=done, total=total)
        tenth = done * 10 // max(total, 1)
        if not self.console.is_terminal and tenth != self._tenth:
            self._tenth = tenth
            self.console.print(f"  {self._step}: {done}/{total}")


def log_path(cache: Path, what: str, key: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return cache / "logs" / f"{what}-{key[:12]}-{stamp}.log"
