"""`answers_equal`: are a predicted and a gold final answer the same mathematical object?

Reference: Qwen2.5-Math `evaluation/grader.py:math_equal`. Cheap checks run in-process (string,
exact/approximate number, structure); only what needs sympy goes to the worker pool
(`symbolic.py`) with a hard timeout. Decisions where the references disagree or are buggy:

- Brackets are significant (PRM800K): `[0,1)` != `[0,1]`, `(1,2)` != `[1,2]`. The reference
  strips and ignores brackets, so it marks wrong intervals right.
- Unbracketed lists ("2, -3") and sets (`\\{1,2\\}`) compare as multisets: MATH asks for "all
  solutions, separated by commas" in any order. Both references compare them in order.
- Exact numbers compare exactly: 123457 != 123456 (the reference's rel_tol 1e-4 calls them
  equal) and an unreduced fraction equals its reduced form (PRM800K refuses `\\frac{2}{4}`;
  the reference, which RSD's numbers come from, accepts it). `rel_tol` applies once either
  side is a decimal: 0.333 != 1/3 but 0.33333 == 1/3.
- Percent forms: "10\\%" equals "10" because `normalize` drops the sign. The reference's
  `include_percentage` (also accept gold*100 and gold/100) defaults off here: it marks 0.05
  right for a gold of 5, and GSM8K/MATH500 golds never need it. Pass True for parity runs.
- `2\\pi` equals 6.283185 (within rel_tol), as the reference's `N()` check allows.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from runtime.eval.latex_expr import FUNCTIONS, LatexConversionError, latex_to_python
from runtime.eval.normalize import normalize
from runtime.eval.structure import (
    matrix_cells,
    split_equation,
    split_sequence,
    split_union,
)
from runtime.eval.symbolic import SymbolicChecker, SymbolicJob, default_checker

# Exponents are capped at 3 digits: Fraction("1e99999999") would build a 100-MB integer.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")
_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}")
_RELATIONS = re.compile(r"[<>]|\\(?:le|ge|ne|lt|gt|pm|mp|cap|in|subset)(?![A-Za-z])")
_WORD = re.compile(r"[A-Za-z]{4,}")
_PLAIN_FUNCTIONS = frozenset({*FUNCTIONS, "sqrt"})


@dataclass(frozen=True, slots=True)
class _Options:
    rel_tol: float
    timeout_s: float
    include_percentage: bool
    checker: SymbolicChecker | None


@dataclass(frozen=True, slots=True)
class _Number:
    value: Fraction
    exact: bool  # False once a decimal literal is involved: then rel_tol applies


def as_number(s: str) -> _Number | None:
    """A plain decimal or a `\\frac` of two decimals, else None."""
    if _DECIMAL.fullmatch(s):
        return _Number(Fraction(s), exact="." not in s)
    match = _FRACTION.fullmatch(s)
    if match is None or float(match.group(3)) == 0:
        return None
    value = Fraction(match.group(2)) / Fraction(match.group(3))
    exact = "." not in match.group(2) + match.group(3)
    return _Number(-value if match.group(1) else value, exact)


def _numbers_equal(pred: _Number, gold: _Number, opts: _Options) -> bool:
    golds = [gold.value]
    if opts.include_percentage:
        golds += [gold.value / 100, gold.value * 100]
    for target in golds:
        if pred.exact and gold.exact:
            if pred.value == target:
                return True
            continue
        try:
            if math.isclose(float(pred.value), float(target), rel_tol=opts.rel_tol):
                return True
        except OverflowError:
            continue
    return False


def _looks_like_prose(s: str) -> bool:
    """A run of 4+ letters that is not a command or a function name written without `\\`."""
    words = _WORD.findall(re.sub(r"\\[A-Za-z]+", " ", s))
    return any(word.lower() not in _PLAIN_FUNCTIONS for word in words)


def _symbolic_equal(pred: str, gold: str, opts: _Options, negation_ok: bool = False) -> bool:
    """Convert both to Python expressions and ask a sympy worker (hard timeout)."""
    if _RELATIONS.search(pred) or _RELATIONS.search(gold):
        return False
    if _looks_like_prose(pred) or _looks_like_prose(gold):
        return False  # "Monday" vs "Tuesday" is settled by string equality, not sympy
    try:
        job = SymbolicJob(latex_to_python(pred), latex_to_python(gold), negation_ok)
    except LatexConversionError:
        return False
    checker = opts.checker or default_checker()
    return checker.equal(job, rel_tol=opts.rel_tol, timeout_s=opts.timeout_s)


def _elements_equal(preds: list[str], golds: list[str], ordered: bool, opts: _Options) -> bool:
    if len(preds) != len(golds):
        return False
    if ordered:
        pairs = zip(preds, golds, strict=True)
        return all(_equal(normalize(p), normalize(g), opts) for p, g in pairs)
    remaining = [normalize(g) for g in golds]
    for pred in (normalize(p) for p in preds):
        match = next((i for i, g in enumerate(remaining) if _equal(pred, g, opts)), None)
        if match is None:
            return False
        remaining.pop(match)
    return True


def _structures_equal(pred: str, gold: str, opts: _Options) -> bool | None:
    """Matrices, tuples/intervals/sets/lists, unions, equations; None if neither is one."""
    pred_cells, gold_cells = matrix_cells(pred), matrix_cells(gold)
    if pred_cells is not None or gold_cells is not None:
        if pred_cells is None or gold_cells is None or len(pred_cells) != len(gold_cells):
            return False
        rows = zip(pred_cells, gold_cells, strict=True)
        return all(_elements_equal(p, g, True, opts) for p, g in rows)
    pred_seq, gold_seq = split_sequence(pred), split_sequence(gold)
    if pred_seq is not None or gold_seq is not None:
        if pred_seq is None or gold_seq is None or pred_seq.brackets != gold_seq.brackets:
            return False
        return _elements_equal(pred_seq.items, gold_seq.items, pred_seq.ordered, opts)
    pred_union, gold_union = split_union(pred), split_union(gold)
    if len(pred_union) > 1 or len(gold_union) > 1:
        return _elements_equal(pred_union, gold_union, True, opts)
    pred_eq, gold_eq = split_equation(pred), split_equation(gold)
    if pred_eq is not None or gold_eq is not None:
        if pred_eq is None or gold_eq is None:
            return False
        pred_diff, gold_diff = (f"{{{lhs}}}-{{{rhs}}}" for lhs, rhs in (pred_eq, gold_eq))
        return _symbolic_equal(pred_diff, gold_diff, opts, negation_ok=True)
    return None


def _equal(pred: str, gold: str, opts: _Options) -> bool:
    """Both already normalised."""
    if not pred or not gold:
        return False
    if pred.lower() == gold.lower():
        return True
    pred_number, gold_number = as_number(pred), as_number(gold)
    if pred_number is not None and gold_number is not None:
        return _numbers_equal(pred_number, gold_number, opts)
    structural = _structures_equal(pred, gold, opts)
    if structural is not None:
        return structural
    return _symbolic_equal(pred, gold, opts)


def answers_equal(
    pred: str | None,
    gold: str | None,
    *,
    rel_tol: float = 1e-4,
    timeout_s: float = 3.0,
    include_percentage: bool = False,
    checker: SymbolicChecker | None = None,
) -> bool:
    """Whether `pred` and `gold` (raw answer strings, e.g. boxed contents) are equivalent.

    `timeout_s` bounds each sympy comparison (a timeout counts as not equal); `checker` is the
    worker pool to use (default: a process-wide one, started on first symbolic comparison).
    """
    if pred is None or gold is None:
        return False
    opts = _Options(rel_tol, timeout_s, include_percentage, checker)
    pred_norm, gold_norm = normalize(pred), normalize(gold)
    pred_is_eq, gold_is_eq = split_equation(pred_norm), split_equation(gold_norm)
    if (pred_is_eq is None) != (gold_is_eq is None):
        # "x+y=1" vs "x = 1-y": compare equations, not "x+y=1" with the stripped "1-y".
        pred_norm = normalize(pred, keep_equation=True)
        gold_norm = normalize(gold, keep_equation=True)
    return _equal(pred_norm, gold_norm, opts)
