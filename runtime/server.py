"""A thin OpenAI-compatible HTTP server over one OuroModel (standard library only).

    GET  /v1/models
    POST /v1/chat/completions   {"messages": [...], "stream": bool, "max_tokens", "temperature", ...}
    POST /v1/completions        {"prompt": "...", ...}

Ouro's knobs travel as extra request fields: "loops" (int), "exit_threshold" (0..1) and "exit_mode"
("select" or "skip"); without them the server's defaults apply (the ones `ouro serve` was started with). Thinking models take the vLLM-style
"chat_template_kwargs": {"enable_thinking": false}. Extensions to OpenAI's sampling fields: top_k, min_p,
repeat_penalty, ignore_eos (fixed-length answers for benchmarks).

One model, one KV cache: requests run one at a time. Connections are served by threads, which queue on
the model's own lock (runtime.locking) for the whole generation, streamed or not: each request's settings
are applied and its generation started in one call, so concurrent clients are answered in turn and never
interleave inside llama.cpp. A client that disconnects mid-stream ends its generation.
The server binds 127.0.0.1 unless told otherwise: it has no authentication.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runtime import Completion, OuroModel, Settings, TextStream
from runtime.errors import OuroRuntimeError

DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 4 * 1024 * 1024
CLIENT_TIMEOUT_S = 120
# OpenAI sampling field -> OuroModel keyword (extensions included); anything else in a request is ignored,
# as OpenAI-compatible servers do, except the fields refused in _sampling.
_SAMPLING_FIELDS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                    "repeat_penalty": "repeat_penalty", "seed": "seed", "max_tokens": "max_tokens",
                    "max_completion_tokens": "max_tokens"}


class RequestError(Exception):
    """A request the server refuses with 400 and this message."""


class OuroServer:
    """Serves `model` on (host, port); `serve_forever()` blocks, `shutdown()` stops it from another thread."""

    def __init__(self, model: OuroModel, model_id: str, host: str = DEFAULT_HOST, port: int = 8080,
                 log: Callable[[str], None] | None = None) -> None:
        self.model = model
        self.model_id = model_id
        self.default_loops = model.loops
        self.default_threshold = model.exit_threshold
        self.default_exit_mode = model.exit_mode
        self.log = log or (lambda _msg: None)
        self.created = int(time.time())
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.ouro = self  # type: ignore[attr-defined]  (how handlers find the server)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- request handling (called with the body already parsed) -------------------------------------

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_id, "object": "model", "created": self.created,
                                            "owned_by": "ouro-gguf"}]}

    def requested(self, body: dict) -> tuple[int, float, str]:
        """The loops, exit threshold and exit mode the request runs with (its own, or the defaults)."""
        loops = _optional(body, "loops", int)
        threshold = _optional(body, "exit_threshold", float)
        mode = body.get("exit_mode")
        if mode is not None and not isinstance(mode, str):
            raise RequestError(f"exit_mode must be a string, got {mode!r}")
        return (self.default_loops if loops is None else loops,
                self.default_threshold if threshold is None else threshold,
                self.default_exit_mode if mode is None else mode)

    def settings(self, body: dict) -> Settings:
        """The model's settings changed to what the request asks for."""
        loops, threshold, mode = self.requested(body)
        # Only what differs from the model's effective values changes: naming the file's own loop count
        # must not count as a new one (that would start the KV cache over).
        changes: dict[str, Any] = {}
        if loops != self.model.loops:
            changes["loops"] = loops
        if threshold != self.model.exit_threshold:
            changes["exit_threshold"] = threshold
        if mode != self.model.exit_mode:
            changes["exit_mode"] = mode
        return self.model.settings.replace(**changes)

    def start(self, kind: str, body: dict) -> Completion | TextStream:
        """Run a chat or text completion on the model with the request's settings."""
        stream = bool(body.get("stream", False))
        sampling = _sampling(body)
        settings = self.settings(body)
        if kind == "chat":
            messages = _messages(body)
            kwargs = body.get("chat_template_kwargs") or {}
            if not isinstance(kwargs, dict):
                raise RequestError("chat_template_kwargs must be an object")
            thinking = kwargs.get("enable_thinking")
            return self.model.chat(messages, stream=stream, enable_thinking=thinking, settings=settings, **sampling)
        return self.model.generate(_prompt(body), stream=stream, settings=settings, **sampling)

    def ouro_fields(self, completion: Completion, body: dict) -> dict:
        s = completion.stats
        loops, threshold, mode = self.requested(body)
        return {"loops": loops, "exit_threshold": threshold, "exit_mode": mode, "mean_loops": s.mean_loops,
                "prefill_tokens_per_s": s.prefill_tps, "decode_tokens_per_s": s.decode_tps}


