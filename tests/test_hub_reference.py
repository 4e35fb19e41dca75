"""Model references and the download prompt (issue 18), in-process: no Hub involved."""

from __future__ import annotations

import io
import sys

import pytest
import typer
from rich.console import Console

from hub import confirm
from hub.confirm import confirm_download
from hub.errors import HubError
from hub.reference import HubRef, parse_reference, with_type


@pytest.mark.parametrize("text, expected", [
    ("ByteDance/Ouro-1.4B", HubRef("ByteDance/Ouro-1.4B", None, None, None)),
    ("ByteDance/Ouro-1.4B@v1.0:q4_k_m", HubRef("ByteDance/Ouro-1.4B", "v1.0", "q4_k_m", None)),
    ("user/repo:Q4_K_M", HubRef("user/repo", None, "Q4_K_M", None)),
    ("user/repo@0123abc/sub/model-Q8_0.gguf", HubRef("user/repo", "0123abc", None, "sub/model-Q8_0.gguf")),
])
def test_references(text, expected):
    assert parse_reference(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["model.gguf", "dir/model.gguf", "./a/b", "/abs/a/b", "a/b/c", "a/b:", "../a/b",
                                  "a/b/../../etc/x.gguf"])
def test_paths_are_not_references(text):
    assert parse_reference(text) is None


@pytest.mark.parametrize("text, type_name, expected", [
    ("ByteDance/Ouro-1.4B", "q4_k_m", "ByteDance/Ouro-1.4B:q4_k_m"),
    ("ByteDance/Ouro-1.4B@v1:q4_k_m", "q4_k_m", "ByteDance/Ouro-1.4B@v1:q4_k_m"),
    ("user/repo:Q8_0", "q8_0", "user/repo:Q8_0"),  # a GGUF repo's quant, named in either case
])
def test_type_option_is_the_type_suffix(text, type_name, expected):
    assert str(with_type(parse_reference(text), type_name)) == expected


@pytest.mark.parametrize("text, message", [
    ("user/repo:q8_0", "user/repo:q8_0 asks for type q8_0 and --type for f16; give only one"),
    ("user/repo/model.gguf", "user/repo/model.gguf names a file; --type f16 cannot apply to it"),
])
def test_type_option_that_contradicts_the_reference(text, message):
    with pytest.raises(HubError) as e:
        with_type(parse_reference(text), "f16")
    assert str(e.value) == message


REF = HubRef("ByteDance/Ouro-1.4B", None, None, None)
BIG = {"model.safetensors": confirm.LARGE_DOWNLOAD + 1}


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def test_small_download_shows_its_size_and_does_not_ask(monkeypatch):
    monkeypatch.setattr(typer, "confirm", lambda *a, **k: pytest.fail("asked"))
    console, out = _console()
    confirm_download(REF, {"config.json": 2048, "model.safetensors": 3 << 20}, yes=False, console=console)
    assert "downloading 3.0 MiB (config.json 2.0 KiB, model.safetensors 3.0 MiB)" in out.getvalue()


def test_large_download_asks_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter([False, True])
    monkeypatch.setattr(typer, "confirm", lambda *a, **k: next(answers))
    with pytest.raises(HubError, match="declined"):
        confirm_download(REF, BIG, yes=False, console=_console()[0])
    confirm_download(REF, BIG, yes=False, console=_console()[0])  # the second answer is yes


def test_large_download_without_a_terminal_needs_yes(monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    with pytest.raises(HubError, match="pass --yes"):
        confirm_download(REF, BIG, yes=False, console=_console()[0])
    confirm_download(REF, BIG, yes=True, console=_console()[0])
