"""Seeded generator of left-to-right arithmetic chains and their gold step-by-step solutions.

Each step adds or subtracts a one-digit number (every intermediate value stays in 0..MAX_VALUE), so
a tiny model can learn one step well; a problem needs several steps in a row, so a model that is right
on 90% of the steps is wrong on a good share of the problems. That gap is what RSD exploits.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

STEP_SEPARATOR = "\n\n"
# One prefix for generators and PRM: the value-head PRM reads [bos] + question + "\n" + steps, so
# a generator prompt of question + "\n" makes the PRM input the generator's own text.
PROMPT_TEMPLATE = "{question}\n"
MAX_VALUE = 99
MAX_OPERAND = 9
MIN_OPS, MAX_OPS = 3, 5
SPLITS = ("train", "test")
TEST_BUCKETS = 1  # out of 10 hash buckets: about 10% of all questions belong to the test split

_TERM = re.compile(r"([+\-*])(\d+)")
_QUESTION = re.compile(r"What is (\d+)((?:[+\-*]\d+)+)\?")


@dataclass(frozen=True, slots=True)
class Problem:
    """One question with its gold answer and gold solution steps (without separators)."""

    question: str
    answer: str
    steps: tuple[str, ...]

    @property
    def id(self) -> str:
        """A stable id (hash of the question), the same wherever the problem is generated."""
        return "embedded-" + hashlib.sha256(self.question.encode("utf-8")).hexdigest()[:10]

    @property
    def solution(self) -> str:
        """The gold completion text: steps joined by the step separator, no trailing separator."""
        return STEP_SEPARATOR.join(self.steps)

    @property
    def prompt(self) -> str:
        """The generator-model prompt: the question and a newline, the PRM's prefix too."""
        return format_prompt(self.question)


def format_prompt(question: str) -> str:
    """Fill PROMPT_TEMPLATE; a function so callers never format the template by hand."""
    return PROMPT_TEMPLATE.format(question=question)


def apply_op(value: int, op: str, operand: int) -> int:
    """One left-to-right operation."""
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    raise ValueError(f"unknown operator {op!r}")


def format_step(value: int, op: str, operand: int) -> str:
    """The gold text of one arithmetic step, e.g. ``47+8=55``."""
    return f"{value}{op}{operand}={apply_op(value, op, operand)}"


def final_step(answer: int) -> str:
    """The gold text of the last step; the evaluation harness extracts the last boxed value."""
    return f"\\boxed{{{answer}}}"


def parse_question(question: str) -> tuple[int, list[tuple[str, int]]]:
    """Start value and (operator, operand) list of a generated question; ValueError otherwise."""
    match = _QUESTION.fullmatch(question.strip())
    if match is None:
        raise ValueError(f"not a task question: {question!r}")
    ops = [(op, int(num)) for op, num in _TERM.findall(match.group(2))]
    return int(match.group(1)), ops


def problem_from_question(question: str) -> Problem:
    """Rebuild the gold solution from the question text alone (the question determines it)."""
    value, ops = parse_question(question)
    steps = []
    for op, operand in ops:
        steps.append(format_step(value, op, operand))
        value = apply_op(value, op, operand)
    steps.append(final_step(value))
    return Problem(question=question.strip(), answer=str(value), steps=tuple(steps))


def split_of(question: str) -> str:
    """Split by a stable hash of the question, so train and test can never share a question."""
    bucket = int(hashlib.sha256(question.encode("utf-8")).hexdigest()[:8], 16) % 10
    return "test" if bucket < TEST_BUCKETS else "train"


def _random_op(rng: random.Random, value: int) -> tuple[str, int]:
    """An addition or subtraction of 1..MAX_OPERAND that keeps the running value in 0..MAX_VALUE."""
    choices = [op for op, ok in (("+", value < MAX_VALUE), ("-", value > 0)) if ok]
    op = rng.choice(choices)
    room = MAX_VALUE - value if op == "+" else value
    return op, rng.randint(1, min(MAX_OPERAND, room))


def random_question(rng: random.Random) -> str:
    """One question drawn from the task distribution (either split)."""
    value = rng.randint(2, MAX_VALUE)
    text = [str(value)]
    for _ in range(rng.randint(MIN_OPS, MAX_OPS)):
        op, operand = _random_op(rng, value)
        text.append(f"{op}{operand}")
        value = apply_op(value, op, operand)
    return f"What is {''.join(text)}?"


def generate_problems(n: int, seed: int, split: str = "train", unique: bool = True) -> list[Problem]:
    """``n`` problems of one split, deterministic in (n, seed, split).

    Rejection-samples the shared distribution by question hash, so the splits are disjoint by
    construction and the test split is an unbiased sample of the same distribution.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"{seed}:{split}")
    seen: set[str] = set()
    problems: list[Problem] = []
    while len(problems) < n:
        question = random_question(rng)
        if split_of(question) != split or (unique and question in seen):
            continue
        seen.add(question)
        problems.append(problem_from_question(question))
    return problems


HELDOUT_SEED = 1234  # the evaluation seed (scripts/check_models.py uses the same problems)
HELDOUT_DEFAULT = 300


def heldout_problems(limit: int | None = None) -> list[Problem]:
    """Held-out evaluation problems: the first ``limit`` (default 300) of the test split.

    The models never train on the test split (split by question hash), and the list for a larger
    limit extends the list for a smaller one, so `rsd eval --limit N` results are comparable.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return generate_problems(limit or HELDOUT_DEFAULT, HELDOUT_SEED, "test")
