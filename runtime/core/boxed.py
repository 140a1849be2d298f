"""The one boxed-answer matcher: `\boxed{...}` / `\fbox{...}` / `\boxed N`, braces matched.

Used by the step loop (stop at a complete boxed answer), by the task's step checker and by the
graders, so "has an answer" and "the answer" can never disagree.
"""
from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
TRAILING_PUNCT = ".,;:!?"


def _match_braces(text: str, open_pos: int) -> int | None:
    """Index of the `}` closing the `{` at `open_pos`, or None when the text ends first."""
    depth = 0
    for i in range(open_pos, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _boxed_content(text: str, end_of_command: int) -> str | None:
    """Content of one `\\boxed` whose command name ends at `end_of_command`; None if unusable."""
    rest = text[end_of_command:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        open_pos = len(text) - len(stripped)
        close = _match_braces(text, open_pos)
        return None if close is None else text[open_pos + 1 : close].strip()
    if stripped == rest:  # `\boxedfoo` is another command, `\boxed` needs a space or a brace
        return None
    token = re.match(r"[^\s$]+", stripped)
    return token.group(0).rstrip(TRAILING_PUNCT) if token else None


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` / `\\fbox{...}` / `\\boxed N`, braces matched."""
    for match in reversed(list(_BOXED.finditer(text))):
        content = _boxed_content(text, match.end())
        if content is not None:
            return content
    return None


def has_boxed(text: str) -> bool:
    """True if `text` holds a complete boxed answer."""
    return last_boxed(text) is not None
