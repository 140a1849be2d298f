"""Property test of the core's StopScanner (hypothesis): a stop string split at random points over
several steps is found at its first occurrence, the output cut right after it, and never
earlier. The expectation is computed by plain `str.find` on the whole output, not by the scanner.
Against the old tail rule (`window[len(window) - keep:]`, wrong while keep/2 < len(window) < keep)
it fails on e.g. '..abc' | 'def' | 'gh' for the stop 'abcdefgh'."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.stopping import StopScanner

ALPHABET = "abcdefgh.\n "


def decode(ids: tuple[int, ...] | list[int]) -> str:  # one character per id
    return "".join(ALPHABET[i] for i in ids)


def encode(text: str) -> tuple[int, ...]:
    return tuple(ALPHABET.index(c) for c in text)


def run(scanner: StopScanner, steps: list[str]) -> tuple[str, bool]:
    """The output the scanner lets through, and whether it stopped."""
    out = ""
    for step in steps:
        hit = scanner.scan(step, encode(step), decode, len(out), 0)
        if hit is not None:
            text, count = hit
            assert decode(encode(step)[:count]) == text  # the kept tokens cover exactly the kept text
            return out + text, True
        out += step
    return out, False


def test_the_issue_example_three_steps() -> None:
    assert run(StopScanner(("abcdefgh",)), ["..abc", "def", "gh"]) == ("..abcdefgh", True)


@settings(max_examples=400, deadline=None)
@given(stop=st.text(ALPHABET, min_size=1, max_size=9), before=st.text(ALPHABET, max_size=12),
       after=st.text(ALPHABET, max_size=6), cuts=st.lists(st.integers(0, 40), max_size=6),
       other=st.text(ALPHABET, min_size=1, max_size=4))
def test_a_stop_split_over_steps_at_random_points(stop: str, before: str, after: str, cuts: list[int],
                                                  other: str) -> None:
    text = before + stop + after
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    steps = [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    stops = (stop, other)
    first = min(i + len(s) for s in stops if (i := text.find(s)) >= 0)  # where the output must end
    assert run(StopScanner(stops), steps) == (text[:first], True)


@settings(max_examples=200, deadline=None)
@given(stop=st.text("ab", min_size=2, max_size=6), text=st.text("abc", max_size=30),
       cuts=st.lists(st.integers(0, 30), max_size=8))
def test_no_stop_is_reported_where_there_is_none(stop: str, text: str, cuts: list[int]) -> None:
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    steps = [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    found = text.find(stop)
    want = (text, False) if found < 0 else (text[:found + len(stop)], True)
    assert run(StopScanner((stop,)), steps) == want
