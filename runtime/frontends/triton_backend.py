"""The `rsd` model seen from a front: gRPC streaming (`tritonclient.grpc.aio`), one StepReply per step.

Tensor names, data types and shapes come from the served model's metadata (read once, when the
server first answers; the model-config API may be restricted to admins, metadata is not), so a
batch dimension (`max_batch_size` > 0) or new inputs need no change here. A gRPC stream's error
response carries only a message (`ModelStreamInferResponse` has no status code), so `classify`
maps it to an HTTP status by its form: our validation errors and Triton's input checks name the
input first (400); an engine error names the failing sub-model first ("prm: ..."), and an
unknown, unloaded or stopping model is Triton's or the BLS's own message (503); "internal
error" and anything else is 500.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.core.params import RequestParams

log = logging.getLogger(__name__)

_NUMPY = {"BYTES": np.object_, "FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64,
          "UINT32": np.uint32, "UINT64": np.uint64, "BOOL": np.bool_}
_UNAVAILABLE = ("unknown model", "is not ready", "shutting down", "shut down", "no answer within", "unavailable")
_OVERLOADED = ("overloaded, retry later", "Exceeds maximum queue size", "Request timeout expired")  # never started
_INVALID = ("unknown request parameter", "unknown input", "unexpected", "expects", "must be", "not supported")
_FIELDS = frozenset(f.name for f in dataclasses.fields(RequestParams))
_REQUEST_ID = re.compile(r"^\[request id: [^\]]*\]\s*")


class BackendError(Exception):
    """A request the backend could not serve, with the HTTP status it maps to."""

    def __init__(self, status: int, message: str, param: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.retry_after_s = retry_after_s  # the server was full and did not start the request


@dataclass(frozen=True, slots=True)
class StepReply:
    """One response of the `rsd` model: a decided step; the last one has finish_reason and stats."""

    text: str
    source: str | None
    reward: float | None  # None: the step was not judged
    finish_reason: str | None = None
    stats: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a front needs from the served model's metadata."""

    name: str
    batched: bool  # max_batch_size > 0: every input gets a leading batch dimension of 1
    inputs: Mapping[str, str]  # tensor name -> wire data type (BYTES, FP32, INT32, ...)

    @classmethod
    def of_bls(cls, name: str) -> ModelSpec:
        """Our BLS's inputs from its I/O table: no metadata call, which beyond loopback needs the
        admin key (docs/serving.md, Security)."""
        from runtime.wire.bls_io import INPUTS

        wire = {"TYPE_STRING": "BYTES"}
        return cls(name, True, {s.name: wire.get(s.triton_type, s.triton_type.removeprefix("TYPE_")) for s in INPUTS})

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ModelSpec:
        inputs = {i["name"]: i for i in metadata.get("inputs", [])}
        # text_input is one value: its shape is [1], or [-1, 1] with a batch dimension
        shape = [int(d) for d in inputs.get("text_input", {}).get("shape", [1])]
        return cls(str(metadata["name"]), len(shape) == 2 and shape[0] == -1,
                   {name: str(i["datatype"]) for name, i in inputs.items()})


def tensor_names() -> dict[str, str]:
    """RequestParams field -> the rsd model's input name (the BLS I/O table; `seed` is `random_seed`)."""
    from runtime.wire.bls_io import tensor_name

    return {f: tensor_name(f) for f in _FIELDS}


def classify(message: str, spec: ModelSpec | None) -> BackendError:
    message = _REQUEST_ID.sub("", message.strip())
    head = message.split(":", 1)[0].strip()
    inputs = set(spec.inputs) if spec else set()
    if head in inputs | _FIELDS:
        return BackendError(400, message, head)
    if head.startswith("internal error"):
        return BackendError(500, message)
    if any(phrase in message for phrase in _OVERLOADED):
        return BackendError(503, message, retry_after_s=1)
    if any(phrase in message for phrase in _UNAVAILABLE):
        return BackendError(503, message)
    if any(phrase in message for phrase in _INVALID):
        quoted = re.search(r"input '([^']+)'", message)
        return BackendError(400, message, quoted.group(1) if quoted else None)
    if re.fullmatch(r"[\w.-]+", head):
        return BackendError(503, message)  # an EngineError names the failing sub-model: "prm: ..."
    return BackendError(500, message)


