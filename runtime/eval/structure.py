"""Splitting normalised answers into parts: tuples, intervals, sets, lists, unions, equations,
matrices. Pure string work with bracket-depth tracking, so commas inside `\\frac{1,000}{3}` or
`f(1,2)` are not separators.
"""
from __future__ import annotations

from dataclasses import dataclass

_OPEN = "([{"
_CLOSE = ")]}"
_MATRIX_BEGIN = "\\begin{pmatrix}"
_MATRIX_END = "\\end{pmatrix}"


@dataclass(frozen=True, slots=True)
class AnswerList:
    """A bracketed or bare comma-separated answer."""

    brackets: str  # opening + closing char, e.g. "[)" for a half-open interval; "" when bare
    items: list[str]

    @property
    def ordered(self) -> bool:
        """Tuples and intervals are ordered; sets `{..}` and bare lists ("2, -3") are not."""
        return self.brackets not in ("", "{}")


def split_top_level(s: str, separator: str) -> list[str]:
    """Split on `separator` where no bracket is open."""
    parts: list[str] = []
    depth, start, i = 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(separator, i):
            parts.append(s[start:i])
            start = i + len(separator)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _wrapped(s: str) -> bool:
    """Whether the first char's bracket closes at the last char (`(1,2)` yes, `(1)+(2)` no)."""
    if len(s) < 2 or s[0] not in _OPEN or s[-1] not in _CLOSE:
        return False
    depth = 0
    for i, ch in enumerate(s):
        depth += (ch in _OPEN) - (ch in _CLOSE)
        if depth == 0:
            return i == len(s) - 1
    return False


def split_sequence(s: str) -> AnswerList | None:
    """`(1,2)`, `[0,1)`, `{1,2}`, `1,2`; None when there is no top-level comma."""
    if _wrapped(s):
        items = split_top_level(s[1:-1], ",")
        return AnswerList(s[0] + s[-1], items) if len(items) > 1 else None
    items = split_top_level(s, ",")
    return AnswerList("", items) if len(items) > 1 else None


def split_union(s: str) -> list[str]:
    """`(-\\infty,1)\\cup(2,\\infty)` -> its two intervals; a one-item list if no union."""
    return split_top_level(s, "\\cup")


def split_equation(s: str) -> tuple[str, str] | None:
    """(lhs, rhs) when there is exactly one top-level `=`, else None."""
    sides = split_top_level(s, "=")
    return (sides[0], sides[1]) if len(sides) == 2 and sides[0] and sides[1] else None


def matrix_cells(s: str) -> list[list[str]] | None:
    """Rows of cells of a `pmatrix` (after `normalize`, bmatrix/array are pmatrix too)."""
    if not (s.startswith(_MATRIX_BEGIN) and s.endswith(_MATRIX_END)):
        return None
    body = s[len(_MATRIX_BEGIN) : -len(_MATRIX_END)]
    rows = [row for row in body.split("\\\\") if row]
    return [row.split("&") for row in rows]
