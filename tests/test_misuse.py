"""Misuse of the Python API and CLI (issue 9): threads sharing one model, prompts longer than the context."""

from __future__ import annotations

import threading
import time

import pytest
from typer.testing import CliRunner

pytest.importorskip("llama_cpp")

from ouro_cli.main import app  # noqa: E402
from runtime import load  # noqa: E402
from runtime.errors import OuroRuntimeError  # noqa: E402

PROMPTS = ["the the the", "a b c d e f", "hello world, hello", "1 2 3 4 5 6 7"]


@pytest.fixture(scope="module")
def model(tiny_gguf):
    _, path = tiny_gguf(qtype="q8_0", loops=3)
    with load(path, n_ctx=128, n_threads=1) as m:
        yield m


def greedy(model, prompt: str) -> list[int]:
    return model.generate(prompt, max_tokens=12, ignore_eos=True, temperature=0).tokens


def test_threads_sharing_a_model_are_serialized(model):
    expected = {p: greedy(model, p) for p in PROMPTS}
    results: dict[tuple[int, int], list[int]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for j in range(6):
                prompt = PROMPTS[(k + j) % len(PROMPTS)]
                if j % 2:  # streamed and plain calls mixed
                    stream = model.generate(prompt, stream=True, max_tokens=12, ignore_eos=True, temperature=0)
                    "".join(stream)
                    results[k, j] = stream.completion.tokens
                else:
                    results[k, j] = greedy(model, prompt)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(results) == 24
    # interleaved evaluation would corrupt the KV cache and change greedy outputs
    for (k, j), tokens in results.items():
        assert tokens == expected[PROMPTS[(k + j) % len(PROMPTS)]]


def test_an_open_stream_makes_other_threads_wait(model):
    stream = model.generate("the the", stream=True, max_tokens=50, ignore_eos=True, temperature=0)
    next(stream)
    done = threading.Event()
    other = threading.Thread(target=lambda: (greedy(model, "a b"), done.set()))
    other.start()
    time.sleep(0.3)
    assert not done.is_set()  # waiting for the model, not interleaving with the stream
    stream.close()
    other.join(60)
    assert done.is_set()


@pytest.mark.parametrize("pieces_read", [0, 2])
def test_an_abandoned_stream_frees_the_model(tiny_gguf, pieces_read):
    # A model of its own: if the lock leaked, only this test would hang (and fail at the join timeout).
    _, path = tiny_gguf(qtype="q8_0", loops=3)
    with load(path, n_ctx=128, n_threads=1) as own:
        def abandon() -> None:
            stream = own.generate("the", stream=True, max_tokens=20, ignore_eos=True)
            for _ in range(pieces_read):
                next(stream)
            # dropped here, neither exhausted nor closed

        t = threading.Thread(target=abandon)
        t.start()
        t.join()
        done = threading.Event()
        other = threading.Thread(target=lambda: (greedy(own, "a"), done.set()), daemon=True)
        other.start()
        other.join(60)
        assert done.is_set()


def test_a_threads_own_second_call_ends_its_open_stream(model):
    first = model.generate("the the", stream=True, max_tokens=50, ignore_eos=True)
    next(first)
    assert len(greedy(model, "a b")) == 12  # no deadlock on its own stream
    assert first.finished and first.completion.stats.finish_reason == "interrupted"


def test_prompt_longer_than_the_context(model):
    with pytest.raises(OuroRuntimeError, match=r"the prompt is \d+ tokens but the context holds 128"):
        model.generate("the " * 200)
    # the model is still usable afterwards
    assert len(greedy(model, "the")) == 12


def test_prompt_longer_than_the_context_in_the_cli(tiny_gguf):
    _, path = tiny_gguf(qtype="q8_0", loops=3)
    result = CliRunner().invoke(app, ["generate", str(path), "the " * 300, "--ctx", "64", "-t", "1"])
    assert result.exit_code == 1
    assert "context holds" in result.output and "Traceback" not in result.output
