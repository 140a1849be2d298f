"""Evaluation harness pieces that need no torch: answer extraction, equivalence, datasets, grading.

Behaviour follows the Qwen2.5-Math evaluation harness (`parser.py`, `grader.py`), which RSD's
published numbers come from, with its known bugs fixed (the PRM800K grader decides where they
disagree on intervals). Each module's docstring lists its deliberate deviations.
"""
from runtime.eval.answers import answers_equal
from runtime.eval.datasets import AnswerKind, Problem, resolve_dataset
from runtime.eval.extract import extract_answer, last_boxed
from runtime.eval.grading import Grade, grade, grade_detail
from runtime.eval.normalize import normalize

__all__ = [
    "AnswerKind",
    "Grade",
    "Problem",
    "answers_equal",
    "extract_answer",
    "grade",
    "grade_detail",
    "last_boxed",
    "normalize",
    "resolve_dataset",
]
