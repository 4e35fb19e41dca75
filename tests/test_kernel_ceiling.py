"""benchmarks.kernel_ceiling: the C++ harness builds against the installed runtime and multiplies correctly."""

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


@pytest.mark.parametrize("tokens", [1, 16], ids=["decode", "prompt"])
@pytest.mark.parametrize("kernel", kc.KERNELS, ids=lambda k: k.type)
def test_every_kernel_multiplies_correctly(harness, kernel, tokens):
    r = kc.run(harness, kernel, matrices=2, rows=64, tokens=tokens, iters=2, threads=2)
    # the activation is quantized to 8 bits on the way in, so the product is close to float, never equal
    assert 0 < r["relative_error"] <= kc.MAX_RELATIVE_ERROR
    assert r["buffer"] == ("CPU_REPACK" if kernel.repack else "CPU")
    weights, nbytes = kc.BYTES_PER_BLOCK[kernel.type]
    assert r["weight_bytes"] == 2 * 64 * (kc.COLS // weights) * nbytes and r["median_seconds"] > 0


def test_a_product_off_by_more_than_the_bound_is_an_error(harness, monkeypatch):
    monkeypatch.setattr(kc, "MAX_RELATIVE_ERROR", 0.0)
    with pytest.raises(kc.KernelBenchError, match="product is wrong"):
        kc.run(harness, kc.KERNELS[0], matrices=1, rows=64, tokens=1, iters=1, threads=1)


def test_cached_matrices_fit_the_cache_size():
    for kernel in kc.KERNELS:
        weights, nbytes = kc.BYTES_PER_BLOCK[kernel.type]
        rows = kc.cached_rows(kernel.type)
        assert rows % 64 == 0 and kc.CACHED_BYTES * 0.9 < rows * (kc.COLS // weights) * nbytes <= kc.CACHED_BYTES
