"""BENCHMARKS.md's suite section, rendered from the suite's results (benchmarks.suite.Results.data).

Only the text between its markers is rewritten (benchmarks.markdown); sections other helpers write (conversion, reliability,
...) stay as they are. Every table names the command that produced it and the load average around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.markdown import FIGURES, Markers, table, write_section
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
# The stages measured through the patched runtime (the suite re-measures them when its build key changes).
RUNTIME_STAGES = ("speed", "exit", "long_context", "prompt_tuning", "kernel_ceiling")


def is_runtime_stage(key: str) -> bool:
    """Whether a results.json key ("<model>/<quant>/speed", "<model>/prompt_tuning", ...) is one of them."""
    return key.rsplit("/", 1)[-1] in RUNTIME_STAGES


def _tps(x: float) -> str:
    """Tokens/s with three significant digits (runs here span 0.2 to thousands)."""
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _load(meta: dict) -> str:
    return f"{meta['load_before'][0]:.1f} → {meta['load_after'][0]:.1f}"


def _threads(data: dict) -> str:
    return str((data.get("settings") or {}).get("threads", "?"))


def _met(ok: bool) -> str:
    return "**met**" if ok else "not met"


def bandwidth_gbps(data: dict) -> float:
    """The copy bandwidth the roofline uses: measured with the runs' thread count (else the best one)."""
    measured = data["machine"]["bandwidth"]
    threads = (data.get("settings") or {}).get("threads")
    same = [b["gbps"] for b in measured if b["threads"] == threads]
    return same[0] if same else max(b["gbps"] for b in measured)


def _speed_rows(speed: dict) -> dict[int, dict]:
    return {r["loops"]: r for r in speed["rows"]}


def _weights(data: dict, model: str, q: str) -> WeightBytes:
    return WeightBytes(**{k: v for k, v in data[f"{model}/{q}/weights"].items() if k != "_meta"})


def bytes_per_token(weights: WeightBytes, speed: dict, loops: int) -> float:
    """What a decode step of the sweep reads at `loops` loops: the weights, and the KV cache at the mean
    context of the decode steps (the prompt plus half the generated tokens)."""
    row = _speed_rows(speed)[loops]
    context = row["prompt_tokens"] + (row["gen_tokens"] - 1) / 2
    return weights.per_token(loops) + kv_bytes_read(speed["kv_bytes_per_token"], speed["loops"], loops, context)


def swept(data: dict) -> dict[str, dict]:
    """{model/quant: speed result} of the files whose loop sweep was measured (a Thinking file with its base's
    tensor table has none)."""
    return {k.removesuffix("/speed"): v for k, v in data.items() if k.endswith("/speed") and v["rows"]}


def commands_run(data: dict, command: str) -> list[str]:
    """The suite commands whose results `data` holds: a resumed run adds its own to the first one's."""
    return [r["command"] for r in data.get("invocations") or []] or [command]


def runtime_keys(data: dict) -> list[str]:
    """The build keys of the runtimes that measured the saved speeds (one, unless a run was interrupted)."""
    return sorted({(v["_meta"].get("runtime") or "unrecorded")[:12] for k, v in data.items()
                   if isinstance(v, dict) and "_meta" in v and is_runtime_stage(k)})


def machine_section(data: dict, command: str) -> list[str]:
    m = data["machine"]
    keys = runtime_keys(data)
    bw = ", ".join(f"{b['threads']} thread{'s' if b['threads'] > 1 else ''} {b['gbps']:.1f} GB/s"
                   for b in m["bandwidth"])
    finished = [v["_meta"]["finished"] for v in data.values() if "_meta" in v]
    commands = commands_run(data, command)
    resumed = "each resuming the saved results of the one before; " if len(commands) > 1 else ""
    return [
        f"Produced by {', then '.join(f'`{c}`' for c in commands)} ({resumed}finished "
        f"{max(finished) if finished else '?'}). Machine: {m['cores']} cores, "
        f"{m['cpu']}, Python {m['python']}; numpy copy bandwidth (bytes read + written, median of "
        f"{len(m['bandwidth'][0]['runs_gbps'])} copies of {m['bandwidth'][0]['array_bytes'] >> 20} MiB, "
        f"`python -m benchmarks.bandwidth`): {bw}. Runtime build key{'s' if len(keys) > 1 else ''} "
        f"(llama-cpp-python, patches/, flags; `ouro runtime status`): {', '.join(keys) or '?'}.",
        "",
        f"Every table gives the 1-minute load average before → after its measurement ({m['cores']} cores: "
        f"above {m['cores']} our threads waited for a core, and absolute tok/s are pessimistic). Ratios are "
        "measured in the same run, configurations taking turns round by round, so drifting load hits them "
        "alike. Checkpoints are full-shape with random weights "
        f"(models/synthetic.py): speed does not depend on the values. Threads for every runtime and the "
        f"reference: {_threads(data)}.",
        "",
    ]


