"""The generated ChatML conversations the embedded model is trained and evaluated on.

Most turns are small problems whose answer is one exact string (a number), chosen so that getting them
right needs several sequential steps: the answer is written most significant digit first, so each digit
of a sum depends on the carry chain of all the digits below it, and a chain of operations is a running
value updated once per operation. Off-task messages (greetings, questions about the model, requests it
cannot serve) get one short sentence saying what the model can do, so a chat never answers "hello" with
a number. A conversation has one to three user turns, each answered, the way `ouro chat` sends a
conversation: earlier turns and their answers stay in the history.

Held-out problems come from a different seed, and the training stream skips any question that is in the
held-out set, so evaluation never sees a training question. The off-task messages used for evaluation
(`OFF_TASK_PROBES`) are written apart from the training generator's templates.
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
HELD_OUT_SIZE = 4000

# Share of each kind of turn in training. Addition and subtraction with carries and the chains are the
# ones that need depth, but they are also learnt first; counting (a tally over up to nine positions) and
# comparison (the first differing digit) were the last to converge at equal shares, so they get more.
TRAIN_MIX: dict[str, float] = {
    "add": 0.20,
    "sub": 0.15,
    "chain": 0.22,
    "compare": 0.15,
    "count": 0.18,
    "off_task": 0.10,
}
SCORED_TASKS: tuple[str, ...] = ("add", "sub", "chain", "compare", "count")
OPERAND_DIGITS: tuple[int, int] = (1, 3)  # addition, subtraction and comparison operands
CHAIN_OPERANDS: tuple[int, int] = (3, 4)  # numbers in a chain of operations
CHAIN_MAX: int = 9  # largest operand in a chain
TURNS: tuple[int, int] = (1, 3)  # user turns in a training conversation

# What the model says to anything that is not a problem: one sentence, never a number.
CAPABILITIES = "I can add, subtract, compare and count numbers."
GREETING_REPLY = "Hello, I can add, subtract, compare and count numbers."
IDENTITY_REPLY = "I am Ouro Tiny, a small looped model that can add, subtract, compare and count numbers."
THANKS_REPLY = "You are welcome; ask me to add, subtract, compare or count numbers."
OFF_TASK_REPLIES = (CAPABILITIES, GREETING_REPLY, IDENTITY_REPLY, THANKS_REPLY)


@dataclass(frozen=True)
class Problem:
    task: str
    question: str
    answer: str


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def _operands(rng: random.Random) -> tuple[int, int]:
    return _number(rng, rng.randint(*OPERAND_DIGITS)), _number(rng, rng.randint(*OPERAND_DIGITS))


def _add(rng: random.Random) -> Problem:
    a, b = _operands(rng)
    phrasing = rng.choice(["{a}+{b}", "{a} + {b}", "{a}+{b}=", "What is {a}+{b}?", "What is {a} + {b}?",
                           "{a} plus {b}?"])
    return Problem("add", phrasing.format(a=a, b=b), str(a + b))


def _sub(rng: random.Random) -> Problem:
    a, b = _operands(rng)
    a, b = max(a, b), min(a, b)
    phrasing = rng.choice(["{a}-{b}", "{a} - {b}", "{a}-{b}=", "What is {a}-{b}?", "What is {a} - {b}?",
                           "{a} minus {b}?"])
    return Problem("sub", phrasing.format(a=a, b=b), str(a - b))


def _chain(rng: random.Random) -> Problem:
    """Three or four small operands joined by + and -, never going below zero."""
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
    phrasing = rng.choice(["{W}: {a} or {b}?", "Which is {w}, {a} or {b}?", "Which is {w}: {a} or {b}?"])
    answer = max(a, b) if larger else min(a, b)
    return Problem("compare", phrasing.format(w=word, W=word.capitalize(), a=a, b=b), str(answer))


def _count(rng: random.Random) -> Problem:
    target = rng.randint(0, 9)
    length = rng.randint(4, 9)
    digits = [target if rng.random() < 0.3 else rng.randint(0, 9) for _ in range(length)]
    sequence = " ".join(str(d) for d in digits)
    phrasing = rng.choice(["How many {t}s in {s}?", "How many {t}s are in {s}?", "Count the {t}s: {s}"])
    return Problem("count", phrasing.format(t=target, s=sequence), str(digits.count(target)))


# The off-task generator: templates with slots, so that the model learns "no digits to work on -> say
# what I can do" rather than a list of memorised lines.
_GREETINGS = ("hello", "hi", "hey", "good morning", "good evening", "hi there", "hello there", "greetings",
              "yo", "hey there", "good afternoon", "howdy")
_SUBJECTS = ("cats", "the sea", "a dragon", "my day", "space", "music", "a robot", "the weather", "love",
             "pizza", "history", "trees", "the moon", "football", "coffee", "a king", "winter", "birds")
_REQUESTS = ("tell me a joke", "write a poem about {s}", "tell me a story about {s}", "what do you think of {s}",
             "can you explain {s}", "say something about {s}", "sing a song", "translate this to French",
             "write some code", "what is the capital of France", "what is the meaning of life",
             "what time is it", "recommend a book", "give me advice about {s}", "do you like {s}",
             "describe {s}", "why is the sky blue", "help me with my homework", "what should I eat",
             "explain quantum physics", "tell me about {s}", "write an essay on {s}", "summarize this text")
_IDENTITY = ("who are you", "what are you", "what is your name", "what can you do", "what do you do",
             "are you a robot", "introduce yourself", "who made you", "are you smart", "can you help me",
             "how do you work", "what are you good at")
_THANKS = ("thanks", "thank you", "thanks a lot", "great, thanks", "thank you very much", "cheers", "nice, thanks")
_WORDS = ("apple", "river", "blue", "quick", "table", "happy", "window", "green", "music", "stone", "light",
          "garden", "yellow", "paper", "cloud", "friend", "city", "dream", "orange", "bridge", "summer")


def _styled(rng: random.Random, text: str) -> str:
    """Random capitalisation and closing punctuation, as people type."""
    if rng.random() < 0.6:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.2:
        text = text.lower()
    return text + rng.choice(["", "", ".", "!", "?", "?"])


def _off_task(rng: random.Random) -> Problem:
    kind = rng.choices(["greeting", "request", "identity", "thanks", "words"], [3, 5, 3, 1, 2])[0]
    if kind == "greeting":
        return Problem("off_task", _styled(rng, rng.choice(_GREETINGS)), GREETING_REPLY)
    if kind == "identity":
        return Problem("off_task", _styled(rng, rng.choice(_IDENTITY)), IDENTITY_REPLY)
    if kind == "thanks":
        return Problem("off_task", _styled(rng, rng.choice(_THANKS)), THANKS_REPLY)
    if kind == "request":
        text = rng.choice(_REQUESTS).format(s=rng.choice(_SUBJECTS))
        if rng.random() < 0.3:
            text = rng.choice(_GREETINGS) + ", " + text
        return Problem("off_task", _styled(rng, text), CAPABILITIES)
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 5)))
    return Problem("off_task", _styled(rng, words), CAPABILITIES)


# Evaluation only: off-task messages a user might send, none of them produced by the templates above.
OFF_TASK_PROBES: tuple[str, ...] = (
    "hello", "Hello, who are you?", "hi!", "who are you?", "tell me a joke", "Tell me a joke about numbers.",
    "What's the weather like today?", "Can you write me a haiku?", "What is love?", "Good night!",
    "Are you ChatGPT?", "How old are you?", "What languages do you speak?", "Please summarize the news.",
    "I feel sad today.", "Let's play a game.", "What is the best programming language?",
    "Do you dream?", "Write a letter to my boss.", "Where do you live?", "What is Ouro?",
    "Help!", "Can you draw a cat?", "What's up?", "Nice to meet you.",
)

_MAKERS = {"add": _add, "sub": _sub, "chain": _chain, "compare": _compare, "count": _count, "off_task": _off_task}


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


def history_turns(problem_index: int, seed: int = HELD_OUT_SEED + 1) -> list[Problem]:
    """The two earlier turns (with their answers) that precede held-out problem i in the conversation
    test: drawn from their own seed, different tasks than each other, never the problem itself."""
    rng = random.Random(seed * 100003 + problem_index)
    tasks = rng.sample(SCORED_TASKS, 2)
    return [make_problem(rng, task) for task in tasks]


def training_stream(seed: int = TRAIN_SEED) -> Iterator[list[Problem]]:
    """An endless stream of training conversations (lists of 1-3 turns) in TRAIN_MIX proportions, no
    turn of them held out."""
    held_out = {p.question for p in held_out_problems(HELD_OUT_SIZE)}
    rng = random.Random(seed)
    tasks, weights = list(TRAIN_MIX), list(TRAIN_MIX.values())
    while True:
        turns: list[Problem] = []
        for _ in range(rng.randint(*TURNS)):
            problem = make_problem(rng, rng.choices(tasks, weights)[0])
            while problem.question in held_out:
                problem = make_problem(rng, problem.task)
            turns.append(problem)
        yield turns


_TEMPLATE = Template(chat_template(thinking=False))


def messages(history: list[Problem], question: str) -> list[dict[str, str]]:
    """The chat messages `ouro chat` sends: earlier turns with their answers, then the new question."""
    out: list[dict[str, str]] = []
    for turn in history:
        out += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.answer}]
    return out + [{"role": "user", "content": question}]


def render_prompt(question: str, history: list[Problem] | None = None) -> str:
    """The ChatML prompt a chat user sends: the conversation so far, then the assistant header."""
    return _TEMPLATE.render(messages=messages(history or [], question), add_generation_prompt=True)
