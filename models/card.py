"""The embedded model's card, measured through the GGUF runtime: `python -m models.card [DIR] [--problems N]`.

Converts the checkpoint to F16, Q8_0, Q4_0 and Q4_K_M GGUFs (a temporary directory), scores the held-out
problems in every setting the card reports (models/evaluate.py), plots the training curve from
training.json, and writes DIR/README.md and DIR/training_curve.png.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.data import (CHAIN_MAX, CHAIN_OPERANDS, HELD_OUT_SEED, OFF_TASK_PROBES, OPERAND_DIGITS, SCORED_TASKS,
                         TRAIN_MIX, TURNS, held_out_problems)
from models.evaluate import QTYPES, Score, Setting, apply, convert_all, off_task, opened, score
from models.kv_sharing import LoopDrift, loop_drift

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "ouro-tiny-arith"
N_HELD_OUT = 500
THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
DRIFT_PROBLEMS = 100  # held-out problems the K/V drift across loops is averaged over
SPEED_ROUNDS = 3  # select and skip take turns this many times for the decode speed ratio
N_TEST = 100  # tests/test_embedded_model.py scores the first N_TEST held-out problems at T loops...
N_TEST_TURN3 = 30  # ...and the first N_TEST_TURN3 of them as a third turn
FLOOR_MARGIN = 0.05  # each test floor sits this far below what was measured, rounded down to 0.05
FLOOR_LINE = "Test floor (accuracy at T = {T} on the first {n} held-out problems, {where}): {floor:.2f}"
CURVE = "training_curve.png"

console = Console()


@dataclass
class Measurements:
    n: int
    loops: int  # T
    depth: dict[str, list[Score]]  # qtype -> scores at 1..T loops
    select: dict[float, Score]  # F16, gate threshold -> select mode
    skip: dict[float, Score]
    share: dict[str, Score]  # "T loops" / "skip q=..." with the loop-shared KV cache
    third_turn: Score
    off_task: list[tuple[str, str, bool]]
    speed: list[tuple[float, float]]  # (select, skip) decode tok/s per round at the chosen threshold
    chosen: float | None  # the skip threshold the card recommends
    drift: list[LoopDrift]  # each loop's answer-token K/V against the last loop's (reference model)


def chosen_threshold(acc_full: float, skip: dict[float, Score]) -> float | None:
    """The skip threshold with the fewest loops per token that keeps 99% of full-depth accuracy."""
    keeping = [q for q, s in skip.items() if s.accuracy >= 0.99 * acc_full]
    return min(keeping, key=lambda q: skip[q].mean_loops) if keeping else None


def measure(checkpoint: Path, n: int) -> Measurements:
    problems = held_out_problems(n)
    with tempfile.TemporaryDirectory(prefix="ouro-card-") as tmp:
        files = convert_all(checkpoint, Path(tmp))
        with opened(files["f16"]) as model:
            T = model.file_loops
        runs = len(QTYPES) * T + 2 * len(THRESHOLDS) + 1 + len(THRESHOLDS) + 1
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:
            task = bar.add_task("scoring", total=runs * n)

            def run(model, setting: Setting, turn: int = 1) -> Score:
                bar.update(task, description=f"{model.path.name}: {setting.label}, turn {turn}")
                apply(model, setting)
                return score(model, problems, turn=turn, advance=lambda: bar.advance(task))

            depth = {}
            for qtype in QTYPES:
                with opened(files[qtype]) as model:
                    depth[qtype] = [run(model, Setting(loops=t)) for t in range(1, T + 1)]
            with opened(files["f16"]) as model:
                select = {q: run(model, Setting(threshold=q)) for q in THRESHOLDS}
                skip = {q: run(model, Setting(threshold=q, mode="skip")) for q in THRESHOLDS}
                third_turn = run(model, Setting(loops=T), turn=3)
                apply(model, Setting(loops=T))
                answers = off_task(model)
                chosen = chosen_threshold(depth["f16"][-1].accuracy, skip)
                speed = []
                for _ in range(SPEED_ROUNDS if chosen is not None else 0):
                    timed = []
                    for mode in ("select", "skip"):
                        apply(model, Setting(threshold=chosen, mode=mode))
                        timed.append(score(model, problems[:200]).decode_tps)
                    speed.append((timed[0], timed[1]))
            with opened(files["f16"], kv="share") as model:
                share = {f"{T} loops": run(model, Setting(loops=T, kv="share"))}
                share.update({f"skip q={q}": run(model, Setting(threshold=q, mode="skip", kv="share"))
                              for q in THRESHOLDS})
    drift = loop_drift(checkpoint, problems[:DRIFT_PROBLEMS])
    return Measurements(n, T, depth, select, skip, share, third_turn, answers, speed, chosen, drift)


def plot_curve(training: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = training["curve"]
    steps = [c["step"] for c in curve]
    T = len(curve[0]["ce"])
    fig, (ce_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for t in range(T):
        ce_ax.plot(steps, [c["ce"][t] for c in curve], label=f"loop {t + 1}")
        acc_ax.plot(steps, [c["accuracy"][t] for c in curve], label=f"loop {t + 1}")
    ce_ax.set(xlabel="step", ylabel="answer-token cross-entropy (running mean)", yscale="log",
              title="training loss per loop")
    acc_ax.set(xlabel="step", ylabel="held-out exact match (teacher-forced)", ylim=(0, 1),
               title="held-out accuracy per loop")
    for ax in (ce_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def test_floor(measured: float) -> float:
    return max(0.0, math.floor((measured - FLOOR_MARGIN) * 20) / 20)


def read_floors(card: str) -> tuple[float, float]:
    """(first-turn floor, third-turn floor) as the card states them; the test reads them from there."""
    floors = [float(line.rsplit(":", 1)[1]) for line in card.splitlines() if line.startswith("Test floor (")]
    if len(floors) != 2:
        raise ValueError("the model card must state two test floors")
    return floors[0], floors[1]


def _depth_table(m: Measurements) -> str:
    lines = ["| file | " + " | ".join(f"T = {t}" for t in range(1, m.loops + 1)) + " |",
             "|---|" + "---|" * m.loops]
    for qtype, scores in m.depth.items():
        lines.append(f"| {qtype.upper()} | " + " | ".join(f"{s.accuracy:.3f}" for s in scores) + " |")
    return "\n".join(lines)


def _task_table(rows: dict[str, Score]) -> str:
    tasks = " | ".join(SCORED_TASKS)
    lines = [f"| read-out | accuracy | mean loops / token | {tasks} |", "|---|---|---|" + "---|" * len(SCORED_TASKS)]
    for label, s in rows.items():
        per_task = " | ".join(f"{s.task_accuracy(t):.3f}" for t in SCORED_TASKS)
        lines.append(f"| {label} | {s.accuracy:.3f} | {s.mean_loops:.2f} | {per_task} |")
    return "\n".join(lines)


def _gate_table(m: Measurements) -> str:
    lines = ["| threshold | select: accuracy | select: loops / token | skip: accuracy | skip: loops / token |",
             "|---|---|---|---|---|"]
    for q in THRESHOLDS:
        a, b = m.select[q], m.skip[q]
        mark = " (chosen)" if q == m.chosen else ""
        lines.append(f"| {q}{mark} | {a.accuracy:.3f} | {a.mean_loops:.2f} | {b.accuracy:.3f} | {b.mean_loops:.2f} |")
    return "\n".join(lines)


def _drift_table(drift: list[LoopDrift]) -> str:
    lines = ["| loop | key cosine to the last loop's | value cosine | ‖K_t − K_T‖ / ‖K_T‖ | ‖V_t − V_T‖ / ‖V_T‖ |",
             "|---|---|---|---|---|"]
    lines += [f"| {d.loop} | {d.key_cosine:.3f} | {d.value_cosine:.3f} | {d.key_distance:.2f} | {d.value_distance:.2f} |"
              for d in drift]
    return "\n".join(lines)


def _drift_verdict(m: Measurements) -> str:
    first = m.drift[0]
    shared, full = m.share[f"{m.loops} loops"].accuracy, m.depth["f16"][-1].accuracy
    return (f"Sharing costs {100 * (full - shared):.1f} points here ({full:.3f} → {shared:.3f}). Loop 1's keys "
            f"have cosine {first.key_cosine:.2f} to the last loop's: with one physical layer per loop, loop 1's "
            "K/V are projections of little more than the token embedding while the last loop's carry the "
            "worked-out state, so under sharing the early loops read keys they were never trained on. The "
            "paper's < 0.1-point cost is for Ouro-1.4B, where each loop is 24 layers deep and the last loop's "
            "K/V evidently stand in for the others (the paper reports the accuracy, not the K/V distance); "
            "there too, keeping the *first* loop's K/V instead collapses GSM8K to 18.7, the same mismatch "
            "seen from the other side. A model meant for sharing would have to be trained with it (loop t "
            "attending to the last loop's K/V of earlier tokens).")


def _yes(ok: bool) -> str:
    return "met" if ok else "**not met**"


def write_card(checkpoint: Path, m: Measurements) -> str:
    config = json.loads((checkpoint / "config.json").read_text())
    training = json.loads((checkpoint / "training.json").read_text())
    recipe = training["recipe"]
    plot_curve(training, checkpoint / CURVE)
    T = m.loops
    f16 = m.depth["f16"]
    acc = [s.accuracy for s in f16]
    full = f16[-1]
    mix = ", ".join(f"{task} {share:.0%}" for task, share in TRAIN_MIX.items())
    gain = acc[-1] - acc[0]
    chosen = m.skip.get(m.chosen) if m.chosen is not None else None
    if chosen is not None and m.speed:
        ratios = [skip / select for select, skip in m.speed]
        speed_line = (f"decode speed at q = {m.chosen}, select and skip taking turns ({len(m.speed)} rounds of "
                      f"200 problems): select {', '.join(f'{a:.0f}' for a, _ in m.speed)} tok/s, skip "
                      f"{', '.join(f'{b:.0f}' for _, b in m.speed)} tok/s; skip / select = "
                      f"{statistics.median(ratios):.2f}x (median; rounds {', '.join(f'{r:.2f}' for r in ratios)})")
        gate_line = (f"skip at q = {m.chosen}: accuracy {chosen.accuracy:.3f} = "
                     f"{chosen.accuracy / full.accuracy:.1%} of acc({T}) at {chosen.mean_loops:.2f} loops per token")
        gate_ok = chosen.mean_loops <= 2.5
    else:
        speed_line = "no skip threshold keeps 99% of acc(T), so no speed is reported"
        gate_line = "no skip threshold tried keeps 99% of acc(T)"
        gate_ok = False
    off_ok = sum(ok for _, _, ok in m.off_task)
    off_rows = "\n".join(f"| {msg} | {text} | {'yes' if ok else '**no**'} |" for msg, text, ok in m.off_task)
    third = m.third_turn
    third_first30 = sum(third.verdicts[:N_TEST_TURN3]) / N_TEST_TURN3
    first_test = sum(full.verdicts[:N_TEST]) / N_TEST
    q8_gap = abs(m.depth["q8_0"][-1].accuracy - full.accuracy)
    share_rows = {f"full KV, {T} loops, select": full, **{f"full KV, skip q={q}": m.skip[q] for q in THRESHOLDS},
                  **{f"shared KV, {label}": s for label, s in m.share.items()}}
    card = f"""# {checkpoint.name}

