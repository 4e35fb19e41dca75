"""Held-out accuracy of a trained Ouro checkpoint, and its model card: `python -m models.evaluate [DIR]`.

Each problem is asked the way a chat user asks it: the checkpoint's own ChatML template renders the user
turn plus the assistant header, and runtime.reference.generate decodes greedily until <|im_end|>. A
problem counts as solved when the decoded reply, stripped of surrounding whitespace, is exactly the
expected answer string.

Read-outs measured: a fixed number of loops 1..T (the model run with `loops=t`, which gives the same
tokens as reading loop t of a T-loop run: loop t never sees later loops), and the exit gate at
thresholds 0.5, 0.7 and 0.9 (mode "threshold", Q-exit, all T loops run). "Mean loops per token" is the mean over every generated token of the
reply, its closing <|im_end|> included, of (exit loop index + 1): the depth whose state produced it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import typer
from jinja2 import Template
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tokenizers import Tokenizer

from models.data import (CHAIN_MAX, CHAIN_OPERANDS, HELD_OUT_SEED, OPERAND_DIGITS, SCORED_TASKS, TRAIN_MIX, Problem,
                         held_out_problems)
from models.tokenizer import ENDOFTEXT, IM_END
from runtime.reference import Ouro, generate, load_checkpoint

THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.9)
N_HELD_OUT = 300
N_TEST = 50  # the first N_TEST held-out problems are the ones tests/test_embedded_model.py checks
FLOOR_MARGIN = 0.10  # the test floor sits this far below the measured accuracy on those problems
MAX_NEW_TOKENS = 12  # the longest answer is 5 digits + <|im_end|>; the rest is room to go wrong
FLOOR_LINE = "Test floor (accuracy at T = 4 on the first {n} held-out problems): {floor:.2f}"

console = Console()


class Chat:
    """A checkpoint's tokenizer and chat template, used the way a chat client uses them."""

    def __init__(self, checkpoint: Path):
        self.tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
        config = json.loads((checkpoint / "tokenizer_config.json").read_text())
        self.template = Template(config["chat_template"])
        self.stop_ids = (self.tokenizer.token_to_id(IM_END), self.tokenizer.token_to_id(ENDOFTEXT))

    def prompt_ids(self, question: str) -> list[int]:
        text = self.template.render(messages=[{"role": "user", "content": question}], add_generation_prompt=True)
        return self.tokenizer.encode(text).ids

    def reply(self, model: Ouro, question: str, **read_out) -> tuple[str, list[int]]:
        """The greedy reply's text (without the stop token) and the exit loop of each generated token."""
        tokens, exits = generate(model, self.prompt_ids(question), MAX_NEW_TOKENS, self.stop_ids, **read_out)
        text_tokens = tokens[:-1] if tokens and tokens[-1] in self.stop_ids else tokens
        return self.tokenizer.decode(text_tokens), exits


@dataclass
class Score:
    solved: int = 0
    total: int = 0
    loops: int = 0  # summed over generated tokens
    tokens: int = 0
    per_task: dict[str, list[int]] = field(default_factory=dict)  # task -> [solved, total]
    verdicts: list[bool] = field(default_factory=list)  # per problem, in order

    def add(self, problem: Problem, ok: bool, exits: list[int]) -> None:
        self.solved += ok
        self.verdicts.append(ok)
        self.total += 1
        self.loops += sum(e + 1 for e in exits)
        self.tokens += len(exits)
        counts = self.per_task.setdefault(problem.task, [0, 0])
        counts[0] += ok
        counts[1] += 1

    @property
    def accuracy(self) -> float:
        return self.solved / self.total

    @property
    def mean_loops(self) -> float:
        return self.loops / self.tokens

    def task_accuracy(self, task: str) -> float:
        solved, total = self.per_task.get(task, (0, 0))
        return solved / total if total else float("nan")


def score(model: Ouro, chat: Chat, problems: list[Problem], **read_out) -> Score:
    result = Score()
    for problem in problems:
        text, exits = chat.reply(model, problem.question, **read_out)
        result.add(problem, text.strip() == problem.answer, exits)
    return result


