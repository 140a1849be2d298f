"""Per-request parameters: one frozen dataclass, validated on construction.

Every entry point (CLI, Triton BLS, eval, tests) builds a `RequestParams` through `from_mapping`,
so a bad value gives the same typed error, naming the field, wherever it comes from.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from runtime.core import validate
from runtime.core.errors import RequestValidationError

METHOD_NAMES = ("rsd", "gsi", "cos", "sd", "target", "draft", "bon")
OMEGAS = ("step", "linear", "sigmoid")
COMBINES = ("we", "cd")
BON_MODELS = ("draft", "target")


@dataclass(frozen=True, slots=True)
class RequestParams:
    """What one request asks for. Defaults follow the papers (see each method's docstring)."""

    method: str = "rsd"
    # RSD: accept the draft step with weight omega(reward); binary step omega(r) = 1[r >= threshold].
    threshold: float = 0.7
    omega: str = "step"
    omega_sharpness: float = 20.0  # sigmoid omega: 1 / (1 + exp(-sharpness * (r - threshold)))
    # Sampling, shared by every model. temperature 0 means greedy.
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    # Stopping.
    max_tokens: int = 512
    max_steps: int = 100
    max_step_tokens: int = 256
    stop_at_boxed: bool = False
    # GSI and best-of-n.
    n: int = 16
    beta: float = 20.0
    gsi_u: float = 0.5
    bon_model: str = "draft"
    bon_soft: bool = False
    # Token-level methods: speculative decoding and CoS.
    gamma: int = 5
    cos_combine: str = "we"
    cos_lambda: float = 0.5  # WE: r = lambda * q_draft + (1 - lambda) * p_target
    cos_mu: float = 0.1  # CD: r = softmax((l_target - mu * l_draft) / T)
    cos_gamma_target: int = 1

    def __post_init__(self) -> None:
        _choice("method", self.method, METHOD_NAMES)
        _choice("omega", self.omega, OMEGAS)
        _choice("cos_combine", self.cos_combine, COMBINES)
        _choice("bon_model", self.bon_model, BON_MODELS)
        _number("threshold", self.threshold, lo=0.0)
        _number("omega_sharpness", self.omega_sharpness, lo=0.0, lo_open=True)
        _number("temperature", self.temperature, lo=0.0, hi=100.0)
        _number("top_p", self.top_p, lo=0.0, hi=1.0, lo_open=True)
        _integer("seed", self.seed, lo=0, hi=2**63 - 1)
        _integer("max_tokens", self.max_tokens, lo=1)
        _integer("max_steps", self.max_steps, lo=1)
        _integer("max_step_tokens", self.max_step_tokens, lo=1)
        _integer("n", self.n, lo=1, hi=1024)
        _number("beta", self.beta, lo=0.0, lo_open=True)
        _number("gsi_u", self.gsi_u, allow_inf=True)
        _integer("gamma", self.gamma, lo=1, hi=64)
        _number("cos_lambda", self.cos_lambda, lo=0.0, hi=1.0)
        _number("cos_mu", self.cos_mu, lo=0.0)
        _integer("cos_gamma_target", self.cos_gamma_target, lo=1, hi=64)
        for name in ("stop_at_boxed", "bon_soft"):
            validate.boolean(name, getattr(self, name), RequestValidationError)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: RequestParams | None = None) -> RequestParams:
        """Build from loosely-typed values (JSON, CLI, Triton tensors); unknown keys are an error."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        updates: dict[str, Any] = {}
        for key, value in values.items():
            if key not in fields:
                raise RequestValidationError(key, f"unknown parameter; known: {', '.join(sorted(fields))}")
            if value is None:
                continue
            updates[key] = validate.coerce(key, value, type(getattr(base or _DEFAULTS, key)), RequestValidationError)
        return dataclasses.replace(base or _DEFAULTS, **updates)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The toolkit's checks, raising RequestValidationError (the field's name leads the message).
_choice = partial(validate.choice, error=RequestValidationError)
_number = partial(validate.number, error=RequestValidationError)
_integer = partial(validate.integer, error=RequestValidationError)

_DEFAULTS = RequestParams()
