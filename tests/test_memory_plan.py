"""runtime.memory_plan: the planner's figures against what llama.cpp reports and what the process uses.

The runtime measurements run in a subprocess each (a fresh process: its RSS growth is the model's alone).
The model is a small synthetic Ouro with a head size of 32, so a q8_0 KV cache can hold it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.memory_plan import (
    MemoryPlanError, available_memory, fit_warning, plan_memory, plan_rows,
)
from runtime.kv import GGML_TYPE_IDS
from runtime.validate import validate_gguf

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """One checkpoint (hidden 256, 8 heads of 32, FFN 1024, 4 layers x 4 loops, vocab 512) as F32/F16/Q8_0/Q4_0."""
    from rich.console import Console

    from convert.convert import convert_checkpoint
    from models import synthetic

    config = dict(synthetic.PRESETS["tiny"], hidden_size=256, intermediate_size=1024, num_attention_heads=8,
                  num_key_value_heads=8, head_dim=32)
    root = tmp_path_factory.mktemp("plan")
    synthetic.PRESETS["plan-test"] = config
    try:
        ckpt = synthetic.write_checkpoint(root / "ckpt", "plan-test", layers=4, loops=4, seed=1)
    finally:
        del synthetic.PRESETS["plan-test"]
    return {q: convert_checkpoint(ckpt, root / f"m-{q}.gguf", q, console=Console(file=io.StringIO()))
            for q in ("f32", "f16", "q8_0", "q4_0")}


# A fresh interpreter loads the model with llama-cpp-python exactly as runtime.model does (one thread count,
# KV share as a load-time override) and prints llama.cpp's own buffer sizes and its RSS growth.
WORKER = r"""
import json, re, sys
import llama_cpp

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

args = json.loads(sys.argv[1])
log = []
@llama_cpp.llama_log_callback
def keep(level, text, user):
    log.append(text.decode(errors="replace"))
llama_cpp.llama_log_set(keep, None)
llama_cpp.llama_backend_init()
base = rss()
llm = llama_cpp.Llama(args["path"], n_ctx=args["n_ctx"], n_batch=args["n_batch"], n_ubatch=args["n_batch"],
                      n_threads=1, n_threads_batch=1, flash_attn=args["flash_attn"], type_k=args["type"],
                      type_v=args["type"], kv_overrides={"ouro.kv_share": True} if args["share"] else None,
                      use_mmap=args["mmap"], verbose=True)
llm.eval([(7 * i + 3) % 500 + 5 for i in range(args["n_prompt"])])
text = "".join(log)
def mib(pattern):
    return float(re.search(pattern + r"\s*=\s*([0-9.]+) MiB", text).group(1)) * 2**20