def fixed_loops(t: int) -> dict:
    """generate() keyword arguments for running exactly t loops."""
    return {"mode": "last", "loops": t}


def read_outs(loops: int) -> dict[str, dict]:
    """Label -> generate() keyword arguments, for every row of the card's table."""
    rows = {f"{t} loop{'s' if t > 1 else ''}": fixed_loops(t) for t in range(1, loops + 1)}
    rows.update({f"gate, threshold {q}": {"mode": "threshold", "threshold": q} for q in THRESHOLDS})
    return rows


@torch.no_grad()
def evaluate(checkpoint: Path, n: int = N_HELD_OUT) -> dict:
    torch.set_num_threads(2)
    if n < N_TEST:
        raise typer.BadParameter(f"score at least the test's {N_TEST} problems")
    model = load_checkpoint(checkpoint)
    chat = Chat(checkpoint)
    problems = held_out_problems(n)
    rows = read_outs(model.config.total_ut_steps)
    results: dict[str, Score] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("evaluating", total=len(rows))
        for label, kwargs in rows.items():
            bar.update(task, description=label)
            results[label] = score(model, chat, problems, **kwargs)
            bar.advance(task)
    full_depth = results[list(rows)[model.config.total_ut_steps - 1]]
    test_accuracy = sum(full_depth.verdicts[:N_TEST]) / N_TEST
    return {"results": results, "test_accuracy": test_accuracy, "n": n}


def test_floor(test_accuracy: float) -> float:
    """Measured accuracy on the test's problems less the margin, rounded down to 0.05."""
    return max(0.0, math.floor((test_accuracy - FLOOR_MARGIN) * 20) / 20)


def read_floor(card: str) -> float:
    """The floor the card states (the test reads it from there, not from code)."""
    prefix = FLOOR_LINE.split("{floor")[0].format(n=N_TEST)
    for line in card.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):].strip())
    raise ValueError("the model card states no test floor")


def _table(results: dict[str, Score]) -> str:
    tasks = " | ".join(SCORED_TASKS)
    lines = [f"| read-out | accuracy | mean loops / token | {tasks} |",
             "|---|---|---|" + "---|" * len(SCORED_TASKS)]
    for label, s in results.items():
        per_task = " | ".join(f"{s.task_accuracy(t):.2f}" for t in SCORED_TASKS)
        lines.append(f"| {label} | {s.accuracy:.3f} | {s.mean_loops:.2f} | {per_task} |")
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "met" if ok else "**not met**"


