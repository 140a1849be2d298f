"""The shipped embedded models through the real engine (configs/default.yaml), on held-out problems.

Degenerate equalities of RSD (threshold above 1 = target-only, threshold 0 = draft-only), the
draft/target gap the models exist to show, and the `embedded` evaluation dataset.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime.task import grade, heldout_problems

pytest.importorskip("torch")
DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
PROBLEMS = heldout_problems(12)


@pytest.fixture(scope="module")
def pipeline():
    from runtime.config import load_config
    from runtime.engines.torch.factory import build_pipeline

    return build_pipeline(load_config(DEFAULT))


def _texts(pipeline, params: dict) -> list[str]:
    return [pipeline.generate_sync(p.question, params).text for p in PROBLEMS]


def test_rsd_threshold_above_one_equals_target_and_zero_equals_draft(pipeline) -> None:
    target, draft = _texts(pipeline, {"method": "target"}), _texts(pipeline, {"method": "draft"})
    assert _texts(pipeline, {"method": "rsd", "threshold": 1.01}) == target
    assert _texts(pipeline, {"method": "rsd", "threshold": 0.0}) == draft
    assert target != draft  # otherwise the two equalities above prove nothing


def test_target_solves_held_out_problems_the_draft_misses(pipeline) -> None:
    target = sum(grade(p.question, t) for p, t in zip(PROBLEMS, _texts(pipeline, {"method": "target"})))
    draft = sum(grade(p.question, t) for p, t in zip(PROBLEMS, _texts(pipeline, {"method": "draft"})))
    assert target >= len(PROBLEMS) - 1
    assert draft < target


def test_sd_at_temperature_zero_equals_target_greedy(pipeline) -> None:
    assert _texts(pipeline, {"method": "sd", "temperature": 0.0}) == _texts(pipeline, {"method": "target"})


def test_embedded_dataset_is_the_held_out_split() -> None:
    from runtime.eval.datasets import resolve_dataset
    from runtime.task import split_of

    problems = resolve_dataset("embedded", limit=5)
    assert [p.question for p in problems] == [p.question for p in PROBLEMS[:5]]
    assert all(split_of(p.question) == "test" for p in problems)
    assert len({p.id for p in problems}) == 5
