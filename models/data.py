"""The generated ChatML conversations the embedded model is trained and evaluated on.

Every conversation is one user turn and one assistant turn. Most are small problems whose answer is
one exact string (a number), chosen so that getting them right needs several sequential steps: the
answer is written most significant digit first, so each digit of a sum depends on the carry chain of
all the digits below it, and a chain of operations is a running value updated once per operation.
A little plain conversational filler keeps chat looking like chat; it is never scored.

Held-out problems come from a different seed, and the training stream skips any question that is in
the held-out set, so evaluation never sees a training question.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from jinja2 import Template

from models.tokenizer import chat_template

TRAIN_SEED = 1234
HELD_OUT_SEED = 987654321
# The held-out set the training stream avoids; evaluation uses a prefix of it.
HELD_OUT_SIZE = 2000

# Share of each kind of conversation in training. Addition and subtraction with carries and the
# chains are the ones that need depth; comparisons and counting are shallower skills.
TRAIN_MIX: dict[str, float] = {
    "add": 0.30,
    "sub": 0.20,
    "chain": 0.22,
    "compare": 0.10,
    "count": 0.10,
    "filler": 0.08,
}
SCORED_TASKS: tuple[str, ...] = ("add", "sub", "chain", "compare", "count")
OPERAND_DIGITS: tuple[int, int] = (1, 3)  # addition, subtraction and comparison operands
CHAIN_OPERANDS: tuple[int, int] = (3, 4)  # numbers in a chain of operations
CHAIN_MAX: int = 9  # largest operand in a chain


@dataclass(frozen=True)
class Problem:
    task: str
    question: str
    answer: str


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def _add(rng: random.Random) -> Problem:
    a, b = _number(rng, rng.randint(*OPERAND_DIGITS)), _number(rng, rng.randint(*OPERAND_DIGITS))
    phrasing = rng.choice(["{a}+{b}", "{a} + {b}", "{a}+{b}=", "What is {a}+{b}?"])
    return Problem("add", phrasing.format(a=a, b=b), str(a + b))


def _sub(rng: random.Random) -> Problem:
    a, b = _number(rng, rng.randint(*OPERAND_DIGITS)), _number(rng, rng.randint(*OPERAND_DIGITS))
    a, b = max(a, b), min(a, b)
    phrasing = rng.choice(["{a}-{b}", "{a} - {b}", "{a}-{b}=", "What is {a}-{b}?"])
    return Problem("sub", phrasing.format(a=a, b=b), str(a - b))


def _chain(rng: random.Random) -> Problem:
    """Three to five small operands joined by + and -, never going below zero."""
    value = rng.randint(1, CHAIN_MAX)
    text = str(value)
    for _ in range(rng.randint(*CHAIN_OPERANDS) - 1):
        operand = rng.randint(1, CHAIN_MAX)
        if rng.random() < 0.5 and operand <= value:
            value -= operand
            text += f"-{operand}"
        else:
            value += operand
            text += f"+{operand}"
    phrasing = rng.choice(["{e}", "{e}=", "What is {e}?"])
    return Problem("chain", phrasing.format(e=text), str(value))


def _compare(rng: random.Random) -> Problem:
    digits = rng.randint(*OPERAND_DIGITS)
    a = _number(rng, digits)
    # Half the time the two numbers share a prefix, so the decision rests on a later digit.
    if digits > 1 and rng.random() < 0.5:
        keep = rng.randint(1, digits - 1)
        prefix = str(a)[:keep]
        b = int(prefix + "".join(str(rng.randint(0, 9)) for _ in range(digits - keep)))
    else:
        b = _number(rng, rng.randint(*OPERAND_DIGITS))
    if a == b:
        b += 1
    larger = rng.random() < 0.5
    word = "larger" if larger else "smaller"
    if rng.random() < 0.5:
        phrasing = "{W}: {a} or {b}?"
    else:
        phrasing = "Which is {w}, {a} or {b}?"
    answer = max(a, b) if larger else min(a, b)
    return Problem("compare", phrasing.format(w=word, W=word.capitalize(), a=a, b=b), str(answer))


def _count(rng: random.Random) -> Problem:
    target = rng.randint(0, 9)
    length = rng.randint(4, 9)
    digits = [target if rng.random() < 0.3 else rng.randint(0, 9) for _ in range(length)]
    sequence = " ".join(str(d) for d in digits)
    phrasing = rng.choice(["How many {t}s in {s}?", "Count the {t}s: {s}"])
    return Problem("count", phrasing.format(t=target, s=sequence), str(digits.count(target)))


_FILLER: tuple[tuple[str, str], ...] = (
    ("Hello!", "Hello! I am a tiny looped model. Ask me to add, subtract, compare or count."),
    ("Hi", "Hi! Give me a sum like 347 + 58 and I will work it out."),
    ("Who are you?", "I am Ouro Tiny Arith, a small looped language model trained for arithmetic."),
    ("What can you do?", "I can add and subtract numbers, follow short chains of operations, compare numbers and count digits."),
    ("Thanks!", "You are welcome!"),
    ("Thank you.", "Glad to help."),
    ("How are you?", "I am fine, thank you. Do you have a problem for me?"),
    ("Good morning", "Good morning! What shall we compute?"),
    ("Goodbye", "Goodbye!"),
    ("Can you help me with math?", "Yes. Ask me a question such as: What is 4821 - 397?"),
    ("Tell me a joke.", "I only know numbers: 7 ate 9."),
    ("What is your name?", "My name is Ouro Tiny Arith."),
)


def _filler(rng: random.Random) -> Problem:
    question, answer = rng.choice(_FILLER)
    return Problem("filler", question, answer)


_MAKERS = {"add": _add, "sub": _sub, "chain": _chain, "compare": _compare, "count": _count, "filler": _filler}


def make_problem(rng: random.Random, task: str) -> Problem:
    return _MAKERS[task](rng)


def held_out_problems(n: int, seed: int = HELD_OUT_SEED) -> list[Problem]:
    """n scored problems, the tasks in turn, from the held-out seed (deterministic, no duplicates)."""
    rng = random.Random(seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    while len(problems) < n:
        problem = make_problem(rng, SCORED_TASKS[len(problems) % len(SCORED_TASKS)])
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems


def training_stream(seed: int = TRAIN_SEED) -> Iterator[Problem]:
    """An endless stream of training conversations in TRAIN_MIX proportions, none of them held out."""
    held_out = {p.question for p in held_out_problems(HELD_OUT_SIZE)}
    rng = random.Random(seed)
    tasks, weights = list(TRAIN_MIX), list(TRAIN_MIX.values())
    while True:
        problem = make_problem(rng, rng.choices(tasks, weights)[0])
        if problem.question not in held_out:
            yield problem


_TEMPLATE = Template(chat_template(thinking=False))


def render_prompt(question: str) -> str:
    """The ChatML prompt a chat user sends: the user turn, then the assistant header."""
    return _TEMPLATE.render(messages=[{"role": "user", "content": question}], add_generation_prompt=True)