def write_card(checkpoint: Path, evaluation: dict) -> str:
    config = json.loads((checkpoint / "config.json").read_text())
    training = json.loads((checkpoint / "training.json").read_text())
    recipe = training["recipe"]
    results: dict[str, Score] = evaluation["results"]
    T = config["total_ut_steps"]
    acc = [results[label].accuracy for label in list(results)[:T]]
    gate_rows = {q: results[f"gate, threshold {q}"] for q in THRESHOLDS}
    gate_ok = any(s.accuracy >= 0.95 * acc[-1] and s.mean_loops <= 3.0 for s in gate_rows.values())
    floor = test_floor(evaluation["test_accuracy"])
    n_params = training["parameters"]
    dtype = config["torch_dtype"]
    mix = ", ".join(f"{task} {share:.0%}" for task, share in TRAIN_MIX.items())
    gate_lines = "\n".join(
        f"- threshold {q}: accuracy {s.accuracy:.3f} = {s.accuracy / max(acc[-1], 1e-9):.1%} of acc({T}) "
        f"at {s.mean_loops:.2f} mean loops per token" for q, s in gate_rows.items())
    card = f"""# {checkpoint.name}

A tiny Ouro (looped language model) trained by this project so that `ouro chat` has a model whose
*quality* can be measured: it answers small arithmetic questions in ChatML. Exactly the Ouro architecture
of `runtime/reference.py` (sandwich norms, shared final norm after every loop, T = {T} loops, exit gate),
in the Hugging Face layout of the published checkpoints (`model_type = ouro`, `OuroForCausalLM`).

Generated by `python -m models.evaluate`; do not edit by hand.

## Model

| | |
|---|---|
| parameters | {n_params:,} |
| hidden / intermediate | {config['hidden_size']} / {config['intermediate_size']} |
| physical layers L / loops T | {config['num_hidden_layers']} / {T} |
| heads (head_dim) | {config['num_attention_heads']} ({config['head_dim']}) |
| vocabulary | {config['vocab_size']} (byte-level BPE, SmolLM2 pre-tokenizer, specials at 0..16) |
| weights | `model.safetensors`, every tensor {dtype} |

Weights are stored in {dtype}, like the published Ouro checkpoints, so the converter's path for the real
files is the one this model takes; every number below was measured on these stored weights.

## Training

`python -m models.train` (seed {recipe['seed']}, {recipe['stage1_steps']} + {recipe['stage2_steps']} steps of
{recipe['batch_size']} conversations, {recipe['threads']} torch thread(s) on the project's 2 shared cores):
{training['wall_seconds'] / 60:.1f} minutes of wall time.

- Data (`models/data.py`): generated ChatML conversations, one user turn and one assistant turn:
  {mix}. Additions and subtractions of {OPERAND_DIGITS[0]}-{OPERAND_DIGITS[1]} digit numbers (answers
  written most significant digit first, so a digit depends on the carries below it), chains of
  {CHAIN_OPERANDS[0]}-{CHAIN_OPERANDS[1]} operands from 1 to {CHAIN_MAX} joined by + and -, "which is larger /
  smaller" between {OPERAND_DIGITS[0]}-{OPERAND_DIGITS[1]} digit numbers, counting one digit in a list
  of digits, and a little chat filler.
  The loss counts only the assistant's reply and its `<|im_end|>`.
- Stage 1 (all weights, AdamW lr {recipe['lr']}, cosine): expected cross-entropy over the exit
  distribution plus an entropy bonus, L = Σ_t p_t · CE_t − {recipe['entropy_beta']} · H(p).
- Stage 2 (the exit gate alone, Adam lr {recipe['gate_lr']}): for each answer token and loop t < T,
  binary cross-entropy of the exit probability λ_t against "continue" = σ({recipe['gate_sharpness']:g} ·
  (CE_t − CE_{{t+1}} − {recipe['gate_margin']})): continue only when the next loop lowers that token's loss.

## Held-out evaluation

{evaluation['n']} problems generated with seed {HELD_OUT_SEED} (the training stream skips every held-out
question), the five scored tasks in turn. Each is prompted with this checkpoint's chat template and
decoded greedily by `runtime.reference.generate` until `<|im_end|>`; it is solved when the reply is
exactly the expected answer. *Mean loops per token* is the mean, over all generated tokens of all
replies (the closing `<|im_end|>` included), of the loop whose state produced the token (1..{T}).

{_table(results)}

- Loops matter: acc(1) = {acc[0]:.3f}, acc({T}) = {acc[-1]:.3f}, a gain of {100 * (acc[-1] - acc[0]):.1f} points.
{gate_lines}

Issue 7's lines: a gain of at least 20 points from 1 to {T} loops: {_yes(acc[-1] - acc[0] >= 0.20)}; a gate
threshold reaching 95% of acc({T}) at 3.0 mean loops per token or fewer: {_yes(gate_ok)}.

{FLOOR_LINE.format(n=N_TEST, floor=floor)}

(measured there: {evaluation['test_accuracy']:.2f}; the floor is {FLOOR_MARGIN:.2f} lower, rounded down to 0.05.)
"""
    (checkpoint / "README.md").write_text(card)
    return card


def main(checkpoint: Path = typer.Argument(Path(__file__).resolve().parent / "ouro-tiny-arith"),
         n: int = typer.Option(N_HELD_OUT, help="held-out problems to score")) -> None:
    evaluation = evaluate(checkpoint, n)
    card = write_card(checkpoint, evaluation)
    console.print(card)


if __name__ == "__main__":
    typer.run(main)
