"""Glue to the Triton Python backend (`triton_python_backend_utils`), used by triton_repo models.

`to_triton_error` is the one place where typed errors become `pb_utils.TritonError`. The
backend module exists only inside the Triton stub, so it is imported lazily (`_pb()`).

Concurrency (docs/serving.md, "Concurrency"): every model runs its requests on a `StubLoop`, an
asyncio loop in a thread of its own, fed by a *synchronous* `execute`. Sub-requests use the
backend's own `async_exec(decoupled=True)` on that loop, whose default executor we size
(`bls_threads`). An `async def execute` would instead put each call on the stub's loop as a
"background future", and the stub's bookkeeping of those races with fast coroutines (the
`Cannot remove future from background; KeyError` ERROR line of python_backend 24.10).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from runtime.core.errors import AccessDenied, ConfigError, EngineError, RequestValidationError, RsdError
from runtime.engines.triton.contract import REQUEST_KIND
from runtime.engines.triton.transport import CACHE_KEY, SubRequestTags, released_keys, timed
from runtime.wire.model_env import INFER_AUTH_ENV, TOKEN_ENV, URL_ENV

log = logging.getLogger(__name__)

# Sub-requests carry this parameter; sub-models answer only requests that carry the server's
# token (RSD_INTERNAL_TOKEN, set per start by runtime.deploy.server), so clients cannot call
# draft, target or PRM directly and bypass the BLS.
TOKEN_PARAMETER = "rsd_internal_token"


def _pb() -> Any:
    import triton_python_backend_utils as pb_utils

    return pb_utils


def to_triton_error(exc: BaseException) -> Any:
    """The single conversion from our errors to Triton's (codes map to HTTP 400 / 503 / 500)."""
    pb = _pb()
    if isinstance(exc, RequestValidationError):
        return pb.TritonError(str(exc), pb.TritonError.INVALID_ARG)
    if isinstance(exc, AccessDenied):
        return pb.TritonError(str(exc), pb.TritonError.UNSUPPORTED)
    if isinstance(exc, EngineError):
        return pb.TritonError(str(exc), pb.TritonError.UNAVAILABLE)
    if isinstance(exc, RsdError):
        return pb.TritonError(str(exc), pb.TritonError.INTERNAL)
    return pb.TritonError(f"internal error: {type(exc).__name__}: {exc}", pb.TritonError.INTERNAL)


def model_parameters(args: Mapping[str, str]) -> dict[str, str]:
    """The string parameters of a model's config.pbtxt (as `initialize` receives it)."""
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def require(params: Mapping[str, str], key: str) -> str:
    value = params.get(key, "")
    if not value or value.startswith("${"):
        raise ConfigError(f"parameters.{key}", "missing from the model's config.pbtxt")
    return value


def read_inputs(request: Any) -> dict[str, np.ndarray]:
    """Copies of the input tensors: the request's shared memory is not ours once `execute` returns."""
    return {t.name(): np.array(t.as_numpy(), copy=True) for t in request.inputs()}


def read_parameters(request: Any) -> dict[str, Any]:
    """The request's parameters (gRPC `parameters`, or the unknown keys of an HTTP generate body)."""
    raw = request.parameters()
    return dict(json.loads(raw)) if raw else {}


def to_tensors(outputs: Mapping[str, np.ndarray]) -> list[Any]:
    pb = _pb()
    return [pb.Tensor(name, value) for name, value in outputs.items()]


# Runs beside each stub, outside its interpreter: kills the stub once tritonserver ($1) is gone, and
# ends by itself once the stub ($2) is.
_WATCHDOG = 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null'
_watchdogs: list[subprocess.Popen[bytes]] = []


