"""`ouro info FILE [--json] [--ctx N]`: what an Ouro GGUF holds and what running it costs.

Everything comes from runtime.validate (the file is checked, never loaded into llama.cpp), so `info` is
instant even on a multi-GB file and doubles as "is this file safe and complete?".
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.resolve import model_file
from ouro_cli import model_options as opt
from runtime.loading import plan_for
from runtime.memory_plan import plan_rows
from runtime.validate import GGUFSummary, validate_gguf

app = typer.Typer()


def info_dict(s: GGUFSummary, n_ctx: int) -> dict[str, Any]:
    """The JSON form: plain numbers (bytes, counts), stable keys."""
    return {
        "path": str(s.path),
        "file_bytes": s.file_size,
        "gguf_version": s.version,
        "name": s.name,
        "architecture": s.arch,
        "loops": s.loops,
        "layers": s.layers,
        "logical_layers": s.loops * s.layers,
        "hidden_size": s.hidden,
        "ffn_size": s.ffn,
        "heads": s.heads,
        "kv_heads": s.heads_kv,
        "head_dim": s.head_dim,
        "vocab_size": s.vocab,
        "context_train": s.ctx_train,
        "rope_base": s.rope_base,
        "exit_gate": s.gate_present,
        "exit_gate_bias": s.gate_bias,
        "exit_threshold": s.threshold,
        "exit_at_step": s.exit_at_step,
        "exit_mode": s.exit_mode,
        "min_loops": s.min_loops,
        "kv_share": s.kv_share,
        "parameters": s.n_params,
        "tensors": s.n_tensors,
        "tensor_types": [{"type": t.type, "count": t.count, "bytes": t.nbytes} for t in s.tensor_types],
        "weights_bytes": s.tensor_bytes,
        "chat_template": s.chat_template,
        "eos_token": {"id": s.eos_token_id, "text": s.eos_token},
        "end_of_turn_token": {"id": s.eot_token_id, "text": s.eot_token},
        "sampling_defaults": s.sampling,
        "kv_bytes_per_token": {"full": s.kv_bytes_per_token_full, "share": s.kv_bytes_per_token_share},
        "ctx": n_ctx,
        "kv_bytes": {"full": s.kv_bytes(n_ctx, "full"), "share": s.kv_bytes(n_ctx, "share")},
        "ram_bytes": {"full": s.ram_bytes(n_ctx, "full"), "share": s.ram_bytes(n_ctx, "share")},
    }


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit} ({n:,})"
    return f"{n:,}"


def render(console: Console, s: GGUFSummary, n_ctx: int, extra_rows: list[tuple[str, str]] | None = None) -> None:
    hb = opt.human_bytes
    table = Table(title=f"{s.path.name}", show_header=False, title_justify="left", box=None, padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    gate = "yes (metadata)" if s.gate_present else "no (every token reads the last loop)"
    exit_rule = f"Q-exit at CDF ≥ {s.threshold:g}" + (" (always the last loop)" if s.threshold >= 1.0 else "")
    if s.exit_at_step is not None:
        exit_rule = f"fixed: loop {s.exit_at_step}"
    rows = [
        ("name", s.name or "–"),
        ("architecture", f"{s.arch} (GGUF v{s.version}, {hb(s.file_size)})"),
        ("loops × layers", f"{s.loops} × {s.layers} physical = {s.loops * s.layers} logical layers"),
        ("shape", f"hidden {s.hidden}, ffn {s.ffn}, heads {s.heads} (KV {s.heads_kv}) × {s.head_dim}, "
                  f"vocab {s.vocab}"),
        ("trained context", f"{s.ctx_train:,} tokens (rope base {s.rope_base:g})"),
        ("exit gate", gate),
        ("exit", exit_rule),
        ("exit mode", f"{s.exit_mode}" + (" (compute stops at the exit loop" + (f", never before loop {s.min_loops})"
                                                                                  if s.min_loops > 1 else ")")
                                          if s.exit_mode == "skip" else " (every loop runs)")),
        ("parameters", _count(s.n_params)),
        ("weights", ", ".join(f"{t.type} ×{t.count} {hb(t.nbytes)}" for t in s.tensor_types)
         + f" = {hb(s.tensor_bytes)}"),
        ("end of turn", f"{s.eot_token!r} (id {s.eot_token_id})" if s.eot_token_id is not None
         else f"{s.eos_token!r} (eos id {s.eos_token_id})"),
        ("chat template", f"present ({len(s.chat_template)} chars)" if s.chat_template else "none"),
        ("sampling defaults", ", ".join(f"{k}={v:g}" for k, v in s.sampling.items()) or "none"),
        ("KV per token", f"full {hb(s.kv_bytes_per_token_full)} ({s.loops}×{s.layers} slots), "
                         f"share {hb(s.kv_bytes_per_token_share)} ({s.layers} slots), F16"),
        (f"RAM at --ctx {n_ctx}", f"full {hb(s.ram_bytes(n_ctx, 'full'))} "
                                  f"(KV {hb(s.kv_bytes(n_ctx, 'full'))}), share {hb(s.ram_bytes(n_ctx, 'share'))} "
                                  f"(KV {hb(s.kv_bytes(n_ctx, 'share'))}) + compute buffers"),
    ]
    if s.kv_share:
        rows.append(("kv", "the file asks for loop-shared KV (ouro.kv_share)"))
    for k, v in [*rows, *(extra_rows or [])]:
        table.add_row(k, v)
    console.print(table)


@app.command("info")
def info(
    file: Annotated[str, typer.Argument(help=opt.MODEL_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    ctx: opt.Ctx = None, kv: opt.KvOpt = None, kv_type: opt.KvTypeOpt = None, mmap: opt.MmapOpt = None,
    phone: opt.Phone = False, yes: opt.Yes = False, model_type: opt.ModelType = None,
) -> None:
    """Show an Ouro GGUF's architecture, loops, exit gate, quantization, chat template and memory needs."""
    err = Console(stderr=True, highlight=False)
    with opt.cli_errors(err):
        if ctx is not None and ctx < 1:
            raise typer.BadParameter("--ctx must be at least 1")
        settings = opt.settings(phone=phone, ctx=ctx, kv=kv, kv_type=kv_type, mmap=mmap)
        summary = validate_gguf(model_file(file, err, yes, model_type and model_type.value)[0])
        plan = plan_for(summary, settings)  # runtime/memory_plan.py
        ctx = settings.n_ctx
    if as_json:
        print(json.dumps({**info_dict(summary, ctx), "memory_plan": plan.to_dict()}, ensure_ascii=False, indent=2))
    else:
        render(Console(highlight=False), summary, ctx, plan_rows(plan))
