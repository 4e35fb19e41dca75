"""The runtime build pipeline without compiling: cache keys, patch application, sdist checks, status."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolchain import errors, inputs, patching, sdist
from toolchain import status as build_status


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


@pytest.fixture()
def vendor(tmp_path: Path) -> Path:
    """A tiny git repository standing in for vendor/llama.cpp."""
    repo = tmp_path / "llama.cpp"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "llama-arch.cpp").write_text("line one\nline two\nline three\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "vendored")
    return repo


def _diff(vendor: Path, new_text: str, out: Path) -> Path:
    """A patch (made the way the lead makes them) changing src/llama-arch.cpp to `new_text`."""
    target = vendor / "src" / "llama-arch.cpp"
    old = target.read_text()
    target.write_text(new_text)
    out.write_text(subprocess.run(["git", "-C", str(vendor), "diff"], capture_output=True, text=True,
                                  check=True).stdout)
    target.write_text(old)
    return out


@pytest.fixture()
def patches(tmp_path: Path, vendor: Path) -> Path:
    folder = tmp_path / "patches"
    folder.mkdir()
    _diff(vendor, "line one\nline two (ouro)\nline three\n", folder / "0001-arch.patch")
    return folder


# ------------------------------------------------------------------------------------------ cache key

def test_cache_key_is_stable_for_the_same_inputs(patches: Path) -> None:
    files = inputs.patch_files(patches)
    assert inputs.cache_key(files, inputs.PORTABLE_FLAGS) == inputs.cache_key(files, inputs.PORTABLE_FLAGS)


def test_cache_key_ignores_file_names_but_not_content(patches: Path) -> None:
    files = inputs.patch_files(patches)
    before = inputs.cache_key(files, inputs.PORTABLE_FLAGS)
    renamed = patches / "0001-renamed.patch"
    files[0].rename(renamed)
    assert inputs.cache_key([renamed], inputs.PORTABLE_FLAGS) == before
    renamed.write_text(renamed.read_text().replace("(ouro)", "(ouro!)"))
    assert inputs.cache_key([renamed], inputs.PORTABLE_FLAGS) != before


def test_cache_key_changes_with_flags_and_patch_set(patches: Path, tmp_path: Path) -> None:
    files = inputs.patch_files(patches)
    base = inputs.cache_key(files, inputs.PORTABLE_FLAGS)
    assert inputs.cache_key(files, inputs.NATIVE_FLAGS) != base
    assert inputs.cache_key(files, (*inputs.PORTABLE_FLAGS, "-DGGML_AVX512=ON")) != base
    assert inputs.cache_key([], inputs.PORTABLE_FLAGS) != base
    extra = tmp_path / "0002-more.patch"
    extra.write_text("diff --git a/x b/x\n")
    assert inputs.cache_key([*files, extra], inputs.PORTABLE_FLAGS) != base
    assert inputs.cache_key([extra, *files], inputs.PORTABLE_FLAGS) != inputs.cache_key([*files, extra],
                                                                                      inputs.PORTABLE_FLAGS)


def test_patches_apply_in_sorted_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    for name in ("0010-b.patch", "0002-a.patch", "notes.txt"):
        (folder / name).write_text("")
    assert [p.name for p in inputs.patch_files(folder)] == ["0002-a.patch", "0010-b.patch"]
    assert inputs.patch_files(tmp_path / "absent") == []


# -------------------------------------------------------------------------------------------- patches

def test_apply_patches_changes_the_tree(vendor: Path, patches: Path) -> None:
    patching.apply_patches(vendor, inputs.patch_files(patches))
    assert "(ouro)" in (vendor / "src" / "llama-arch.cpp").read_text()


def test_a_patch_that_does_not_apply_is_named(vendor: Path, patches: Path) -> None:
    bad = _diff(vendor, "line one\nline two\nline three\nline four\n", patches / "0002-broken.patch")
    bad.write_text(bad.read_text().replace(" line three", " line 3"))  # context no longer matches
    with pytest.raises(errors.PatchError, match="0002-broken.patch"):
        patching.apply_patches(vendor, inputs.patch_files(patches))


# ---------------------------------------------------------------------------------------------- sdist

def _fake_sdist(path: Path, roots: tuple[str, ...] = ("llama_cpp_python-0.3.36",)) -> Path:
    with tarfile.open(path, "w") as archive:  # uncompressed: gzip would stamp the time, changing the sha
        for root in roots:
            data = b"[project]\nname = 'x'\n"
            info = tarfile.TarInfo(f"{root}/pyproject.toml")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_sha_mismatch_is_our_error(tmp_path: Path) -> None:
    fake = _fake_sdist(tmp_path / inputs.SDIST_NAME)
    with pytest.raises(errors.SdistError, match="not the official llama-cpp-python"):
        sdist.verify_sdist(fake)
    sdist.verify_sdist(fake, hashlib.sha256(fake.read_bytes()).hexdigest())


def test_a_bad_download_never_enters_the_cache(tmp_path: Path) -> None:
    def downloader(folder: Path) -> Path:
        return _fake_sdist(folder / inputs.SDIST_NAME)

    with pytest.raises(errors.SdistError):
        sdist.fetch_sdist(tmp_path / "cache", downloader)
    assert not list((tmp_path / "cache" / "sdist").iterdir())


def test_a_good_download_is_cached_and_reused(tmp_path: Path) -> None:
    sha = hashlib.sha256(_fake_sdist(tmp_path / "reference.tar.gz").read_bytes()).hexdigest()
    calls = []

    def downloader(folder: Path) -> Path:
        calls.append(folder)
        return _fake_sdist(folder / inputs.SDIST_NAME)

    first = sdist.fetch_sdist(tmp_path / "cache", downloader, expected=sha)
    second = sdist.fetch_sdist(tmp_path / "cache", downloader, expected=sha)
    assert first == second == tmp_path / "cache" / "sdist" / inputs.SDIST_NAME
    assert len(calls) == 1


def test_unpack_finds_the_project_root(tmp_path: Path) -> None:
    root = sdist.unpack_sdist(_fake_sdist(tmp_path / "one.tar.gz"), tmp_path / "one")
    assert root.name == "llama_cpp_python-0.3.36"
    with pytest.raises(errors.SdistError):
        sdist.unpack_sdist(_fake_sdist(tmp_path / "two.tar.gz", ("a", "b")), tmp_path / "two")


# ------------------------------------------------------------------------------------ source syncing

def test_sync_rewrites_only_changed_files(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for tree, changed in ((old, "before"), (new, "after")):
        (tree / "d").mkdir(parents=True)
        (tree / "same.c").write_text("same")
        (tree / "d" / "changed.c").write_text(changed)
    (old / "gone.c").write_text("x")
    (new / "d" / "added.c").write_text("y")
    dst = tmp_path / "dst"
    assert patching.sync_tree(old, dst) == -1  # first sync moves the tree in
    past = 1_000_000_000
    for path in dst.rglob("*.c"):
        os.utime(path, (past, past))
    assert patching.sync_tree(new, dst) == 3  # changed.c, added.c, gone.c
    assert (dst / "same.c").stat().st_mtime == past
    assert (dst / "d" / "changed.c").read_text() == "after"
    assert (dst / "d" / "changed.c").stat().st_mtime > past
    assert (dst / "d" / "added.c").read_text() == "y"
    assert not (dst / "gone.c").exists()
    assert patching.sync_tree(new, dst) == 0


# --------------------------------------------------------------------------------------------- status

@pytest.fixture()
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed libllama.so that runtime_status finds."""
    library = tmp_path / "site" / "llama_cpp" / "lib" / "libllama.so"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"\x7fELF ours")
    monkeypatch.setattr(build_status, "installed_library", lambda: library)
    return library


