"""Streaming: the converter holds about one tensor at a time, never the whole model."""

from __future__ import annotations

import io
import tracemalloc

import pytest
from rich.console import Console

from convert.convert import convert_checkpoint
from convert_support import write_wide_checkpoint
from models.synthetic import write_checkpoint


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Wider than `tiny` (tensors of 128K values) and 24 layers: the model is ~60x its largest tensor."""
    tiny = write_checkpoint(tmp_path_factory.mktemp("tiny") / "Ouro-tiny", "tiny")
    return write_wide_checkpoint(tiny, tmp_path_factory.mktemp("wide") / "Ouro-wide", num_hidden_layers=24)


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_peak_python_memory_is_far_below_the_output(wide, tmp_path, qtype):
    tracemalloc.start()
    try:
        convert_checkpoint(wide, tmp_path / "x.gguf", qtype, console=Console(file=io.StringIO()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out_size = (tmp_path / "x.gguf").stat().st_size
    # GGUFWriter's default path keeps every tensor until the end: at least the output's size.
    assert peak < out_size / 8, (peak, out_size)
