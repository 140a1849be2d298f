"""OpenAI request bodies -> one `rsd` model request; response and chunk bodies. No I/O here.

Supported: `model`, `prompt` (one string) or `messages` (system/developer messages, then one user
message: the model answers one question, framed by the pipeline's prompt template), `max_tokens`
(chat: or `max_completion_tokens`), `temperature`, `top_p`, `seed`, `stop`, `stream`,
`stream_options.include_usage`, `n` = 1. `presence_penalty`, `frequency_penalty` and `min_tokens`
(-> `min_length`) are sent when the served model has that input, else only their neutral value
is accepted. Our parameters (any RequestParams field: `method`, `threshold`, `n` of GSI, ...) go
in the extension object `"rsd": {...}` or as top-level keys that OpenAI does not define. Anything
else that would change the output (logprobs, echo, tools, n > 1, ...) is a 400 naming it, never
silently dropped.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.core.errors import RequestValidationError
from runtime.core.params import RequestParams

# The rsd model's finish reasons -> OpenAI's (a cap on steps or context is a length limit too).
FINISH = {"eos": "stop", "stop": "stop", "boxed": "stop", "max_tokens": "length", "max_steps": "length",
          "context": "length"}
_STANDARD = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "seed": "seed"}
# OpenAI name -> (the rsd model's input, neutral value): sent when the model has the input.
_OPTIONAL = {"presence_penalty": ("presence_penalty", 0.0), "frequency_penalty": ("frequency_penalty", 0.0),
             "min_tokens": ("min_length", 0)}
# Accepted only with these values (they would change the output otherwise).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "echo": (None, False), "suffix": (None, ""), "best_of": (None, 1), "logprobs": (None, False),
    "top_logprobs": (None, 0), "logit_bias": (None, {}), "tools": (None, []), "functions": (None, []),
    "tool_choice": (None, "none", "auto"), "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}), "ignore_eos": (None, False), "modalities": (None, ["text"]),
}
_METADATA = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key"}
_STATUS_TYPE = {400: "invalid_request_error", 404: "invalid_request_error", 503: "server_error",
                500: "server_error"}


class OpenAIError(Exception):
    """An error answered as OpenAI's JSON: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """Retry-After when the server was full (the request never started: retrying is safe)."""
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": _STATUS_TYPE.get(self.status, "invalid_request_error" if self.status < 500 else "server_error"),
                          "param": self.param, "code": self.code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape (the schema the front's error responses document)."""

    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthBody(BaseModel):
    status: Literal["ok"]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error responses of a route (OpenAPI), all in OpenAI's error shape."""
    return {status: {"model": ErrorBody} for status in statuses}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int | None = 1
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    rsd: dict[str, Any] | None = None


class CompletionRequest(_Request):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]  # one question per request


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Request):
    # system/developer messages, then the user's question (chat_question; a 400 names anything else)
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    """One request to the rsd model, and what the front does around it."""

    question: str
    values: dict[str, Any]  # input tensor name -> value
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def completion_question(req: CompletionRequest) -> str:
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if len(prompts) != 1 or not isinstance(prompts[0], str):
        raise OpenAIError(400, "prompt: exactly one string prompt per request is supported", "prompt")
    return prompts[0]


def chat_question(req: ChatRequest) -> str:
    """System/developer messages, then one user message, joined by blank lines (one question)."""
    if not req.messages or req.messages[-1].role != "user":
        raise OpenAIError(400, "messages: the last message must be the user's question", "messages")
    for message in req.messages[:-1]:
        if message.role not in ("system", "developer"):
            raise OpenAIError(400, "messages: multi-turn chats are not supported (the rsd model answers one "
                              "question): send system/developer messages and one user message", "messages")
    return "\n\n".join(text for text in (_content(m) for m in req.messages) if text)