A small Ouro (looped language model) trained by this project so that `ouro chat` has a model that answers
right, and whose *quality* can be measured through the runtime: it answers small arithmetic questions in
ChatML. Exactly the Ouro architecture of `runtime/reference.py` (sandwich norms, shared final norm after
every loop, T = {T} loops, exit gate), in the Hugging Face layout of the published checkpoints
(`model_type = ouro`, `OuroForCausalLM`).

Generated by `python -m models.card`; do not edit by hand. Every accuracy below was measured **through the
GGUF runtime** (the checkpoint converted by `ouro convert`'s code, loaded by `runtime.load`, each problem a
fresh `OuroModel.chat` conversation, greedy).

## Model

| | |
|---|---|
| parameters | {training['parameters']:,} |
| hidden / intermediate | {config['hidden_size']} / {config['intermediate_size']} |
| physical layers L / loops T | {config['num_hidden_layers']} / {T} |
| heads (head_dim) | {config['num_attention_heads']} ({config['head_dim']}) |
| vocabulary | {config['vocab_size']} (byte-level BPE, SmolLM2 pre-tokenizer, specials at 0..16) |
| weights | `model.safetensors`, every tensor {config['torch_dtype']}, {(checkpoint / 'model.safetensors').stat().st_size / 2**20:.1f} MiB |

