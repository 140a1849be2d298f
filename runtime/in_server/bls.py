"""Serving one `rsd` request: parse, validate, run the step loop, respond. No Triton imports.

The BLS model (`triton_repo/rsd/1/model.py`) hands each request's input tensors and a
`ResponseSink` to `RsdService.serve`. With `stream` each decided step is sent at once;
otherwise one response carries the whole text. The last response carries finish_reason and
stats. The sink is always closed (the final flag is sent), on success, error or cancellation:
a decoupled request without its final flag hangs its client.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from runtime.core.errors import EngineError, RequestValidationError, RsdError
from runtime.core.types import StepEvent
from runtime.in_server.metrics import RequestClock, RsdMetrics
from runtime.pipeline import Pipeline
from runtime.wire.bls_io import DEFAULT_MAX_PROMPT_BYTES, parse_inputs, step_outputs
from runtime.wire.model_env import DRAIN_ENV

log = logging.getLogger(__name__)


class ResponseSink(Protocol):
    def send(self, outputs: dict[str, np.ndarray], final: bool) -> None: ...

    def fail(self, exc: RsdError) -> None:
        """Send an error response with the final flag."""
        ...

    def close(self) -> None:
        """Send the final flag if no final response was sent yet."""
        ...

    def is_cancelled(self) -> bool: ...


def drain_flag() -> Callable[[], bool]:
    """True once `rsd serve` began a graceful shutdown (it creates the file named by RSD_DRAIN_FILE)."""
    path = os.environ.get(DRAIN_ENV, "")
    return (lambda: os.path.exists(path)) if path else (lambda: False)


@dataclass(slots=True)
class RsdService:
    pipeline: Pipeline
    metrics: RsdMetrics | None = None
    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES
    draining: Callable[[], bool] = lambda: False

    async def serve(self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any], sink: ResponseSink) -> None:
        """Run one request to its end; the sink is closed whatever happens."""
        method, outcome = "unknown", "error"
        clock = self.metrics.request_started() if self.metrics else None
        try:
            if self.draining():
                raise EngineError("the server is shutting down and takes no new requests; retry on another instance")
            parsed = parse_inputs(inputs, parameters, self.max_prompt_bytes)
            # Tokenising a long prompt takes milliseconds: off the loop, so other requests go on.
            request = await asyncio.get_running_loop().run_in_executor(
                None, self.pipeline.request, parsed.prompt, parsed.params)
            method = request.params.method
            outcome = await self._run(self.pipeline.run(request), parsed.stream, method, sink, clock)
        except RequestValidationError as exc:
            outcome = "invalid"
            sink.fail(exc)
        except RsdError as exc:
            log.warning("request failed: %s", exc)
            sink.fail(exc)
        except asyncio.CancelledError:  # the server stops: answer, then let the task end
            sink.fail(EngineError("the server shut down before the request finished"))
            raise
        except Exception as exc:  # a bug must still answer the client, never hang it
            log.exception("request failed unexpectedly")
            sink.fail(EngineError(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            sink.close()
            if self.metrics:
                self.metrics.request_ended(method, outcome, clock)

    async def _run(self, events: AsyncIterator[StepEvent], stream: bool, method: str, sink: ResponseSink,
                   clock: RequestClock | None = None) -> str:
        done: list[StepEvent] = []
        try:
            async for event in events:
                if self.metrics:
                    self.metrics.observe_step(method, event, clock)
                if sink.is_cancelled():  # between steps: no sub-request is in flight here
                    log.info("request cancelled by the client after %d steps", len(done))
                    return "cancelled"
                done.append(event)
                if stream:
                    sink.send(step_outputs([event], event.text), final=event.finished)
            if not stream:
                sink.send(step_outputs(done, "".join(e.text for e in done)), final=True)
            return "ok"
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # run_request's finally releases caches
