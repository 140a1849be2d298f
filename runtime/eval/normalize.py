"""Answer-string normalisation: a careful subset of Qwen2.5-Math's `parser.py:strip_string`.

Kept from the reference: `\\left`/`\\right`, `dfrac`/`tfrac` -> `frac`, trailing `\\text{unit}`,
`^\\circ`, `$`, `\\%`, trailing ".", spaces, `\\frac12` -> `\\frac{1}{2}`, `a/b` -> `\\frac{a}{b}`,
`.5` -> `0.5`, `3.0` -> `3`, short `x=` prefixes, `\\sqrt2` -> `\\sqrt{2}`, word numbers.

Dropped or narrowed, because the reference corrupts answers:
- `replace("x=", "")` anywhere ("2x=4" -> "24"): only a leading single-variable `x=` goes.
- the MathQA unit list is matched as bare words anywhere, so "m", "a", "s", "t" vanish from
  "m+n" or "a+b": here a unit word is dropped only after a number ("5 cm").
- `replace("and", "")` (mangles "\\land", "random"): " and " between items becomes a comma.
- `j` -> `i` (a variable named j is not the imaginary unit), `inf` -> `\\infty` inside words.
- all commas are not thousands separators: only "1,234"-shaped groups lose them.
- the outer-brace unwrap (`{5}` -> `5`) never fired in the reference (it tests `"{5}".isalnum()`).
Added (PRM800K grader): mixed numbers "2 1/2" and "2\\frac{1}{2}" mean 5/2.
"""
from __future__ import annotations

import re

_UNITS = (
    "cm|mm|km|m|meters?|metres?|centimeters?|kilometers?|inch(?:es)?|in|feet|foot|ft|yards?|yd|"
    "miles?|mi|mph|kg|g|grams?|kilograms?|lbs?|pounds?|ounces?|oz|liters?|litres?|ml|gallons?|"
    "cups?|seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h|days?|weeks?|months?|years?|"
    "dollars?|cents?|euros?|units?|degrees?|square|sq|cubic|per|each|points?|people|persons?|"
    "students?|apples?|cookies?|pieces?|items?|times"
)
_NUMERIC_HEAD = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+|-?\\frac\{[^{}]*\}\{[^{}]*\}"
_TRAILING_UNITS = re.compile(
    rf"^({_NUMERIC_HEAD})(?:\s+(?:{_UNITS})\.?(?:\^\{{?[23]\}}?|\^[23])?)+$", re.IGNORECASE
)
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_WORD_NUMBERS = {
    word: str(i)
    for i, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
# A single variable (optionally subscripted) on the left of the only "=": "x=", "k =", "a_1=".
_VARIABLE_PREFIX = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*=(?!=)")
_VARIABLE_SUFFIX = re.compile(r"(?<![=<>!])=\s*[A-Za-z](?:_\{?\w+\}?)?\s*$")
_SET_PREFIX = re.compile(r"^\s*[A-Za-z]\s*\\(?:in|to)(?![A-Za-z])")
_MIXED_NUMBER = re.compile(r"^(-?)(\d+)\s*(?:\\frac\{(\d+)\}\{(\d+)\}|\s(\d+)/(\d+))$")


def _drop_latex_noise(s: str) -> str:
    """Spacing commands, sizing, `\\left`/`\\right`, frac variants, braces escapes, dollars."""
    for old, new in (
        ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\ ", " "), ("~", " "),
        ("\\left", ""), ("\\right", ""), ("\\displaystyle", ""),
        ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\neq", "\\ne"),
        ("\\leq", "\\le"), ("\\geq", "\\ge"), ("\\{", "{"), ("\\}", "}"),
        ("\\$", ""), ("$", ""), ("\\(", ""), ("\\)", ""), ("{,}", ","),
        ("bmatrix", "pmatrix"), ("\\varnothing", "\\emptyset"), ("∞", "\\infty"),
    ):
        s = s.replace(old, new)
    s = re.sub(r"\\begin\{array\}\{[^}]*\}", r"\\begin{pmatrix}", s)
    return s.replace("\\end{array}", "\\end{pmatrix}")


def _drop_units_and_text(s: str) -> str:
    """Trailing `\\text{unit}`, degree signs, percent signs, `\\text{}` wrappers, unit words."""
    without_text_unit = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{[^{}]*\}$", "", s).strip()
    if without_text_unit and not without_text_unit.endswith(("=", "\\in")):
        s = without_text_unit
    for degree in ("^{\\circ}", "^\\circ", "\\circ", "°"):
        s = s.replace(degree, "")
    for percent in ("\\%", "%"):
        s = s.replace(percent, "")
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm|mathbf|boldsymbol)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\mathbf", "").replace("\\boldsymbol", "").strip()
    units = _TRAILING_UNITS.match(s)
    return units.group(1) if units else s


