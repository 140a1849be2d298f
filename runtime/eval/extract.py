"""Final-answer extraction from model completions, with an explicit strategy per dataset kind.

Reference: Qwen2.5-Math `evaluation/parser.py:extract_answer` (boxed, then "he answer is", then
"final answer is", then the last number). Deliberate deviations, each a bug in the reference:

- The reference splits on the substring "boxed" anywhere (so `\\boxedsymbol` or prose counts) and,
  for an unclosed `\\boxed{`, returns the truncated content. Here only the commands `\\boxed` and
  `\\fbox` count, and the last *complete* one wins: a completion cut off inside a final
  restatement keeps the earlier complete answer.
- `\\boxed 5` (no braces): the reference takes everything up to the next `$`, which swallows the
  rest of the text when there is no `$`. Here it takes the next whitespace-delimited token.
- The last-number fallback removes *all* commas in the reference, turning "(1, 2)" into "12".
  Here only well-formed thousands separators ("1,234") are removed.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Callable
from types import MappingProxyType

from runtime.core.boxed import TRAILING_PUNCT, last_boxed

_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"answer is\s*:?\s*", re.IGNORECASE)
# A number, allowing thousands separators only in well-formed groups of three.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


class AnswerKind(str, enum.Enum):  # not StrEnum: Triton 24.10's Python is 3.10
    """How a dataset's answers are written, which picks the extraction chain.

    GSM8K: integer answers; try boxed, then `#### N`, then "answer is", then the last number.
    MATH: LaTeX answers; try boxed, then "answer is". No last-number fallback: a stray number
    from the working is not a LaTeX answer, and guessing one inflates accuracy.
    """

    GSM8K = "gsm8k"
    MATH = "math"


def after_hashes(text: str) -> str | None:
    """GSM8K's `#### N` answer line (the last one), without trailing punctuation."""
    found = _HASHES.findall(text)
    if not found:
        return None
    answer = found[-1].strip().rstrip(TRAILING_PUNCT).strip()
    return answer or None


def _answer_is_span(text: str) -> str | None:
    """Text after the last "answer is": a `$...$` span if one starts there, else the line."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    math = re.match(r"\$+([^$]+)\$+", rest)
    span = math.group(1) if math else rest.split("\n", 1)[0]
    span = span.strip().rstrip(TRAILING_PUNCT).strip()
    return span or None


def after_answer_is_math(text: str) -> str | None:
    """ "The answer is X" / "final answer is $X$" (Minerva style) for LaTeX answers."""
    return _answer_is_span(text)


def after_answer_is_number(text: str) -> str | None:
    """ "The answer is 18 dollars." -> "18": the first number after the last "answer is"."""
    span = _answer_is_span(text)
    if span is None:
        return None
    number = _NUMBER.search(span)
    return number.group(0) if number else span


def last_number(text: str) -> str | None:
    """The last number in the text, thousands separators kept for `normalize` to remove."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


Extractor = Callable[[str], "str | None"]

STRATEGIES: MappingProxyType[AnswerKind, tuple[Extractor, ...]] = MappingProxyType(
    {
        AnswerKind.GSM8K: (last_boxed, after_hashes, after_answer_is_number, last_number),
        AnswerKind.MATH: (last_boxed, after_answer_is_math),
    }
)


def extract_answer(text: str, kind: AnswerKind | str) -> str | None:
    """The raw (un-normalised) final answer of a completion, or None when no extractor matches.

    The first extractor of the kind's chain (see `STRATEGIES`) that finds something wins.
    """
    for extractor in STRATEGIES[AnswerKind(kind)]:
        answer = extractor(text)
        if answer is not None:
            return answer
    return None