def _optional(body: dict, key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise RequestError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


def _sampling(body: dict) -> dict[str, Any]:
    if body.get("n", 1) != 1:
        raise RequestError("n must be 1 (one choice per request)")
    if body.get("stop"):
        raise RequestError("stop sequences are not supported; generation ends at the model's end of turn or max_tokens")
    out = {}
    for field, name in _SAMPLING_FIELDS.items():
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"{field} must be a number, got {value!r}")
        out[name] = value
    ignore_eos = body.get("ignore_eos")
    if ignore_eos is not None:
        if not isinstance(ignore_eos, bool):
            raise RequestError(f"ignore_eos must be true or false, got {ignore_eos!r}")
        out["ignore_eos"] = ignore_eos
    return out


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list")
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError("each message needs a role and a content")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: only text is supported
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise RequestError("only text content parts are supported")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError("message content must be a string")
        out.append({"role": m["role"], "content": content})
    return out


def _prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("prompt must be a non-empty string")
    return prompt


class _Handler(BaseHTTPRequestHandler):
    server_version = "ouro-serve"
    protocol_version = "HTTP/1.1"
    # Socket timeout: an idle keep-alive connection is dropped, and a client that stops reading a stream
    # cannot hold the model for more than this long.
    timeout = CLIENT_TIMEOUT_S

    @property
    def ouro(self) -> OuroServer:
        return self.server.ouro  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        self.ouro.log(f"{self.address_string()} {format % args}")

    # -- routing ------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(HTTPStatus.OK, self.ouro.models())
        elif self.path.rstrip("/") in ("", "/health"):
            self._send_json(HTTPStatus.OK, {"status": "ok", "model": self.ouro.model_id})
        else:
            self._send_error(HTTPStatus.NOT_FOUND, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        kind = {"/v1/chat/completions": "chat", "/chat/completions": "chat",
                "/v1/completions": "text", "/completions": "text"}.get(self.path.rstrip("/"))
        if kind is None:
            self._send_error(HTTPStatus.NOT_FOUND, f"no route {self.path}")
            return
        try:
            body = self._read_json()
        except RequestError as e:
            self._send_error(HTTPStatus.BAD_REQUEST, str(e))
            return
        except OSError:  # the client went quiet or away before sending its whole body
            self.close_connection = True
            return
        try:
            result = self.ouro.start(kind, body)  # waits for the model: one generation at a time
        except (RequestError, OuroRuntimeError) as e:
            self._send_error(HTTPStatus.BAD_REQUEST, str(e))
            return
        if isinstance(result, TextStream):
            self._stream(kind, result, body)
            return
        try:
            self._send_json(HTTPStatus.OK, self._response(kind, result, body))
        except OSError:
            self.ouro.log(f"{self.address_string()} disconnected before the answer was sent")

    # -- bodies -------------------------------------------------------------------------------------

    def _read_json(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError("a JSON body with a Content-Length is required") from None
        if not 0 < length <= MAX_BODY_BYTES:
            raise RequestError(f"the body must be 1..{MAX_BODY_BYTES} bytes, got {length}")
        try:
            body = json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RequestError("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        return body

    def _response(self, kind: str, c: Completion, body: dict) -> dict:
        usage = {"prompt_tokens": c.stats.prompt_tokens, "completion_tokens": c.stats.generated_tokens,
                 "total_tokens": c.stats.prompt_tokens + c.stats.generated_tokens}
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": c.text},
                      "finish_reason": _finish(c)}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": c.text, "logprobs": None, "finish_reason": _finish(c)}
            obj = "text_completion"
        return {"id": _id(kind), "object": obj, "created": int(time.time()), "model": self.ouro.model_id,
                "choices": [choice], "usage": usage, "ouro": self.ouro.ouro_fields(c, body)}

    def _stream(self, kind: str, stream: TextStream, body: dict) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the end of the body is the end of the connection
        self.end_headers()
        self.close_connection = True
        rid, created = _id(kind), int(time.time())

        def chunk(delta: str | None, finish: str | None, first: bool = False) -> dict:
            if kind == "chat":
                d: dict[str, str] = {"role": "assistant"} if first else {}
                if delta:
                    d["content"] = delta
                choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": finish}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
                obj = "text_completion"
            return {"id": rid, "object": obj, "created": created, "model": self.ouro.model_id, "choices": [choice]}

        try:
            if kind == "chat":
                self._event(chunk(None, None, first=True))
            for piece in stream:
                self._event(chunk(piece, None))
            assert stream.completion is not None
            final = chunk(None, _finish(stream.completion))
            final["usage"] = self._response(kind, stream.completion, body)["usage"]
            final["ouro"] = self.ouro.ouro_fields(stream.completion, body)
            self._event(final)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:  # hung up, reset, or stopped reading (socket timeout)
            self.ouro.log(f"{self.address_string()} disconnected: generation stopped")
        finally:
            stream.close()  # ends the generation if the client went away

    def _event(self, payload: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")
        self.wfile.flush()

    def _send_json(self, status: HTTPStatus, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        # The request body may be unread: this connection cannot carry another request.
        self.close_connection = True
        kind = "invalid_request_error" if status == HTTPStatus.BAD_REQUEST else "not_found_error"
        self._send_json(status, {"error": {"message": message, "type": kind, "code": int(status)}})


def _finish(c: Completion) -> str:
    return "length" if c.stats.finish_reason == "length" else "stop"


def _id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