def files_section(data: dict, models: Sequence[str], quants: Sequence[str]) -> list[str]:
    rows = []
    for model in models:
        for q in quants:
            key = f"{model}/{q}"
            conv, speed, info = data.get(f"{key}/convert"), data.get(f"{key}/speed"), data.get(f"{key}/info")
            if not (conv and speed and info):
                rows.append([model, q.upper(), "not measured", "", "", "", "", "", "", ""])
                continue
            chat = speed["chat"]
            chat_text = (f"{chat['generated_tokens']} tokens"
                         + (", `<think>` prefilled" if chat["opened_thinking"] else "")
                         + f", T={chat['sampling']['temperature']:g} top-p={chat['sampling']['top_p']:g}")
            rows.append([model, q.upper(), _gib(conv["file_bytes"]), f"{conv['seconds']:.0f} s",
                         _gib(conv["peak_rss"]), f"{speed['load_seconds']:.2f} s", _gib(speed["peak_rss"]),
                         f"{speed['kv_bytes_per_token_measured'] / 1024:.0f} KiB",
                         f"ok: {info['info']['parameters'] / 1e9:.2f} B params, T={info['info']['loops']}",
                         chat_text])
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
        "",
    ]


def speed_section(data: dict, models: Sequence[str], quants: Sequence[str], plot: str | None) -> list[str]:
    bw = bandwidth_gbps(data)
    rows, commands, twins = [], [], []
    for model in models:
        for q in quants:
            speed, w = data.get(f"{model}/{q}/speed"), data.get(f"{model}/{q}/weights")
            if speed and speed.get("same_tensors_as"):
                twins.append(f"{model} {q.upper()} (= {speed['same_tensors_as']})")
            if not (speed and w and speed["rows"]):
                continue
            commands.append(f"`{speed['_meta']['command']}`")
            weights = _weights(data, model, q)
            for t, r in sorted(_speed_rows(speed).items()):
                per_token = bytes_per_token(weights, speed, t)
                ceiling = roofline_tps(bw, per_token)
                rows.append([model, q.upper(), t, _tps(r['prompt_tps']), _tps(r['decode_tps']),
                             _gib(per_token), _tps(ceiling), f"{100 * r['decode_tps'] / ceiling:.0f}%",
                             _load(speed["_meta"])])
    if not rows:
        return []
    lines = [
        "### Prompt and decode speed at T loops",
        "",
        f"{'; '.join(commands)} (medians of the rounds): a {data_prompt(data)}-token prompt from an empty "
        f"cache, then {data_gen(data)} greedy tokens; T set on the running context between runs. Bytes/token = "
        f"T × block + head + one embedding row + the KV cache T loops read at the mean decode context "
        f"(`benchmarks.roofline`); roofline = {bw:.1f} GB/s (the copy bandwidth with the runs' thread count) / "
        f"bytes per token.",
        "",
        *table(["model", "quant", "T", "prompt tok/s", "decode tok/s", "bytes/token", "roofline tok/s",
                 "decode / roofline", "load avg"], rows, right_from=2),
        "",
    ]
    if twins:
        lines += [f"Not swept again: {', '.join(twins)}: the same tensor table (names, shapes, types; "
                  "`benchmarks.roofline.tensor_layout`) as the base model's file, so the same bytes per token "
                  "through the same kernels; their load, memory, KV and chat turn are in the first table.", ""]
    if plot:
        lines += [f"![decode tok/s vs loops]({plot})", "",
                  "Figure: decode tok/s vs loops per model and quant, from the table above "
                  "(the suite's command, in the figure's title; drawn by benchmarks/plots.py).", ""]
    return lines


