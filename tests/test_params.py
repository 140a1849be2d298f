"""Request parameter validation: every bad value is a typed error naming the field."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.core.errors import RequestValidationError
from runtime.core.params import RequestParams


@pytest.mark.parametrize(("field", "value"), [
    ("method", "nope"), ("threshold", -0.1), ("threshold", math.nan), ("threshold", math.inf),
    ("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5), ("max_tokens", 0), ("max_tokens", -3),
    ("max_steps", 0), ("max_step_tokens", 0), ("n", 0), ("beta", 0.0), ("gsi_u", math.nan),
    ("gamma", 0), ("cos_lambda", 1.5), ("cos_mu", -1.0), ("omega", "cubic"), ("cos_combine", "avg"),
    ("bon_model", "prm"), ("seed", -1), ("max_tokens", 2.5), ("max_tokens", "ten"), ("threshold", "high"),
    ("stop_at_boxed", "maybe"), ("max_tokens", True),
])
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(RequestValidationError) as err:
        RequestParams.from_mapping({field: value})
    assert err.value.field == field
    assert field in str(err.value)


def test_unknown_parameter_is_an_error() -> None:
    with pytest.raises(RequestValidationError) as err:
        RequestParams.from_mapping({"temprature": 0.5})
    assert err.value.field == "temprature"


def test_coercion_from_json_and_numpy() -> None:
    p = RequestParams.from_mapping({"max_tokens": np.int32(7), "threshold": "0.5", "stop_at_boxed": "true",
                                    "gsi_u": float("-inf"), "method": b"gsi", "temperature": 1})
    assert (p.max_tokens, p.threshold, p.stop_at_boxed, p.gsi_u, p.method, p.temperature) == (
        7, 0.5, True, -math.inf, "gsi", 1.0)
    assert isinstance(p.temperature, float)


def test_defaults_follow_the_papers() -> None:
    p = RequestParams()
    assert (p.method, p.threshold, p.omega, p.n, p.beta, p.gsi_u, p.gamma, p.cos_lambda, p.cos_mu) == (
        "rsd", 0.7, "step", 16, 20.0, 0.5, 5, 0.5, 0.1)


def test_base_values_are_kept() -> None:
    base = RequestParams(threshold=0.3, max_tokens=9)
    p = RequestParams.from_mapping({"max_tokens": 4, "seed": None}, base=base)
    assert (p.threshold, p.max_tokens) == (0.3, 4)
