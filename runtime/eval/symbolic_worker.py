"""The sympy side of answer comparison. Runs in a worker process (`python -m` this module).

Protocol: one JSON request per stdin line, `[a, b, rel_tol, negation_ok]` with `a`/`b` Python
expressions from `latex_expr.latex_to_python`; one JSON reply per stdout line, `true`/`false`.
The first line written is `"ready"`, after sympy has been imported, so that the parent's
timeout measures the comparison and not the import.

Equality rules (the reference's `symbolic_equal`, made stricter where it is wrong):
- Constants (no free symbols): when either side holds a decimal literal, the values must agree
  to `rel_tol` (so `2\\pi` equals 6.283185, as the reference's `N()` check allows: a model that
  writes 6 significant digits of 2pi found the answer). When both are exact, they must agree to
  40 digits: the reference's 1e-4 would call 355/113 equal to pi.
- With free symbols: `expand(a-b) == 0`, then `simplify(a-b) == 0`, then `a.equals(b)`.
"""
from __future__ import annotations

import cmath
import json
import re
import sys
from typing import Any

# This module is the worker's: sympy is imported here, before "ready" is sent, so that the
# parent's timeouts exclude the import. Nothing outside the worker (and tests) imports it.
import sympy  # type: ignore[import-untyped]
from sympy.parsing.sympy_parser import (  # type: ignore[import-untyped]
    parse_expr,
    standard_transformations,
)

from runtime.eval.latex_expr import GREEK, RESERVED

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOL_NAME = re.compile(r"[A-Za-z](?:_[A-Za-z0-9]+)?_?")
_EXACT_DIGITS = 40


def _namespace(text: str) -> dict[str, Any] | None:
    """sympy objects for each identifier in `text`, or None if one is not whitelisted."""
    names: dict[str, Any] = {}
    for name in set(_IDENTIFIER.findall(text)):
        if name in RESERVED:
            names[name] = getattr(sympy, name)
        elif _SYMBOL_NAME.fullmatch(name) or name in GREEK:
            names[name] = sympy.Symbol(name)
        else:
            return None
    return names


def parse(text: str) -> Any:
    """sympy expression for whitelisted Python text; None when it cannot be parsed."""
    local = _namespace(text)
    if local is None:
        return None
    builtins_free = {
        "__builtins__": {},
        "Integer": sympy.Integer,
        "Float": sympy.Float,
        "Rational": sympy.Rational,
        "Symbol": sympy.Symbol,
        "factorial": sympy.factorial,
    }
    try:
        expr = parse_expr(text, local_dict=local, global_dict=builtins_free,
                          transformations=standard_transformations)
    except (SyntaxError, TypeError, ValueError, ZeroDivisionError, AttributeError):
        return None
    return expr if isinstance(expr, sympy.Basic) else None


def _constants_equal(a: Any, b: Any, rel_tol: float) -> bool:
    inexact = bool(a.atoms(sympy.Float) or b.atoms(sympy.Float))
    digits = 15 if inexact else _EXACT_DIGITS + 10
    try:
        va, vb = complex(sympy.N(a, digits)), complex(sympy.N(b, digits))
    except (TypeError, ValueError, OverflowError):
        return False
    if inexact:
        return cmath.isclose(va, vb, rel_tol=rel_tol)
    diff = sympy.N(a - b, digits)
    scale = max(abs(va), abs(vb), 1.0)
    return bool(abs(complex(diff)) <= scale * 10.0**-_EXACT_DIGITS)


def _symbolic_equal(a: Any, b: Any) -> bool:
    diff = a - b
    if sympy.expand(diff) == 0 or sympy.simplify(diff) == 0:
        return True
    return a.equals(b) is True


def exprs_equal(a_text: str, b_text: str, rel_tol: float, negation_ok: bool = False) -> bool:
    """Whether two whitelisted Python expressions are equal (or opposite, if `negation_ok`)."""
    a, b = parse(a_text), parse(b_text)
    if a is None or b is None:
        return False
    candidates = (b, -b) if negation_ok else (b,)
    for target in candidates:
        if a == target:
            return True
        if a.free_symbols or target.free_symbols:
            if _symbolic_equal(a, target):
                return True
        elif _constants_equal(a, target, rel_tol):
            return True
    return False


def _serve(lines: Any, out: Any) -> None:
    out.write('"ready"\n')
    out.flush()
    for line in lines:
        a_text, b_text, rel_tol, negation_ok = json.loads(line)
        try:
            result = exprs_equal(a_text, b_text, float(rel_tol), bool(negation_ok))
        except Exception:  # noqa: BLE001 - any sympy failure means "not shown equal"
            result = False
        out.write("true\n" if result else "false\n")
        out.flush()


def main() -> None:
    """Serve comparisons until stdin closes."""
    _serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
