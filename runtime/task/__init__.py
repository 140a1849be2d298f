"""Synthetic multi-step arithmetic task with exactly verifiable steps (pure Python, no torch).

Used to train and check the embedded default models (draft, target, PRM) and as the CPU test task.
A problem is a left-to-right arithmetic chain; its solution is one operation per step, steps
separated by "\\n\\n", and the last step states the final answer as ``\\boxed{N}``.
"""
from runtime.task.problems import (
    PROMPT_TEMPLATE,
    STEP_SEPARATOR,
    Problem,
    format_prompt,
    generate_problems,
    heldout_problems,
    parse_question,
    problem_from_question,
    split_of,
)
from runtime.task.verify import check_step, extract_boxed, grade, perturb_step, split_steps

__all__ = [
    "PROMPT_TEMPLATE",
    "STEP_SEPARATOR",
    "Problem",
    "check_step",
    "extract_boxed",
    "format_prompt",
    "generate_problems",
    "heldout_problems",
    "grade",
    "parse_question",
    "perturb_step",
    "problem_from_question",
    "split_of",
    "split_steps",
]
