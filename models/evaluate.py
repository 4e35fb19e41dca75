"""Scoring a trained Ouro checkpoint through the GGUF runtime, the way `ouro chat` runs it.

The checkpoint is converted to GGUF files (`convert_all`), each loaded with `runtime.load`; every problem
is a fresh conversation sent through the file's own chat template by `OuroModel.chat`, decoded greedily
until the end of the turn. A problem is solved when the reply, stripped of surrounding whitespace, is
exactly the expected answer.

Loops per token are the runtime's own record (`llama_ouro_last_loops`) of every decode step, the one-token
evaluations that produce the reply's second token to its closing `<|im_end|>`: the loop the token's state
came from in select mode, or the loops computed for it in skip mode. A reply's first token comes from the
prompt pass, which runs every loop in both modes (the patched graph exits early only in decode steps), so
it has no decode step to count.

`python -m models.card [DIR]` measures everything the model card reports with these functions and
writes the card.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from models.data import OFF_TASK_PROBES, SCORED_TASKS, Problem, history_turns, messages
from runtime import OuroModel, load

QTYPES: tuple[str, ...] = ("f16", "q8_0", "q4_0", "q4_k_m")
MAX_NEW_TOKENS = 12  # the longest answer is 4 digits + <|im_end|>; the rest is room to go wrong
OFF_TASK_MAX_TOKENS = 48  # a sentence, with room to ramble (which the check would catch)
# Third-turn prompts are under 120 tokens; a small context keeps the all-loops KV allocation trivial.
N_CTX = 512
THREADS = 2


def convert_all(checkpoint: Path, outdir: Path, qtypes: Sequence[str] = QTYPES) -> dict[str, Path]:
    """One GGUF per type in `outdir`; the converter's summary is kept off stdout (progress stays on stderr)."""
    from convert.convert import convert_checkpoint

    quiet = Console(file=io.StringIO())
    return {q: convert_checkpoint(checkpoint, outdir / f"{checkpoint.name}-{q}.gguf", q, force=True, console=quiet)
            for q in qtypes}


@dataclass(frozen=True)
class Setting:
    """How the runtime runs a file: loops (None: the file's), Q-exit threshold, exit mode, KV policy."""

    loops: int | None = None
    threshold: float = 1.0
    mode: str = "select"
    kv: str = "full"

    @property
    def label(self) -> str:
        depth = f"{self.loops} loop{'s' if self.loops != 1 else ''}" if self.loops else f"gate q={self.threshold}"
        kv = ", shared KV" if self.kv == "share" else ""
        return f"{depth}, {self.mode}{kv}"


@contextmanager
def opened(path: Path, kv: str = "full", mode: str = "select") -> Iterator[OuroModel]:
    """The file loaded for scoring; thresholds and loops are then set on the running context."""
    with load(path, n_ctx=N_CTX, exit_mode=mode, kv=kv, n_threads=THREADS) as model:
        yield model


def apply(model: OuroModel, setting: Setting) -> None:
    model.set_loops(setting.loops)
    model.set_exit_threshold(setting.threshold)
    model.set_exit_mode(setting.mode)


@dataclass
class Reply:
    text: str
    loops: list[int]  # per decode step (every generated token after the first)
    decode_steps: int
    decode_seconds: float


def reply(model: OuroModel, conversation: list[dict[str, str]], max_tokens: int = MAX_NEW_TOKENS) -> Reply:
    """The greedy reply to a fresh conversation (no KV reuse of an earlier one)."""
    model.reset()
    completion = model.chat(conversation, temperature=0.0, max_tokens=max_tokens)
    steps = model.llama.eval_loops[1:]  # one list per llama.cpp decode after the prompt's, one token each
    loops = [step[-1] for step in steps]
    return Reply(completion.text, loops, completion.stats.decode_steps, completion.stats.decode_seconds)


@dataclass
class Score:
    solved: int = 0
    total: int = 0
    loops: int = 0  # summed over decode steps
    tokens: int = 0  # decode steps
    decode_steps: int = 0
    decode_seconds: float = 0.0
    per_task: dict[str, list[int]] = field(default_factory=dict)  # task -> [solved, total]
    verdicts: list[bool] = field(default_factory=list)  # per problem, in order

    def add(self, problem: Problem, answer: Reply) -> None:
        ok = answer.text.strip() == problem.answer
        self.solved += ok
        self.verdicts.append(ok)
        self.total += 1
        self.loops += sum(answer.loops)
        self.tokens += len(answer.loops)
        self.decode_steps += answer.decode_steps
        self.decode_seconds += answer.decode_seconds
        counts = self.per_task.setdefault(problem.task, [0, 0])
        counts[0] += ok
        counts[1] += 1

    @property
    def accuracy(self) -> float:
        return self.solved / self.total

    @property
    def mean_loops(self) -> float:
        return self.loops / self.tokens if self.tokens else float("nan")

    @property
    def decode_tps(self) -> float:
        return self.decode_steps / self.decode_seconds

    def task_accuracy(self, task: str) -> float:
        solved, total = self.per_task.get(task, (0, 0))
        return solved / total if total else float("nan")

    def worst_task(self) -> float:
        return min(self.task_accuracy(t) for t in SCORED_TASKS)


def score(model: OuroModel, problems: Sequence[Problem], *, turn: int = 1,
          advance: Callable[[], None] = lambda: None) -> Score:
    """Each problem asked as the `turn`-th user turn (1 or 3): a third turn follows two earlier
    questions with their answers (models.data.history_turns), as `ouro chat` sends a conversation."""
    result = Score()
    for i, problem in enumerate(problems):
        history = history_turns(i) if turn == 3 else []
        result.add(problem, reply(model, messages(history, problem.question)))
        advance()
    return result


_CAPABILITY_WORDS = ("add", "subtract", "compare", "count")


def is_capability_sentence(text: str) -> bool:
    """One short sentence that says what the model can do: not a bare number, at most one sentence end
    (at its end), under 120 characters, naming at least two of its skills."""
    text = text.strip()
    ends = re.findall(r"[.!?](?:\s|$)", text)
    named = sum(word in text.lower() for word in _CAPABILITY_WORDS)
    return (bool(text) and not re.fullmatch(r"[-+\d\s.,]*", text) and len(ends) <= 1
            and (not ends or text[-1] in ".!?") and len(text) < 120 and named >= 2)


def off_task(model: OuroModel, probes: Sequence[str] = OFF_TASK_PROBES) -> list[tuple[str, str, bool]]:
    """(message, reply, passes) for every off-task probe, each a fresh conversation."""
    out = []
    for message in probes:
        text = reply(model, [{"role": "user", "content": message}], OFF_TASK_MAX_TOKENS).text.strip()
        out.append((message, text, is_capability_sentence(text)))
    return out