def _content(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.get("type") != "text":
            raise OpenAIError(400, f"messages: content parts of type {part.get('type')!r} are not supported "
                              "(text only)", "messages")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def generation(req: _Request, question: str, inputs: Mapping[str, str], names: Mapping[str, str]) -> Generation:
    """Check the request and build the rsd request: `inputs` are the served model's input names,
    `names` map RequestParams fields to them (`seed` -> `random_seed`)."""
    if req.n not in (None, 1):
        raise OpenAIError(400, "n: only n = 1 is supported (one choice per request); the number of GSI / "
                          "best-of-n candidates is the extension parameter rsd.n", "n")
    extras = dict(req.model_extra or {})
    if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
        if req.max_tokens is not None and req.max_tokens != req.max_completion_tokens:
            raise OpenAIError(400, "max_completion_tokens: differs from max_tokens", "max_completion_tokens")
        req = req.model_copy(update={"max_tokens": req.max_completion_tokens})
    params = {key: getattr(req, name) for name, key in _STANDARD.items() if getattr(req, name) is not None}
    values: dict[str, Any] = {}
    for name, (tensor, neutral) in _OPTIONAL.items():
        value = extras.pop(name, None)
        if value is None or value == neutral:
            continue
        if tensor not in inputs:
            raise OpenAIError(400, f"{name}: not supported by this model (only {neutral!r})", name)
        values[tensor] = value
    params.update(_extension(req.rsd or {}, extras, params))
    try:
        checked = RequestParams.from_mapping(params)
    except RequestValidationError as exc:
        raise OpenAIError(400, str(exc), exc.field) from None
    for key in params:
        values[names.get(key, key)] = getattr(checked, key)
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if any(not s for s in stop) or len(stop) > 4:
        raise OpenAIError(400, "stop: up to 4 non-empty strings", "stop")
    if stop:  # the server ends the output after the first (StopTail drops it, as OpenAI does)
        tensor = names.get("stop_words", "stop_words")
        if tensor not in inputs:
            raise OpenAIError(400, f"stop: not supported by this model (it has no {tensor} input)", "stop")
        values[tensor] = stop
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return Generation(question, values, tuple(stop), bool(req.stream), include_usage)


def _extension(rsd: Mapping[str, Any], extras: dict[str, Any], standard: Mapping[str, Any]) -> dict[str, Any]:
    """Our parameters: the `rsd` object, plus top-level keys OpenAI does not define."""
    fields = {f for f in RequestParams.__dataclass_fields__}
    params: dict[str, Any] = {}
    for key, value in extras.items():
        if key in _METADATA:
            continue
        if key in _NEUTRAL:
            if value not in _NEUTRAL[key]:
                raise OpenAIError(400, f"{key}: not supported (only {', '.join(map(repr, _NEUTRAL[key]))})", key)
            continue
        if key not in fields or key in _STANDARD or key == "n":
            raise OpenAIError(400, f"{key}: unknown parameter (our parameters go in the 'rsd' object)", key)
        params[key] = value
    for key, value in rsd.items():
        if key in standard or key in params:
            raise OpenAIError(400, f"rsd.{key}: set twice (once as an OpenAI parameter)", f"rsd.{key}")
        if key not in fields:
            raise OpenAIError(400, f"rsd.{key}: unknown parameter; known: {', '.join(sorted(fields))}", f"rsd.{key}")
        params[key] = value
    return params


@dataclass(slots=True)
class ResponseIds:
    kind: Literal["completion", "chat"]
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = ("cmpl-" if self.kind == "completion" else "chatcmpl-") + uuid.uuid4().hex

    @property
    def object(self) -> str:
        return "text_completion" if self.kind == "completion" else "chat.completion"

    def head(self, chunk: bool) -> dict[str, Any]:
        obj = self.object + (".chunk" if chunk and self.kind == "chat" else "")
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def response_body(ids: ResponseIds, text: str, finish: str, used: dict[str, int], ext: dict[str, Any]) -> dict[str, Any]:
    if ids.kind == "completion":
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish}
    return {**ids.head(chunk=False), "choices": [choice], "usage": used, "rsd": ext}


def chunk_body(ids: ResponseIds, text: str, first: bool, finish: str | None, ext: dict[str, Any]) -> dict[str, Any]:
    if ids.kind == "completion":
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    else:
        delta = {"role": "assistant", "content": text} if first else {"content": text}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**ids.head(chunk=True), "choices": [choice], "rsd": ext}


def usage_chunk(ids: ResponseIds, used: dict[str, int]) -> dict[str, Any]:
    return {**ids.head(chunk=True), "choices": [], "usage": used}


@dataclass(slots=True)
class StopTail:
    """OpenAI's stop semantics on top of the server's rule: the server finds stop strings across
    steps and ends the output right after the first one (runtime.core.stopping.StopScanner, the
    one place stops are found; the front sends them as `stop_words`); OpenAI's output leaves the
    stop string out. So while streaming the last len(longest stop) - 1 characters are held back
    (a stop may have begun in them), and when the server says `stop` the stop string it ended on
    is dropped from the end."""

    stops: Sequence[str]
    _held: str = ""

    def feed(self, text: str) -> str:
        """The text to emit now."""
        buffer = self._held + text
        keep = max((len(s) for s in self.stops), default=1) - 1
        cut = max(len(buffer) - keep, 0)
        self._held = buffer[cut:]
        return buffer[:cut]

    def finish(self, text: str, stopped: bool) -> str:
        """The last text to emit; `stopped`: the server ended the output on a stop string."""
        buffer, self._held = self._held + text, ""
        if stopped:
            ending = max((s for s in self.stops if buffer.endswith(s)), key=len, default="")
            return buffer[:len(buffer) - len(ending)]
        return buffer