## Training

`python -m models.train` (seed {recipe['seed']}; {recipe['stage1_steps']} + {recipe['stage2_steps']} steps of
{recipe['batch_size']} conversations, {recipe['threads']} torch threads on the machine's 2 cores):
{training['wall_seconds'] / 60:.1f} minutes of wall time.

- Data (`models/data.py`): generated ChatML conversations of {TURNS[0]}-{TURNS[1]} user turns, each answered;
  turns drawn as {mix}. Additions and subtractions of {OPERAND_DIGITS[0]}-{OPERAND_DIGITS[1]} digit numbers
  (answers written most significant digit first, so a digit depends on the carries below it), chains of
  {CHAIN_OPERANDS[0]}-{CHAIN_OPERANDS[1]} operands from 1 to {CHAIN_MAX} joined by + and -, "which is larger /
  smaller" between {OPERAND_DIGITS[0]}-{OPERAND_DIGITS[1]} digit numbers, counting one digit in a list of
  digits, and off-task messages (greetings, questions about the model, requests it cannot serve, stray
  words), answered with one sentence saying what the model can do. The loss counts every assistant reply
  and its `<|im_end|>`.
- Stage 1 (all weights but the gate, AdamW lr {recipe['lr']}, {recipe['warmup_steps']} warm-up steps, cosine):
  every loop is trained to answer, deeper loops weighted more, L = Σ_t w_t · CE_t with w_t ∝ t.
- Stage 2 (the exit gate alone, Adam lr {recipe['gate_lr']}): for each answer token and loop t < T,
  binary cross-entropy of the exit probability λ_t against "continue" = σ({recipe['gate_sharpness']:g} ·
  (CE_t − CE_{{t+1}} − {recipe['gate_margin']})): continue only when the next loop lowers that token's loss.

![training curve]({CURVE})

Left: the answer tokens' cross-entropy per loop; right: teacher-forced exact match per loop on 250
held-out problems, every {recipe['eval_every']} steps of stage 1.

## Held-out evaluation

{m.n} problems generated with seed {HELD_OUT_SEED} (the training stream skips every held-out question), the
five scored tasks in turn. A problem is solved when the reply is exactly the expected answer. *Loops per
token* is the runtime's record over the decode steps, the one-token evaluations that produce every reply
token after the first (the closing `<|im_end|>` included): the loop the token's state came from (select) or
the loops computed for it (skip). A reply's first token comes from the prompt pass, which runs every loop
in both modes.

### Loops: accuracy at T = 1..{T} (F16)

{_task_table({f"{t} loop{'s' if t > 1 else ''}": s for t, s in enumerate(f16, 1)})}

- acc(1..{T}) = {' / '.join(f'{a:.3f}' for a in acc)}: the loops add {100 * gain:.1f} points ({_yes(gain >= 0.30)}: at least 30).
- acc({T}) = {acc[-1]:.3f} overall ({_yes(acc[-1] >= 0.95)}: at least 0.95), worst task {full.worst_task():.3f}
  ({_yes(full.worst_task() >= 0.90)}: every task at least 0.90).

### The exit gate: select and skip (F16)

{_gate_table(m)}

- {gate_line} ({_yes(gate_ok)}: 99% of acc({T}) at 2.5 loops per token or fewer).
- {speed_line}.

### Conversations: the same problems as the third user turn (F16, T = {T})

Each problem follows two earlier questions and their answers in the history, rendered by the chat template
as `ouro chat` sends a conversation.

| asked as | accuracy | {' | '.join(SCORED_TASKS)} |
|---|---|{'---|' * len(SCORED_TASKS)}
| first turn | {full.accuracy:.3f} | {' | '.join(f'{full.task_accuracy(t):.3f}' for t in SCORED_TASKS)} |
| third turn | {third.accuracy:.3f} | {' | '.join(f'{third.task_accuracy(t):.3f}' for t in SCORED_TASKS)} |

Difference: {100 * (third.accuracy - full.accuracy):+.1f} points ({_yes(abs(third.accuracy - full.accuracy) <= 0.02)}: within 2).

### Off-task messages (F16, T = {T})

{len(OFF_TASK_PROBES)} messages written apart from the training templates. Passing means one short sentence
naming what the model can do, never a bare number (`models.evaluate.is_capability_sentence`):
{off_ok} / {len(m.off_task)} pass.

| message | reply | passes |
|---|---|---|
{off_rows}

### Quantization: accuracy at T = 1..{T}

{_depth_table(m)}

Q8_0 is {100 * q8_gap:.1f} points from F16 at T = {T} ({_yes(q8_gap <= 0.01)}: within 1).

### The loop-shared KV cache (F16)

{_task_table(share_rows)}

Why: with sharing, a generated token keeps only its last loop's K/V, so loop t of every later token
attends to loop-{T} keys and values where training showed it loop-t ones. How far apart those are on
this model (PyTorch reference, the answer tokens of {DRIFT_PROBLEMS} held-out problems, teacher-forced;
`models/kv_sharing.py`):

{_drift_table(m.drift)}

{_drift_verdict(m)}

## History

The run before this one had the same architecture and data generator with equal shares for comparison and
counting (add 28%, sub 22%, chain 20%, compare 10%, count 10%, off-task 10%) and 4800 + 300 steps (62.6
minutes). On the first 100 of these held-out problems, through the runtime: acc(1..4) = 0.200 / 0.810 /
0.850 / 0.870, worst task counting 0.600; third turn 0.800 (−7.0 points); off-task 22 / 25; skip at q = 0.5
kept 100% of acc(4) at 2.26 loops per token; shared KV 0.180.

The first ouro-tiny-arith (475,905 parameters: 1 layer of width 128, 4 heads; one-turn data; 6000 +
300 steps of 32 conversations on one torch thread, 39.3 minutes) scored, on 300 held-out problems decoded
by `runtime.reference.generate`: acc(1..4) = 0.123 / 0.310 / 0.417 / 0.437 (add 0.35, sub 0.13, chain 0.52,
compare 0.88, count 0.30 at 4 loops); the gate at threshold 0.5 kept 0.423 at 2.80 loops per token. It
answered "hello" with a number.

## Test floors

{FLOOR_LINE.format(T=T, n=N_TEST, where='first turn', floor=test_floor(first_test))}

{FLOOR_LINE.format(T=T, n=N_TEST_TURN3, where='third turn', floor=test_floor(third_first30))}

(measured there: {first_test:.2f} and {third_first30:.2f}; each floor is {FLOOR_MARGIN:.2f} lower, rounded down
to 0.05. `tests/test_embedded_model.py` checks them through the runtime.)
"""
    (checkpoint / "README.md").write_text(card)
    return card


def main(checkpoint: Path = typer.Argument(DEFAULT_CHECKPOINT, help="checkpoint directory"),
         problems: int = typer.Option(N_HELD_OUT, help="held-out problems to score")) -> None:
    if problems < N_TEST:
        raise typer.BadParameter(f"score at least the test's {N_TEST} problems")
    card = write_card(checkpoint, measure(checkpoint, problems))
    console.print(card)


if __name__ == "__main__":
    typer.run(main)
