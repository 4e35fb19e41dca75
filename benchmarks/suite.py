"""The benchmark suite (issue 8): every published Ouro shape end to end, then BENCHMARKS.md.

    nice -n 10 python -m benchmarks [--quick] [--workdir /tmp/ouro-bench] [--rounds 3] [--keep] [--fresh]
                                    [--prompt-tokens 512] [--gen-tokens 128] [--context 3000] [--threads 2]

First the machine (copy bandwidth, benchmarks.kernel_ceiling); then for each model (MODELS; --quick: 1.4b) a
full-shape random-weight checkpoint in the published layout, and for each quant its conversion, `ouro info`
and a child process that loads the file, measures prompt/decode speed at every loop count and runs one chat
turn (its peak RSS is the file's); on the 1.4b only, the PyTorch reference, the early-exit / shared-KV lines
and the prompt-pass tuning. The defaults are the issue's sizes; on a machine whose cores are busy with other
work, llama.cpp's threads spin at every barrier waiting for a descheduled sibling, and `--threads 1` with
smaller sizes is what finishes (the sizes used are in BENCHMARKS.md's command line).

Every stage's result is saved in WORKDIR/results.json as soon as it exists, so an interrupted run resumes
where it stopped (--fresh starts over); BENCHMARKS.md's section is rewritten after each model. Checkpoints
and GGUFs are deleted after each model unless --keep: a 2.6b checkpoint is 5.3 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from benchmarks.bandwidth import machine
from benchmarks.convert_bench import convert_once, run_child
from benchmarks.gguf_speed import FileSpeed
from benchmarks.report import write_report
from benchmarks.results import Results
from benchmarks.roofline import WeightBytes, weight_bytes
from toolchain.status import runtime_status

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("1.4b", "1.4b-thinking", "2.6b", "2.6b-thinking")  # a Thinking model after its base (SAME_SHAPE_AS)
QUICK_MODELS = ("1.4b",)
QUANTS = ("q8_0", "q4_k_m")
REFERENCE_MODEL = "1.4b"  # the reference and issue 5's lines run on this shape only
EXIT_QUANT = "q4_k_m"
TUNING_EXTRA_QUANT = "q4_0"  # tried for the prompt pass: ggml's repacked Q4_0 GEMM kernels
# A Thinking checkpoint differs from its base only in the tokenizer's template and the sampling defaults:
# when its file's tensor table is the base's (benchmarks.roofline.WeightBytes.layout), the loop sweep is not
# run again; its conversion, load, memory, KV and chat turn (the Thinking template) are still measured.
SAME_SHAPE_AS = {"1.4b-thinking": "1.4b", "2.6b-thinking": "2.6b"}


class SuiteError(RuntimeError):
    """A stage failed; the message names it and its log."""


@dataclass(frozen=True)
class Workload:
    """How much each measurement does (the issue's sizes by default)."""

    prompt_tokens: int = 512
    gen_tokens: int = 128
    rounds: int = 3
    context: int = 3000  # cached tokens for the shared-vs-full KV decode
    threads: int = 2
    exit_prompt_tokens: int = 16  # select vs skip compares decode only: a short prompt
    reference_gen_tokens: int = 16  # the reference decodes at < 1 tok/s: fewer tokens, same per-token rate


def _python(module: str, *args: object) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]


def _shown(cmd: list[str]) -> str:
    """A command as a reader would type it."""
    return " ".join(["python" if c == sys.executable else str(c) for c in cmd])


def in_child(results: Results, key: str, module: str, args: tuple, workdir: Path, work: Workload,
             extra: dict | None = None) -> None:
    """Stage `key`: `python -m MODULE ARGS --out FILE --rounds R --threads N` in a child process, so that its
    peak RSS (saved with its JSON result, and `extra`) is its own."""
    out, log = workdir / f"{key.replace('/', '-')}.json", workdir / f"{key.replace('/', '-')}.log"
    cmd = _python(module, *args, "--out", out, "--rounds", work.rounds, "--threads", work.threads)

    def run() -> dict:
        rc, _, peak_rss = run_child(cmd, log)
        if rc != 0 or not out.is_file():
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise SuiteError(f"{_shown(cmd)} failed (exit {rc}); see {log}: " + " | ".join(tail))
        return {**json.loads(out.read_text()), "peak_rss": peak_rss, **(extra or {})}

    results.stage(key, run, _shown(cmd))