def _record(prefix: Path, key: str, library: Path, patches: list[Path]) -> None:
    prefix.mkdir(exist_ok=True)
    build_status.write_record({"key": key, "native": False,
                        "patches": [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                                    for p in patches],
                        "library_sha256": hashlib.sha256(library.read_bytes()).hexdigest()}, prefix)


def test_status_up_to_date_then_stale_when_a_patch_changes(tmp_path: Path, patches: Path,
                                                           installed: Path) -> None:
    prefix = tmp_path / "prefix"
    files = inputs.patch_files(patches)
    _record(prefix, inputs.cache_key(files, inputs.PORTABLE_FLAGS), installed, files)
    status = build_status.runtime_status(prefix=prefix, patches_dir=patches, cache=tmp_path / "cache")
    assert status.state == build_status.UP_TO_DATE and status.ok
    patch = patches / "0001-arch.patch"
    patch.write_text(patch.read_text().replace("(ouro)", "(ouro v2)"))
    status = build_status.runtime_status(prefix=prefix, patches_dir=patches, cache=tmp_path / "cache")
    assert status.state == build_status.STALE and not status.ok
    assert status.patch_changes == ("~0001-arch.patch",)
    (patches / "0002-new.patch").write_text("")
    patch.rename(patches / "0003-moved.patch")
    status = build_status.runtime_status(prefix=prefix, patches_dir=patches)
    assert status.patch_changes == ("+0002-new.patch", "+0003-moved.patch", "-0001-arch.patch")
    with pytest.raises(errors.RuntimeNotReady, match="ouro runtime build"):
        build_status.ensure_runtime(prefix=prefix, patches_dir=patches)


