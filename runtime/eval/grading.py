"""Grading a completion against a problem: extract with the problem's strategy, then compare.

The extraction chain comes from `problem.kind` (see `extract.STRATEGIES`):
GSM8K: boxed, `####`, "answer is", last number. MATH: boxed, "answer is".
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.eval.answers import answers_equal
from runtime.eval.datasets import Problem
from runtime.eval.extract import extract_answer
from runtime.eval.symbolic import SymbolicChecker


@dataclass(frozen=True, slots=True)
class Grade:
    """The verdict on one completion, with what was extracted (for error analysis)."""

    problem_id: str
    correct: bool
    predicted: str | None  # raw extracted answer; None when nothing could be extracted
    gold: str


def grade_detail(
    problem: Problem,
    completion: str,
    *,
    rel_tol: float = 1e-4,
    timeout_s: float = 3.0,
    include_percentage: bool = False,
    checker: SymbolicChecker | None = None,
) -> Grade:
    """Extract the final answer of `completion` and compare it with the gold answer."""
    predicted = extract_answer(completion, problem.kind)
    correct = predicted is not None and answers_equal(
        predicted, problem.answer, rel_tol=rel_tol, timeout_s=timeout_s,
        include_percentage=include_percentage, checker=checker,
    )
    return Grade(problem.id, correct, predicted, problem.answer)


def grade(
    problem: Problem,
    completion: str,
    *,
    rel_tol: float = 1e-4,
    timeout_s: float = 3.0,
    include_percentage: bool = False,
    checker: SymbolicChecker | None = None,
) -> bool:
    """Whether `completion` answers `problem` correctly."""
    return grade_detail(
        problem, completion, rel_tol=rel_tol, timeout_s=timeout_s,
        include_percentage=include_percentage, checker=checker,
    ).correct
