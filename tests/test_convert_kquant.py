"""K-quant plumbing: F16 intermediate -> llama.cpp's quantizer -> atomic output (llama_cpp faked here)."""

from __future__ import annotations

import contextlib
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
from convert.errors import ConvertError, RuntimeMissingError
from convert_support import gguf_fields
from models.synthetic import write_checkpoint


class FakeParams(ctypes.Structure):
    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int)]


LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def fake_llama_cpp(calls: list, rc: int = 0, error: bytes = b"") -> types.ModuleType:
    """llama_cpp's quantize API; it logs like llama.cpp (per-tensor INFO lines, ERROR on failure)."""
    mod = types.ModuleType("llama_cpp")
    mod.llama_model_quantize_default_params = FakeParams
    mod.llama_log_callback = LOG_CALLBACK
    mod._logger = types.SimpleNamespace(llama_log_callback=LOG_CALLBACK(lambda *a: None))  # llama-cpp-python's own
    mod.log = [mod._logger.llama_log_callback]

    def llama_log_set(callback, user_data) -> None:
        mod.log.append(callback)

    mod.llama_log_set = llama_log_set

    def llama_model_quantize(src: bytes, dst: bytes, params) -> int:
        src_path, dst_path = Path(src.decode()), Path(dst.decode())
        reader = GGUFReader(src_path)
        calls.append({
            "src": src_path, "dst": dst_path, "ftype": params._obj.ftype,
            "src_file_type": gguf_fields(reader)["general.file_type"],
            "src_types": {t.tensor_type for t in reader.tensors},
        })
        n = len(reader.tensors)
        for i, t in enumerate(reader.tensors, 1):
            mod.log[-1](1, f"[{i:4d}/{n:4d}] {t.name:36s} - [...], type = f16, ".encode(), None)
            mod.log[-1](1, b"converting to q4_K .. size = 0.01 MiB -> 0.00 MiB\n", None)
        if rc == 0:
            shutil.copy(src_path, dst_path)  # stands in for the real quantization
        else:
            mod.log[-1](3, b"llama_model_quantize: failed to quantize: " + error + b"\n", None)
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
    fake = fake_llama_cpp(calls)
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    progress: list = []
    monkeypatch.setattr(convert.convert, "quantize_progress", recording_progress(progress))
    out = convert_checkpoint(ckpt, tmp_path / "m.gguf", name, console=Console(file=io.StringIO()))
    (call,) = calls
    assert progress == [(i, 25) for i in range(1, 26)]  # llama.cpp's per-tensor lines drive the bar
    assert fake.log[-1] is fake._logger.llama_log_callback  # llama-cpp-python's logger is back
    assert call["ftype"] == ftype
    assert call["src_file_type"] == LlamaFileType.MOSTLY_F16
    assert call["src_types"] == {Q.F16, Q.F32}  # matrices F16, norms F32
    assert call["src"].parent == call["dst"].parent == tmp_path  # temp files beside the output
    assert out == tmp_path / "m.gguf" and out.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]  # both temp files are gone


def recording_progress(record: list):
    @contextlib.contextmanager
    def quantize_progress(console, label):
        yield lambda done, total: record.append((done, total))
    return quantize_progress


def test_unknown_arch_names_the_fix_and_leaves_nothing(ckpt, tmp_path, monkeypatch):
    calls: list = []
    fake = fake_llama_cpp(calls, rc=1, error=b"unknown model architecture: 'ouro'")
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    with pytest.raises(RuntimeMissingError, match="does not know the `ouro` architecture; run `ouro runtime build` first"):
        convert_checkpoint(ckpt, tmp_path / "m.gguf", "q4_k_m", console=Console(file=io.StringIO()))
    assert len(calls) == 1
    assert list(tmp_path.iterdir()) == []
    assert fake.log[-1] is fake._logger.llama_log_callback


def test_other_quantizer_failures_carry_llama_cpp_reason(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", fake_llama_cpp([], rc=1, error=b"basic_ios::clear: iostream error"))
    with pytest.raises(ConvertError, match="llama.cpp could not quantize to Q5_K_M: failed to quantize: basic_ios"):
        convert_checkpoint(ckpt, tmp_path / "m.gguf", "q5_k_m", console=Console(file=io.StringIO()))
    assert list(tmp_path.iterdir()) == []


def test_missing_runtime_fails_before_any_work(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    def never(*a, **k):
        raise AssertionError("the F16 pass must not start without a quantizer")

    monkeypatch.setattr(convert.convert, "write_gguf", never)
    with pytest.raises(RuntimeMissingError, match="not importable.*run `ouro runtime build` first"):
        convert_checkpoint(ckpt, tmp_path / "m.gguf", "q6_k")
    assert list(tmp_path.iterdir()) == []


def test_real_llama_cpp_q4_k_m(tmp_path):
    """With the patched runtime installed: a real Q4_K_M whose values and metadata survive."""
    pytest.importorskip("llama_cpp")
    import numpy as np
    from gguf.quants import dequantize

    from convert_support import read_safetensors, write_wide_checkpoint

    src = write_wide_checkpoint(write_checkpoint(tmp_path / "Ouro-tiny", "tiny"), tmp_path / "Ouro-k")
    out = convert_checkpoint(src, tmp_path / "k.gguf", "q4_k_m", console=Console(file=io.StringIO()))

    reader = GGUFReader(out)
    kv = gguf_fields(reader)
    _, source = read_safetensors(src / "model.safetensors")
    assert kv["general.file_type"] == LlamaFileType.MOSTLY_Q4_K_M
    assert kv["ouro.num_loops"] == 4 and kv["tokenizer.ggml.pre"] == "smollm"
    assert np.array_equal(np.array(kv["ouro.exit_gate.weight"], dtype=np.float32),
                          source["model.early_exit_gate.weight"].reshape(-1))
    types_ = {t.name: t.tensor_type for t in reader.tensors}
    assert types_["blk.0.ffn_gate.weight"] == Q.Q4_K and types_["output_norm.weight"] == Q.F32
    assert Q.Q6_K in types_.values()  # Q4_K_M's higher-precision tensors
    t = next(t for t in reader.tensors if t.name == "blk.1.ffn_up.weight")
    values = dequantize(t.data, t.tensor_type).reshape(512, 256)
    ref = source["model.layers.1.mlp.up_proj.weight"]
    assert np.sqrt(np.mean((values - ref) ** 2)) < 0.12 * np.sqrt(np.mean(ref**2))