print(json.dumps({"rss": rss() - base, "kv": mib("KV buffer size"), "compute": mib("compute buffer size")}))
"""


def measure(path: Path, *, n_ctx: int, n_batch: int, kv: str, kv_type: str, flash_attn: bool,
            n_prompt: int = 64, mmap: bool = True) -> dict:
    pytest.importorskip("llama_cpp")
    args = dict(path=str(path), n_ctx=n_ctx, n_batch=n_batch, share=kv == "share", type=GGML_TYPE_IDS[kv_type],
                flash_attn=flash_attn, n_prompt=n_prompt, mmap=mmap)
    result = subprocess.run([sys.executable, "-c", WORKER, json.dumps(args)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# (file, n_ctx, n_batch, kv, kv_type, flash attention): llama-cpp-python's default batch, with and without
# flash attention, full and shared KV, F16 and q8_0 caches.
BUFFER_CASES = [
    ("f16", 2048, 512, "full", "f16", False),
    ("f16", 1024, 512, "share", "f16", True),
    ("q8_0", 4096, 512, "share", "q8_0", True),
    ("f32", 512, 128, "full", "q8_0", True),
]


@pytest.mark.parametrize("qtype,n_ctx,n_batch,kv,kv_type,flash", BUFFER_CASES)
def test_kv_and_compute_match_llama_cpp(models, qtype, n_ctx, n_batch, kv, kv_type, flash):
    plan = plan_memory(validate_gguf(models[qtype]), n_ctx, kv=kv, kv_type=kv_type, n_batch=n_batch,
                       flash_attn=flash)
    seen = measure(models[qtype], n_ctx=n_ctx, n_batch=n_batch, kv=kv, kv_type=kv_type, flash_attn=flash,
                   n_prompt=8)
    assert plan.kv_cache == seen["kv"]
    assert abs(plan.compute - seen["compute"]) <= 0.10 * seen["compute"], (plan.compute / MiB, seen["compute"] / MiB)


# Three settings where the KV cache and the weights dominate: the default (F32 weights, full F16 KV), a
# q8_0 cache, and the phone preset (loop-shared q8_0 KV). A small batch keeps the compute buffer, whose
# worst case a short prompt does not touch, a minor term (it is checked against llama.cpp's figure above).
RSS_CASES = [
    ("f32", 4096, "full", "f16", False),
    ("f16", 8192, "full", "q8_0", True),
    ("q8_0", 16384, "share", "q8_0", True),
]


@pytest.mark.parametrize("qtype,n_ctx,kv,kv_type,flash", RSS_CASES)
def test_estimate_within_10_percent_of_measured_rss(models, qtype, n_ctx, kv, kv_type, flash):
    plan = plan_memory(validate_gguf(models[qtype]), n_ctx, kv=kv, kv_type=kv_type, n_batch=16, flash_attn=flash)
    seen = measure(models[qtype], n_ctx=n_ctx, n_batch=16, kv=kv, kv_type=kv_type, flash_attn=flash,
                   mmap=plan.held.mmap)
    assert abs(plan.total - seen["rss"]) <= 0.10 * seen["rss"], (plan.total / MiB, seen["rss"] / MiB)


def test_a_repacked_file_is_planned_as_it_is_held(models):
    """Q4_0 is repacked on x86 (AVX2) and ARM (dotprod): the plan reads it by default and counts the file
    pages mmap would keep beside the copies. A small context keeps the weights the dominant term."""
    s = validate_gguf(models["q4_0"])
    auto, on = (plan_memory(s, 256, n_batch=16, mmap=m) for m in ("auto", "on"))
    if not auto.held.repacked:
        pytest.skip("this runtime's CPU backend repacks no Q4_0 matrix")
    assert (auto.held.mmap, auto.held.extra, on.held.mmap) == (False, 0, True)
    assert on.total - auto.total == s.file_size - s.tensor_bytes + auto.held.repacked
    assert "read into memory" in dict(plan_rows(auto))["  weights"]
    assert "repacked matrices' source pages" in dict(plan_rows(on))["  file pages"]
    # At this size the constant runtime term dominates the total, so the check is on what the two ways of
    # holding the weights differ by: the metadata pages and the repacked matrices' file pages.
    seen = {plan.held.mmap: measure(models["q4_0"], n_ctx=256, n_batch=16, kv="full", kv_type="f16",
                                    flash_attn=True, mmap=plan.held.mmap)["rss"] for plan in (auto, on)}
    assert abs((seen[True] - seen[False]) - (on.total - auto.total)) <= 0.10 * (on.total - auto.total)


def test_share_and_q8_0_shrink_the_cache_by_the_expected_factors(models):
    s = validate_gguf(models["f16"])
    full = plan_memory(s, 4096)
    share = plan_memory(s, 4096, kv="share")
    q8 = plan_memory(s, 4096, kv="share", kv_type="q8_0")
    assert full.kv_cache == 4096 * s.kv_bytes_per_token_full
    assert full.kv_cache == s.loops * share.kv_cache
    assert q8.kv_cache * 32 == share.kv_cache * 17  # 34 bytes per 32 values instead of 64
    assert q8.flash_attn and full.flash_attn  # the runtime's FLASH_ATTN, for every cache type
    assert plan_memory(s, 4096, loops=2).kv_cache == full.kv_cache // 2
    assert plan_memory(s, 1000).kv_cells == 1024
    assert dict(plan_rows(q8))["  total"].endswith("MiB")


def test_impossible_settings_are_refused(tiny_gguf, models):
    _, small_heads = tiny_gguf(qtype="f16")  # head size 16: a q8_0 block of 32 does not fit
    with pytest.raises(MemoryPlanError, match="head size 16"):
        plan_memory(validate_gguf(small_heads), 2048, kv_type="q8_0")
    s = validate_gguf(models["f16"])
    with pytest.raises(MemoryPlanError, match="flash attention"):
        plan_memory(s, 2048, kv_type="q8_0", flash_attn=False)
    with pytest.raises(MemoryPlanError, match="kv must be"):
        plan_memory(s, 2048, kv="half")
    with pytest.raises(MemoryPlanError, match="at least 1"):
        plan_memory(s, 0)


def test_available_memory_takes_the_smaller_of_meminfo_and_the_cgroup(tmp_path):
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    cgroup.mkdir()
    (proc / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    assert available_memory(proc, cgroup) == 4000000 * 1024
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("100\n")
    assert available_memory(proc, cgroup) == 4000000 * 1024
    (cgroup / "memory.max").write_text(str(1 << 30))
    (cgroup / "memory.current").write_text(str(256 << 20))
    assert available_memory(proc, cgroup) == 768 << 20
    assert available_memory(tmp_path / "none", tmp_path / "none") is None


def test_fit_warning_only_when_the_plan_exceeds_what_is_available(models):
    plan = plan_memory(validate_gguf(models["f16"]), 4096)
    assert fit_warning(plan, None) is None
    assert fit_warning(plan, plan.total) is None
    warning = fit_warning(plan, plan.total - 1)
    assert warning is not None and "--phone" in warning and "KV" in warning


def test_the_chat_warns_before_loading_a_setting_that_does_not_fit(models, monkeypatch):
    pytest.importorskip("llama_cpp")
    from rich.console import Console

    from ouro_cli import model_options as opt
    from runtime import Settings

    out = io.StringIO()
    monkeypatch.setattr(opt, "available_memory", lambda: 16 << 20)
    opened = opt.open_model(str(models["q8_0"]), Settings(n_ctx=4096, n_threads=1), Console(file=out, width=200))
    opened.model.close()
    assert "warning:" in out.getvalue() and "16.0 MiB of memory is available" in out.getvalue()
    out.truncate(0)
    monkeypatch.setattr(opt, "available_memory", lambda: 1 << 40)
    opt.open_model(str(models["q8_0"]), Settings(n_ctx=4096, n_threads=1, kv="share", kv_type="q8_0"),
                   Console(file=out)).model.close()
    assert "warning" not in out.getvalue()
