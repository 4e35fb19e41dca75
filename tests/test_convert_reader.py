"""The safetensors reader's validation and memory mapping, and finding checkpoints in the HF cache."""

from __future__ import annotations

import gc
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from convert.checkpoint import locate
from convert.convert import convert_checkpoint
from convert.errors import CheckpointError, SafetensorsError
from convert.safetensors_reader import SafetensorsFile, to_float32
from convert_support import bf16_bits, write_safetensors
from models.synthetic import write_checkpoint

RNG = np.random.default_rng(7)
VALUES = RNG.standard_normal((3, 5)).astype(np.float32)


def good_tensors() -> dict:
    bf16 = bf16_bits(VALUES)
    return {
        "a.bf16": ("BF16", bf16.tobytes(), [3, 5]),
        "b.f16": ("F16", VALUES.astype("<f2").tobytes(), [3, 5]),
        "c.f32": ("F32", VALUES.astype("<f4").tobytes(), [3, 5]),
        "d.empty": ("F32", b"", [0, 5]),
    }


def test_reads_every_supported_dtype(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, good_tensors(), header_patch=lambda h: h.update(__metadata__={"format": "pt"}))
    st = SafetensorsFile(path)
    assert set(st.entries) == {"a.bf16", "b.f16", "c.f32", "d.empty"}  # __metadata__ is not a tensor
    bf16_expected = (bf16_bits(VALUES).astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(to_float32(st.mmap("a.bf16"), "BF16"), bf16_expected)
    np.testing.assert_array_equal(to_float32(st.mmap("b.f16"), "F16"), VALUES.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(to_float32(st.mmap("c.f32"), "F32"), VALUES)
    assert st.mmap("d.empty").shape == (0, 5)


def mapped_paths() -> set[str]:
    return {line.split(maxsplit=5)[-1].strip() for line in Path("/proc/self/maps").read_text().splitlines()
            if len(line.split()) >= 6}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_mapping_is_released_with_the_array(tmp_path):
    """What keeps peak memory at one tensor: a tensor's pages leave the process with its array."""
    path = tmp_path / "m.safetensors"
    write_safetensors(path, good_tensors())
    st = SafetensorsFile(path)
    arr = st.mmap("c.f32")
    assert str(path) in mapped_paths()
    del arr
    gc.collect()
    assert str(path) not in mapped_paths()


@pytest.mark.parametrize("patch, message", [
    (lambda h: h["b.f16"].update(data_offsets=[0, 30]), "overlap"),
    (lambda h: h["c.f32"].update(data_offsets=[60, 10_000]), "truncated safetensors file: tensor 'c.f32' ends at"),
    (lambda h: h["c.f32"].update(shape=[3, 4]), "spans 60 bytes but shape [3, 4] of F32 needs 48"),
    (lambda h: h["c.f32"].update(shape=[3, -5]), "invalid shape"),
    (lambda h: h["c.f32"].update(shape="3x5"), "invalid shape"),
    (lambda h: h["c.f32"].update(data_offsets=[60]), "invalid data_offsets"),
    (lambda h: h["c.f32"].update(data_offsets=[90, 60]), "invalid data_offsets"),
    (lambda h: h["c.f32"].update(dtype="F33"), "unknown dtype 'F33'"),
    (lambda h: h.update(x=[1, 2]), "tensor 'x' is not a JSON object"),
])
def test_header_inconsistencies_are_reported(tmp_path, patch, message):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, good_tensors(), header_patch=patch)
    with pytest.raises(SafetensorsError) as info:
        SafetensorsFile(path)
    assert message in str(info.value)


def test_header_must_be_an_object(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes((8).to_bytes(8, "little") + b"[1,2,3] ")
    with pytest.raises(SafetensorsError, match="expected a JSON object"):
        SafetensorsFile(path)


def test_tiny_file(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(SafetensorsError, match="no header"):
        SafetensorsFile(path)


# ---- the local Hugging Face cache ----

@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("base") / "Ouro-tiny", "tiny")


def cache_repo(cache: Path, repo_id: str, pristine: Path, revs: list[str], main: str | None) -> Path:
    """The standard hub layout: blobs, snapshots/<rev>/ of symlinks into blobs, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    for rev in revs:
        snap = repo / "snapshots" / rev
        snap.mkdir(parents=True)
        for f in pristine.iterdir():
            blob = repo / "blobs" / f"{rev}-{f.name}"
            shutil.copy(f, blob)
            (snap / f.name).symlink_to(Path("../..") / "blobs" / blob.name)
    if main:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(main)
    return repo


def test_repo_id_found_through_hf_home(pristine, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    repo = cache_repo(tmp_path / "hf" / "hub", "ByteDance/Ouro-1.4B", pristine, ["aaa", "bbb"], main="aaa")
    monkeypatch.chdir(tmp_path)
    assert locate("ByteDance/Ouro-1.4B") == (repo / "snapshots" / "aaa", "Ouro-1.4B")
    # A snapshot directory given as a path is named after its repo, not its revision hash.
    assert locate(repo / "snapshots" / "bbb") == (repo / "snapshots" / "bbb", "Ouro-1.4B")
    out = convert_checkpoint("ByteDance/Ouro-1.4B", qtype="f16", console=Console(file=io.StringIO()))
    assert out == tmp_path / "Ouro-1.4B-f16.gguf" and out.is_file()


def test_hf_hub_cache_wins_over_hf_home(pristine, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = cache_repo(tmp_path / "hub", "ByteDance/Ouro-2.6B-Thinking", pristine, ["c0ffee"], main=None)
    # No refs/main: the (only, else newest) snapshot is used.
    assert locate("ByteDance/Ouro-2.6B-Thinking") == (repo / "snapshots" / "c0ffee", "Ouro-2.6B-Thinking")


def test_repo_id_not_in_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CheckpointError, match="neither a directory nor in the local Hugging Face cache"):
        locate("ByteDance/Ouro-1.4B")


def test_existing_directory_wins_over_a_repo_id(pristine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(pristine, tmp_path / "ByteDance" / "Ouro-1.4B")
    assert locate("ByteDance/Ouro-1.4B") == (Path("ByteDance/Ouro-1.4B"), "Ouro-1.4B")
