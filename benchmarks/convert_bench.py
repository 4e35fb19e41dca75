"""Time and peak memory of `ouro convert` on a full-shape checkpoint (issue 3, BENCHMARKS.md).

    python -m benchmarks.convert_bench [--checkpoint DIR] [--types q8_0,q4_k_m] [--outdir DIR] [--keep]

Each conversion runs in its own child process so that its peak RSS (ru_maxrss from os.wait4, i.e. the
child's own getrusage) is measured alone: interpreter, numpy and the memory-mapped source pages included.
Without --checkpoint a random-weight 1.4b checkpoint is made once (`python -m models.synthetic DIR
--preset 1.4b`) under the output directory; its creation is not part of the numbers. Q4_K_M is included by
default when llama_cpp is importable (the patched runtime, `ouro runtime build`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from math import prod
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CHILD = ("import sys\n"
          "from convert.convert import convert_checkpoint\n"
          "convert_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3], force=True)\n")


@dataclass
class Run:
    qtype: str
    seconds: float
    peak_rss: int  # bytes
    out_bytes: int | None
    error: str | None


def run_child(cmd: list[str], log: Path) -> tuple[int, float, int]:
    """(exit status, wall seconds, peak RSS bytes) of one child process."""
    start = time.perf_counter()
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss * 1024  # Linux reports KiB


def convert_once(ckpt: Path, qtype: str, outdir: Path, keep: bool) -> Run:
    out = outdir / f"bench-{qtype}.gguf"
    log = outdir / f"bench-{qtype}.log"
    rc, seconds, rss = run_child([sys.executable, "-c", _CHILD, str(ckpt), str(out), qtype], log)
    if rc != 0:
        last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        return Run(qtype, seconds, rss, None, last[0] if last else f"exit code {rc}")
    size = out.stat().st_size
    if not keep:
        out.unlink()
    return Run(qtype, seconds, rss, size, None)


def n_params(ckpt: Path) -> int:
    """Parameters that become GGUF tensors (the exit gate travels as metadata)."""
    with (ckpt / "model.safetensors").open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(prod(v["shape"]) for k, v in header.items() if k != "__metadata__" and "early_exit_gate" not in k)


def ensure_checkpoint(path: Path) -> Path:
    if (path / "model.safetensors").is_file():
        return path
    print(f"making a full-shape 1.4b checkpoint in {path} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "models.synthetic", str(path), "--preset", "1.4b"], cwd=ROOT, check=True)
    return path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def table(runs: list[Run], params: int, src_bytes: int) -> str:
    lines = ["| type | wall time | peak RSS | output size | bits/weight (whole file) |",
             "|---|---:|---:|---:|---:|"]
    for r in runs:
        if r.error:
            lines.append(f"| {r.qtype} | failed: {r.error} | | | |")
            continue
        assert r.out_bytes is not None
        lines.append(f"| {r.qtype.upper()} | {r.seconds:.1f} s | {r.peak_rss / 2**30:.2f} GiB "
                     f"({r.peak_rss / 1e9:.2f} GB) | {r.out_bytes / 2**30:.2f} GiB | {8 * r.out_bytes / params:.2f} |")
    head = (f"Source: {src_bytes:,} bytes of BF16 safetensors, {params:,} parameters. "
            f"Machine: {os.cpu_count()} cores, {cpu_name()}, Python {platform.python_version()}.")
    return head + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a full-shape checkpoint (default: make one)")
    parser.add_argument("--outdir", type=Path, default=Path("/tmp/ouro-convert-bench"))
    parser.add_argument("--types", help="comma-separated output types (default: q8_0[,q4_k_m])")
    parser.add_argument("--keep", action="store_true", help="keep the converted files")
    args = parser.parse_args(argv)

    args.outdir.mkdir(parents=True, exist_ok=True)
    ckpt = ensure_checkpoint(args.checkpoint or args.outdir / "Ouro-1.4B")
    if args.types:
        types = args.types.split(",")
    else:
        types = ["q8_0"] + (["q4_k_m"] if importlib.util.find_spec("llama_cpp") else [])
    runs = []
    for qtype in types:
        print(f"converting to {qtype} ...", file=sys.stderr)
        runs.append(convert_once(ckpt, qtype, args.outdir, args.keep))
    print(table(runs, n_params(ckpt), (ckpt / "model.safetensors").stat().st_size))


if __name__ == "__main__":
    main()
