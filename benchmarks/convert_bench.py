"""Time and peak memory of a child process, and of `ouro convert` run as one (issue 3, BENCHMARKS.md).

Each conversion runs in its own child process so that its peak RSS (ru_maxrss from os.wait4, i.e. the
child's own getrusage) is measured alone: interpreter, numpy and the memory-mapped source pages included.
The suite's measuring children run the same way, so that each one's peak RSS is its file's alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CHILD = ("import sys\n"
          "from convert.convert import convert_checkpoint\n"
          "convert_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3], force=True)\n")


@dataclass(frozen=True)
class Conversion:
    seconds: float
    peak_rss: int  # bytes
    file_bytes: int


def run_child(cmd: list[str], log: Path) -> tuple[int, float, int]:
    """(exit status, wall seconds, peak RSS bytes) of one child process."""
    start = time.perf_counter()
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss * 1024  # Linux reports KiB


def convert_once(ckpt: Path, qtype: str, outdir: Path) -> Conversion:
    """Convert `ckpt` to outdir/bench-QTYPE.gguf in a child process; RuntimeError with the log's last line
    when it fails."""
    out = outdir / f"bench-{qtype}.gguf"
    log = outdir / f"bench-{qtype}.log"
    rc, seconds, rss = run_child([sys.executable, "-c", _CHILD, str(ckpt), str(out), qtype], log)
    if rc != 0:
        last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        raise RuntimeError(f"converting {ckpt} to {qtype} failed: {last[0] if last else f'exit code {rc}'}")
    return Conversion(seconds, rss, out.stat().st_size)
