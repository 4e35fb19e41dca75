"""K-quant plumbing: F16 intermediate -> llama.cpp's quantizer -> atomic output (llama_cpp faked here)."""

from __future__ import annotations

import ctypes
import io
import shutil
import sys
import types
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q, GGUFReader, LlamaFileType
from rich.console import Console

import convert.convert
from convert.convert import convert_checkpoint
from convert.errors import RuntimeMissingError
from convert_support import gguf_fields
from models.synthetic import write_checkpoint


class FakeParams(ctypes.Structure):
    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int)]


def fake_llama_cpp(calls: list, rc: int = 0) -> types.ModuleType:
    mod = types.ModuleType("llama_cpp")
    mod.llama_model_quantize_default_params = FakeParams

    def llama_model_quantize(src: bytes, dst: bytes, params) -> int:
        src_path, dst_path = Path(src.decode()), Path(dst.decode())
        reader = GGUFReader(src_path)
        calls.append({
            "src": src_path, "dst": dst_path, "ftype": params._obj.ftype,
            "src_file_type": gguf_fields(reader)["general.file_type"],
            "src_types": {t.tensor_type for t in reader.tensors},
        })
        if rc == 0:
            shutil.copy(src_path, dst_path)  # stands in for the real quantization
        return rc

    mod.llama_model_quantize = llama_model_quantize
    return mod


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("base") / "Ouro-tiny", "tiny")


@pytest.mark.parametrize("name, ftype", [("q4_k_m", LlamaFileType.MOSTLY_Q4_K_M),
                                          ("q5_k_m", LlamaFileType.MOSTLY_Q5_K_M),
                                          ("q6_k", LlamaFileType.MOSTLY_Q6_K)])
def test_kquant_quantizes_an_f16_intermediate(ckpt, tmp_path, monkeypatch, name, ftype):
    calls: list = []
    monkeypatch.setitem(sys.modules, "llama_cpp", fake_llama_cpp(calls))
    out = convert_checkpoint(ckpt, tmp_path / "m.gguf", name, console=Console(file=io.StringIO()))
    (call,) = calls
    assert call["ftype"] == ftype
    assert call["src_file_type"] == LlamaFileType.MOSTLY_F16
    assert call["src_types"] == {Q.F16, Q.F32}  # matrices F16, norms F32
    assert call["src"].parent == call["dst"].parent == tmp_path  # temp files beside the output
    assert out == tmp_path / "m.gguf" and out.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]  # both temp files are gone


def test_quantizer_failure_names_the_fix_and_leaves_nothing(ckpt, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "llama_cpp", fake_llama_cpp(calls, rc=1))
    with pytest.raises(RuntimeMissingError, match="`ouro` architecture.*run `ouro runtime build` first"):
        convert_checkpoint(ckpt, tmp_path / "m.gguf", "q4_k_m", console=Console(file=io.StringIO()))
    assert len(calls) == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_runtime_fails_before_any_work(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    def never(*a, **k):
        raise AssertionError("the F16 pass must not start without a quantizer")

    monkeypatch.setattr(convert.convert, "write_gguf", never)
    with pytest.raises(RuntimeMissingError, match="not importable.*run `ouro runtime build` first"):
        convert_checkpoint(ckpt, tmp_path / "m.gguf", "q6_k")
    assert list(tmp_path.iterdir()) == []
