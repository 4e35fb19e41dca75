"""`ouro runtime export-source DIR`: the patched llama.cpp tree and the phone build scripts."""

from __future__ import annotations

import os
import subprocess

import pytest

from runtime.cache import cache_dir
from toolchain.errors import BuildError
from toolchain.export_source import PHONE_ARM_ARCH, export_source
from toolchain.inputs import SDIST_NAME, patch_files

needs_sdist = pytest.mark.skipif(not (cache_dir() / "sdist" / SDIST_NAME).is_file(),
                                 reason="the llama-cpp-python sdist is not cached (scripts/bootstrap.sh fetches it)")


@needs_sdist
def test_export_writes_the_patched_tree_and_the_scripts(tmp_path):
    target = export_source(tmp_path / "llama")
    assert (target / "src" / "models" / "ouro.cpp").is_file()  # patch 0001 applied
    assert not (target / ".git").exists()  # the sdist's submodule link would point nowhere
    scripts = target / "ouro"
    for name in ("build-android.sh", "build-termux.sh"):
        assert os.access(scripts / name, os.X_OK)
        assert subprocess.run(["bash", "-n", str(scripts / name)]).returncode == 0
    android = (scripts / "build-android.sh").read_text()
    assert "android.toolchain.cmake" in android and PHONE_ARM_ARCH in android and "-DGGML_NATIVE=OFF" in android
    assert "-DGGML_NATIVE=ON" in (scripts / "build-termux.sh").read_text()
    assert sorted(p.name for p in (scripts / "patches").iterdir()) == [p.name for p in patch_files()]
    assert "ouro.kv_share=bool:true" in (scripts / "README.md").read_text()
    assert (scripts / "IOS.md").is_file()


def test_export_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(BuildError, match="not an empty directory"):
        export_source(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