def test_status_foreign_and_missing(tmp_path: Path, patches: Path, installed: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = tmp_path / "prefix"
    key = inputs.cache_key(inputs.patch_files(patches), inputs.PORTABLE_FLAGS)
    _record(prefix, key, installed, inputs.patch_files(patches))
    installed.write_bytes(b"\x7fELF stock llama-cpp-python")  # someone reinstalled the stock wheel
    assert build_status.runtime_status(prefix=prefix, patches_dir=patches).state == build_status.FOREIGN
    assert build_status.runtime_status(prefix=tmp_path / "no-record", patches_dir=patches).state == build_status.FOREIGN
    monkeypatch.setattr(build_status, "installed_library", lambda: None)
    assert build_status.runtime_status(prefix=prefix, patches_dir=patches).state == build_status.MISSING


def test_tools_dir_follows_the_current_key(tmp_path: Path, patches: Path, installed: Path) -> None:
    prefix, cache = tmp_path / "prefix", tmp_path / "cache"
    key = inputs.cache_key(inputs.patch_files(patches), inputs.PORTABLE_FLAGS)
    _record(prefix, key, installed, inputs.patch_files(patches))
    assert build_status.runtime_status(prefix=prefix, patches_dir=patches, cache=cache).tools is None
    (cache / "tools" / key / "bin").mkdir(parents=True)
    assert build_status.runtime_status(prefix=prefix, patches_dir=patches, cache=cache).tools == \
        cache / "tools" / key / "bin"


def test_record_is_written_whole(tmp_path: Path) -> None:
    build_status.write_record({"key": "k"}, tmp_path)
    assert json.loads((tmp_path / inputs.RECORD_NAME).read_text()) == {"key": "k"}
    assert [p.name for p in tmp_path.iterdir()] == [inputs.RECORD_NAME]
    assert build_status.read_record(tmp_path / "elsewhere") is None


def test_cli_status_exits_non_zero_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from ouro_cli.runtime_cmd import app as runtime_app

    monkeypatch.setattr(build_status, "installed_library", lambda: None)
    result = CliRunner().invoke(runtime_app, ["status"])
    assert result.exit_code == 1
    assert build_status.MISSING in result.output and "ouro runtime build" in result.output


# ------------------------------------------------------------------------------------------ sanitized build

def test_sanitized_build_has_its_own_key_and_directory(patches: Path) -> None:
    files = inputs.patch_files(patches)
    assert inputs.cache_key(files, inputs.SANITIZE_FLAGS) != inputs.cache_key(files, inputs.PORTABLE_FLAGS)
    assert inputs.flags_id(inputs.SANITIZE_FLAGS) != inputs.flags_id(inputs.PORTABLE_FLAGS)
    for option in ("LLAMA_SANITIZE_ADDRESS", "LLAMA_SANITIZE_UNDEFINED", "GGML_SANITIZE_ADDRESS",
                   "GGML_SANITIZE_UNDEFINED"):
        assert f"-D{option}=ON" in inputs.SANITIZE_FLAGS
        assert not any(option in flag for flag in (*inputs.PORTABLE_FLAGS, *inputs.NATIVE_FLAGS))


def test_cli_status_sanitize_prints_the_library_directory_once_built(tmp_path: Path, patches: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ouro_cli import runtime_cmd
    from toolchain import sanitize

    monkeypatch.setattr(sanitize, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(runtime_cmd, "current_sanitized", lambda: sanitize.current_sanitized(patches))
    assert CliRunner().invoke(runtime_cmd.app, ["status", "--sanitize"]).exit_code == 1
    lib_dir = sanitize.sanitized_lib_dir(tmp_path, inputs.cache_key(inputs.patch_files(patches),
                                                                    inputs.SANITIZE_FLAGS))
    lib_dir.mkdir(parents=True)
    (lib_dir / "libllama.so").write_bytes(b"")
    result = CliRunner().invoke(runtime_cmd.app, ["status", "--sanitize"])
    assert result.exit_code == 0 and result.stdout.strip() == str(lib_dir)
