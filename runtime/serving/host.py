"""Glue to the Triton Python backend (`triton_python_backend_utils`), used by triton_repo models.

`to_triton_error` is the one place where typed errors become `pb_utils.TritonError`. The
backend module exists only inside the Triton stub, so it is imported lazily (`_pb()`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.core.errors import ConfigError, EngineError, RequestValidationError, RsdError

log = logging.getLogger(__name__)


def _pb() -> Any:
    import triton_python_backend_utils as pb_utils

    return pb_utils


def to_triton_error(exc: BaseException) -> Any:
    """The single conversion from our errors to Triton's (codes map to HTTP 400 / 503 / 500)."""
    pb = _pb()
    if isinstance(exc, RequestValidationError):
        return pb.TritonError(str(exc), pb.TritonError.INVALID_ARG)
    if isinstance(exc, EngineError):
        return pb.TritonError(str(exc), pb.TritonError.UNAVAILABLE)
    if isinstance(exc, RsdError):
        return pb.TritonError(str(exc), pb.TritonError.INTERNAL)
    return pb.TritonError(f"internal error: {type(exc).__name__}: {exc}", pb.TritonError.INTERNAL)


def model_parameters(args: Mapping[str, str]) -> dict[str, str]:
    """The string parameters of a model's config.pbtxt (as `initialize` receives it)."""
    import json

    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def require(params: Mapping[str, str], key: str) -> str:
    value = params.get(key, "")
    if not value or value.startswith("${"):
        raise ConfigError(f"parameters.{key}", "missing from the model's config.pbtxt")
    return value


def read_inputs(request: Any) -> dict[str, np.ndarray]:
    return {t.name(): t.as_numpy() for t in request.inputs()}


def to_tensors(outputs: Mapping[str, np.ndarray]) -> list[Any]:
    pb = _pb()
    return [pb.Tensor(name, value) for name, value in outputs.items()]


@dataclass(slots=True)
class PbSink:
    """A decoupled response sender that always ends with exactly one final flag."""

    sender: Any
    _final_sent: bool = False

    def send(self, outputs: dict[str, np.ndarray], final: bool) -> None:
        pb = _pb()
        flags = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        self.sender.send(pb.InferenceResponse(output_tensors=to_tensors(outputs)), flags=flags)
        self._final_sent |= final

    def fail(self, exc: RsdError) -> None:
        pb = _pb()
        try:
            self.sender.send(pb.InferenceResponse(error=to_triton_error(exc)),
                             flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            self._final_sent = True
        except Exception:  # the client may be gone; the error was logged by the caller
            log.warning("could not send the error response: %s", exc)

    def close(self) -> None:
        if self._final_sent:
            return
        try:
            self.sender.send(flags=_pb().TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # cancelled requests may refuse further sends
            log.debug("final flag not sent: %s", exc)
        self._final_sent = True

    def is_cancelled(self) -> bool:
        return bool(self.sender.is_cancelled())


@dataclass(slots=True)
class PbTransport:
    """SubModelTransport over BLS. Each call runs the blocking `exec(decoupled=True)` in a
    dedicated thread pool: `async_exec` would use the loop's default executor (about 6 threads
    on 2 cores), which silently caps the number of concurrent sub-requests."""

    timeout_s: float
    threads: int = 64
    _pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bls")

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                    request_id: str) -> list[dict[str, np.ndarray]]:
        pb = _pb()
        request = pb.InferenceRequest(model_name=model, inputs=to_tensors(inputs),
                                      requested_output_names=list(outputs), request_id=request_id)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            responses = await asyncio.wait_for(
                loop.run_in_executor(self._pool, lambda: list(request.exec(decoupled=True))), self.timeout_s)
        except asyncio.TimeoutError:
            raise EngineError(f"{model}: no answer within {self.timeout_s:g} s") from None
        log.debug("%s answered %s in %.1f ms", model, request_id, 1000 * (time.perf_counter() - started))
        return [_outputs(model, r) for r in responses]


def _outputs(model: str, response: Any) -> dict[str, np.ndarray]:
    if response.has_error():
        raise EngineError(f"{model}: {response.error().message()}")
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


@dataclass(slots=True)
class PbMetricFactory:
    """MetricFactory on `pb_utils.MetricFamily` (one family per name, created on first use)."""

    _families: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str, description: str, kind: str, labels: Mapping[str, str],
               buckets: Sequence[float] | None = None) -> Any:
        pb = _pb()
        family = self._families.get(name)
        if family is None:
            kinds = {"counter": pb.MetricFamily.COUNTER, "gauge": pb.MetricFamily.GAUGE,
                     "histogram": pb.MetricFamily.HISTOGRAM}
            family = self._families[name] = pb.MetricFamily(name=name, description=description, kind=kinds[kind])
        if buckets is not None:
            return family.Metric(labels=dict(labels), buckets=list(buckets))
        return family.Metric(labels=dict(labels))


@dataclass(slots=True)
class Background:
    """Runs each request as its own task on the stub's event loop (decoupled models only), so
    `execute` returns at once and requests overlap; keeps references so tasks are not collected."""

    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def running(self) -> int:
        return len(self._tasks)


async def answer(request: Any, handle: Callable[[dict[str, np.ndarray], str], Awaitable[dict[str, np.ndarray]]]) -> None:
    """Serve one sub-model request: one response with the final flag, or one error response."""
    pb = _pb()
    sender = request.get_response_sender()
    try:
        outputs = await handle(read_inputs(request), request.request_id() or "anonymous")
        wanted = set(request.requested_output_names()) or set(outputs)
        response = pb.InferenceResponse(output_tensors=to_tensors({k: v for k, v in outputs.items() if k in wanted}))
    except RsdError as exc:
        log.warning("sub-model request failed: %s", exc)
        response = pb.InferenceResponse(error=to_triton_error(exc))
    except Exception as exc:
        log.exception("sub-model request failed unexpectedly")
        response = pb.InferenceResponse(error=to_triton_error(exc))
    sender.send(response, flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def configure_logging() -> None:
    """Our loggers write to the stub's stderr, which tritonserver's log captures. Level from
    RSD_LOG_LEVEL (default INFO)."""
    import os

    level = os.environ.get("RSD_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
