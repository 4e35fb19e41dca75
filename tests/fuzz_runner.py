"""Run many fuzz cases through tests/gguf_load_worker.py, surviving workers that die.

One worker process handles a whole list of files (importing llama_cpp once); when it dies from a signal or
stops answering, the case it had started is recorded as a crash (or hang) and a fresh worker continues with
the next case. Used by tests/test_fuzz_gguf.py.

    python tests/fuzz_runner.py [--raw]

runs the same 1,148 cases outside pytest and prints the outcome counts and every crash; --raw feeds them to
llama.cpp without validate_gguf (the comparison in BENCHMARKS.md's reliability section).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

WORKER = Path(__file__).with_name("gguf_load_worker.py")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FuzzReport:
    outcomes: list[tuple[str, str] | None]  # per case: (kind, detail)
    crashes: list[tuple[int, str]] = field(default_factory=list)  # (case, how the worker died)
    workers_started: int = 0

    def counts(self) -> Counter:
        return Counter(o[0] for o in self.outcomes if o is not None)


def run_cases(paths: list[Path], list_file: Path, case_timeout: float = 60.0, raw: bool = False) -> FuzzReport:
    """Run every file through the worker; raw=True skips validate_gguf (llama.cpp alone)."""
    list_file.write_text("".join(f"{p}\n" for p in paths))
    report = FuzzReport(outcomes=[None] * len(paths))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    first = 0
    while first < len(paths):
        report.workers_started += 1
        stderr_file = list_file.with_suffix(f".stderr{report.workers_started}")
        with stderr_file.open("w") as err:
            proc = subprocess.Popen([sys.executable, str(WORKER), str(list_file), str(first), *(["--raw"] if raw else [])],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            current = _consume(proc, report, case_timeout)
        if current is None:  # the worker finished its list
            break
        tail = stderr_file.read_text(errors="replace")[-300:].strip().replace("\n", " | ")
        how = f"signal {-proc.returncode}" if proc.returncode and proc.returncode < 0 else f"exit {proc.returncode}"
        report.crashes.append((current, f"{how}: {tail}"))
        first = current + 1
    return report


def _consume(proc: subprocess.Popen, report: FuzzReport, case_timeout: float) -> int | None:
    """Record the worker's results; return the case it died on (None if it finished cleanly)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    current = None
    while True:
        try:
            line = lines.get(timeout=case_timeout)
        except queue.Empty:  # a hang counts like a crash: kill the worker and move on
            proc.kill()
            proc.wait()
            return current
        if line is None:
            proc.wait()
            return None if current is None and proc.returncode == 0 else current
        word, index, *rest = line.rstrip("\n").split(" ", 3)
        if word == "START":
            current = int(index)
        elif word == "RESULT":
            kind = rest[0]
            report.outcomes[int(index)] = (kind, rest[1] if len(rest) > 1 else "")
            current = None


def main() -> None:
    import io
    import tempfile

    from rich.console import Console

    sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
    from convert.convert import convert_checkpoint
    from models.synthetic import write_checkpoint
    from test_fuzz_gguf import make_cases

    raw = "--raw" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = write_checkpoint(root / "ckpt", "tiny", loops=4, layers=2, seed=0, gate_bias=0.0)  # = tiny_gguf
        quiet = Console(file=io.StringIO())
        bases = [convert_checkpoint(ckpt, root / f"tiny-{q}.gguf", q, console=quiet) for q in ("q8_0", "f16")]
        (root / "cases").mkdir()
        cases = make_cases(*bases, root / "cases")
        report = run_cases(cases, root / "cases.txt", raw=raw)
    print(f"{'llama.cpp alone' if raw else 'validate_gguf, then llama.cpp'}: {len(cases)} cases, "
          f"{dict(report.counts())}, {len(report.crashes)} crashes")
    for case, how in report.crashes:
        print(f"  CRASH {cases[case].name}: {how[:200]}")


if __name__ == "__main__":
    main()
