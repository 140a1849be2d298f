"""Answer extraction, normalisation and equivalence on hand-made known-equal/different pairs."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from runtime.eval.answers import answers_equal
from runtime.eval.datasets import Problem
from runtime.eval.extract import AnswerKind, extract_answer, last_boxed
from runtime.eval.grading import grade, grade_detail
from runtime.eval.latex_expr import LatexConversionError, latex_to_python
from runtime.eval.normalize import normalize
from runtime.eval.symbolic import SymbolicChecker, SymbolicJob
from runtime.eval.symbolic_worker import exprs_equal, parse


@pytest.fixture(scope="module")
def checker() -> Iterator[SymbolicChecker]:
    with SymbolicChecker(workers=2) as pool:
        yield pool


class _NoSympy:
    """Fails the test if a comparison reaches the worker pool."""

    def equal(self, *args: object, **kwargs: object) -> bool:
        raise AssertionError("this comparison must not need sympy")


# --- extraction ---------------------------------------------------------------------------

def test_gsm8k_hashes_with_thousands_separator() -> None:
    text = "So 1000 + 234 = 1,234 houses.\n#### 1,234"
    assert extract_answer(text, AnswerKind.GSM8K) == "1,234"
    assert answers_equal("1,234", "1234", checker=_NoSympy())  # type: ignore[arg-type]


def test_nested_boxed() -> None:
    assert last_boxed(r"so $\boxed{\frac{1}{\sqrt{2}}}$.") == r"\frac{1}{\sqrt{2}}"


def test_last_boxed_wins() -> None:
    text = r"First guess \boxed{3}. Wait, recheck: the answer is \boxed{4}."
    assert extract_answer(text, "math") == "4"


def test_boxed_without_braces_and_fbox() -> None:
    assert last_boxed(r"thus $\boxed 5$ apples") == "5"
    assert last_boxed(r"thus \boxed 12. Done") == "12"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"\boxedsymbol{7}") is None


def test_unclosed_last_boxed_falls_back_to_previous_complete_one() -> None:
    assert last_boxed(r"\boxed{10} then restated \boxed{\frac{1}{") == "10"


def test_no_boxed_gsm8k_chain() -> None:
    assert extract_answer("The answer is 18 dollars.", AnswerKind.GSM8K) == "18"
    assert extract_answer("3 + 4 = 7, then 7 * 2 = 14.", AnswerKind.GSM8K) == "14"
    assert extract_answer("It costs $1,250.50 in total.", AnswerKind.GSM8K) == "1,250.50"
    assert extract_answer("no digits here", AnswerKind.GSM8K) is None


def test_no_boxed_math_chain_has_no_last_number_fallback() -> None:
    assert extract_answer(r"The final answer is $\frac{1}{2}$. I hope", "math") == r"\frac{1}{2}"
    assert extract_answer("x = 3 then y = 4", AnswerKind.MATH) is None


def test_last_number_keeps_tuple_commas() -> None:
    assert extract_answer("the point is (1,2)", AnswerKind.GSM8K) == "2"


# --- normalisation --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\dfrac{3}{4}", r"\frac{3}{4}"),
        (r"90^\circ", "90"),
        (r"\$18.00", "18"),
        (r"25\%", "25"),
        ("1,000,000", "1000000"),
        (r"\frac12", r"\frac{1}{2}"),
        ("3/4", r"\frac{3}{4}"),
        (".5", "0.5"),
        ("2.50", "2.5"),
        ("x = 7.", "7"),
        ("2x=4", "2x=4"),  # the reference's replace("x=") would give "24"
        ("m+n", "m+n"),  # the reference's unit list deletes the bare "m"
        (r"\text{5 cm}", "5"),
        (r"12 \text{ inches}", "12"),
        ("five", "5"),
        (r"2\frac{1}{2}", r"\frac{5}{2}"),
        (r"1{,}000", "1000"),
        (r"\sqrt2", r"\sqrt{2}"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


# --- equivalence ----------------------------------------------------------------------------

EQUAL = [
    (r"\frac{1}{2}", "0.5"),
    ("1/2", "0.5"),
    (r"\frac{1}{2}", "1/2"),
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}"),
    ("(1,2)", "(1, 2)"),
    (r"10\%", "10"),
    ("x=3", "3"),
    (r"2\pi", "6.283185"),  # decimal side: rel_tol applies, as the reference's N() check
    ("1,000", "1000"),
    (r"\text{5 cm}", "5"),
    ("3.0", "3"),
    (r"-\frac{3}{4}", "-0.75"),
    ("x^2+2x+1", "(x+1)^2"),
    (r"\frac{2}{4}", r"\frac{1}{2}"),
    ("2, -3", "-3, 2"),  # "all solutions, separated by commas": any order
    (r"\{1,2\}", r"\{2,1\}"),
    ("y=2x+3", "2x+3=y"),
    ("x+y=1", "1-y=x"),
    (r"(-\infty, 1) \cup (2, \infty)", r"(-\infty,1)\cup(2,\infty)"),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{bmatrix}1&2\\3&\frac{8}{2}\end{bmatrix}"),
    (r"\sqrt{8}", r"2\sqrt{2}"),
    (r"1+\sqrt{2}", r"\sqrt{3+2\sqrt{2}}"),
    ("0.33333", r"\frac{1}{3}"),
    (r"\text{Monday}", "monday"),
    (r"2\frac{1}{2}", "2.5"),
    ("sqrt(2)/2", r"\frac{\sqrt{2}}{2}"),
    (r"3\sqrt{3}i", r"i\sqrt{27}"),
]
DIFFERENT = [
    ("[0,1)", "[0,1]"),  # the reference calls these equal
    ("(1,2)", "[1,2]"),
    ("(1,2)", "(2,1)"),
    ("x^2", "x^3"),
    ("123457", "123456"),  # exact integers: no 1e-4 tolerance
    (r"\frac{355}{113}", r"\pi"),  # exact vs exact: 40 digits, not 1e-4
    ("0.333", r"\frac{1}{3}"),
    ("0.05", "5"),  # percent forms are off by default
    ("6.28", r"2\pi"),
    ("2", "(2, 3)"),
    ("x=1", "x+y=1"),
    ("Monday", "Tuesday"),
    ("", "0"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUAL)
def test_known_equal(pred: str, gold: str, checker: SymbolicChecker) -> None:
    assert answers_equal(pred, gold, checker=checker)
    assert answers_equal(gold, pred, checker=checker)


@pytest.mark.parametrize(("pred", "gold"), DIFFERENT)
def test_known_different(pred: str, gold: str, checker: SymbolicChecker) -> None:
    assert not answers_equal(pred, gold, checker=checker)
    assert not answers_equal(gold, pred, checker=checker)


def test_percentage_option_accepts_scaled_forms() -> None:
    no_sympy = _NoSympy()
    assert not answers_equal("0.1", r"10\%", checker=no_sympy)  # type: ignore[arg-type]
    assert answers_equal("0.1", r"10\%", include_percentage=True,
                         checker=no_sympy)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pred", "gold"),
    [("18", "18"), ("1,234", "1234"), (r"\frac{1}{2}", "0.5"), ("x=3", "3"), ("(1,2)", "(1,2)"),
     ("[0,1)", "[0,1]"), ("7", "8"), (r"\text{5 cm}", "5")],
)
def test_string_and_numeric_checks_do_not_use_the_pool(pred: str, gold: str) -> None:
    answers_equal(pred, gold, checker=_NoSympy())  # type: ignore[arg-type]


def test_hanging_sympy_times_out_as_not_equal(checker: SymbolicChecker) -> None:
    start = time.monotonic()
    assert not answers_equal("2^{2^{2^{40}}}", "7", timeout_s=1.0, checker=checker)
    assert time.monotonic() - start < 5.0
    assert answers_equal(r"\sqrt{2}/2", r"\frac{1}{\sqrt{2}}", checker=checker)  # pool recovered


def test_pool_runs_jobs_in_parallel_and_keeps_order(checker: SymbolicChecker) -> None:
    """Two hanging jobs on two workers end together at their deadline (one after the other would take
    twice as long), and every answer comes back in order. The deadline is long against the easy jobs
    so that a busy machine cannot turn an answer into a timeout, and the bound is relative to it."""
    hang = SymbolicJob("2**(2**(2**40))", "7")  # killed at the deadline
    jobs = [hang, hang, SymbolicJob("sqrt(2)/2", "1/sqrt(2)"), SymbolicJob("x**2", "x**3"),
            SymbolicJob("(x+1)**2", "x**2+2*x+1"), SymbolicJob("x-y", "y-x", negation_ok=True)]
    timeout_s = 8.0
    start = time.monotonic()
    assert checker.equal_many(jobs, rel_tol=1e-4, timeout_s=timeout_s) == [False, False, True, False, True, True]
    assert time.monotonic() - start < 1.9 * timeout_s


def test_a_dead_worker_is_restarted(checker: SymbolicChecker) -> None:
    assert checker.equal(SymbolicJob("1/2", "0.5"), rel_tol=1e-4, timeout_s=3.0)
    for worker in checker._workers:  # simulate a crash (e.g. the OOM killer)
        if worker.proc is not None:
            worker.proc.kill()
            worker.proc.wait()
    assert checker.equal(SymbolicJob("1/2", "0.5"), rel_tol=1e-4, timeout_s=3.0)


def test_pathological_inputs_fail_fast(checker: SymbolicChecker) -> None:
    start = time.monotonic()
    assert answers_equal("1e5", "100000", checker=_NoSympy())  # type: ignore[arg-type]
    assert not answers_equal("1e99999999", "1", checker=checker)  # no 10**99999999 in-process
    assert not answers_equal("{" * 5000 + "1" + "}" * 5000, "x",
                             checker=_NoSympy())  # type: ignore[arg-type]
    assert time.monotonic() - start < 2.0


def test_model_output_cannot_reach_eval() -> None:
    with pytest.raises(LatexConversionError):
        latex_to_python("__import__('os').system('true')")
    assert parse("__import__('os')") is None
    assert parse("x.__class__") is None
    assert not exprs_equal("exec", "x", 1e-4)


# --- grading --------------------------------------------------------------------------------

def test_grade_gsm8k_and_math() -> None:
    gsm = Problem(id="g", question="q", answer="1,234", kind=AnswerKind.GSM8K)
    assert grade(gsm, "so the total is 1234.")
    assert grade(gsm, "#### 1234")
    assert not grade(gsm, r"\boxed{1233} though 1234 appears later")
    math = Problem(id="m", question="q", answer=r"\frac{1}{2}", kind=AnswerKind.MATH)
    detail = grade_detail(math, r"Thus $\boxed{0.5}$.")
    assert detail.correct and detail.predicted == "0.5"
    assert not grade(math, "The value is 0.5")  # MATH: no last-number fallback


def test_grading_500_pairs_reuses_the_pool(checker: SymbolicChecker) -> None:
    pairs = [
        (r"\boxed{18}", "18"), (r"\boxed{\frac{1}{2}}", "0.5"), (r"\boxed{(1, 2)}", "(1,2)"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}"),
        (r"\boxed{x^2+2x+1}", "(x+1)^2"), (r"\boxed{2\sqrt{2}}", r"\sqrt{8}"),
        (r"\boxed{7}", "8"), (r"\boxed{[0,1)}", "[0,1]"), (r"The answer is $\frac{3}{4}$.", "0.75"),
        (r"\boxed{3\pi}", r"\frac{6\pi}{2}"),
    ] * 50
    start = time.monotonic()
    correct = sum(
        grade(Problem(id=str(i), question="q", answer=gold, kind=AnswerKind.MATH), text,
              checker=checker)
        for i, (text, gold) in enumerate(pairs)
    )
    elapsed = time.monotonic() - start
    assert correct == 400
    assert elapsed < 60.0, f"500 gradings took {elapsed:.1f}s"
