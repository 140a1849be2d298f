"""Exact step verifier, final-answer grader and step perturbations for the arithmetic task.

``check_step`` is the ground truth for PRM training labels and for measuring PRM AUROC: a step is
correct iff the solution so far (previous steps plus this one) is a prefix of the gold solution.
Once a step is wrong every later step is wrong too (the Math-Shepherd / PRM800K convention), because
a solution that went wrong cannot reach the gold answer by gold steps.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from runtime.core.boxed import last_boxed
from runtime.task.problems import (
    STEP_SEPARATOR,
    Problem,
    apply_op,
    final_step,
    parse_question,
    problem_from_question,
)

_OPS = "+-"


def _normalise(step: str) -> str:
    """Whitespace-insensitive form, so trailing separators and spacing never decide correctness."""
    return "".join(step.split())


def _as_problem(problem: Problem | str) -> Problem:
    return problem if isinstance(problem, Problem) else problem_from_question(problem)


def split_steps(completion: str) -> list[str]:
    """Steps of a completion text, split at the step separator, separators dropped."""
    steps = completion.split(STEP_SEPARATOR)
    if steps and steps[-1] == "":
        steps.pop()
    return steps


def check_step(question: Problem | str, previous_steps: Sequence[str], step: str) -> bool:
    """True iff ``previous_steps + [step]`` matches the gold solution's first steps exactly."""
    gold = _as_problem(question).steps
    index = len(previous_steps)
    if index >= len(gold):
        return False
    candidate = [*previous_steps, step]
    return all(_normalise(got) == _normalise(want) for got, want in zip(candidate, gold))


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (braces matched, stripped), or None: the eval extractor."""
    return last_boxed(text)


def grade(question: Problem | str, completion: str) -> bool:
    """True iff the last boxed value in the completion equals the gold answer (as an integer)."""
    boxed = extract_boxed(completion)
    if boxed is None:
        return False
    try:
        return int(boxed.strip()) == int(_as_problem(question).answer)
    except ValueError:
        return False


def _change_number(value: int, rng: random.Random) -> int:
    """A nearby wrong value: off by a little, or one digit changed (typical small-model slips)."""
    if rng.random() < 0.5:
        new = value + rng.choice([-1, 1]) * rng.randint(1, 10)
    else:
        digits = list(str(value))
        pos = rng.randrange(len(digits))
        digits[pos] = rng.choice([d for d in "0123456789" if d != digits[pos]])
        new = int("".join(digits))
    new = abs(new)
    return new if new != value else value + 1


def perturb_step(problem: Problem, index: int, rng: random.Random) -> str:
    """A wrong version of gold step ``index``, never the gold text.

    The kinds mimic a small model's slips: a wrong result, a wrong copy of the running value or of
    the operand, the wrong operator, or the operation of a neighbouring step of the question.
    """
    gold = problem.steps[index]
    if index == len(problem.steps) - 1:
        return final_step(_change_number(int(problem.answer), rng))
    left, result = gold.split("=")
    op = next(ch for ch in left[1:] if ch in _OPS)
    value, operand = (int(x) for x in left.split(op, 1))
    _, ops = parse_question(problem.question)
    kind = rng.choices(["result", "left", "operand", "op", "neighbour"], weights=[4, 1, 2, 1, 2])[0]
    if kind == "neighbour" and len(ops) > 1:
        op, operand = ops[rng.choice([i for i in range(len(ops)) if i != index])]
        wrong = f"{value}{op}{operand}={apply_op(value, op, operand)}"
    elif kind == "op":
        op = rng.choice([o for o in _OPS if o != op])
        wrong = f"{value}{op}{operand}={apply_op(value, op, operand)}"
    else:
        numbers = {"left": value, "operand": operand, "result": int(result)}
        numbers[kind] = _change_number(numbers[kind], rng)
        wrong = f"{numbers['left']}{op}{numbers['operand']}={numbers['result']}"
    return wrong if wrong != gold else f"{value}{op}{operand}={int(result) + 1}"
