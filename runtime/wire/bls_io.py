"""The `rsd` BLS model's inputs, as a table: tensor name -> what it sets, type, shape, role.

The table renders the inputs of `triton_repo/rsd/config.pbtxt` and parses requests, so a new
RequestParams field is served by adding nothing but the field. It takes TensorRT-LLM's
`tensorrt_llm_bls` / `ensemble` input set (0.16-0.18's 38 inputs, plus the 1.x names), with a
batch dimension (`max_batch_size` MAX_BATCH_SIZE): every input is either honoured or accepted
only at its neutral value, with an error naming it otherwise; an unknown name is an error too.
Roles:
  prompt   text_input
  stream   stream (alias streaming)
  param    a RequestParams field (aliases: random_seed/seed, min_tokens/min_length,
           gamma/num_draft_tokens)
  option   how the row's responses are built (ParsedRequest attributes)
  fixed    accepted only at `neutral` (beam_width 1, no LoRA, ...); `why` says why
  accepted any value, no effect on the output (pad_id: text has no padding; use_draft_logits:
           both of TensorRT-LLM's rules give the target's distribution, we always use ours)
docs/serving.md has the table with what each input does.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.core import validate
from runtime.core.errors import RequestValidationError
from runtime.core.params import RequestParams

MAX_BATCH_SIZE = 8  # rows per request (config.pbtxt max_batch_size); each row is its own step loop
DEFAULT_MAX_PROMPT_BYTES = 65536


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    triton_type: str  # TYPE_STRING | TYPE_FP32 | TYPE_FP16 | TYPE_INT32 | TYPE_UINT64 | TYPE_UINT8 | TYPE_BOOL
    role: str  # prompt | stream | param | option | fixed | accepted | output
    field: str | None = None  # RequestParams field (param) or ParsedRequest attribute (option)
    dims: tuple[int, ...] = (1,)  # per row (the batch dimension comes first on the wire)
    optional: bool = True
    neutral: Any = None  # fixed: the only value accepted (None: empty or absent)
    why: str = ""  # fixed: why nothing else is
    unset: Any = None  # param: a value that means "not given" (num_draft_tokens 0)


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """One row of a request: the question, its loosely typed parameters (the pipeline validates
    them into RequestParams) and how its responses are built."""

    prompt: str
    stream: bool = False
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    exclude_input: bool = True  # false: the non-streamed text starts with text_input (TensorRT-LLM)
    perf_metrics: bool = False  # acceptance_rate, total_*_draft_tokens, *_time_ns, kv_cache_* on every response
    num_input_tokens: bool = False
    num_output_tokens: bool = False
    end_id: int = -1  # -1: the tokenizer's; another id must be one of its EOS ids


_TYPES = {str: "TYPE_STRING", float: "TYPE_FP32", int: "TYPE_INT32", bool: "TYPE_BOOL"}
_LISTS = {"stop_words": "TYPE_STRING", "bad_words": "TYPE_STRING", "embedding_bias_words": "TYPE_STRING",
          "embedding_bias_weights": "TYPE_FP32"}
_PRIMARY = {"seed": TensorSpec("random_seed", "TYPE_UINT64", "param", "seed")}  # TensorRT-LLM 0.x names
_ALIASES = (
    TensorSpec("seed", "TYPE_UINT64", "param", "seed"),  # TensorRT-LLM 1.x
    TensorSpec("min_length", "TYPE_INT32", "param", "min_tokens"),  # TensorRT-LLM 0.x, genai-perf
    TensorSpec("num_draft_tokens", "TYPE_INT32", "param", "gamma", unset=0),  # draft tokens per round (sd, cos)
)
_MULTIMODAL = "multimodal inputs are not supported"
_BEAM = "beam search is not supported (one sequence per row)"
_LOGITS = "logits are not returned (a step's tokens come from several models)"
_FIXED = (
    TensorSpec("decoder_text_input", "TYPE_STRING", "fixed", neutral="", why="encoder-decoder models only"),
    TensorSpec("image_input", "TYPE_FP16", "fixed", dims=(-1, 3, -1, -1), why=_MULTIMODAL),
    TensorSpec("image_bytes_input", "TYPE_UINT8", "fixed", dims=(-1, -1, -1, -1), why=_MULTIMODAL),
    TensorSpec("image_url_input", "TYPE_STRING", "fixed", neutral="", why=_MULTIMODAL),
    TensorSpec("video_bytes_input", "TYPE_UINT8", "fixed", dims=(-1, -1, -1, -1), why=_MULTIMODAL),
    TensorSpec("beam_width", "TYPE_INT32", "fixed", neutral=1, why=_BEAM),
    TensorSpec("length_penalty", "TYPE_FP32", "fixed", neutral=1.0, why="only affects beam search, " + _BEAM),
    TensorSpec("num_return_sequences", "TYPE_INT32", "fixed", neutral=1,
               why="one sequence per row (send several rows or requests)"),
    TensorSpec("return_context_logits", "TYPE_BOOL", "fixed", neutral=False, why=_LOGITS),
    TensorSpec("return_generation_logits", "TYPE_BOOL", "fixed", neutral=False, why=_LOGITS),
    TensorSpec("prompt_embedding_table", "TYPE_FP16", "fixed", dims=(-1, -1), why="prompt tuning is not supported"),
    TensorSpec("prompt_vocab_size", "TYPE_INT32", "fixed", neutral=0, why="prompt tuning is not supported"),
    TensorSpec("prompt_table_extra_id", "TYPE_UINT64", "fixed", neutral=0, why="prompt tuning is not supported"),
    TensorSpec("lora_task_id", "TYPE_UINT64", "fixed", neutral=0, why="LoRA adapters are not supported"),
    TensorSpec("lora_weights", "TYPE_FP16", "fixed", dims=(-1, -1), why="LoRA adapters are not supported"),
    TensorSpec("lora_config", "TYPE_INT32", "fixed", dims=(-1, 3), why="LoRA adapters are not supported"),
    TensorSpec("guided_decoding_guide_type", "TYPE_STRING", "fixed", neutral="", why="guided decoding is not supported"),
    TensorSpec("guided_decoding_guide", "TYPE_STRING", "fixed", neutral="", why="guided decoding is not supported"),
)
_OPTIONS = (
    TensorSpec("exclude_input_in_output", "TYPE_BOOL", "option", "exclude_input"),
    TensorSpec("return_perf_metrics", "TYPE_BOOL", "option", "perf_metrics"),
    TensorSpec("return_kv_cache_reuse_stats", "TYPE_BOOL", "option", "perf_metrics"),  # TensorRT-LLM 0.x
    TensorSpec("return_num_input_tokens", "TYPE_BOOL", "option", "num_input_tokens"),
    TensorSpec("return_num_output_tokens", "TYPE_BOOL", "option", "num_output_tokens"),
    TensorSpec("end_id", "TYPE_INT32", "option", "end_id"),
)


def _param_specs() -> tuple[TensorSpec, ...]:
    specs = []
    for f in dataclasses.fields(RequestParams):
        if f.name in _LISTS:
            specs.append(TensorSpec(f.name, _LISTS[f.name], "param", f.name, dims=(-1,)))
        else:
            specs.append(_PRIMARY.get(f.name) or TensorSpec(f.name, _TYPES[type(f.default)], "param", f.name))
    return tuple(specs)


INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_input", "TYPE_STRING", "prompt", optional=False),
    TensorSpec("stream", "TYPE_BOOL", "stream", "stream"),
    TensorSpec("streaming", "TYPE_BOOL", "stream", "stream"),  # tensorrt_llm's name
    *_param_specs(),
    *_ALIASES,
    *_OPTIONS,
    *_FIXED,
    TensorSpec("pad_id", "TYPE_INT32", "accepted"),
    TensorSpec("use_draft_logits", "TYPE_BOOL", "accepted"),
)

# Request parameters Triton itself adds or reads (e.g. the gRPC stream's empty-final-response flag).
_TRITON_PARAMETER_PREFIX = "triton_"
_BY_NAME = {spec.name: spec for spec in INPUTS}
_BY_FIELD = {spec.field: spec for spec in reversed(INPUTS) if spec.role == "param"}  # the first name wins


def tensor_name(field: str) -> str:
    """The input a RequestParams field is sent as (`seed` is `random_seed`)."""
    return _BY_FIELD[field].name


def parse_inputs(tensors: Mapping[str, np.ndarray], parameters: Mapping[str, Any] | None = None,
                 max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES) -> tuple[ParsedRequest, ...]:
    """One ParsedRequest per row. Validates shapes and decodes values; RequestParams validates
    ranges. Errors name the tensor.

    Tensors come as [rows, ...] (a 1-D tensor is one row). `parameters` are the request's
    parameters: an HTTP generate body's keys that are not inputs land there, and so do gRPC
    request parameters; a known input name is taken as its value for every row, anything else is
    an error naming the key (a typo must not silently run with defaults)."""
    values = {name: _rows(np.asarray(array)) for name, array in tensors.items()}
    for key, value in (parameters or {}).items():
        if key.startswith(_TRITON_PARAMETER_PREFIX):
            continue
        spec = _BY_NAME.get(key) or _BY_FIELD.get(key)
        if spec is None:
            raise RequestValidationError(key, f"unknown request parameter; known: {', '.join(sorted(_BY_NAME))}")
        if spec.name in values:
            raise RequestValidationError(key, "given both as an input tensor and as a request parameter")
        values[spec.name] = np.array([[value]], dtype=np.object_ if isinstance(value, str) else None)
    unknown = sorted(set(values) - set(_BY_NAME))
    if unknown:
        raise RequestValidationError(unknown[0], "unknown input")
    if "text_input" not in values:
        raise RequestValidationError("text_input", "required input is missing")
    rows = values["text_input"].shape[0]
    if not 0 < rows <= MAX_BATCH_SIZE:
        raise RequestValidationError("text_input", f"{rows} rows; this model takes 1 to {MAX_BATCH_SIZE} per request")
    for name, array in values.items():
        if array.shape[0] not in (1, rows):
            raise RequestValidationError(name, f"has {array.shape[0]} rows, text_input {rows}")
    return tuple(_parse_row({n: a[min(b, a.shape[0] - 1)] for n, a in values.items()}, max_prompt_bytes)
                 for b in range(rows))


def row_count(tensors: Mapping[str, np.ndarray]) -> int:
    """The rows of a request as its text_input says (1 when it is missing: parse_inputs refuses it)."""
    text = tensors.get("text_input")
    return 1 if text is None or np.ndim(text) <= 1 else int(np.shape(text)[0])


def _rows(array: np.ndarray) -> np.ndarray:
    """[rows, values]: a 0-D or 1-D tensor is one row."""
    if array.ndim <= 1:
        return array.reshape(1, -1)
    return array.reshape(array.shape[0], -1)


def _parse_row(row: Mapping[str, np.ndarray], max_prompt_bytes: int) -> ParsedRequest:
    prompt = ""
    params: dict[str, Any] = {}
    options: dict[str, Any] = {}
    named: dict[str, str] = {}  # field -> the input that set it (two names of one field is an error)
    for name, flat in row.items():
        spec = _BY_NAME[name]
        if spec.role == "fixed":
            _check_neutral(spec, flat)
            continue
        if spec.role == "accepted":
            continue
        if spec.dims == (1,) and flat.shape[0] != 1:
            raise RequestValidationError(name, f"expected exactly one value per row, got {flat.shape[0]}")
        if spec.role == "prompt":
            _check_size(name, flat[0], max_prompt_bytes)
            prompt = _value(spec, flat[0])
            continue
        value = _value(spec, flat[0]) if spec.dims == (1,) else [_value(spec, v) for v in flat]
        field = spec.field or name
        if value == spec.unset:
            continue
        if field in named:
            raise RequestValidationError(field, f"given twice ({named[field]} and {name} set the same field)")
        named[field] = name
        (params if spec.role == "param" else options)[field] = value
    typed = {key: validate.coerce(key, value, _OPTION_TYPES[key], RequestValidationError)
             for key, value in options.items()}
    return ParsedRequest(prompt, **typed, params=params)


_OPTION_TYPES = {"stream": bool, "exclude_input": bool, "perf_metrics": bool, "num_input_tokens": bool,
                 "num_output_tokens": bool, "end_id": int}


def _check_neutral(spec: TensorSpec, flat: np.ndarray) -> None:
    ok = flat.size == 0 if spec.neutral is None else all(_value(spec, v) == spec.neutral for v in flat)
    if not ok:
        send = "send it empty" if spec.neutral is None else f"send {spec.neutral!r}"
        raise RequestValidationError(spec.name, f"{spec.why}; {send} or leave it out")


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
    if spec.triton_type in ("TYPE_FP32", "TYPE_FP16"):
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