def _drop_variable_prefix(s: str) -> str:
    """ "x = 3" -> "3", "2x+3 = y" -> "2x+3", "x \\in [0,1]" -> "[0,1]".

    Only when one side of the only "=" is a lone variable; other equations stay equations.
    """
    if s.count("=") == 1 and _VARIABLE_PREFIX.match(s):
        return s.split("=", 1)[1]
    if s.count("=") == 1 and _VARIABLE_SUFFIX.search(s):
        return s.split("=", 1)[0]
    return _SET_PREFIX.sub("", s)


def _fix_fracs(s: str) -> str:
    """LaTeX's one-token arguments made explicit: `\\frac12`, `\\frac1{72}`, `\\frac{3}4`."""
    s = re.sub(r"\\frac\s*(\w)\s*(\w)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\w)\s*\{", r"\\frac{\1}{", s)
    return re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\w)", r"\\frac\1{\2}", s)


def _fix_slash(s: str) -> str:
    """Integer `a/b` (optionally signed) -> `\\frac{a}{b}`, as the reference's `_fix_a_slash_b`."""
    match = re.fullmatch(r"(-?)(\d+)/(\d+)", s)
    return f"{match.group(1)}\\frac{{{match.group(2)}}}{{{match.group(3)}}}" if match else s


def _fix_mixed_number(s: str) -> str:
    """ "2 1/2" and "2\\frac{1}{2}" (a whole number right before a fraction) -> "\\frac{5}{2}"."""
    match = _MIXED_NUMBER.match(s)
    if not match:
        return s
    sign, whole, num, den = match.group(1), int(match.group(2)), match.group(3), match.group(4)
    if num is None:
        num, den = match.group(5), match.group(6)
    if int(den) == 0:
        return s
    return f"{sign}\\frac{{{whole * int(den) + int(num)}}}{{{den}}}"


def _fix_decimals(s: str) -> str:
    """ ".5" -> "0.5", "3.0" / "3.000" -> "3", "{.5}" -> "{0.5}"."""
    s = re.sub(r"(^|[^\d])\.(\d)", r"\g<1>0.\2", s)
    s = re.sub(r"(\d+)\.0+(?![\d])", r"\1", s)
    return re.sub(r"(\d+\.\d*?[1-9])0+(?![\d])", r"\1", s)


def _unwrap_outer(s: str) -> str:
    """`{5}` -> `5`, `(x)` -> `x`: a single alphanumeric token in one pair of brackets."""
    if len(s) > 2 and s[0] + s[-1] in ("{}", "()", "[]") and re.fullmatch(r"-?[\w.]+", s[1:-1]):
        return s[1:-1]
    return s


def normalize(answer: str, *, keep_equation: bool = False) -> str:
    """Canonical string form of an answer, for string equality and as input to the parsers.

    Case is kept (the comparison is case-insensitive); the result has no spaces.
    `keep_equation` keeps "x = 1-y" whole, for comparing it with another equation.
    """
    s = str(answer).strip().replace("\n", "")
    s = _drop_latex_noise(s).strip().rstrip(".").strip()
    if not keep_equation:
        s = _drop_variable_prefix(s).strip()
    s = _drop_units_and_text(s)
    s = _WORD_NUMBERS.get(s.lower(), s)
    s = re.sub(r"\s+and\s+", ",", s)
    s = s.replace("infinity", "\\infty")
    s = re.sub(r"(^|[(\[,]\s*)\+\s*\\infty", r"\1\\infty", s)
    s = _fix_mixed_number(s)
    s = re.sub(r"\\sqrt\s*(\w)", r"\\sqrt{\1}", s)
    s = _fix_fracs(s)
    if _THOUSANDS.match(s):  # before spaces go: "1, 234" is a list, "1,234" a number
        s = s.replace(",", "")
    s = s.replace(" ", "")
    s = _fix_decimals(s)
    s = _fix_slash(s)
    return _unwrap_outer(s).rstrip(".")
