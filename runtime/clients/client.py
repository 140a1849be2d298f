"""A client of the `rsd` model: gRPC streaming and HTTP generate / generate_stream.

Parameters are RequestParams field names (`seed` is sent as `random_seed`); tensor types come
from the BLS I/O table. Every call has a timeout: a response that does not arrive in
`timeout_s` raises TimeoutError. Leaving a stream early cancels the request on the server.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.core.errors import RsdError
from runtime.wire.bls_io import INPUTS, TensorSpec

log = logging.getLogger(__name__)

# RequestParams field (or text_input / stream) -> its input; the first name of a field wins
_BY_FIELD = {(spec.field or spec.name): spec for spec in reversed(INPUTS) if spec.role in ("prompt", "stream", "param")}
_NUMPY = {"TYPE_FP32": np.float32, "TYPE_INT32": np.int32, "TYPE_UINT64": np.uint64, "TYPE_BOOL": bool,
          "TYPE_STRING": np.object_}


class ServerError(RsdError):
    """The server answered with an error (its message names the field at fault); `status` is the
    HTTP status over HTTP (503: overloaded or shutting down, retry later)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def overloaded(self) -> bool:
        """Refused before it started because the server was full: retrying later is safe."""
        text = str(self)
        return self.status == 503 or "overloaded, retry later" in text or "Exceeds maximum queue size" in text \
            or "Request timeout expired" in text


@dataclass(frozen=True, slots=True)
class StepMessage:
    """One response: a step (streaming) or the whole text; the last one has finish_reason and stats."""

    text: str
    sources: tuple[str, ...]
    rewards: tuple[float | None, ...]
    finish_reason: str | None = None
    stats: dict[str, Any] | None = None
    log_probs: tuple[float, ...] | None = None  # per token of `text`, when return_log_probs

    @property
    def final(self) -> bool:
        return self.finish_reason is not None


def request_values(prompt: str, params: Mapping[str, Any], stream: bool) -> dict[str, tuple[TensorSpec, Any]]:
    values = {"text_input": (_BY_FIELD["text_input"], prompt), "stream": (_BY_FIELD["stream"], stream)}
    for key, value in params.items():
        spec = _BY_FIELD.get(key)
        if spec is None:
            raise ValueError(f"unknown request parameter {key!r}")
        values[spec.name] = (spec, value)
    return values


@dataclass(slots=True)
class RsdClient:
    url: str  # host:port
    protocol: str = "grpc"  # grpc | http
    model: str = "rsd"
    timeout_s: float = 120.0
    api_key: str = ""  # a server started with --api-key: sent as `authorization: Bearer KEY`

    def stream(self, prompt: str, params: Mapping[str, Any] | None = None, stream: bool = True) -> Iterator[StepMessage]:
        values = request_values(prompt, params or {}, stream)
        if self.protocol == "grpc":
            return self._grpc(values)
        if self.protocol == "http":
            return self._http(values, stream)
        raise ValueError(f"unknown protocol {self.protocol!r}; expected grpc or http")

    def generate(self, prompt: str, params: Mapping[str, Any] | None = None) -> StepMessage:
        """One non-streamed request: the whole text in one message."""
        messages = list(self.stream(prompt, params, stream=False))
        if len(messages) != 1:
            raise ServerError(f"expected one response, got {len(messages)}")
        return messages[0]

    def _grpc(self, values: Mapping[str, tuple[TensorSpec, Any]]) -> Iterator[StepMessage]:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        from runtime.wire.model_env import INFER_AUTH_METADATA

        headers = {INFER_AUTH_METADATA: f"Bearer {self.api_key}"} if self.api_key else None
        client.start_stream(callback=lambda result, error: responses.put((result, error)), headers=headers)
        finished = False
        try:
            inputs = [_grpc_input(grpcclient, spec, value) for spec, value in values.values()]
            try:
                client.async_stream_infer(self.model, inputs, request_id=uuid.uuid4().hex,
                                          enable_empty_final_response=True)
            except Exception as exc:  # the server refused the stream itself (e.g. a restricted API)
                finished = True
                raise ServerError(_stream_error(responses, exc)) from None
            while not finished:
                try:
                    result, error = responses.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise TimeoutError(f"no response from {self.url} within {self.timeout_s:g} s") from None
                if error is not None:
                    finished = True
                    raise ServerError(error.message() if hasattr(error, "message") else str(error))
                finished = result.get_response().parameters["triton_final_response"].bool_param
                if result.as_numpy("text_output") is not None:
                    yield _grpc_message(result)
        finally:
            client.stop_stream(cancel_requests=not finished)
            client.close()

    def _http(self, values: Mapping[str, tuple[TensorSpec, Any]], stream: bool) -> Iterator[StepMessage]:
        body = {name: _json_value(spec, value) for name, (spec, value) in values.items()}
        endpoint = "generate_stream" if stream else "generate"
        url = f"http://{self.url.removeprefix('http://')}/v2/models/{self.model}/{endpoint}"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise ServerError(_http_error(exc.read()), exc.code) from None
        with resp:
            if not stream:
                yield _json_message(json.loads(resp.read()))
                return
            for line in resp:
                if line.startswith(b"data:"):
                    data = json.loads(line[5:])
                    if "error" in data:
                        raise ServerError(data["error"])
                    yield _json_message(data)


