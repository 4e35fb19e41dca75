"""`convert_checkpoint`: an Ouro HF checkpoint -> one GGUF file. The CLI and the benchmarks call this."""

from __future__ import annotations

import os
import time
from math import prod
from pathlib import Path

from gguf import LlamaFileType
from rich.console import Console

from convert.checkpoint import load_checkpoint
from convert.kquant import load_quantizer
from convert.metadata import resolve_metadata
from convert.output import atomic_output, resolve_output, temp_sibling
from convert.plan import output_type, plan_tensors
from convert.report import Summary, print_summary, quantize_progress, tensor_progress
from convert.tokenizer import read_vocab
from convert.writer import write_gguf


def convert_checkpoint(src: str | os.PathLike[str], outfile: str | os.PathLike[str] | None = None,
                       qtype: str = "q8_0", force: bool = False, *, console: Console | None = None) -> Path:
    """Convert the checkpoint `src` (directory or cached HF repo id) to a GGUF of type `qtype`.

    Every input is validated before the output is created; failures raise `ConvertError` and leave no
    file behind. Progress goes to stderr, the summary to `console` (stdout by default).
    """
    console = console or Console()
    progress_console = Console(stderr=True)
    start = time.monotonic()
    otype = output_type(qtype)
    ckpt = load_checkpoint(src)
    vocab = read_vocab(ckpt.path, ckpt.hparams.vocab_size, ckpt.hparams.bos_token_id)
    out = resolve_output(outfile, ckpt.name, otype.name, force)
    quantizer = load_quantizer() if otype.kquant else None  # fail fast, before the long F16 pass
    # A K-quant starts as an F16 file; llama.cpp records the final file type itself.
    meta = resolve_metadata(ckpt, vocab, LlamaFileType.MOSTLY_F16 if otype.kquant else otype.file_type)
    plans = plan_tensors(ckpt.tensors, otype)

    with atomic_output(out) as tmp:
        if quantizer is None:
            with tensor_progress(progress_console, plans, ckpt.weights) as advance:
                write_gguf(tmp, ckpt, vocab, meta, plans, advance)
            tensor_bytes = sum(p.nbytes for p in plans)
        else:
            with temp_sibling(out, suffix=".f16.tmp") as f16:
                with tensor_progress(progress_console, plans, ckpt.weights) as advance:
                    data_offset = write_gguf(f16, ckpt, vocab, meta, plans, advance)
                with quantize_progress(progress_console, f"llama.cpp {otype.name.upper()}") as progress:
                    quantizer(f16, tmp, otype.file_type, progress)
            # llama.cpp keeps every key and tensor info (only values change), so the metadata is as
            # long as ours; the rest is tensor data plus at most 31 bytes of alignment per tensor.
            tensor_bytes = tmp.stat().st_size - data_offset

    print_summary(console, Summary(
        source=ckpt.path, output=out, type_name=otype.name,
        n_tensors=len(plans), n_params=sum(prod(p.src.shape) for p in plans),
        tensor_bytes=tensor_bytes, file_bytes=out.stat().st_size,
        seconds=time.monotonic() - start, layers=ckpt.hparams.num_hidden_layers, loops=ckpt.hparams.total_ut_steps,
        thinking=meta.thinking, template_from_checkpoint=meta.template_from_checkpoint,
        fallbacks=[f"{p.name}: {p.fallback}" for p in plans if p.fallback],
    ))
    return out
