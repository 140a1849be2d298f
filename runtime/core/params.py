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
BUDGET_SCOPES = ("request", "server")


@dataclass(frozen=True, slots=True)
class RequestParams:
    """What one request asks for. Defaults follow the papers (see each method's docstring)."""

    method: str = "rsd"
    # RSD: accept the draft step with weight omega(reward); binary step omega(r) = 1[r >= threshold].
    threshold: float = 0.7
    omega: str = "step"
    omega_sharpness: float = 20.0  # sigmoid omega: 1 / (1 + exp(-sharpness * (r - threshold)))
    # RSD: the largest share of steps the target may write (1: no cap; runtime.core.methods.rsd), counted
    # over this request's steps ("request") or over the server's recent budgeted steps ("server")
    target_budget: float = 1.0
    target_budget_scope: str = "request"
    # Sampling, shared by every generator call (draft and target alike; runtime.core.sampling).
    # temperature 0 (or top_k 1) means greedy; top_k 0 is off.
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    # Logit rules (runtime.core.sampling.adjust), over the sequence the model continues.
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    bad_words: tuple[str, ...] = ()  # token sequences never completed (each word tokenised alone)
    embedding_bias_words: tuple[str, ...] = ()  # every token id of word i gets + weight i
    embedding_bias_weights: tuple[float, ...] = ()
    return_log_probs: bool = False  # report each output token's log-prob
    # Stopping.
    max_tokens: int = 512
    min_tokens: int = 0  # no eos, stop word or boxed end before this many tokens
    stop_words: tuple[str, ...] = ()  # the output ends right after the first one (text level)
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
        _number("target_budget", self.target_budget, lo=0.0, hi=1.0)
        _choice("target_budget_scope", self.target_budget_scope, BUDGET_SCOPES)
        if self.target_budget < 1.0 and self.method != "rsd":
            raise RequestValidationError("target_budget", f"caps RSD's target steps; method {self.method} has no "
                                         "such cap (leave target_budget at 1)")
        _number("temperature", self.temperature, lo=0.0, hi=100.0)
        _number("top_p", self.top_p, lo=0.0, hi=1.0, lo_open=True)
        _integer("top_k", self.top_k, lo=0)
        _integer("seed", self.seed, lo=0, hi=2**63 - 1)
        _number("repetition_penalty", self.repetition_penalty, lo=0.0, lo_open=True)
        _number("presence_penalty", self.presence_penalty)
        _number("frequency_penalty", self.frequency_penalty)
        _integer("max_tokens", self.max_tokens, lo=1)
        _integer("min_tokens", self.min_tokens, lo=0)
        for name in ("bad_words", "stop_words", "embedding_bias_words"):
            _words(name, getattr(self, name))
        _weights("embedding_bias_weights", self.embedding_bias_weights)
        if len(self.embedding_bias_weights) != len(self.embedding_bias_words):
            raise RequestValidationError("embedding_bias_weights", f"{len(self.embedding_bias_weights)} weights for "
                                         f"{len(self.embedding_bias_words)} embedding_bias_words; give one per word")
        _integer("max_steps", self.max_steps, lo=1)
        _integer("max_step_tokens", self.max_step_tokens, lo=1)
        _integer("n", self.n, lo=1, hi=1024)
        _number("beta", self.beta, lo=0.0, lo_open=True)
        _number("gsi_u", self.gsi_u, allow_inf=True)
        _integer("gamma", self.gamma, lo=1, hi=64)
        _number("cos_lambda", self.cos_lambda, lo=0.0, hi=1.0)
        _number("cos_mu", self.cos_mu, lo=0.0)
        _integer("cos_gamma_target", self.cos_gamma_target, lo=1, hi=64)
        for name in ("stop_at_boxed", "bon_soft", "return_log_probs"):
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
            default = getattr(base or _DEFAULTS, key)
            updates[key] = (_listed(key, value, _LIST_ITEMS[key]) if isinstance(default, tuple)
                            else validate.coerce(key, value, type(default), RequestValidationError))
        return dataclasses.replace(base or _DEFAULTS, **updates)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The toolkit's checks, raising RequestValidationError (the field's name leads the message).
_choice = partial(validate.choice, error=RequestValidationError)
_number = partial(validate.number, error=RequestValidationError)
_integer = partial(validate.integer, error=RequestValidationError)

def _listed(key: str, value: Any, kind: type) -> tuple[Any, ...]:
    """A list field from a list, a numpy array or one value; empty strings are dropped (TensorRT-LLM
    clients send "" for "no word")."""
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy array or scalar
        value = value.tolist()
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    out = tuple(validate.coerce(key, item, kind, RequestValidationError) for item in items)
    return tuple(v for v in out if v != "") if kind is str else out


def _words(name: str, value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise RequestValidationError(name, f"must be a list of non-empty strings, got {value!r}")


def _weights(name: str, value: Any) -> None:
    if not isinstance(value, tuple):
        raise RequestValidationError(name, f"must be a list of numbers, got {value!r}")
    for weight in value:
        _number(name, weight)


_DEFAULTS = RequestParams()
# The item type of each list field.
_LIST_ITEMS: dict[str, type] = {"bad_words": str, "stop_words": str, "embedding_bias_words": str,
                                "embedding_bias_weights": float}