def exit_with_parent(poll_s: float = 0.5) -> None:
    """End this stub when tritonserver, its parent, is gone (killed with -9, e.g. with `rsd serve`):
    the Python backend's stub runs on unnoticed otherwise (measured: still alive 30 s later), holding
    its memory and models. Two watchers, one per process:
    - a daemon thread polls the parent pid, logs, and exits;
    - a `sh` loop beside the stub, outside its interpreter, SIGKILLs it. A thread is not enough:
      when tritonserver dies while the stub's main thread waits on it (Stub::ProcessRequests
      reporting an execute done), that thread holds the GIL forever and no Python thread runs
      again (seen with gdb on an orphaned rsd stub: the stub's own parent check in ~Stub()
      waits for the GIL too)."""
    if any(t.name == "parent-watch" for t in threading.enumerate()):
        return
    parent = os.getppid()
    _watchdogs.append(subprocess.Popen(["/bin/sh", "-c", _WATCHDOG, "rsd-stub-watchdog", str(parent), str(os.getpid())],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.error("tritonserver (pid %d) is gone; this model stub exits", parent)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass(slots=True)
class StubLoop:
    """The model's asyncio loop, run in a thread of its own; `execute` hands it requests.

    Its default executor (`threads`) runs the backend's `async_exec` calls and tokenisation, so
    the number of concurrent sub-requests is ours to set, not asyncio's default (cpu + 4)."""

    name: str
    threads: int = 64
    _loop: asyncio.AbstractEventLoop = field(init=False)
    _thread: threading.Thread = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)  # touched on the loop thread only
    _executor: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        exit_with_parent()
        self._loop = asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix=f"{self.name}-io")
        self._loop.set_default_executor(self._executor)
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{self.name}-loop", daemon=True)
        self._thread.start()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task of the loop (thread-safe; called from `execute`)."""
        self._loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: a request task failed", self.name, exc_info=task.exception())

    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
        """Run `coro` on the loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    @property
    def running(self) -> int:
        return len(self._tasks)

    def shutdown(self, grace_s: float, closing: Coroutine[Any, Any, Any] | None = None) -> None:
        """Let running requests finish for up to `grace_s`, cancel the rest (each answers with an
        error), run `closing` (e.g. close a client), then stop the loop, its thread and its
        executor, so nothing of ours runs while the stub tears the interpreter down. Called
        from `finalize`."""
        try:
            self.run(self._drain(grace_s), grace_s + 10)
            if closing is not None:
                self.run(closing, 10)
        except Exception:  # the loop is going away either way
            log.exception("%s: draining failed", self.name)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if not self._thread.is_alive():
            self._loop.close()

    async def _drain(self, grace_s: float) -> None:
        if not self._tasks:
            return
        log.info("%s: waiting up to %g s for %d request(s)", self.name, grace_s, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        if pending:
            log.warning("%s: cancelling %d request(s) still running at shutdown", self.name, len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5)


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
    """SubModelTransport over BLS: the backend's `async_exec(decoupled=True)`, on the StubLoop
    (whose executor bounds concurrent sub-requests), under a timeout. `multi_response`: the
    sub-model may answer in several responses (TensorRT-LLM, n sequences), so the response
    iterator, which blocks until the final flag, is drained off the loop; the torch sub-models
    send one final response, which the iterator already holds when `async_exec` returns."""

    timeout_s: float
    token: str = ""
    multi_response: bool = False
    observe: Callable[[str, float], None] | None = None  # (model, seconds) per sub-request
    tags: SubRequestTags = field(default_factory=SubRequestTags)

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                    key: str, kind: str = "") -> list[dict[str, np.ndarray]]:
        pb = _pb()
        request_id, parameters = self.tags.tag(model, key, kind)
        request = pb.InferenceRequest(model_name=model, inputs=to_tensors(inputs),
                                      requested_output_names=list(outputs), request_id=request_id,
                                      parameters={**parameters, TOKEN_PARAMETER: self.token})
        responses = await timed(model, request_id, self._exec(request), self.timeout_s, self.observe)
        return [_outputs(model, r) for r in responses]

    def release(self, model: str, key: str) -> None:
        self.tags.release(model, key)

    async def _exec(self, request: Any) -> list[Any]:
        iterator = await request.async_exec(decoupled=True)
        if self.multi_response:
            return await asyncio.get_running_loop().run_in_executor(None, list, iterator)
        return list(iterator)


