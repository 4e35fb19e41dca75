"""`ouro generate MODEL PROMPT`: one completion of PROMPT (`-` reads it from stdin), no chat template.

The text streams to stdout and a stats line goes to stderr; `--json` prints one JSON object instead.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from ouro_cli import model_options as opt
from runtime import Completion, TextStream
from runtime.errors import OuroRuntimeError

app = typer.Typer()


@app.command("generate")
def generate(
    model: Annotated[str, typer.Argument(help=opt.MODEL_HELP)],
    prompt: Annotated[str, typer.Argument(help="The text to continue; - reads it from stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: text, token counts, speeds, loops.")] = False,
    # Settings first, then sampling: each group shows in its own help panel.
    ctx: opt.Ctx = None, threads: opt.Threads = None, loops: opt.Loops = None,
    exit_threshold: opt.ExitThreshold = None, exit_mode: opt.ExitModeOpt = None,
    kv: opt.KvOpt = None, kv_type: opt.KvTypeOpt = None, mmap: opt.MmapOpt = None, phone: opt.Phone = False,
    yes: opt.Yes = False,
    model_type: opt.ModelType = None,
    temp: opt.Temp = None, top_p: opt.TopP = None, top_k: opt.TopK = None, min_p: opt.MinP = None,
    repeat_penalty: opt.RepeatPenalty = None, seed: opt.Seed = None, max_tokens: opt.MaxTokens = None,
    ignore_eos: opt.IgnoreEos = False,
) -> None:
    """Continue a prompt with an Ouro model (one shot, streaming)."""
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    with opt.cli_errors(err):
        text = sys.stdin.read() if prompt == "-" else prompt
        if not text:
            raise OuroRuntimeError("the prompt is empty")
        params = opt.sampling(temp=temp, top_p=top_p, top_k=top_k, min_p=min_p, repeat_penalty=repeat_penalty,
                              seed=seed, max_tokens=max_tokens, ignore_eos=ignore_eos)
        settings = opt.settings(phone=phone, ctx=ctx, threads=threads, loops=loops, exit_threshold=exit_threshold,
                                exit_mode=exit_mode, kv=kv, kv_type=kv_type, mmap=mmap)
        m = opt.open_model(model, settings, err, yes=yes, type_name=model_type).model
        with m:
            if as_json:
                completion = m.generate(text, **params)
                assert isinstance(completion, Completion)
                print(json.dumps(_as_json(completion, m.loops, m.exit_threshold), ensure_ascii=False))
                return
            stream = m.generate(text, stream=True, **params)
            assert isinstance(stream, TextStream)
            with opt.CtrlC() as ctrl_c:
                try:
                    for piece in stream:
                        out.print(piece, end="", markup=False, emoji=False, soft_wrap=True)
                        if ctrl_c.pressed:
                            break
                except KeyboardInterrupt:
                    pass
                stream.close()  # ends the generation if it is still running
            out.print()
            assert stream.completion is not None
            s = stream.completion.stats
            err.print(f"[dim]{s.prompt_tokens} prompt tokens at {opt.rate(s.prefill_tps)} · {s.generated_tokens} "
                      f"tokens at {opt.rate(s.decode_tps)} · loops/token {opt.loops_text(s.mean_loops)} · "
                      f"{s.finish_reason}[/dim]")
            if s.finish_reason == "interrupted":
                raise typer.Exit(130)


def _as_json(completion: Completion, loops: int, exit_threshold: float) -> dict:
    s = completion.stats
    return {
        "text": completion.text,
        "tokens": s.generated_tokens,
        "prompt_tokens": s.prompt_tokens,
        "prefill_tokens_per_s": s.prefill_tps,
        "decode_tokens_per_s": s.decode_tps,
        "mean_loops": s.mean_loops,
        "loops": loops,
        "exit_threshold": exit_threshold,
        "finish_reason": s.finish_reason,
    }
