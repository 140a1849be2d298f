"""A small LaTeX -> Python-expression converter for the answer forms graders meet.

Why not `sympy.parsing.latex.parse_latex`: its default backend needs `antlr4-python3-runtime`
pinned to the exact ANTLR version sympy's generated parser was built with (4.11 for sympy 1.14),
which is one more fragile pin in the serving image; the references also need the unmaintained
`latex2sympy2`. Answers are short: fractions, roots, powers, products, pi, a few functions.

The output is a whitelisted Python expression: numbers, single-letter symbols (or `a_1`),
the names in `FUNCTIONS`/`CONSTANTS`, `+ - * / ** ( ) ,`. Nothing else reaches sympy's
`parse_expr` (which calls `eval`), so model output cannot inject code. Implicit multiplication
is made explicit here ("2x" -> "2*x", "2\\pi" -> "2*pi", "xy" -> "x*y").
"""
from __future__ import annotations

import re

from runtime.core.errors import RsdError

FUNCTIONS = {
    "sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh",
    "tanh": "tanh", "ln": "log", "log": "log", "exp": "exp",
}
CONSTANTS = {"pi": "pi", "infty": "oo"}
GREEK = frozenset(
    "alpha beta gamma delta epsilon theta mu nu rho sigma tau phi psi omega".split()
)
# The sympy objects the output may name; every other identifier becomes a plain Symbol.
RESERVED = frozenset({*FUNCTIONS.values(), "sqrt", "factorial", "pi", "oo", "I"})
_PLAIN_WORDS = "|".join(sorted({*FUNCTIONS, "sqrt", "pi"}, key=len, reverse=True))
_TOKEN = re.compile(
    rf"\s*(\d+\.\d*|\.\d+|\d+|\\[A-Za-z]+|(?<![A-Za-z])(?:{_PLAIN_WORDS})(?![A-Za-z])"
    r"|[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?|\*\*|[-+*/^!(){}\[\],|])"
)
_VALUE_END = ("num", "sym", "close")


class LatexConversionError(RsdError):
    """The answer uses LaTeX this converter does not handle; callers treat it as not-equal."""


def tokenize(latex: str) -> list[str]:
    """Split into numbers, commands, single letters (with subscript), and operators."""
    tokens: list[str] = []
    pos = 0
    text = latex.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise LatexConversionError(f"unsupported character {text[pos]!r} in {latex!r}")
        token = match.group(1)
        # "sqrt(2)" / "pi" typed without a backslash mean the same as the commands.
        tokens.append(token if len(token) < 2 or not token.isalpha() else "\\" + token)
        pos = match.end()
    return tokens


class _Converter:
    """Recursive descent over tokens, emitting Python text with explicit multiplication."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise LatexConversionError("unexpected end of expression")
        self.pos += 1
        return token

    def expect(self, token: str) -> None:
        got = self.take()
        if got != token:
            raise LatexConversionError(f"expected {token!r}, got {got!r}")

    def sequence(self, closer: str | None) -> str:
        """Items up to `closer` (not consumed), joining adjacent values with `*`."""
        out: list[str] = []
        last_kind = "op"
        while (token := self.peek()) is not None and token != closer:
            text, kind = self.item()
            if text == "!" and out:
                out[-1] = f"factorial({out[-1]})"
                continue
            if kind in ("num", "sym", "open") and last_kind in _VALUE_END:
                out.append("*")
            out.append(text)
            last_kind = "close" if kind in ("open", "op_value") else kind
        return "".join(out)

    def group(self, opener: str, closer: str) -> str:
        self.expect(opener)
        inner = self.sequence(closer)
        self.expect(closer)
        return f"({inner})"

    def argument(self) -> str:
        """A LaTeX macro argument: `{...}`, or one token (`\\frac12` takes "1" then "2")."""
        token = self.peek()
        if token == "{":
            return self.group("{", "}")
        if token is not None and token.isdigit() and len(token) > 1:
            self.tokens[self.pos] = token[1:]
            return token[0]
        text, kind = self.item()
        if kind in ("op", "op_value"):
            raise LatexConversionError(f"operator {text!r} used as an argument")
        return f"({text})"

    def item(self) -> tuple[str, str]:
        """One value (kind num/sym/open) or operator (kind op)."""
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return token, "num"
        if token[0].isalpha():
            return self.symbol(token), "sym"
        if token in ("{", "(", "["):
            self.pos -= 1
            return self.group(token, {"{": "}", "(": ")", "[": "]"}[token]), "open"
        if token in ("+", "-", "*", "/", "**", ","):
            return token, "op"
        if token == "^":
            return f"**{self.argument()}", "op_value"
        if token == "!":
            return "!", "op_value"
        if token.startswith("\\"):
            return self.command(token[1:])
        raise LatexConversionError(f"unsupported token {token!r}")

    def symbol(self, token: str) -> str:
        """A letter: `i` is the imaginary unit; user letters never shadow sympy names."""
        if token == "i":
            return "I"
        name = re.sub(r"[{}]", "", token)
        return f"{name}_" if name in RESERVED or name in ("E", "N", "O", "Q", "S") else name

    def command(self, name: str) -> tuple[str, str]:
        if name == "frac":
            numerator = self.argument()
            return f"({numerator}/{self.argument()})", "open"
        if name == "sqrt":
            if self.peek() == "[":
                index = self.group("[", "]")
                return f"({self.argument()}**(1/{index}))", "open"
            return f"sqrt{self.argument()}", "open"
        if name in ("cdot", "times"):
            return "*", "op"
        if name == "div":
            return "/", "op"
        if name in FUNCTIONS:
            if self.peek() == "^":  # \sin^2 x = (sin x)^2
                self.take()
                power = self.argument()
                return f"{FUNCTIONS[name]}{self.argument()}**{power}", "open"
            return f"{FUNCTIONS[name]}{self.argument()}", "open"
        if name in CONSTANTS:
            return CONSTANTS[name], "sym"
        if name in GREEK:
            return name, "sym"
        raise LatexConversionError(f"unsupported command \\{name}")


def latex_to_python(latex: str) -> str:
    """Python expression text for `latex`; raises `LatexConversionError` on unsupported input."""
    converter = _Converter(tokenize(latex.replace("\\left", "").replace("\\right", "")))
    try:
        text = converter.sequence(None)
    except RecursionError as err:  # thousands of nested braces: not an answer worth parsing
        raise LatexConversionError("expression nested too deeply") from err
    if not text:
        raise LatexConversionError("empty expression")
    return text