def _stream_error(responses: queue.Queue[tuple[Any, Any]], exc: Exception) -> str:
    """The error the stream's callback got (its reason), else the exception's own message."""
    try:
        _, error = responses.get(timeout=5)
    except queue.Empty:
        return str(exc)
    return str(error.message() if hasattr(error, "message") else error) if error is not None else str(exc)


def _grpc_input(grpcclient: Any, spec: TensorSpec, value: Any) -> Any:
    data = [value.encode() if isinstance(value, str) else value] if spec.dims == (1,) else \
        [v.encode() if isinstance(v, str) else v for v in value]
    array = np.array([data], dtype=_NUMPY[spec.triton_type])  # [1 row, values]: the model batches
    tensor = grpcclient.InferInput(spec.name, list(array.shape), "BYTES" if spec.triton_type == "TYPE_STRING"
                                   else spec.triton_type.removeprefix("TYPE_"))
    tensor.set_data_from_numpy(array)
    return tensor


def _grpc_message(result: Any) -> StepMessage:
    def strings(name: str) -> list[str]:
        array = result.as_numpy(name)
        return [] if array is None else [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]

    rewards = result.as_numpy("step_reward")
    stats = strings("stats")
    finish = strings("finish_reason")
    log_probs = result.as_numpy("output_log_probs")
    return StepMessage("".join(strings("text_output")), tuple(strings("step_source")),
                       tuple(_reward(r) for r in (rewards.reshape(-1) if rewards is not None else [])),
                       finish[0] if finish else None, json.loads(stats[0]) if stats else None,
                       None if log_probs is None else tuple(float(x) for x in log_probs.reshape(-1)))


def _json_value(spec: TensorSpec, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_json_value(spec, v) for v in value]
    if spec.triton_type == "TYPE_FP32":
        return float(value)
    if spec.triton_type in ("TYPE_INT32", "TYPE_UINT64"):
        return int(value) if not isinstance(value, bool) else value
    return value


def _json_message(data: Mapping[str, Any]) -> StepMessage:
    def listed(value: Any) -> list[Any]:
        return [] if value is None else value if isinstance(value, list) else [value]

    stats = data.get("stats")
    log_probs = data.get("output_log_probs")
    return StepMessage(data.get("text_output", ""), tuple(listed(data.get("step_source"))),
                       tuple(_reward(r) for r in listed(data.get("step_reward"))), data.get("finish_reason"),
                       json.loads(stats) if stats else None,
                       None if log_probs is None else tuple(float(x) for x in np.asarray(log_probs).reshape(-1)))


def _reward(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _http_error(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", body.decode(errors="replace")))
    except ValueError:
        return body.decode(errors="replace")