def data_prompt(data: dict) -> int:
    return next((v["rows"][0]["prompt_tokens"] for v in swept(data).values()), 0)


def data_gen(data: dict) -> int:
    return next((v["rows"][0]["gen_tokens"] for v in swept(data).values()), 0)


def comparisons_section(data: dict, quants: Sequence[str], ref_model: str) -> list[str]:
    lines = ["### Comparisons (ratios from the same run)", ""]
    ref = data.get(f"{ref_model}/reference")
    if ref:
        rows = []
        for q in quants:
            speed = data.get(f"{ref_model}/{q}/speed")
            if not speed:
                continue
            r = _speed_rows(speed)[speed["loops"]]
            pr, dr = r["prompt_tps"] / ref["prompt_tps"], r["decode_tps"] / ref["decode_tps"]
            rows.append([q.upper(), _tps(r['prompt_tps']), f"{pr:.2f}×", _met(pr >= REF_PROMPT_GOAL),
                         _tps(r['decode_tps']), f"{dr:.2f}×", _met(dr >= REF_DECODE_GOAL)])
        lines += [
            f"**Against the PyTorch reference** (`{ref['_meta']['command']}`: runtime/reference.py in bf16 with its "
            f"KV cache, {ref['threads']} thread(s), {ref['prompt_tokens']}-token prompt, {ref['gen_tokens']} decoded "
            f"tokens, medians of {len(ref['prompt_tps_runs'])} runs; load avg {_load(ref['_meta'])}): reference "
            f"prompt {_tps(ref['prompt_tps'])} tok/s, decode {_tps(ref['decode_tps'])} tok/s; peak RSS "
            f"{_gib(ref['peak_rss'])}. Ours: the {ref_model} GGUF at all {data[f'{ref_model}/{quants[0]}/speed']['loops']} "
            f"loops, from the table above. Goals: decode ≥ {REF_DECODE_GOAL:g}×, prompt ≥ {REF_PROMPT_GOAL:g}×.",
            "",
            *table(["quant", "prompt tok/s", "vs reference", "goal", "decode tok/s", "vs reference", "goal"], rows),
            "",
        ]
    rows = []
    for key, speed in sorted(swept(data).items()):
        model, q = key.split("/")
        weights = _weights(data, model, q)
        by_t = _speed_rows(speed)
        t_max = speed["loops"]
        measured = by_t[1]["decode_tps"] / by_t[t_max]["decode_tps"]  # time per token, T loops / 1 loop
        read_at_t_max = bytes_per_token(weights, speed, t_max)
        expected = read_at_t_max / bytes_per_token(weights, speed, 1)
        overhead = measured / expected - 1
        ceiling = roofline_tps(bandwidth_gbps(data), read_at_t_max)
        rows.append([f"{model} {q.upper()}", f"{measured:.2f}×", f"{expected:.2f}×", f"{100 * overhead:+.1f}%",
                     _met(overhead <= LOOP_OVERHEAD_GOAL),
                     f"{100 * by_t[t_max]['decode_tps'] / ceiling:.0f}%",
                     _met(by_t[t_max]["decode_tps"] >= ROOFLINE_GOAL * ceiling)])
    if rows:
        lines += [
            "**Against the cost of the loops and the physical limit.** Time per decoded token at T = 4 over T = 1 "
            "on the same file, against the bytes each reads (4 loops' blocks and KV + head + row over one loop's: "
            "'4 × one loop + the head' if decode is bandwidth-bound); goal: looping adds ≤ 5%. Decode at T = 4 as a "
            f"share of the roofline; goal ≥ {100 * ROOFLINE_GOAL:.0f}%.",
            "",
            *table(["file", "time T=4 / T=1", "bytes T=4 / T=1", "loop overhead", "goal", "decode / roofline",
                     "goal"], rows),
            "",
        ]
    return lines


