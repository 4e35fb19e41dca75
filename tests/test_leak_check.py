"""The sanitizer run's leak check is not blind: a leak through llama.cpp is reported (issue 20).

scripts/sanitize.sh runs LeakSanitizer with Python's own allocations kept out of the report (scripts/lsan/:
the check at the start of Python's shutdown, PYTHONMALLOC=malloc, suppressions for CPython and third-party
wheels). A configuration that hid everything would pass that run just as well, so these tests start a child
under the same environment that creates a sampler, a model and a context through llama.cpp and drops them:
its report must name the llama.cpp and ggml functions that allocated them; the same child freeing them must
leave no report, although it imports numpy and torch and loads a model.

They need the sanitizer runtime and skip without it (the normal suite).
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "__lsan_do_leak_check"),
                                reason="LeakSanitizer not loaded (run through scripts/sanitize.sh)")

CHILD = """
import sys
import numpy, torch  # what they allocate must not be reported either
import llama_cpp as L
sampler = L.llama_sampler_init_greedy()
model = L.llama_model_load_from_file(sys.argv[1].encode(), L.llama_model_default_params())
ctx = L.llama_init_from_model(model, L.llama_context_default_params())
assert sampler and model and ctx
if sys.argv[2] == "free":
    L.llama_sampler_free(sampler)
    L.llama_free(ctx)
    L.llama_model_free(model)
del sampler  # the only pointer to it (model and ctx are plain Python ints, invisible to LeakSanitizer anyway)
"""


def run_child(gguf, how: str, log_dir) -> tuple[int, list[str]]:
    """The child's exit status and its leak reports (one text block per leaked allocation stack)."""
    env = dict(os.environ)
    # Its report goes to log_dir, not to the run's report directory, which must stay empty.
    env["ASAN_OPTIONS"] += f":log_path={log_dir}/asan"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(gguf), how], env=env, capture_output=True, text=True,
                          timeout=600)
    text = "".join(p.read_text() for p in log_dir.glob("asan.*"))
    return proc.returncode, re.findall(r"^(?:Direct|Indirect) leak of .*?(?=\n\n|\nSUMMARY|\Z)", text, re.M | re.S)


def frame(function: str, source: str, leak: str) -> bool:
    """Whether the leak's stack has a symbolized frame of `function` in the llama.cpp file `source`."""
    return re.search(rf"^ +#\d+ 0x[0-9a-f]+ in {function} \S*/llama\.cpp/{re.escape(source)}:\d+", leak, re.M) is not None


def test_a_leak_through_llama_cpp_is_reported_with_its_frames(tiny_gguf, tmp_path):
    code, leaks = run_child(tiny_gguf()[1], "leak", tmp_path)
    assert code != 0, "LeakSanitizer found nothing"
    # The sampler is a direct leak. The model and the context point at each other's parts, a cycle: LeakSanitizer
    # reports every block of a leaked cycle as an indirect leak (each is pointed at by another leaked block).
    assert any(leak.startswith("Direct") and frame("llama_sampler_init_greedy", "src/llama-sampler.cpp", leak)
               for leak in leaks), "\n\n".join(leaks)
    for function, source in (("llama_model_load_from_file", "src/llama.cpp"),
                             ("llama_init_from_model", "src/llama-context.cpp"),
                             ("ggml_backend_sched_new", "ggml/src/ggml-backend.cpp")):
        assert any(frame(function, source, leak) for leak in leaks), \
            f"no leak through {function}:\n" + "\n\n".join(leaks)


def test_freeing_them_leaves_no_report(tiny_gguf, tmp_path):
    code, leaks = run_child(tiny_gguf()[1], "free", tmp_path)
    assert (code, leaks) == (0, [])
