"""Loopback load test of `ouro serve`: concurrent streaming clients, every response checked (issue 9).

    python -m benchmarks.load_test MODEL [--clients 8] [--requests 200] [--max-tokens 16] [--json]

Starts runtime.server.OuroServer on 127.0.0.1 (any free port) in this process, then `clients` threads
send `requests` streaming chat completions in total over plain HTTP. A response counts as complete only
if its SSE stream has the role chunk, content, a final chunk with finish_reason and usage, and `[DONE]`,
with one id throughout; anything else is an error or a lost response. Reported: wall time, requests/s,
generated tokens/s over all clients, latency and time-to-first-token percentiles. The whole run is
bounded by --timeout. tests/test_serve.py runs a smaller version of the same.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROMPTS = ["Hello!", "What is 2+2?", "Tell me a story about a loop.", "Name three colours.", "Why is the sky blue?"]


@dataclass
class Outcome:
    ok: bool
    latency: float = 0.0
    first_token: float | None = None
    completion_tokens: int = 0
    loops: int | None = None
    error: str = ""


@dataclass
class LoadReport:
    clients: int
    requests: int
    completed: int
    errors: int
    lost: int  # requests that never produced an outcome (a client thread died or the run timed out)
    wall_seconds: float
    requests_per_s: float
    tokens_per_s: float
    latency_p50: float
    latency_p95: float
    latency_max: float
    ttft_p50: float
    ttft_p95: float
    error_samples: list[str] = field(default_factory=list)


def stream_chat(host: str, port: int, body: dict, timeout: float) -> Outcome:
    """One streaming chat completion, checked end to end."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return Outcome(False, error=f"HTTP {resp.status}: {resp.read()[:200]!r}")
        ids, first_token, final, done = set(), None, None, False
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\n")
            if not line:
                continue
            if not line.startswith("data: "):
                return Outcome(False, error=f"not an SSE data line: {line[:80]!r}")
            if line == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(line[len("data: "):])
            ids.add(chunk["id"])
            choice = chunk["choices"][0]
            if choice["delta"].get("content"):
                first_token = first_token or time.perf_counter() - start
            if choice["finish_reason"] is not None:
                final = chunk
        latency = time.perf_counter() - start
        problems = [what for what, bad in (("no [DONE]", not done), ("no final chunk", final is None),
                                           (f"{len(ids)} ids", len(ids) != 1)) if bad]
        if problems:
            return Outcome(False, latency, error=", ".join(problems))
        return Outcome(True, latency, first_token, final["usage"]["completion_tokens"], final["ouro"]["loops"])
    except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
        return Outcome(False, time.perf_counter() - start, error=f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def run_load(host: str, port: int, *, clients: int, requests: int, max_tokens: int, timeout: float,
             body_for: Callable[[int], dict] = lambda i: {}) -> tuple[LoadReport, list[Outcome | None]]:
    """`requests` streaming chats from `clients` threads; body_for(i): request i's extra fields."""
    outcomes: list[Outcome | None] = [None] * requests
    next_index, index_lock = iter(range(requests)), threading.Lock()
    deadline = time.monotonic() + timeout

    def client() -> None:
        while time.monotonic() < deadline:
            with index_lock:
                i = next(next_index, None)
            if i is None:
                return
            body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": max_tokens, "temperature": 0.7, "seed": i, **body_for(i)}
            outcomes[i] = stream_chat(host, port, body, timeout=max(1.0, deadline - time.monotonic()))

    start = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    wall = time.perf_counter() - start
    done = [o for o in outcomes if o is not None]
    good = [o for o in done if o.ok]
    latencies = sorted(o.latency for o in good) or [0.0]
    ttfts = sorted(o.first_token for o in good if o.first_token is not None) or [0.0]

    def p95(values: list[float]) -> float:
        return values[min(len(values) - 1, int(0.95 * len(values)))]

    return LoadReport(
        clients=clients, requests=requests, completed=len(good), errors=len(done) - len(good),
        lost=requests - len(done), wall_seconds=wall, requests_per_s=len(good) / wall,
        tokens_per_s=sum(o.completion_tokens for o in good) / wall,
        latency_p50=statistics.median(latencies), latency_p95=p95(latencies), latency_max=latencies[-1],
        ttft_p50=statistics.median(ttfts), ttft_p95=p95(ttfts), error_samples=[o.error for o in done if not o.ok][:5],
    ), outcomes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run, seconds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from runtime import load
    from runtime.server import OuroServer

    model = load(args.model, n_ctx=args.ctx, n_threads=args.threads)
    server = OuroServer(model, args.model.stem, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r, _ = run_load(*server.address, clients=args.clients, requests=args.requests, max_tokens=args.max_tokens,
                        timeout=args.timeout)
    finally:
        server.shutdown()
        model.close()
    if args.json:
        print(json.dumps(asdict(r), indent=2))
        return
    print(f"{r.clients} streaming clients, {r.requests} requests, {args.max_tokens} max tokens each, "
          f"model {args.model.name}")
    print(f"completed {r.completed}, errors {r.errors}, lost {r.lost} in {r.wall_seconds:.1f} s: "
          f"{r.requests_per_s:.1f} req/s, {r.tokens_per_s:.0f} generated tok/s")
    print(f"latency p50 {r.latency_p50 * 1000:.0f} ms, p95 {r.latency_p95 * 1000:.0f} ms, max "
          f"{r.latency_max * 1000:.0f} ms; first token p50 {r.ttft_p50 * 1000:.0f} ms, p95 {r.ttft_p95 * 1000:.0f} ms")
    for e in r.error_samples:
        print(f"  error: {e}")


if __name__ == "__main__":
    main()