def kernel_section(data: dict) -> list[str]:
    """The kernels' own speed beside the copy bandwidth: what bounds decode / roofline on this machine."""
    kc = data.get("kernel_ceiling")
    if not kc or not kc["kernels"]:
        return []
    bw = bandwidth_gbps(data)
    cpu = kc.get("cpu") or {}
    simd = ", ".join(cpu.get("simd") or []) or "none found"
    rows = []
    for k in kc["kernels"]:
        gops = k.get("prompt_gops_median")
        rows.append([k["label"], k["used_by"], k["buffer"], f"{k['streamed_gbps_median']:.1f}",
                     f"{k['cached_gbps_median']:.1f}", f"{k['cached_gbps_median'] / k['streamed_gbps_median']:.2f}×",
                     f"{100 * k['streamed_gbps_median'] / bw:.0f}%", f"{gops:.0f}" if gops else "–"])
    return [
        f"**The kernels' own ceiling** (`{kc['_meta']['command']}`, load avg {_load(kc['_meta'])}; medians of "
        f"{kc['rounds']} rounds, {kc['threads']} threads; CPU family {cpu.get('family', '?')} model "
        f"{cpu.get('model', '?')}, SIMD extensions ggml can use: {simd}): ggml's one-token kernels on their own, "
        f"streaming from memory ({kc['streamed_matrices']} matrices of {kc['rows']} × {kc['cols']}; attention over "
        f"{kc['attention_layers']} layers of a {kc['attention_tokens']:,}-token F16 cache) "
        f"and over {kc['cached_bytes'] >> 20} MiB that stay in the L3 cache; prompt: the same product with a "
        f"{kc['prompt_tokens']}-token activation, 2 × rows × cols × tokens operations per second. A kernel "
        "that runs as fast in cache as streamed is bound by its arithmetic, not by memory; decode cannot "
        "read its weights at a larger share of the copy bandwidth than its kernels do.",
        "",
        *table(["kernel", "used by", "buffer", "streamed GB/s", "in L3 GB/s", "in L3 / streamed",
                 "streamed / copy bandwidth", "prompt GOPS"], rows, right_from=3),
        "",
    ]


def tuning_section(data: dict, ref_model: str) -> list[str]:
    tuning, ref = data.get(f"{ref_model}/prompt_tuning"), data.get(f"{ref_model}/reference")
    if not tuning:
        return ["**Prompt pass, what was tried:** not measured in this run.", ""]
    rows = tuning["rows"]
    base = rows[0]
    t_max = data.get(f"{ref_model}/{base['file']}/speed", {}).get("loops", 4)
    body = []
    for r in rows:
        implied = r["prompt_tps"] / t_max  # prompt cost is T× that of one loop
        body.append([r["file"].upper(), r["n_ubatch"], r["threads"], _tps(r['prompt_tps']),
                      f"{r['prompt_tps'] / base['prompt_tps']:.2f}×",
                      f"{implied / ref['prompt_tps']:.2f}×" if ref else "–"])
    return [
        f"**Prompt pass, what was tried** (`{tuning['_meta']['command']}`, load avg {_load(tuning['_meta'])}): "
        f"a {base['prompt_tokens']}-token prompt at 1 loop (prompt cost is T× one loop's, so the ratios hold at "
        f"every T), each configuration its own context, taking turns, medians of {tuning['rounds']} rounds. "
        f"The last column divides by T = {t_max} and compares with the reference's prompt speed.",
        "",
        *table(["weights", "n_ubatch", "threads", "prompt tok/s at 1 loop", "vs first row",
                 f"implied at T={t_max} vs reference"], body),
        "",
    ]


