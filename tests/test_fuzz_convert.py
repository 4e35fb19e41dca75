"""Fuzz the converter: >= 1,000 mutated config.json files and safetensors headers (issue 9).

Each case is a checkpoint directory whose config.json or model.safetensors is mutated (the other files
are symlinks to a good tiny checkpoint) and goes through convert.convert.convert_checkpoint in this
process. Allowed outcomes: ConvertError (with a message) and nothing written, or a complete GGUF that
runtime.validate accepts. Anything else escaping the converter counts as a failure, as does any file left
in the output directory after an error. The seed is fixed.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import resource
import signal
import struct
from collections import Counter
from pathlib import Path

from rich.console import Console

from convert.convert import convert_checkpoint
from convert.errors import ConvertError
from runtime.validate import GGUFValidationError, validate_gguf

SEED = 1125
N_CONFIG_VALUES = 330
N_CONFIG_TEXT = 150
N_HEADER_FIELDS = 400
N_HEADER_TEXT = 110
N_HEADER_LENGTH = 30
N_TRUNCATE = 30
# Safety nets, so that a converter bug fails this test instead of taking the machine down: extra address
# space the process may map during one case, and seconds one case may take.
CASE_EXTRA_ADDRESS_SPACE = 3 << 30
CASE_SECONDS = 30

WEIRD_VALUES = [None, 0, -1, 1, 2, 3, 17, 2**31, 2**63, 10**30, 1e308, float("inf"), float("nan"), 0.5, -0.0,
                "", "ouro", "64", True, False, [], [1], {}, {"a": 1}, [None] * 3]


def _weird(rng: random.Random, old):
    if isinstance(old, int) and not isinstance(old, bool) and rng.random() < 0.4:
        return rng.choice([old + 1, old - 1, old * 2, old // 2, -old, old * 1000])
    return rng.choice(WEIRD_VALUES)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def config_cases(config: dict, rng: random.Random) -> list[bytes]:
    keys = list(config)
    out = []
    for _ in range(N_CONFIG_VALUES):
        c = dict(config)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            key = rng.choice(keys + ["model_type", "total_ut_steps", "hidden_size", "num_hidden_layers"])
            if rng.random() < 0.2:
                c.pop(key, None)
            else:
                c[key] = _weird(rng, c.get(key))
        out.append(json.dumps(c).encode())
    text = json.dumps(config).encode()
    for i in range(N_CONFIG_TEXT):
        kind = i % 6
        if kind == 0:
            out.append(text[: rng.randrange(len(text))])
        elif kind == 1:
            b = bytearray(text)
            b[rng.randrange(len(b))] = rng.getrandbits(8)
            out.append(bytes(b))
        elif kind == 2:
            out.append(rng.choice([b"", b"null", b"[]", b"42", b'"ouro"', b"\xff\xfe{}", b"{" * 3]))
        elif kind == 3:
            out.append(_deep(rng.choice([1000, 100_000])).encode())
        elif kind == 4:
            value = rng.choice([_deep(10), _deep(5000), "1e999", "-1e999", "NaN", "64.0", "6.4e1"]).encode()
            out.append(text.replace(b'"hidden_size": 64', b'"hidden_size": ' + value))
        else:
            out.append(text.replace(b"}", b', "x": ' + b"9" * rng.choice([10, 5000]) + b"}", 1))
    return out


def _pack(header_text: bytes, data: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header_text) if length is None else length) + header_text + data


def safetensors_cases(raw: bytes, rng: random.Random) -> list[bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    out = []
    for _ in range(N_HEADER_FIELDS):
        h = json.loads(json.dumps(header))
        name = rng.choice(names)
        entry = h[name]
        what = rng.choice(["dtype", "shape", "offsets", "offsets", "rename", "drop", "add", "metadata", "overlap"])
        if what == "dtype":
            entry["dtype"] = rng.choice(["F32", "F16", "BF16", "I8", "U8", "F64", "I64", "BOOL", "F8_E4M3", "bf16", "", None, 7])
        elif what == "shape":
            s = list(entry["shape"])
            choice = rng.randrange(7)
            if choice == 0 and s:
                s[rng.randrange(len(s))] *= 2
            elif choice == 1:
                s.append(rng.choice([1, 2, 0]))
            elif choice == 2 and s:
                s.pop()
            elif choice == 3 and s:
                s[rng.randrange(len(s))] = rng.choice([-1, 0, 2**40, 2**64, 1.5, "8", None])
            elif choice == 4:
                s = [2**31, 2**31]
            elif choice == 5:
                s = rng.choice([None, "64", {}, 5])
            else:
                s = list(reversed(s))
            entry["shape"] = s
        elif what == "offsets":
            b, e = entry["data_offsets"]
            entry["data_offsets"] = rng.choice([[e, b], [b, e + 2], [b + 2, e], [b, len(data) + 1], [b, 2**64],
                                                [-2, e], [b, e, e], [b], None, [float(b), float(e)], [str(b), e],
                                                [b + 1, e + 1], [0, e - b]])
        elif what == "rename":
            h[name + rng.choice(["x", ".weight", ""]) if rng.random() < 0.5 else "model.layers.99.mlp.up_proj.weight"] = h.pop(name)
        elif what == "drop":
            del h[name]
        elif what == "add":
            h["extra.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
        elif what == "metadata":
            h["__metadata__"] = rng.choice([{"format": "pt"}, {"a": 1}, [], "x", None, {"format": {"x": 1}}])
        else:  # another tensor's bytes, same size when possible
            other = h[rng.choice(names)]
            entry["data_offsets"] = list(other["data_offsets"])
        out.append(_pack(json.dumps(h).encode(), data))
    text = json.dumps(header).encode()
    for i in range(N_HEADER_TEXT):
        kind = i % 4
        if kind == 0:
            cut = text[: rng.randrange(len(text))]
            out.append(_pack(cut, data))
        elif kind == 1:
            b = bytearray(text)
            for _ in range(rng.choice([1, 3])):
                b[rng.randrange(len(b))] = rng.getrandbits(8)
            out.append(_pack(bytes(b), data))
        elif kind == 2:
            out.append(_pack(rng.choice([b"", b"[]", b"null", b"{}", b"1", _deep(100_000).encode()]), data))
        else:
            out.append(_pack(text.replace(b"}", b', "__pad__": ' + b"7" * 5000 + b"}", 1), data))
    for _ in range(N_HEADER_LENGTH):
        length = rng.choice([0, 1, 7, n - 1, n + 1, n + len(data), 2**63, 2**64 - 1, 200 * 2**20])
        out.append(_pack(text, data, length))
    for _ in range(N_TRUNCATE):
        out.append(raw[: rng.randrange(len(raw))])
    return out


def _case_dir(root: Path, base: Path, i: int, config: bytes | None, weights: bytes | None) -> Path:
    d = root / f"case{i:05d}"
    d.mkdir()
    for f in base.iterdir():
        if f.name == "config.json" and config is not None:
            (d / f.name).write_bytes(config)
        elif f.name == "model.safetensors" and weights is not None:
            (d / f.name).write_bytes(weights)
        else:
            (d / f.name).symlink_to(f)
    return d


def test_fuzz_converter(tiny_gguf, tmp_path):
    ckpt, _ = tiny_gguf(qtype="f16")
    rng = random.Random(SEED)
    config = json.loads((ckpt / "config.json").read_text())
    cases = [(c, None) for c in config_cases(config, rng)]
    cases += [(None, w) for w in safetensors_cases((ckpt / "model.safetensors").read_bytes(), rng)]
    assert len(cases) >= 1000

    out_dir, case_root = tmp_path / "out", tmp_path / "cases"
    out_dir.mkdir()
    case_root.mkdir()
    outcomes: Counter = Counter()
    failures: list[str] = []
    quiet = Console(file=io.StringIO())
    for i, (cfg, weights) in enumerate(cases):
        src = _case_dir(case_root, ckpt, i, cfg, weights)
        out = out_dir / f"case{i}.gguf"
        try:
            with _bounded():
                convert_checkpoint(src, out, "f16", console=quiet)
        except ConvertError as e:
            outcomes["ConvertError"] += 1
            if not str(e):
                failures.append(f"case {i}: ConvertError without a message")
        except BaseException as e:  # noqa: BLE001 - anything else is the bug this test looks for
            outcomes["uncaught"] += 1
            failures.append(f"case {i}: uncaught {type(e).__name__}: {str(e)[:200]}")
        else:
            outcomes["converted"] += 1
            try:
                validate_gguf(out)
            except GGUFValidationError as e:
                outcomes["converted-invalid"] += 1
                failures.append(f"case {i}: converted, but the output is invalid: {e}")
            out.unlink()
        left = list(out_dir.iterdir())
        if left:
            outcomes["partial"] += 1
            failures.append(f"case {i}: files left behind: {[p.name for p in left]}")
            for p in left:
                p.unlink()
        _rmtree(src)
    print(f"\nconverter fuzz: {len(cases)} cases, {dict(outcomes)}")
    print("\n".join(failures))
    assert failures == []
    assert outcomes["ConvertError"] > len(cases) // 2
    assert outcomes["converted"] > 20  # harmless mutations (unknown keys, metadata) still convert


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def _bounded():
    """Limit the address space and the time of one case (MemoryError / CaseTimeout instead of OOM / hang)."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    old_limit = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + CASE_EXTRA_ADDRESS_SPACE, old_limit[1]))

    def timeout(*_):
        raise CaseTimeout(f"case took more than {CASE_SECONDS} s")

    old_handler = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(CASE_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, old_limit)


def _rmtree(d: Path) -> None:
    for f in d.iterdir():
        f.unlink()
    d.rmdir()

