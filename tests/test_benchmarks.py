"""The benchmark suite's parts on a tiny model: structure and consistency only, never wall-clock values."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from gguf import GGUFReader

from benchmarks.bandwidth import copy_bandwidth
from benchmarks.markdown import replace_section
from benchmarks.measure import Sizes
from benchmarks.report import MARKERS, render, write_report
from benchmarks.gguf_speed import FileSpeed
from benchmarks.results import Results, record
from benchmarks.roofline import kv_bytes_read, weight_bytes

ROUNDS = 2
BEGIN, END = MARKERS.begin, MARKERS.end


def test_copy_bandwidth_runs_and_median():
    b = copy_bandwidth(1 << 20, runs=3, threads=2)
    assert b.threads == 2 and b.array_bytes == 1 << 20 and len(b.runs_gbps) == 3
    assert min(b.runs_gbps) <= b.gbps <= max(b.runs_gbps) and b.gbps > 0
    with pytest.raises(ValueError):
        copy_bandwidth(1 << 20, runs=0)


def test_weight_bytes_match_the_tensor_table(tiny_gguf):
    _, path = tiny_gguf(qtype="q8_0")
    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(path).tensors}
    w = weight_bytes(path)
    assert w.block == sum(n for name, n in tensors.items() if name.startswith("blk."))
    assert w.head == tensors["output.weight"] + tensors["output_norm.weight"]
    assert w.embedding_row * 512 == tensors["token_embd.weight"]  # the tiny preset's vocabulary
    assert w.block + w.head + w.embedding_row * 512 == sum(tensors.values())
    assert w.per_token(4) == 4 * w.block + w.head + w.embedding_row
    # each loop reads its own K/V of every cached token
    assert kv_bytes_read(4096, file_loops=4, loops=2, context=100) == 2 * 1024 * 100


def test_tensor_layout_tells_files_apart_by_tensors_not_metadata(tiny_gguf, tmp_path):
    import io
    import shutil

    from rich.console import Console

    from convert.convert import convert_checkpoint

    ckpt, path = tiny_gguf(qtype="q8_0")
    other_template = tmp_path / "ckpt"
    shutil.copytree(ckpt, other_template)
    config = json.loads((other_template / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (other_template / "tokenizer_config.json").write_text(json.dumps(config))
    twin = convert_checkpoint(other_template, tmp_path / "twin.gguf", "q8_0", console=Console(file=io.StringIO()))
    assert twin.read_bytes() != path.read_bytes()  # the metadata differs ...
    assert weight_bytes(twin).layout == weight_bytes(path).layout  # ... the tensors do not
    assert weight_bytes(tiny_gguf(qtype="f16")[1]).layout != weight_bytes(path).layout


def test_results_resume_and_record_the_command(tmp_path):
    calls = []
    path = tmp_path / "results.json"
    results = Results(path, fresh=False, settings={"rounds": 3})
    results.stage("a", lambda: calls.append(1) or {"x": 1}, "python -m something")
    again = Results(path, fresh=False, settings={"rounds": 3})  # a new run with the same sizes resumes
    assert again.stage("a", lambda: calls.append(2) or {"x": 2}, "python -m something")["x"] == 1
    assert calls == [1]
    saved_data = json.loads(path.read_text())
    saved = saved_data["a"]
    assert saved["_meta"]["command"] == "python -m something" and len(saved["_meta"]["load_before"]) == 3
    assert "a" not in Results(path, fresh=False, settings={"rounds": 2}).data  # other sizes: start over
    assert "a" not in Results(path, fresh=True, settings={"rounds": 3}).data
    path.write_text(json.dumps({**saved_data, "format": 1}))  # written by an older suite: not read
    assert "a" not in Results(path, fresh=False, settings={"rounds": 3}).data


def test_a_new_runtime_re_measures_speeds_and_keeps_conversions(tmp_path):
    path = tmp_path / "results.json"
    old = Results(path, fresh=False, settings={}, runtime="key-a")
    for key in ("1.4b/q8_0/speed", "1.4b/q8_0/convert"):
        old.stage(key, lambda: {"by": "a"}, "cmd")
    new = Results(path, fresh=False, settings={}, runtime="key-b")
    assert not new.done("1.4b/q8_0/speed") and new.done("1.4b/q8_0/convert")
    assert new.stage("1.4b/q8_0/speed", lambda: {"by": "b"}, "cmd")["by"] == "b"
    assert new.stage("1.4b/q8_0/convert", lambda: {"by": "b"}, "cmd")["by"] == "a"
    assert json.loads(path.read_text())["1.4b/q8_0/speed"]["_meta"]["runtime"] == "key-b"


def test_a_resumed_run_adds_its_command(tmp_path):
    results = Results(tmp_path / "results.json", fresh=False, settings={"threads": 2})
    results.invoked("python -m benchmarks --quick")
    results.invoked("python -m benchmarks --quick")  # the same command again: one entry
    again = Results(tmp_path / "results.json", fresh=False, settings={"threads": 2})
    again.invoked("python -m benchmarks --rounds 1")
    assert [r["command"] for r in again.data["invocations"]] == ["python -m benchmarks --quick",
                                                                 "python -m benchmarks --rounds 1"]


def test_replace_section_keeps_other_sections():
    doc = "# Benchmarks\n\n## Reliability\n\nkept text\n"
    once = replace_section(doc, "first", MARKERS)
    assert once.startswith(doc.rstrip()) and once.count(BEGIN) == once.count(END) == 1
    twice = replace_section(once + "\n## Later section\n\nalso kept\n", "second", MARKERS)
    assert "first" not in twice and "second" in twice
    assert "kept text" in twice and "also kept" in twice and twice.count(BEGIN) == 1
    assert replace_section("", "body", MARKERS).startswith("# Benchmarks")


# ---- the measuring parts, on a tiny GGUF through the patched runtime ---------------------------------

@pytest.fixture(scope="module")
def measured(tiny_gguf, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from runtime import control

    try:
        control._lib()
    except control.ControlError as e:
        pytest.skip(str(e))
    from benchmarks.exit_speed import measure_exit, measure_long_context
    from benchmarks.gguf_speed import measure_file
    from benchmarks.prompt_tuning import tune_prompt
    from benchmarks.reference_speed import reference_speed

    ckpt, path = tiny_gguf(qtype="q8_0")
    _, q4 = tiny_gguf(qtype="q4_0")
    return {
        "tuning": tune_prompt({"q8_0": path, "q4_0": q4}, Sizes(prompt_tokens=8, rounds=ROUNDS, threads=1)),
        "path": path,
        "speed": measure_file(path, Sizes(8, 4, ROUNDS, 1), chat_tokens=5),
        "no_sweep": measure_file(path, Sizes(rounds=ROUNDS, threads=1), chat_tokens=5, sweep=False),
        "exit": measure_exit(path, Sizes(8, 4, ROUNDS, 1)),
        "long": measure_long_context(path, Sizes(gen_tokens=3, rounds=ROUNDS, threads=1), context=600),  # > n_batch
        "reference": reference_speed(ckpt, Sizes(8, 3, ROUNDS, 1)),
    }


def test_file_measurement(measured):
    s = measured["speed"]
    assert [r.label for r in s.rows] == ["T=1", "T=2", "T=3", "T=4"]
    assert [r.loops for r in s.rows] == [1, 2, 3, 4]
    for r in s.rows:
        assert r.prompt_tokens == 8 and r.gen_tokens == 4
        assert len(r.prompt_tps_runs) == len(r.decode_tps_runs) == ROUNDS
        assert min(r.decode_tps_runs) <= r.decode_tps <= max(r.decode_tps_runs)
    assert s.kv_bytes_per_token_measured == s.kv_bytes_per_token  # the context's buffer vs the formula
    assert s.chat.generated_tokens == 5 and s.chat.prompt_tail.endswith("assistant\n")
    twin = measured["no_sweep"]  # a file whose tensors another file measured: no loop sweep, the rest as before
    assert twin.rows == [] and twin.chat.generated_tokens == 5
    assert twin.kv_bytes_per_token_measured == s.kv_bytes_per_token_measured
    assert record(FileSpeed, json.loads(json.dumps(asdict(s)))) == s  # what the suite saves reads back the same


def test_exit_measurement(measured):
    e = measured["exit"]
    rows = {r.label: r for r in e.rows}
    assert list(rows) == ["select", "skip k=1", "skip k=2", "skip k=3", "skip q=1.0"]
    for k in (1, 2, 3):  # the runtime reports the forced exit loop for every decoded token
        assert rows[f"skip k={k}"].loops == k and rows[f"skip k={k}"].mean_loops == k
    assert rows["select"].mean_loops == rows["skip q=1.0"].mean_loops == 4
    assert rows["skip k=1"].gen_tokens == 4
    assert e.kv_bytes_4096["share"] * 4 == e.kv_bytes_4096["full"]
    long = measured["long"]
    assert long.context == 600 and long.gen_tokens == 3 and set(long.decode_tps) == {"full", "share"}
    assert all(len(runs) == ROUNDS for runs in long.runs.values())


def test_prompt_tuning_configurations(measured):
    rows = measured["tuning"].rows
    assert [(r.file, r.n_ubatch, r.threads) for r in rows] == [
        ("q8_0", 512, 1), ("q4_0", 512, 1), ("q8_0", 32, 1), ("q8_0", 512, 2)]
    for r in rows:
        assert r.loops == 1 and r.prompt_tokens == 8 and len(r.prompt_tps_runs) == ROUNDS


def test_reference_measurement(measured):
    r = measured["reference"]
    assert r.dtype == "bfloat16" and r.threads == 1 and r.prompt_tokens == 8
    assert len(r.prompt_tps_runs) == len(r.decode_tps_runs) == ROUNDS and r.decode_tps > 0


def _meta(command: str) -> dict:
    return {"command": command, "load_before": [1.0, 1.0, 1.0], "load_after": [2.0, 2.0, 2.0], "seconds": 1.0,
            "finished": "2026-11-25 10:00 UTC"}


def test_report_from_measurements(measured, tmp_path):
    path = measured["path"]
    info = {"parameters": 123_456, "loops": 4, "_meta": _meta("ouro info")}
    data = {
        "machine": {"cpu": "test CPU", "cores": 2, "python": "3.11",
                    "bandwidth": [asdict(copy_bandwidth(1 << 20, runs=1))], "_meta": _meta("bandwidth")},
        "tiny/q8_0/convert": {"seconds": 1.0, "peak_rss": 1 << 30, "file_bytes": 1 << 20, "_meta": _meta("convert")},
        "tiny/q8_0/weights": {**asdict(weight_bytes(path)), "_meta": _meta("weights")},
        "tiny/q8_0/info": info,
        "tiny/q8_0/speed": {**asdict(measured["speed"]), "peak_rss": 1 << 29,
                            "_meta": _meta("python -m benchmarks.gguf_speed")},
        "tiny/q8_0/exit": {**asdict(measured["exit"]), "_meta": _meta("python -m benchmarks.exit_speed")},
        "tiny/q8_0/long_context": {**asdict(measured["long"]),
                                   "_meta": _meta("python -m benchmarks.exit_speed --long-context 600")},
        "tiny/prompt_tuning": {**asdict(measured["tuning"]), "_meta": _meta("python -m benchmarks.prompt_tuning")},
        "tiny/reference": {**asdict(measured["reference"]), "peak_rss": 1 << 29,
                           "_meta": _meta("python -m benchmarks.reference_speed")},
        "kernel_ceiling": {"cpu": {"name": "test CPU", "family": "23", "model": "1", "simd": ["avx2", "fma"]},
                           "threads": 2, "rounds": 1, "_meta": _meta("python -m benchmarks.kernel_ceiling"),
                           "kernels": [{"type": "q8_0", "label": "Q8_0", "used_by": "Q8_0 files", "buffer": "CPU",
                                        "streamed_gbps": [10.0], "cached_gbps": [11.0], "prompt_gops": [40.0]},
                                       {"type": "attn_f16", "label": "attention, F16 KV", "used_by": "every file",
                                        "buffer": "CPU", "streamed_gbps": [8.0], "cached_gbps": [8.0],
                                        "prompt_gops": []}]},
        "twin/q8_0/convert": {"seconds": 1.0, "peak_rss": 1 << 30, "file_bytes": 1 << 20, "_meta": _meta("convert")},
        "twin/q8_0/weights": {**asdict(weight_bytes(path)), "_meta": _meta("weights")},
        "twin/q8_0/info": info,
        "twin/q8_0/speed": {**asdict(measured["no_sweep"]), "same_tensors_as": "tiny", "peak_rss": 1 << 29,
                            "_meta": _meta("python -m benchmarks.gguf_speed --no-sweep")},
    }
    text = render(data, ["tiny", "other", "twin"], ["q8_0", "q4_k_m"], "python -m benchmarks --quick", ref_model="tiny",
                  exit_quant="q8_0")
    for needle in ("Produced by `python -m benchmarks --quick` (finished", "python -m benchmarks.gguf_speed", "python -m benchmarks.exit_speed",
                   "python -m benchmarks.reference_speed", "load avg", "vs reference", "loop overhead",
                   "decode / roofline", "skip k=3", "n_ctx 4096", "shared/full", "--long-context 600", "python -m benchmarks.prompt_tuning", "implied at T=4 vs reference", "Not measured in this run: other"):
        assert needle in text, needle
    assert "CPU family 23 model 1, SIMD extensions ggml can use: avx2, fma" in text
    assert "| Q8_0 | Q8_0 files | CPU | 10.0 | 11.0 | 1.10× |" in text  # in L3 / streamed
    assert "| attention, F16 KV | every file | CPU | 8.0 | 8.0 | 1.00× |" in text and "| – |" in text
    assert "8 layers of a 3,072-token F16 cache" in text
    speed_table = [line for line in text.splitlines() if line.startswith("| tiny | Q8_0 |")]
    assert len(speed_table) == 1 + 4  # the files row and one row per loop count
    assert len([line for line in text.splitlines() if line.startswith("| twin | Q8_0 |")]) == 1  # files row only
    assert "Not swept again: twin Q8_0 (= tiny)" in text and "| twin Q8_0 |" not in text
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## Reliability\n\nby another helper\n")
    write_report(data, ["tiny"], "python -m benchmarks --quick", out)
    written = out.read_text()
    assert "by another helper" in written and written.count(BEGIN) == 1
    pytest.importorskip("matplotlib")
    assert (tmp_path / "benchmarks" / "figures" / "decode_vs_loops.png").stat().st_size > 0
    assert "](benchmarks/figures/decode_vs_loops.png)" in written
