"""benchmarks.exit_quality on a tiny random checkpoint: structure and consistency only, never wall-clock."""

from __future__ import annotations

import io
import itertools

import pytest
from rich.console import Console

from benchmarks.exit_quality import (ANCHOR_HEADING, FIGURE, MARKERS, QTYPES, SETTINGS, THRESHOLDS, convert_all, main,
                                     markdown_table, measure, write_report)
from benchmarks.markdown import replace_section
from models.data import Problem, held_out_problems
from models.synthetic import write_checkpoint

pytest.importorskip("llama_cpp")

BEGIN, END = MARKERS.begin, MARKERS.end
LOOPS = 4
GATE_BIAS = 3.0  # sigmoid(3) ~ 0.95: the gate's CDF passes 0.9 at the first loop, so skip mode exits early
N_HELD_OUT = 3


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("exit-quality")
    ckpt = write_checkpoint(root / "ckpt", "tiny", loops=LOOPS, gate_bias=GATE_BIAS)
    files = convert_all(ckpt, root, QTYPES)
    # A random model solves nothing; one problem whose answer is its own greedy reply at all loops checks
    # that a solved problem is counted.
    from runtime import load

    question = held_out_problems(1)[0].question
    with load(files["f16"], n_ctx=256, n_threads=1, exit_threshold=1.0) as model:
        own = model.chat([{"role": "user", "content": question}], temperature=0.0, max_tokens=12).text.strip()
    problems = [Problem("add", question, own), *held_out_problems(N_HELD_OUT + 1)[1:]]
    m = measure(files, problems, threads=1, console=Console(file=io.StringIO()))
    return m, problems


def test_one_row_per_file_setting_and_threshold(measured):
    m, problems = measured
    keys = [(r.qtype, r.setting, r.threshold) for r in m.rows]
    assert sorted(keys) == sorted(itertools.product(QTYPES, SETTINGS, THRESHOLDS))
    assert m.loops == LOOPS and m.problems == len(problems) and set(m.weights) == set(QTYPES)
    for r in m.rows:
        assert r.total == len(problems) and 0.0 <= r.accuracy <= 1.0
        assert r.mean_loops is not None and 1.0 <= r.mean_loops <= LOOPS


def test_rows_agree_with_the_runtime_semantics(measured):
    m, _ = measured
    rows = {(r.qtype, r.setting, r.threshold): r for r in m.rows}
    for q in QTYPES:
        # Nothing exits at threshold 1.0: the last loop for every token, and skip gives select's tokens.
        assert rows[q, "select", 1.0].mean_loops == rows[q, "skip", 1.0].mean_loops == LOOPS
        assert rows[q, "skip", 1.0].solved == rows[q, "select", 1.0].solved
        assert rows[q, "skip", 0.5].mean_loops < LOOPS  # the biased gate fires
    assert rows["f16", "select", 1.0].solved >= 1  # the problem answered with the model's own reply


def test_table_and_report(measured, tmp_path):
    m, _ = measured
    table = markdown_table(m).splitlines()
    assert len(table) == 2 + len(QTYPES) * len(SETTINGS) * len(THRESHOLDS)
    assert table[2].startswith("| F16 | select | 1 |") and "+0.0 pts" in table[2]

    doc = tmp_path / "BENCHMARKS.md"
    before = ("# Benchmarks\n\n<!-- benchmarks:suite:begin -->\n## Speed\n\n### Early exit that skips compute\n\n"
              "suite text\n<!-- benchmarks:suite:end -->\n\n## Reliability\n\nkept text\n")
    doc.write_text(before)
    figure = write_report(m, "python -m benchmarks.exit_quality --problems=4", doc, "tiny")
    if figure is not None:
        assert figure == tmp_path / FIGURE and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    once = doc.read_text()
    assert once.count(BEGIN) == once.count(END) == 1
    assert once.index("<!-- benchmarks:suite:end -->") < once.index(BEGIN) < once.index(END) < once.index(
        "## Reliability")
    assert "suite text" in once and "kept text" in once and "`python -m benchmarks.exit_quality --problems=4`" in once
    again = replace_section(once, "replaced body", MARKERS, ANCHOR_HEADING)
    assert again.count(BEGIN) == 1 and "replaced body" in again and "| F16 | select |" not in again
    assert again.replace(f"{BEGIN}\nreplaced body\n{END}", "") == once.replace(once[once.index(BEGIN):
                                                                                    once.index(END) + len(END)], "")


def test_section_without_an_early_exit_section_is_appended():
    assert replace_section("# Benchmarks\n\n## Other\n\ntext\n", "body", MARKERS, ANCHOR_HEADING).endswith(f"text\n\n{BEGIN}\nbody\n{END}\n")
    assert replace_section("", "body", MARKERS, ANCHOR_HEADING).startswith("# Benchmarks\n\n" + BEGIN)


def test_cli_refuses_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(tmp_path / "nowhere"), "--output", str(tmp_path / "B.md")])
    assert exc.value.code != 0
    assert "not a checkpoint directory" in capsys.readouterr().err
    assert not (tmp_path / "B.md").exists()