def exit_section(data: dict, ref_model: str, exit_quant: str, plot: str | None) -> list[str]:
    ex = data.get(f"{ref_model}/{exit_quant}/exit")
    if not ex:
        return []
    rows = {r["label"]: r for r in ex["skip"]}
    select = rows["select"]
    t_max = select["loops"]
    body = []
    for label, r in rows.items():
        ratio = r["decode_tps"] / select["decode_tps"]
        if label.startswith("skip k="):
            goal = SKIP_GOAL * t_max / r["loops"]
            goal_text, ok = f"≥ {goal:.2f}", ratio >= goal
        elif label == "skip q=1.0":
            goal_text, ok = f"≥ {NO_EXIT_GOAL:.2f}", ratio >= NO_EXIT_GOAL
        else:
            goal_text, ok = "", None
        loops_run = r["loops_run_last_decode"]
        body.append([label, _tps(r['decode_tps']), f"{ratio:.2f}×", goal_text, "" if ok is None else _met(ok),
                      ",".join(map(str, loops_run))])
    kv = ex["kv_bytes_4096"]
    kv_ratio = kv["share"] / kv["full"]
    long = data.get(f"{ref_model}/{exit_quant}/long_context")
    lines = [
        f"### Early exit that skips compute, and the loop-shared KV cache ({ref_model} {exit_quant.upper()}, {_threads(data)} thread(s))",
        "",
        f"`{ex['_meta']['command']}` (load avg {_load(ex['_meta'])}). Decode tok/s after a "
        f"{select['prompt_tokens']}-token prompt, {select['gen_tokens']} tokens, medians of {ex['rounds']} rounds "
        f"taking turns. Skip k: skip mode with threshold 0 and min_loops k, i.e. every token exits after loop k "
        f"(`runtime.control.set_exit`); goal skip/select ≥ 0.9 · {t_max}/k. Skip q=1.0: skip mode where "
        f"nothing exits; goal ≥ {NO_EXIT_GOAL}. 'loops run' is what the runtime reports for the last decode.",
        "",
        *table(["mode", "decode tok/s", "vs select", "goal", "met?", "loops run"], body),
        "",
        f"KV cache at n_ctx 4096 (the context's buffers, `runtime.control.kv_bytes`): full {_gib(kv['full'])}, "
        f"shared {_gib(kv['share'])}: **{kv_ratio:.3f}×** (goal ≤ {KV_SHARE_GOAL}: {_met(kv_ratio <= KV_SHARE_GOAL)}).",
        "",
    ]
    if long:
        ltps = long["decode_tps"]
        lines += [
            f"Decode with {long['context']:,} tokens in the cache, full vs shared KV (`{long['_meta']['command']}`, "
            f"load avg {_load(long['_meta'])}; all loops, {long['gen_tokens']} tokens per round, medians of "
            f"{long['rounds']} rounds taking turns; the cache is filled at 1 loop to save time, which does not "
            f"change what a decode step reads): full {_tps(ltps['full'])} tok/s, shared {_tps(ltps['share'])} tok/s: "
            f"shared/full **{ltps['share'] / ltps['full']:.2f}×**.",
            "",
        ]
    else:
        lines += ["Decode at a long context, shared vs full KV: not measured in this run.", ""]
    if plot:
        lines += [f"![skip mode decode speed]({plot})", "",
                  "Figure: decode tok/s by exit loop in skip mode against select mode and the ideal T/k "
                  "scaling, from the table above (the suite's command, in the figure's title).", ""]
    return lines


def render(data: dict, models: Sequence[str], quants: Sequence[str], command: str,
           plots: dict[str, str] | None = None, ref_model: str = "1.4b", exit_quant: str = "q4_k_m") -> str:
    plots = plots or {}
    if "machine" not in data:
        return "\n".join(["## Speed and memory", "", "Not measured yet: run `python -m benchmarks`.", ""])
    lines = ["## Speed and memory (`python -m benchmarks`)", "", *machine_section(data, command),
             *files_section(data, models, quants),
             *speed_section(data, models, quants, plots.get("loops")),
             *comparisons_section(data, quants, ref_model),
             *kernel_section(data),
             *tuning_section(data, ref_model),
             *exit_section(data, ref_model, exit_quant, plots.get("skip"))]
    missing = [m for m in models if not any(k.startswith(f"{m}/") and k.endswith("/speed") for k in data)]
    if missing:
        lines += [f"Not measured in this run: {', '.join(missing)}.", ""]
    return "\n".join(lines)


def write_report(data: dict, models: Sequence[str], command: str, output: Path,
                 quants: Sequence[str] = ("q8_0", "q4_k_m")) -> None:
    from benchmarks.plots import make_plots

    title = " + ".join(commands_run(data, command))
    plots = make_plots(data, output.parent / FIGURES, output.parent, title) if "machine" in data else {}
    write_section(output, render(data, models, quants, command, plots), MARKERS)
