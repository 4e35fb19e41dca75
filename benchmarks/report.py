"""BENCHMARKS.md's suite section and its figures, rendered from the suite's results (benchmarks.results).

Only the text between its markers is rewritten (benchmarks.markdown); sections other helpers write
(conversion, reliability, ...) stay as they are. Every table names the command that produced it and the
load average around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bandwidth import Machine
from benchmarks.convert_bench import Conversion
from benchmarks.exit_speed import ExitSpeed, LongContext
from benchmarks.gguf_speed import FileSpeed
from benchmarks import kernel_ceiling as kernels
from benchmarks.markdown import Markers, figure, plot, table, write_section
from benchmarks.measure import SpeedRow
from benchmarks.prompt_tuning import Tuning
from benchmarks.reference_speed import ReferenceSpeed
from benchmarks.results import Saved, is_runtime_stage
from benchmarks.roofline import WeightBytes, kv_bytes_read, roofline_tps

MARKERS = Markers("suite", "python -m benchmarks")

# Goals (issues 5 and 8).
REF_DECODE_GOAL = 5.0
REF_PROMPT_GOAL = 1.0
LOOP_OVERHEAD_GOAL = 0.05
ROOFLINE_GOAL = 0.75
SKIP_GOAL = 0.9  # skip/select >= 0.9 * T/k
NO_EXIT_GOAL = 0.97
KV_SHARE_GOAL = 0.26


@dataclass(frozen=True)
class Info:
    """What the report reads of `ouro info --json`."""

    parameters: int
    loops: int


def _tps(x: float) -> str:
    """Tokens/s with three significant digits (runs here span 0.2 to thousands)."""
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _met(ok: bool) -> str:
    return "**met**" if ok else "not met"


def _name(key: str) -> str:
    """"1.4b/q8_0" as "1.4b Q8_0"."""
    model, quant = key.split("/")
    return f"{model} {quant.upper()}"


def bytes_per_token(weights: WeightBytes, speed: FileSpeed, loops: int) -> float:
    """What a decode step of the sweep reads at `loops` loops: the weights, and the KV cache at the mean
    context of the decode steps (the prompt plus half the generated tokens)."""
    row = next(r for r in speed.rows if r.loops == loops)
    context = row.prompt_tokens + (row.gen_tokens - 1) / 2
    return weights.per_token(loops) + kv_bytes_read(speed.kv_bytes_per_token, speed.loops, loops, context)


class SuiteReport:
    """The suite section of the models and quants asked for; `ref_model` carries the reference, the
    prompt tuning and, at `exit_quant`, the early-exit lines."""

    def __init__(self, data: dict, models: Sequence[str], quants: Sequence[str], command: str,
                 ref_model: str = "1.4b", exit_quant: str = "q4_k_m") -> None:
        self.saved, self.models, self.quants, self.ref = Saved(data), models, quants, ref_model
        self.exit_key = f"{ref_model}/{exit_quant}"
        self.commands = self.saved.commands(command)
        self.machine = self.saved.get("machine", Machine)
        self.reference = self.saved.get(f"{ref_model}/reference", ReferenceSpeed)
        self.files = [f"{m}/{q}" for m in models for q in quants]
        self.speeds = {k: s for k in self.files if (s := self.saved.get(f"{k}/speed", FileSpeed))}
        # the files whose loop sweep was measured (a Thinking file with its base's tensor table has none)
        self.swept = {k: s for k, s in self.speeds.items() if s.rows}

    def bandwidth_gbps(self) -> float:
        """The copy bandwidth the roofline uses: measured with the runs' thread count (else the best one)."""
        same = [b.gbps for b in self.machine.bandwidth if b.threads == self.saved.threads]
        return same[0] if same else max(b.gbps for b in self.machine.bandwidth)

    def weights(self, key: str) -> WeightBytes:
        return self.saved.get(f"{key}/weights", WeightBytes)

    def render(self, figures: dict[str, str | None] | None = None) -> str:
        if self.machine is None:
            return "\n".join(["## Speed and memory", "", "Not measured yet: run `python -m benchmarks`.", ""])
        figures = figures or {}
        lines = ["## Speed and memory (`python -m benchmarks`)", "", *self.machine_lines(), *self.files_lines(),
                 *self.speed_lines(figures.get("loops")), "### Comparisons (ratios from the same run)", "",
                 *self.reference_lines(), *self.loop_cost_lines(), *self.kernel_lines(), *self.tuning_lines(),
                 *self.exit_lines(figures.get("skip"))]
        missing = [m for m in self.models if not any(k.startswith(f"{m}/") for k in self.speeds)]
        return "\n".join(lines + ([f"Not measured in this run: {', '.join(missing)}.", ""] if missing else []))

    def machine_lines(self) -> list[str]:
        m, metas = self.machine, self.saved.metas()
        keys = sorted({(meta.runtime or "unrecorded")[:12] for k, meta in metas.items() if is_runtime_stage(k)})
        bw = ", ".join(f"{b.threads} thread{'s' if b.threads > 1 else ''} {b.gbps:.1f} GB/s" for b in m.bandwidth)
        resumed = "each resuming the saved results of the one before; " if len(self.commands) > 1 else ""
        return [
            f"Produced by {', then '.join(f'`{c}`' for c in self.commands)} ({resumed}finished "
            f"{max(meta.finished for meta in metas.values())}). Machine: {m.cores} cores, "
            f"{m.cpu}, Python {m.python}; numpy copy bandwidth (bytes read + written, median of "
            f"{len(m.bandwidth[0].runs_gbps)} copies of {m.bandwidth[0].array_bytes >> 20} MiB, "
            f"`python -m benchmarks.bandwidth`): {bw}. Runtime build key{'s' if len(keys) > 1 else ''} "
            f"(llama-cpp-python, patches/, flags; `ouro runtime status`): {', '.join(keys) or '?'}.",
            "",
            f"Every table gives the 1-minute load average before → after its measurement ({m.cores} cores: "
            f"above {m.cores} our threads waited for a core, and absolute tok/s are pessimistic). Ratios are "
            "measured in the same run, configurations taking turns round by round, so drifting load hits them "
            "alike. Checkpoints are full-shape with random weights "
            f"(models/synthetic.py): speed does not depend on the values. Threads for every runtime and the "
            f"reference: {self.saved.threads or '?'}.",
            "",
        ]

    def files_lines(self) -> list[str]:
        rows = []
        for key in self.files:
            conv, speed, info = self.saved.get(f"{key}/convert", Conversion), self.speeds.get(key), self.saved.get(
                f"{key}/info", Info)
            if not (conv and speed and info):
                rows.append([*_name(key).split(" "), "not measured", "", "", "", "", "", "", ""])
                continue
            chat = speed.chat
            rows.append([*_name(key).split(" "), _gib(conv.file_bytes), f"{conv.seconds:.0f} s", _gib(conv.peak_rss),
                         f"{speed.load_seconds:.2f} s", _gib(speed.peak_rss),
                         f"{speed.kv_bytes_per_token_measured / 1024:.0f} KiB",
                         f"ok: {info.parameters / 1e9:.2f} B params, T={info.loops}",
                         f"{chat.generated_tokens} tokens" + (", `<think>` prefilled" if chat.opened_thinking else "")
                         + f", T={chat.temperature:g} top-p={chat.top_p:g}"])
        return [
            "### Files, memory, chat",
            "",
            "Conversion: `ouro convert CKPT --type Q` in a child process (benchmarks.convert_bench.convert_once), "
            "BF16 safetensors → GGUF, peak RSS of that process. Load: `runtime.load` (page cache warm). Peak RSS "
            "(run): the child `python -m benchmarks.gguf_speed FILE` that loads the file, runs every speed "
            "measurement below and one chat turn. KV/token: the context's KV buffer / its cells, all "
            "loops, F16. Chat: the file's template with its own sampling defaults, 32 tokens (end-of-turn "
            "disabled).",
            "",
            *table(["model", "quant", "file size", "conversion", "conversion peak RSS", "load", "peak RSS (run)",
                    "KV/token", "`ouro info`", "chat turn"], rows, right_from=2),
        ]

    def speed_lines(self, plot_link: str | None) -> list[str]:
        if not self.swept:
            return []
        bw, rows = self.bandwidth_gbps(), []
        twins = [f"{_name(k)} (= {s.same_tensors_as})" for k, s in self.speeds.items() if s.same_tensors_as]
        for key, speed in self.swept.items():
            meta = self.saved.meta(f"{key}/speed")
            for r in sorted(speed.rows, key=lambda r: r.loops):
                per_token = bytes_per_token(self.weights(key), speed, r.loops)
                ceiling = roofline_tps(bw, per_token)
                rows.append([*_name(key).split(" "), r.loops, _tps(r.prompt_tps), _tps(r.decode_tps), _gib(per_token),
                             _tps(ceiling), f"{100 * r.decode_tps / ceiling:.0f}%", meta.load])
        first = next(iter(self.swept.values())).rows[0]
        commands = "; ".join(f"`{self.saved.meta(f'{k}/speed').command}`" for k in self.swept)
        return [
            "### Prompt and decode speed at T loops",
            "",
            f"{commands} (medians of the rounds): a {first.prompt_tokens}-token prompt from an empty "
            f"cache, then {first.gen_tokens} greedy tokens; T set on the running context between runs. Bytes/token = "
            f"T × block + head + one embedding row + the KV cache T loops read at the mean decode context "
            f"(`benchmarks.roofline`); roofline = {bw:.1f} GB/s (the copy bandwidth with the runs' thread count) / "
            f"bytes per token.",
            "",
            *table(["model", "quant", "T", "prompt tok/s", "decode tok/s", "bytes/token", "roofline tok/s",
                    "decode / roofline", "load avg"], rows, right_from=2),
            *([f"Not swept again: {', '.join(twins)}: the same tensor table (names, shapes, types; "
               "`benchmarks.roofline.WeightBytes.layout`) as the base model's file, so the same bytes per token "
               "through the same kernels; their load, memory, KV and chat turn are in the first table.", ""]
              if twins else []),
            *figure(plot_link, "decode tok/s vs loops", "decode tok/s vs loops per model and quant, from the table "
                    "above (the suite's command, in the figure's title; drawn by benchmarks/report.py)."),
        ]

    def reference_lines(self) -> list[str]:
        ref = self.reference
        if not ref:
            return []
        meta, rows, t_max = self.saved.meta(f"{self.ref}/reference"), [], None
        for q in self.quants:
            if not (speed := self.swept.get(f"{self.ref}/{q}")):
                continue
            t_max = t_max or speed.loops
            r = next(r for r in speed.rows if r.loops == speed.loops)
            pr, dr = r.prompt_tps / ref.prompt_tps, r.decode_tps / ref.decode_tps
            rows.append([q.upper(), _tps(r.prompt_tps), f"{pr:.2f}×", _met(pr >= REF_PROMPT_GOAL),
                         _tps(r.decode_tps), f"{dr:.2f}×", _met(dr >= REF_DECODE_GOAL)])
        return [
            f"**Against the PyTorch reference** (`{meta.command}`: runtime/reference.py in bf16 with its "
            f"KV cache, {ref.threads} thread(s), {ref.prompt_tokens}-token prompt, {ref.gen_tokens} decoded "
            f"tokens, medians of {len(ref.prompt_tps_runs)} runs; load avg {meta.load}): reference "
            f"prompt {_tps(ref.prompt_tps)} tok/s, decode {_tps(ref.decode_tps)} tok/s; peak RSS "
            f"{_gib(ref.peak_rss)}. Ours: the {self.ref} GGUF at all {t_max} "
            f"loops, from the table above. Goals: decode ≥ {REF_DECODE_GOAL:g}×, prompt ≥ {REF_PROMPT_GOAL:g}×.",
            "",
            *table(["quant", "prompt tok/s", "vs reference", "goal", "decode tok/s", "vs reference", "goal"], rows),
        ]

    def loop_cost_lines(self) -> list[str]:
        rows = []
        for key, speed in sorted(self.swept.items()):
            weights, t_max = self.weights(key), speed.loops
            by_t: dict[int, SpeedRow] = {r.loops: r for r in speed.rows}
            measured = by_t[1].decode_tps / by_t[t_max].decode_tps  # time per token, T loops / 1 loop
            read_at_t_max = bytes_per_token(weights, speed, t_max)
            expected = read_at_t_max / bytes_per_token(weights, speed, 1)
            overhead = measured / expected - 1
            ceiling = roofline_tps(self.bandwidth_gbps(), read_at_t_max)
            rows.append([_name(key), f"{measured:.2f}×", f"{expected:.2f}×", f"{100 * overhead:+.1f}%",
                         _met(overhead <= LOOP_OVERHEAD_GOAL), f"{100 * by_t[t_max].decode_tps / ceiling:.0f}%",
                         _met(by_t[t_max].decode_tps >= ROOFLINE_GOAL * ceiling)])
        if not rows:
            return []
        return [
            "**Against the cost of the loops and the physical limit.** Time per decoded token at T = 4 over T = 1 "
            "on the same file, against the bytes each reads (4 loops' blocks and KV + head + row over one loop's: "
            "'4 × one loop + the head' if decode is bandwidth-bound); goal: looping adds ≤ 5%. Decode at T = 4 as a "
            f"share of the roofline; goal ≥ {100 * ROOFLINE_GOAL:.0f}%.",
            "",
            *table(["file", "time T=4 / T=1", "bytes T=4 / T=1", "loop overhead", "goal", "decode / roofline",
                    "goal"], rows),
        ]

    def kernel_lines(self) -> list[str]:
        """The kernels' own speed beside the copy bandwidth: what bounds decode / roofline on this machine."""
        kc = self.saved.get("kernel_ceiling", kernels.KernelCeiling)
        if not kc or not kc.kernels:
            return []
        meta, bw = self.saved.meta("kernel_ceiling"), self.bandwidth_gbps()
        rows = [[k.label, k.used_by, k.buffer, f"{streamed:.1f}", f"{cached:.1f}", f"{cached / streamed:.2f}×",
                 f"{100 * streamed / bw:.0f}%", f"{prompt:.0f}" if prompt else "–"]
                for k in kc.kernels for streamed, cached, prompt in [k.medians()]]
        return [
            f"**The kernels' own ceiling** (`{meta.command}`, load avg {meta.load}; medians of "
            f"{kc.rounds} rounds, {kc.threads} threads; CPU family {kc.cpu.family or '?'} model "
            f"{kc.cpu.model or '?'}, SIMD extensions ggml can use: {', '.join(kc.cpu.simd) or 'none found'}): "
            f"ggml's one-token kernels on their own, "
            f"streaming from memory ({kernels.STREAMED_MATRICES} matrices of {kernels.ROWS} × {kernels.COLS}; "
            f"attention over {kernels.ATTENTION_LAYERS} layers of a {kernels.ATTENTION_TOKENS:,}-token F16 cache) "
            f"and over {kernels.CACHED_BYTES >> 20} MiB that stay in the L3 cache; prompt: the same product with a "
            f"{kernels.PROMPT_TOKENS}-token activation, 2 × rows × cols × tokens operations per second. A kernel "
            "that runs as fast in cache as streamed is bound by its arithmetic, not by memory; decode cannot "
            "read its weights at a larger share of the copy bandwidth than its kernels do.",
            "",
            *table(["kernel", "used by", "buffer", "streamed GB/s", "in L3 GB/s", "in L3 / streamed",
                    "streamed / copy bandwidth", "prompt GOPS"], rows, right_from=3),
        ]

    def tuning_lines(self) -> list[str]:
        tuning = self.saved.get(f"{self.ref}/prompt_tuning", Tuning)
        if not tuning:
            return ["**Prompt pass, what was tried:** not measured in this run.", ""]
        meta, ref, base = self.saved.meta(f"{self.ref}/prompt_tuning"), self.reference, tuning.rows[0]
        t_max = self.speeds[f"{self.ref}/{base.file}"].loops if f"{self.ref}/{base.file}" in self.speeds else 4
        rows = [[r.file.upper(), r.n_ubatch, r.threads, _tps(r.prompt_tps), f"{r.prompt_tps / base.prompt_tps:.2f}×",
                 f"{r.prompt_tps / t_max / ref.prompt_tps:.2f}×" if ref else "–"]  # prompt cost is T× one loop's
                for r in tuning.rows]
        return [
            f"**Prompt pass, what was tried** (`{meta.command}`, load avg {meta.load}): "
            f"a {base.prompt_tokens}-token prompt at 1 loop (prompt cost is T× one loop's, so the ratios hold at "
            f"every T), each configuration its own context, taking turns, medians of {len(base.prompt_tps_runs)} "
            f"rounds. The last column divides by T = {t_max} and compares with the reference's prompt speed.",
            "",
            *table(["weights", "n_ubatch", "threads", "prompt tok/s at 1 loop", "vs first row",
                    f"implied at T={t_max} vs reference"], rows),
        ]

    def exit_lines(self, plot_link: str | None) -> list[str]:
        ex = self.saved.get(f"{self.exit_key}/exit", ExitSpeed)
        if not ex:
            return []
        meta, select = self.saved.meta(f"{self.exit_key}/exit"), ex.row("select")
        rows = []
        for r in ex.rows:
            ratio, goal = r.decode_tps / select.decode_tps, None
            if r.label.startswith("skip k="):
                goal = SKIP_GOAL * select.loops / r.loops
            elif r.label == "skip q=1.0":
                goal = NO_EXIT_GOAL
            rows.append([r.label, _tps(r.decode_tps), f"{ratio:.2f}×", "" if goal is None else f"≥ {goal:.2f}",
                         "" if goal is None else _met(ratio >= goal), f"{r.mean_loops:g}"])
        kv = ex.kv_bytes_4096
        kv_ratio = kv["share"] / kv["full"]
        lines = [
            f"### Early exit that skips compute, and the loop-shared KV cache ({_name(self.exit_key)}, "
            f"{self.saved.threads or '?'} thread(s))",
            "",
            f"`{meta.command}` (load avg {meta.load}). Decode tok/s after a "
            f"{select.prompt_tokens}-token prompt, {select.gen_tokens} tokens, medians of "
            f"{len(select.decode_tps_runs)} rounds taking turns. Skip k: skip mode with threshold 0 and min_loops "
            f"k, i.e. every token exits after loop k (`runtime.control.set_exit`); goal skip/select ≥ 0.9 · "
            f"{select.loops}/k. Skip q=1.0: skip mode where nothing exits; goal ≥ {NO_EXIT_GOAL}. 'loops run' is "
            "the runtime's mean loops per decoded token in the last timed run.",
            "",
            *table(["mode", "decode tok/s", "vs select", "goal", "met?", "loops run"], rows),
            f"KV cache at n_ctx 4096 (the context's buffers, `runtime.control.kv_bytes`): full {_gib(kv['full'])}, "
            f"shared {_gib(kv['share'])}: **{kv_ratio:.3f}×** (goal ≤ {KV_SHARE_GOAL}: {_met(kv_ratio <= KV_SHARE_GOAL)}).",
            "",
        ]
        long = self.saved.get(f"{self.exit_key}/long_context", LongContext)
        if long:
            tps, long_meta = long.decode_tps, self.saved.meta(f"{self.exit_key}/long_context")
            lines += [
                f"Decode with {long.context:,} tokens in the cache, full vs shared KV (`{long_meta.command}`, "
                f"load avg {long_meta.load}; all loops, {long.gen_tokens} tokens per round, medians of "
                f"{len(long.runs['full'])} rounds taking turns; the cache is filled at 1 loop to save time, which "
                f"does not change what a decode step reads): full {_tps(tps['full'])} tok/s, shared "
                f"{_tps(tps['share'])} tok/s: shared/full **{tps['share'] / tps['full']:.2f}×**.",
                "",
            ]
        else:
            lines += ["Decode at a long context, shared vs full KV: not measured in this run.", ""]
        return lines + figure(plot_link, "skip mode decode speed", "decode tok/s by exit loop in skip mode against "
                              "select mode and the ideal T/k scaling, from the table above (the suite's command, in "
                              "the figure's title).")

    def draw_loops(self, plt, title: str):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for key, speed in sorted(self.swept.items()):
            rows = sorted(speed.rows, key=lambda r: r.loops)
            ax.plot([r.loops for r in rows], [r.decode_tps for r in rows], marker="o", label=_name(key))
        ax.set_xticks(range(1, max(s.loops for s in self.swept.values()) + 1))
        return _finish(fig, ax, "loops T", f"Decode speed vs loops (benchmarks.gguf_speed)\n{title}")

    def draw_skip(self, plt, title: str):
        ex = self.saved.get(f"{self.exit_key}/exit", ExitSpeed)
        select, no_exit = ex.row("select"), ex.row("skip q=1.0")
        skip = sorted((r for r in ex.rows if r.label.startswith("skip k=")), key=lambda r: r.loops)
        ks = [r.loops for r in skip] + [select.loops]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot(ks, [r.decode_tps for r in skip] + [no_exit.decode_tps], marker="o",
                label="skip mode, exit after loop k (k = T: threshold 1.0)")
        ax.axhline(select.decode_tps, color="gray", linestyle="--", label="select mode (all loops)")
        ax.plot(ks, [select.decode_tps * select.loops / k for k in ks], color="gray", linestyle=":",
                label="ideal: select × T/k")
        ax.set_xticks(ks)
        return _finish(fig, ax, "exit loop k", f"Skip-mode early exit, {_name(self.exit_key)} (benchmarks.exit_speed)\n{title}")


def _finish(fig, ax, xlabel: str, title: str):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("decode tok/s (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def render(data: dict, models: Sequence[str], quants: Sequence[str], command: str,
           figures: dict[str, str | None] | None = None, ref_model: str = "1.4b", exit_quant: str = "q4_k_m") -> str:
    return SuiteReport(data, models, quants, command, ref_model, exit_quant).render(figures)


def write_report(data: dict, models: Sequence[str], command: str, output: Path,
                 quants: Sequence[str] = ("q8_0", "q4_k_m"), ref_model: str = "1.4b", exit_quant: str = "q4_k_m") -> None:
    """The section, and its figures next to `output`."""
    report = SuiteReport(data, models, quants, command, ref_model, exit_quant)
    title = " + ".join(report.commands)
    figures = {}
    if report.machine and report.swept:
        figures["loops"] = plot(output, "decode_vs_loops.png", lambda plt: report.draw_loops(plt, title))
    if report.machine and f"{report.exit_key}/exit" in data:
        figures["skip"] = plot(output, "skip_exit.png", lambda plt: report.draw_skip(plt, title))
    write_section(output, report.render(figures), MARKERS)
