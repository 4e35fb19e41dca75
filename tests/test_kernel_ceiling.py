"""benchmarks.kernel_ceiling: the C++ harness builds against the installed runtime and computes correctly."""

from __future__ import annotations

import os
import shutil

import pytest

from benchmarks import kernel_ceiling as kc

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs a C++ compiler")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    return kc.build(tmp_path_factory.mktemp("kernels"))


# every kernel at one token (decode); the weight kernels also at 16 (prompt): attention is timed one-token only
CASES = [(k, t) for k in kc.KERNELS for t in ((1,) if k.attention else (1, 16))]


@pytest.mark.parametrize("kernel,tokens", CASES, ids=lambda c: getattr(c, "type", c))
def test_every_kernel_computes_correctly(harness, kernel, tokens):
    matrices = kernel.streamed_shape()[0]  # as many matrices (layers) as the benchmark streams, small ones
    r = kc.run(harness, kernel, matrices=matrices, rows=64, tokens=tokens, iters=2, threads=2)
    # weights: the activation is quantized to 8 bits on the way in, so the product is close to float,
    # never equal; attention: F16 products accumulate in F32 in another order than the double reference
    assert 0 < r.relative_error <= kc.MAX_RELATIVE_ERROR
    assert r.buffer == ("CPU_REPACK" if kernel.repack else "CPU")
    assert r.weight_bytes == matrices * 64 * kernel.row_bytes() and r.median_seconds > 0


def test_a_result_off_by_more_than_the_bound_is_an_error(harness, monkeypatch):
    monkeypatch.setattr(kc, "MAX_RELATIVE_ERROR", 0.0)
    with pytest.raises(kc.KernelBenchError, match="result is wrong"):
        kc.run(harness, kc.KERNELS[0], matrices=1, rows=64, tokens=1, iters=1, threads=1)


def test_cached_runs_fit_the_cache_size():
    for kernel in kc.KERNELS:
        rows = kernel.cached_rows()
        assert rows % 64 == 0 and kc.CACHED_BYTES * 0.9 < rows * kernel.row_bytes() <= kc.CACHED_BYTES