def ensure_checkpoint(preset: str, path: Path) -> Path:
    if not (path / "model.safetensors").is_file():
        subprocess.run(_python("models.synthetic", path, "--preset", preset), cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return path


def ouro_info(gguf: Path) -> dict:
    cmd = [sys.executable, "-c", "from ouro_cli.main import app; app()", "info", str(gguf), "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SuiteError(f"ouro info {gguf} failed: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout)


def run_model(results: Results, preset: str, workdir: Path, work: Workload, progress: Progress, task) -> None:
    """One model's stages, the headline ones first so that an interrupted run has them."""
    mdir = workdir / preset
    mdir.mkdir(parents=True, exist_ok=True)
    ckpt = mdir / "ckpt"

    def child(key: str, module: str, *args: object, extra: dict | None = None) -> None:
        progress.update(task, description=f"{preset}: {module}")
        in_child(results, f"{preset}/{key}", module, args, mdir, work, extra)

    def converted(q: str) -> Path:
        gguf = mdir / f"bench-{q}.gguf"
        if not gguf.is_file():
            results.data.pop(f"{preset}/{q}/convert", None)  # deleted after an earlier run: remake it
        progress.update(task, description=f"{preset}: convert to {q}")
        results.stage(f"{preset}/{q}/convert", lambda: _convert(ensure_checkpoint(preset, ckpt), q, mdir),
                      f"ouro convert {ckpt} --type {q} (timed by benchmarks.convert_bench.convert_once)")
        results.stage(f"{preset}/{q}/weights", lambda: weight_bytes(gguf), "benchmarks.roofline.weight_bytes")
        results.stage(f"{preset}/{q}/info", lambda: ouro_info(gguf), f"ouro info {gguf} --json")
        return gguf

    def pending(key: str) -> bool:
        return not results.done(f"{preset}/{key}")

    def measured_twin(q: str) -> str | None:
        """The model of this run whose file of quant q has the same tensor table and measured speeds."""
        twin = SAME_SHAPE_AS.get(preset)
        speed = results.get(f"{twin}/{q}/speed", FileSpeed) if twin else None
        same = speed and speed.rows and (results.get(f"{twin}/{q}/weights", WeightBytes).layout
                                         == results.get(f"{preset}/{q}/weights", WeightBytes).layout)
        return twin if same else None

    for q in QUANTS:
        if pending(f"{q}/speed"):
            gguf = converted(q)
            read_through(gguf)  # the load is timed warm even when the conversion was an earlier run's
            twin = measured_twin(q)
            child(f"{q}/speed", "benchmarks.gguf_speed", gguf, "--prompt-tokens", work.prompt_tokens,
                  "--gen-tokens", work.gen_tokens, *(["--no-sweep"] if twin else []),
                  extra={"same_tensors_as": twin} if twin else None)
        progress.advance(task)
    if preset != REFERENCE_MODEL:
        return
    if pending(f"{EXIT_QUANT}/exit"):
        child(f"{EXIT_QUANT}/exit", "benchmarks.exit_speed", converted(EXIT_QUANT),
              "--prompt-tokens", work.exit_prompt_tokens, "--gen-tokens", work.gen_tokens)
    if pending("reference"):
        child("reference", "benchmarks.reference_speed", ensure_checkpoint(preset, ckpt),
              "--prompt-tokens", work.prompt_tokens, "--gen-tokens", work.reference_gen_tokens)
    if pending(f"{EXIT_QUANT}/long_context"):
        child(f"{EXIT_QUANT}/long_context", "benchmarks.exit_speed", converted(EXIT_QUANT),
              "--long-context", work.context, "--gen-tokens", work.gen_tokens)
    if pending("prompt_tuning"):
        files = [f"--file={q}={converted(q)}" for q in (*QUANTS, TUNING_EXTRA_QUANT)]
        child("prompt_tuning", "benchmarks.prompt_tuning", *files, "--prompt-tokens", work.prompt_tokens)


def read_through(path: Path) -> None:
    """Read a file once, leaving it in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def _convert(ckpt: Path, qtype: str, outdir: Path):
    try:
        return convert_once(ckpt, qtype, outdir)
    except RuntimeError as e:
        raise SuiteError(str(e)) from None


def main(argv: list[str] | None = None) -> None:
    default = Workload()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 1.4b model only")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ouro-bench"))
    parser.add_argument("--rounds", type=int, default=default.rounds, help="runs per configuration (medians)")
    parser.add_argument("--prompt-tokens", type=int, default=default.prompt_tokens)
    parser.add_argument("--gen-tokens", type=int, default=default.gen_tokens)
    parser.add_argument("--context", type=int, default=default.context,
                        help="cached tokens for the shared-vs-full KV decode")
    parser.add_argument("--threads", type=int, default=default.threads,
                        help="CPU threads of every runtime and of the reference")
    parser.add_argument("--keep", action="store_true", help="keep checkpoints and GGUFs")
    parser.add_argument("--fresh", action="store_true", help="ignore results saved by an earlier run")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)

    work = Workload(prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens, rounds=args.rounds,
                    context=args.context, threads=args.threads)
    console = Console(stderr=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    # The rounds are not part of what makes results comparable (they only set how many runs a median
    # takes), so a resumed run may use other rounds; each table names the command, rounds included.
    results = Results(args.workdir / "results.json", args.fresh,
                      settings={k: v for k, v in asdict(work).items() if k != "rounds"},
                      runtime=runtime_status().installed_key)
    models = QUICK_MODELS if args.quick else MODELS
    # The sizes given, as flags (the Workload fields without a flag always keep their defaults).
    command = "nice -n 10 python -m benchmarks" + (" --quick" if args.quick else "") + "".join(
        f" --{name.replace('_', '-')} {value}" for name, value in asdict(work).items()
        if value != getattr(default, name))
    results.invoked(command)
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("machine: copy bandwidth", total=len(models) * len(QUANTS))
            results.stage("machine", machine, "python -m benchmarks.bandwidth")
            progress.update(task, description="machine: kernel ceilings")
            in_child(results, "kernel_ceiling", "benchmarks.kernel_ceiling", (), args.workdir, work)
            for preset in models:
                run_model(results, preset, args.workdir, work, progress, task)
                write_report(results.data, models, command, args.output)
                if not args.keep:
                    shutil.rmtree(args.workdir / preset / "ckpt", ignore_errors=True)
                    for f in (args.workdir / preset).glob("*.gguf"):
                        f.unlink()
    except SuiteError as e:
        console.print(f"[red]error:[/red] {e}")
        write_report(results.data, models, command, args.output)
        sys.exit(1)
    console.print(f"wrote {args.output}")
