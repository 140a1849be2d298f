"""The `rsd` BLS model's I/O, as tables: tensor name -> RequestParams field, type, role.

The same tables render the inputs/outputs of `triton_repo/rsd/config.pbtxt`, parse requests
and build responses, so a new RequestParams field is served by adding nothing but the field.
Names follow genai-perf's `tensorrtllm` backend (`text_input`, `max_tokens`, `stream`,
`exclude_input_in_output`, `min_length`, `bad_words`, `stop_words`) and TensorRT-LLM's
`random_seed`; every other RequestParams field keeps its own name.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.core.errors import RequestValidationError
from runtime.core.params import RequestParams
from runtime.core.types import StepEvent


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    triton_type: str  # TYPE_STRING | TYPE_FP32 | TYPE_INT32 | TYPE_UINT64 | TYPE_BOOL
    role: str  # "prompt" | "stream" | "param" | "ignored" | "empty"
    field: str | None = None  # RequestParams field (role "param")
    dims: tuple[int, ...] = (1,)
    optional: bool = True


_TYPES = {str: "TYPE_STRING", float: "TYPE_FP32", int: "TYPE_INT32", bool: "TYPE_BOOL"}
_RENAMED = {"seed": TensorSpec("random_seed", "TYPE_UINT64", "param", "seed")}


def _param_specs() -> tuple[TensorSpec, ...]:
    specs = []
    for f in dataclasses.fields(RequestParams):
        spec = _RENAMED.get(f.name) or TensorSpec(f.name, _TYPES[type(f.default)], "param", f.name)
        specs.append(spec)
    return tuple(specs)


INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_input", "TYPE_STRING", "prompt", optional=False),
    TensorSpec("stream", "TYPE_BOOL", "stream"),
    *_param_specs(),
    # Sent by genai-perf / TensorRT-LLM clients; meaningless here (the output never includes the
    # prompt; there is no minimum length). Word lists must be empty: we do not silently drop them.
    TensorSpec("exclude_input_in_output", "TYPE_BOOL", "ignored"),
    TensorSpec("min_length", "TYPE_INT32", "ignored"),
    TensorSpec("bad_words", "TYPE_STRING", "empty", dims=(-1,)),
    TensorSpec("stop_words", "TYPE_STRING", "empty", dims=(-1,)),
)

OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_output", "TYPE_STRING", "output"),  # the step (stream) or the whole text
    TensorSpec("step_source", "TYPE_STRING", "output", dims=(-1,)),  # per step: draft | target | ensemble
    TensorSpec("step_reward", "TYPE_FP32", "output", dims=(-1,)),  # per step PRM reward, NaN if none
    TensorSpec("finish_reason", "TYPE_STRING", "output"),  # last response only
    TensorSpec("stats", "TYPE_STRING", "output"),  # last response only: JSON of RequestStats
)


DEFAULT_MAX_PROMPT_BYTES = 65536
# Request parameters Triton itself adds or reads (e.g. the gRPC stream's empty-final-response flag).
_TRITON_PARAMETER_PREFIX = "triton_"
_BY_NAME = {spec.name: spec for spec in INPUTS}
_BY_FIELD = {spec.field: spec for spec in INPUTS if spec.field}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    prompt: str
    stream: bool
    params: dict[str, Any]  # loosely typed; the pipeline validates them into RequestParams


def parse_inputs(tensors: Mapping[str, np.ndarray], parameters: Mapping[str, Any] | None = None,
                 max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES) -> ParsedRequest:
    """Validate shapes and decode values; RequestParams validates ranges. Errors name the tensor.

    `parameters` are the request's parameters: an HTTP generate body's keys that are not inputs
    land there, and so do gRPC request parameters. A known input name is taken as its value;
    anything else is an error naming the key (a typo must not silently run with defaults)."""
    prompt: str | None = None
    stream = False
    params: dict[str, Any] = {}
    values = {name: np.asarray(array).reshape(-1) for name, array in tensors.items()}
    for key, value in (parameters or {}).items():
        if key.startswith(_TRITON_PARAMETER_PREFIX):
            continue
        spec = _BY_NAME.get(key) or _BY_FIELD.get(key)
        if spec is None:
            raise RequestValidationError(key, f"unknown request parameter; known: {', '.join(sorted(_BY_NAME))}")
        if spec.name in values:
            raise RequestValidationError(key, "given both as an input tensor and as a request parameter")
        values[spec.name] = np.array([value], dtype=np.object_ if isinstance(value, str) else None)
    unknown = sorted(set(values) - set(_BY_NAME))
    if unknown:
        raise RequestValidationError(unknown[0], "unknown input")
    for spec in INPUTS:
        if spec.name not in values:
            if not spec.optional:
                raise RequestValidationError(spec.name, "required input is missing")
            continue
        flat = values[spec.name]
        if spec.role == "empty":
            if any(_value(spec, v) for v in flat):
                raise RequestValidationError(spec.name, "is not supported (send it empty or leave it out)")
            continue
        if flat.shape[0] != 1:
            raise RequestValidationError(spec.name, f"expected exactly one value, got {flat.shape[0]}")
        if spec.role == "prompt":
            _check_size(spec.name, flat[0], max_prompt_bytes)
        value = _value(spec, flat[0])
        if spec.role == "prompt":
            prompt = value
        elif spec.role == "stream":
            stream = bool(value)
        elif spec.role == "param" and spec.field is not None:
            params[spec.field] = value
    assert prompt is not None, "text_input is required by the table"
    return ParsedRequest(prompt, stream, params)


def _check_size(name: str, raw: Any, limit: int) -> None:
    size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(bytes(raw))
    if size > limit:
        raise RequestValidationError(name, f"is {size} bytes; this server accepts at most {limit} "
                                           f"(serving config max_prompt_bytes)")


def _value(spec: TensorSpec, raw: Any) -> Any:
    if spec.triton_type == "TYPE_STRING":
        if isinstance(raw, str):
            return raw
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestValidationError(spec.name, "is not valid UTF-8") from None
    if spec.triton_type == "TYPE_FP32":
        # float32 0.7 is 0.699999988; its shortest repr gives back the number the client meant.
        try:
            return float(repr(np.float32(raw)))
        except (TypeError, ValueError):
            raise RequestValidationError(spec.name, f"must be a number, got {raw!r}") from None
    return raw.item() if hasattr(raw, "item") else raw


def config_entries(specs: Iterable[TensorSpec], with_optional: bool) -> str:
    """The `input [...]` / `output [...]` entries of a config.pbtxt."""
    lines = []
    for s in specs:
        optional = " optional: true" if with_optional and s.optional else ""
        dims = ", ".join(str(d) for d in s.dims)
        lines.append(f'  {{ name: "{s.name}" data_type: {s.triton_type} dims: [ {dims} ]{optional} }}')
    return ",\n".join(lines)


def step_outputs(events: list[StepEvent], text: str) -> dict[str, np.ndarray]:
    """One response: `text` and the per-step sources and rewards of `events`; the final
    event (if among them) adds finish_reason and stats."""
    out = {
        "text_output": np.array([text.encode("utf-8")], dtype=np.object_),
        "step_source": np.array([e.source.encode() for e in events], dtype=np.object_),
        "step_reward": np.array([math.nan if e.reward is None else e.reward for e in events], dtype=np.float32),
    }
    last = events[-1] if events else None
    if last is not None and last.finished:
        out["finish_reason"] = np.array([(last.finish_reason or "").encode()], dtype=np.object_)
        out["stats"] = np.array([json.dumps(last.stats or {}).encode()], dtype=np.object_)
    return out
