"""`ouro serve` / runtime.server: OpenAI-compatible routes, per-request loops, errors, a loopback load test."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from benchmarks.load_test import run_load, stream_chat  # noqa: E402
from runtime import load  # noqa: E402
from runtime.server import OuroServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tiny_gguf):
    _, path = tiny_gguf(qtype="q8_0", loops=3)
    model = load(path, n_ctx=256, n_threads=1)
    srv = OuroServer(model, "tiny", port=0)  # default host: loopback
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    model.close()


def request(srv: OuroServer, method: str, path: str, body: object = None, raw: bytes | None = None):
    conn = http.client.HTTPConnection(*srv.address, timeout=60)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, data, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, payload


def test_binds_loopback_by_default(server):
    assert server.address[0] == "127.0.0.1"


def test_models(server):
    status, payload = request(server, "GET", "/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(payload)["data"]] == ["tiny"]


def test_chat_completion(server):
    status, payload = request(server, "POST", "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0})
    assert status == 200, payload
    d = json.loads(payload)
    assert d["object"] == "chat.completion" and d["choices"][0]["message"]["role"] == "assistant"
    assert d["choices"][0]["finish_reason"] in ("stop", "length")
    assert 1 <= d["usage"]["completion_tokens"] <= 5 and d["usage"]["prompt_tokens"] > 0
    assert d["ouro"]["loops"] == 3


def test_text_completion_with_ouro_fields(server):
    status, payload = request(server, "POST", "/v1/completions",
                              {"prompt": "the the", "max_tokens": 3, "loops": 1, "exit_threshold": 0.5})
    assert status == 200, payload
    d = json.loads(payload)
    assert d["object"] == "text_completion" and isinstance(d["choices"][0]["text"], str)
    assert (d["ouro"]["loops"], d["ouro"]["exit_threshold"]) == (1, 0.5)
    # the next request without the fields is back on the server's defaults
    d = json.loads(request(server, "POST", "/v1/completions", {"prompt": "the", "max_tokens": 2})[1])
    assert (d["ouro"]["loops"], d["ouro"]["exit_threshold"], d["ouro"]["exit_mode"]) == (3, 1.0, "select")


def test_skip_mode_per_request(server):
    body = {"prompt": "the the", "max_tokens": 8, "ignore_eos": True, "exit_mode": "skip", "exit_threshold": 0.5}
    status, payload = request(server, "POST", "/v1/completions", body)
    assert status == 200, payload
    d = json.loads(payload)
    assert (d["ouro"]["exit_mode"], d["ouro"]["exit_threshold"]) == ("skip", 0.5)
    assert 1 <= d["ouro"]["mean_loops"] <= 3


def test_streaming_chat(server):
    outcome = stream_chat(*server.address, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6,
                                            "loops": 2}, timeout=60)
    assert outcome.ok, outcome.error
    assert outcome.loops == 2 and 1 <= outcome.completion_tokens <= 6


@pytest.mark.parametrize("body,raw,message", [
    (None, b"{not json", "not valid JSON"),
    (None, b"[1, 2]", "JSON object"),
    ({"messages": []}, None, "non-empty list"),
    ({"messages": [{"role": "user", "content": 5}]}, None, "content must be a string"),
    ({"messages": [{"role": "user", "content": "x"}], "loops": 99}, None, "1..16"),
    ({"messages": [{"role": "user", "content": "x"}], "loops": "2"}, None, "loops must be an integer"),
    ({"messages": [{"role": "user", "content": "x"}], "exit_threshold": 2}, None, "[0, 1]"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["\n"]}, None, "stop sequences"),
    ({"messages": [{"role": "user", "content": "x"}], "exit_mode": "fast"}, None, "exit mode must be one of"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, None, "temperature must be a number"),
    ({"messages": [{"role": "user", "content": "the " * 400}]}, None, "context holds 256"),
])
def test_bad_requests_are_400_with_a_message(server, body, raw, message):
    status, payload = request(server, "POST", "/v1/chat/completions", body, raw)
    assert status == 400
    assert message in json.loads(payload)["error"]["message"]


def test_unknown_route(server):
    assert request(server, "GET", "/v2/nothing")[0] == 404
    assert request(server, "POST", "/v1/embeddings", {"input": "x"})[0] == 404


def test_client_disconnect_mid_stream_frees_the_model(server):
    with socket.create_connection(server.address, timeout=30) as s:
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "stream": True,
                           "ignore_eos": True}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        received = b""
        while b"data: " not in received:  # the stream has started: now hang up
            chunk = s.recv(4096)
            assert chunk, "the server closed the stream before sending data"
            received += chunk
    outcome = stream_chat(*server.address, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
                          timeout=60)
    assert outcome.ok, outcome.error


def test_concurrent_streaming_clients(server):
    """4 clients x 20 requests, some with their own loop count: all answered, none lost, loops honoured."""
    report, outcomes = run_load(*server.address, clients=4, requests=80, max_tokens=8, timeout=120,
                                body_for=lambda i: {"loops": 1} if i % 7 == 0 else {})
    assert (report.completed, report.errors, report.lost) == (80, 0, 0), report.error_samples
    assert all(o.loops == (1 if i % 7 == 0 else 3) for i, o in enumerate(outcomes))


def test_ouro_serve_command_streams_on_loopback(tiny_gguf):
    _, path = tiny_gguf(qtype="q8_0", loops=3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ouro_cli.main import app; app()", "serve", str(path), "--port", "0",
         "--ctx", "128", "-t", "1"],
        stderr=subprocess.PIPE, text=True, env={**env, "COLUMNS": "300"})
    try:
        assert proc.stderr is not None
        address = None
        for line in proc.stderr:
            m = re.search(r"http://(127\.0\.0\.1):(\d+)/v1", line)
            if m:
                address = (m.group(1), int(m.group(2)))
                break
        assert address is not None, "the server never announced its address"
        outcome = stream_chat(*address, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                              timeout=60)
        assert outcome.ok, outcome.error
        assert outcome.completion_tokens >= 1 and outcome.loops == 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0
