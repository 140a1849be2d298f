"""SubModelTransport over the server's own gRPC endpoint (loopback), used by the BLS by default.

Why not BLS `exec`/`async_exec`: under a soak at concurrency 16 (thousands of sub-requests per
second) the `rsd` stub of python_backend 24.10 still died of heap corruption within minutes with
`async_exec(decoupled=True)` from a sized executor (`malloc(): unaligned fastbin chunk
detected`), as it did with blocking `exec` from a thread pool. The gRPC path is Triton's most
used one. All sub-requests travel on one long-lived bidirectional stream (`SharedStream`, on the
model's own loop): a stream per sub-request cost about 1 ms of a PRM call's 6.5 ms, and setting
streams up and down was about a fifth of the BLS's samples at c = 16 (docs/benchmarks-history.md,
"Lean forward, padding-bounded forwards, one sub-request stream"). Responses, error responses included, carry
the request's id, which is unique per sub-request (runtime.engines.triton.transport.SubRequestTags):
Triton's stream names an error's request but not always its model, so each answer is routed by
id alone, to exactly its call. The sub-request's token, cache key, released keys and
`triton_enable_empty_final_response` go as request parameters; responses are read until the
final flag (TensorRT-LLM answers n sequences as n responses). When the stream breaks (the server stops), every call on it fails at once with an
EngineError and the next call opens a new one. A call given up by its caller (cancelled, timed
out) stays routed until its answer comes, which is then dropped. Sub-models see the same request
as over BLS.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.core.errors import EngineError
from runtime.engines.triton.transport import SubRequestTags, timed
from runtime.wire.model_env import INFER_AUTH_METADATA

log = logging.getLogger(__name__)

FINAL = "triton_final_response"


@dataclass(slots=True)
class _Call:
    model: str
    future: asyncio.Future[list[dict[str, np.ndarray]]]
    replies: list[dict[str, np.ndarray]] = field(default_factory=list)


@dataclass(slots=True)
class SharedStream:
    """One ModelStreamInfer stream for every sub-request; answers routed by their (unique) id."""

    stub: Any  # service_pb2_grpc.GRPCInferenceServiceStub on an aio channel
    metadata: tuple[tuple[str, str], ...] = ()  # e.g. the inference key when the server requires one
    pending: dict[str, _Call] = field(default_factory=dict)  # sub-request id -> its call
    broken: bool = False
    _queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    _reader: asyncio.Task[None] | None = None

    async def call(self, request: Any) -> list[dict[str, np.ndarray]]:
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        assert request.id not in self.pending, request.id  # ids are unique (SubRequestTags)
        call = _Call(request.model_name, asyncio.get_running_loop().create_future())
        self.pending[request.id] = call
        self._queue.put_nowait(request)
        return await asyncio.shield(call.future)  # routed until answered, even if our caller gives up

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            yield await self._queue.get()

    async def _read(self) -> None:
        from tritonclient.grpc import InferResult

        error = EngineError("the sub-request stream failed")
        try:
            async for response in self.stub.ModelStreamInfer(self._requests(), metadata=self.metadata or None):
                infer = response.infer_response
                if response.error_message:  # final; Triton names the request, but not always the model
                    self._fail(infer.id, response.error_message)
                    continue
                call = self.pending.get(infer.id)
                if call is None:
                    log.warning("a sub-model answer for %s/%s nobody waits for", infer.model_name, infer.id)
                    continue
                result = InferResult(infer)
                if infer.outputs:
                    call.replies.append({o.name: result.as_numpy(o.name) for o in infer.outputs})
                if infer.parameters[FINAL].bool_param:
                    del self.pending[infer.id]
                    if not call.future.done():
                        call.future.set_result(call.replies)
            error = EngineError("the sub-request stream ended")
        except asyncio.CancelledError:
            error = EngineError("the server is shutting down")
            raise
        except Exception as exc:  # the connection broke (the server is stopping)
            error = EngineError(f"sub-request stream: {type(exc).__name__}: {exc}")
        finally:
            self.broken = True
            calls, self.pending = self.pending, {}
            for call in calls.values():
                if not call.future.done():
                    call.future.set_exception(EngineError(f"{call.model}: {error}"))

    def _fail(self, request_id: str, message: str) -> None:
        call = self.pending.pop(request_id, None)
        if call is None:
            log.warning("a sub-model error for %s nobody waits for: %s", request_id, message)
            return
        if not call.future.done():
            call.future.set_exception(EngineError(f"{call.model}: {message}"))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


@dataclass(slots=True)
class GrpcTransport:
    url: str
    timeout_s: float
    token: str = ""
    token_parameter: str = "rsd_internal_token"
    observe: Callable[[str, float], None] | None = None  # (model, seconds) per sub-request
    shared_stream: bool = True  # False: one stream per sub-request
    authorization: str = ""  # "Bearer KEY" when the server keys inference (model_env.INFER_AUTH_ENV)
    tags: SubRequestTags = field(default_factory=SubRequestTags)
    _client: Any = field(default=None, init=False)
    _channel: Any = field(default=None, init=False)
    _stream: SharedStream | None = field(default=None, init=False)

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                    key: str, kind: str = "") -> list[dict[str, np.ndarray]]:
        request_id, parameters = self.tags.tag(model, key, kind)
        call = self._call(model, inputs, outputs, request_id, {
            **parameters, self.token_parameter: self.token, "triton_enable_empty_final_response": True})
        replies: list[dict[str, np.ndarray]] = await timed(model, request_id, call, self.timeout_s, self.observe)
        return replies

    def release(self, model: str, key: str) -> None:
        self.tags.release(model, key)

    async def _call(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                    request_id: str, parameters: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        if not self.shared_stream:
            return await self.own_stream(model, inputs, outputs, request_id, parameters)
        return await self._shared().call(infer_request(model, inputs, outputs, request_id, parameters))

    def _shared(self) -> SharedStream:
        if self._stream is None or self._stream.broken:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            if self._channel is None:
                self._channel = grpc.aio.insecure_channel(self.url, options=[
                    ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
            self._stream = SharedStream(service_pb2_grpc.GRPCInferenceServiceStub(self._channel), self._metadata())
        return self._stream

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((INFER_AUTH_METADATA, self.authorization),) if self.authorization else ()

    async def own_stream(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                         request_id: str, parameters: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        """The sub-request on a stream of its own (tritonclient.grpc.aio), closed when it is answered."""
        import tritonclient.grpc as grpcclient
        from tritonclient.grpc import aio as grpcaio
        from tritonclient.utils import np_to_triton_dtype

        if self._client is None:
            self._client = grpcaio.InferenceServerClient(self.url)
        tensors = []
        for name, array in inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        done = asyncio.Event()
        request = {"model_name": model, "inputs": tensors, "request_id": request_id,
                   "outputs": [grpcclient.InferRequestedOutput(o) for o in outputs], "parameters": parameters}

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield request
            await done.wait()  # keep our half open until the final response came

        replies: list[dict[str, np.ndarray]] = []
        try:
            async for result, error in self._client.stream_infer(requests(), headers=dict(self._metadata()) or None):
                if error is not None:
                    raise EngineError(f"{model}: {error.message()}")
                response = result.get_response()
                if response.outputs:
                    replies.append({o.name: result.as_numpy(o.name) for o in response.outputs})
                if response.parameters[FINAL].bool_param:
                    break
        except EngineError:
            raise
        except Exception as exc:  # the connection broke (the server is stopping, the model is gone)
            raise EngineError(f"{model}: {type(exc).__name__}: {exc}") from None
        finally:
            done.set()
        return replies


def infer_request(model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], request_id: str,
                  parameters: Mapping[str, Any]) -> Any:
    """A ModelInferRequest protobuf: raw tensor contents, BYTES tensors serialized as Triton expects."""
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for name, array in inputs.items():
        dtype = np_to_triton_dtype(array.dtype)
        request.inputs.add(name=name, datatype=dtype, shape=list(array.shape))
        if dtype == "BYTES":  # as tritonclient.grpc.InferInput.set_data_from_numpy does
            packed = serialize_byte_tensor(array)
            raw = packed.item() if packed.size > 0 else b""
        else:
            raw = np.ascontiguousarray(array).tobytes()
        request.raw_input_contents.append(raw)
    for name in outputs:
        request.outputs.add(name=name)
    for key, value in parameters.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        elif isinstance(value, int):
            request.parameters[key].int64_param = value
        else:
            request.parameters[key].string_param = str(value)
    return request