def submodel_transport(timeout_s: float, token: str, multi_response: bool,
                       observe: Callable[[str, float], None] | None = None) -> Any:
    """How a model reaches the sub-models: over this server's gRPC endpoint (runtime.in_server.
    grpc_transport, the default under `rsd serve`), else BLS `async_exec` (PbTransport)."""
    from runtime.in_server.grpc_transport import GrpcTransport

    url = os.environ.get(URL_ENV, "")
    if url:
        return GrpcTransport(url, timeout_s, token, TOKEN_PARAMETER, observe,
                             authorization=os.environ.get(INFER_AUTH_ENV, ""))
    log.warning("%s is not set: sub-requests use BLS async_exec (start the server with `rsd serve`)", URL_ENV)
    return PbTransport(timeout_s, token, multi_response, observe)


def _outputs(model: str, response: Any) -> dict[str, np.ndarray]:
    if response.has_error():
        raise EngineError(f"{model}: {response.error().message()}")
    # Copies: nothing keeps pointing into the response's shared memory once it is released.
    return {t.name(): np.array(t.as_numpy(), copy=True) for t in response.output_tensors()}


def internal_token() -> str:
    """This server's sub-request token ('' when the server was not started by rsd serve)."""
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        log.warning("%s is not set: sub-models accept requests from any client "
                    "(start the server with `rsd serve` to restrict them to the rsd model)", TOKEN_ENV)
    return token


@dataclass(frozen=True, slots=True)
class Guard:
    """Sub-model side of the token: refuses requests that do not come from this server's BLS."""

    model: str
    token: str

    def check(self, parameters: Mapping[str, Any]) -> None:
        if self.token and parameters.get(TOKEN_PARAMETER) != self.token:
            raise AccessDenied(f"{self.model}: an internal model of the rsd pipeline; send requests to the "
                               f"'rsd' model (or to the OpenAI-compatible front)")


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


@dataclass(frozen=True, slots=True)
class Incoming:
    """Everything a handler needs from a request, read (and copied) inside `execute`: the
    request's own memory is released once a decoupled `execute` returns, and reading it later
    gives garbage shapes or corrupts the heap (measured: `malloc(): unaligned tcache chunk`)."""

    inputs: dict[str, np.ndarray]
    request_id: str
    wanted: frozenset[str]
    parameters: dict[str, Any]
    sender: Any

    @classmethod
    def read(cls, request: Any) -> Incoming:
        return cls(read_inputs(request), request.request_id() or "anonymous",
                   frozenset(request.requested_output_names()), read_parameters(request),
                   request.get_response_sender())

    @property
    def key(self) -> str:
        """The BLS request this sub-request belongs to (its cache key); a client of our own sends none."""
        return str(self.parameters.get(CACHE_KEY) or self.request_id)

    @property
    def kind(self) -> str:
        """What an LM sub-request is (contract.REQUEST_KINDS); a plain request is a generation."""
        return str(self.parameters.get(REQUEST_KIND) or "generate")


class SubModel(Protocol):
    async def handle(self, tensors: dict[str, np.ndarray], key: str, kind: str = "generate") -> dict[str, np.ndarray]: ...

    def release(self, keys: Sequence[str]) -> None:
        """Free what is held for these requests (they ended)."""
        ...


async def answer(incoming: Incoming, guard: Guard, model: SubModel) -> None:
    """Serve one sub-model request: one response with the final flag, or one error response."""
    pb = _pb()
    try:
        guard.check(incoming.parameters)
        model.release(released_keys(incoming.parameters))
        outputs = await model.handle(incoming.inputs, incoming.key, incoming.kind)
        wanted = incoming.wanted or set(outputs)
        response = pb.InferenceResponse(output_tensors=to_tensors({k: v for k, v in outputs.items() if k in wanted}))
    except RsdError as exc:
        log.warning("sub-model request failed: %s", exc)
        response = pb.InferenceResponse(error=to_triton_error(exc))
    except asyncio.CancelledError:
        error = EngineError(f"{guard.model}: the server is shutting down")
        incoming.sender.send(pb.InferenceResponse(error=to_triton_error(error)),
                             flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        raise
    except Exception as exc:
        log.exception("sub-model request failed unexpectedly")
        response = pb.InferenceResponse(error=to_triton_error(exc))
    incoming.sender.send(response, flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def configure_logging() -> None:
    """Our loggers write to the stub's stderr, which tritonserver's log captures. Level from
    RSD_LOG_LEVEL (default INFO)."""
    level = os.environ.get("RSD_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