@dataclass(slots=True)
class RsdBackend:
    """A shared gRPC channel to the server; each `stream` call is one bidirectional stream."""

    url: str  # host:port of Triton's gRPC endpoint
    model: str = "rsd"
    timeout_s: float = 300.0  # per response: a step that takes longer fails the request (never hangs)
    api_key: str = ""  # when Triton keys inference (rsd serve --api-key): sent as its gRPC metadata
    _client: Any = None

    def client(self) -> Any:
        if self._client is None:  # created on the serving loop: grpc.aio binds to the running loop
            import tritonclient.grpc.aio as grpcaio

            self._client = grpcaio.InferenceServerClient(self.url)
        return self._client

    def _headers(self) -> dict[str, str] | None:
        from runtime.wire.model_env import INFER_AUTH_METADATA

        return {INFER_AUTH_METADATA: f"Bearer {self.api_key}"} if self.api_key else None

    async def ready(self) -> bool:
        try:
            client = self.client()
            return bool(await client.is_server_ready() and await client.is_model_ready(self.model))
        except Exception as exc:  # no server, or not yet: not ready
            log.debug("readiness probe of %s failed: %s", self.url, exc)
            return False

    async def spec(self) -> ModelSpec:
        return ModelSpec.of_bls(self.model)

    async def stream(self, prompt: str, values: Mapping[str, Any]) -> AsyncIterator[StepReply]:
        """Steps as the server decides them; leaving early cancels the request on the server."""
        spec = await self.spec()
        tensors = [_tensor(spec, "text_input", prompt), _tensor(spec, "stream", True)]
        tensors += [_tensor(spec, name, value) for name, value in values.items()]
        ended = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": self.model, "inputs": tensors, "request_id": uuid.uuid4().hex,
                   "parameters": {"triton_enable_empty_final_response": True}}
            await ended.wait()  # keep the stream open until the final response

        responses = self.client().stream_infer(requests(), headers=self._headers())
        final = False
        try:
            while not final:
                result, error = await asyncio.wait_for(responses.__anext__(), self.timeout_s)
                if error is not None:
                    final = True
                    raise classify(str(error.message() if hasattr(error, "message") else error), spec)
                final = result.get_response().parameters["triton_final_response"].bool_param
                if final:
                    ended.set()  # close our side now: the caller may never resume this generator
                reply = _reply(result)
                if reply is not None:
                    yield reply
        except asyncio.TimeoutError:
            raise BackendError(503, f"{self.model}: no response within {self.timeout_s:g} s") from None
        except StopAsyncIteration:
            raise BackendError(503, f"{self.model}: the stream ended before the final response") from None
        except BackendError:
            raise
        except Exception as exc:  # grpc.aio.AioRpcError: the server is gone or refused the stream
            raise BackendError(503, f"the Triton server at {self.url} failed: {_rpc_message(exc)}") from None
        finally:
            ended.set()
            if not final:
                responses.cancel()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _tensor(spec: ModelSpec, name: str, value: Any) -> Any:
    import tritonclient.grpc as grpcclient

    wire = spec.inputs.get(name)
    if wire is None:
        raise BackendError(400, f"{name}: the {spec.name} model has no such input", name)
    items = list(value) if isinstance(value, (list, tuple)) else [value]  # a list input: stop_words, ...
    try:
        array = np.array([v.encode() if isinstance(v, str) else v for v in items], dtype=_NUMPY[wire])
    except (OverflowError, ValueError, TypeError, KeyError):
        raise BackendError(400, f"{name}: {value!r} is not a {wire}", name) from None
    if spec.batched:
        array = array.reshape(1, -1)
    tensor = grpcclient.InferInput(name, list(array.shape), wire)
    tensor.set_data_from_numpy(array)
    return tensor


def _reply(result: Any) -> StepReply | None:
    def strings(name: str) -> list[str]:
        array = result.as_numpy(name)
        return [] if array is None else [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]

    text = strings("text_output")
    if not text:
        return None  # the empty final response
    sources = strings("step_source")
    rewards = result.as_numpy("step_reward")
    reward = float(rewards.reshape(-1)[0]) if rewards is not None and rewards.size else math.nan
    finish, stats = strings("finish_reason"), strings("stats")
    return StepReply("".join(text), sources[0] if sources else None, None if math.isnan(reward) else reward,
                     finish[0] if finish else None, json.loads(stats[0]) if stats else None)


def _rpc_message(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    return str(details() if callable(details) else exc)
