"""Serving one `rsd` request: parse, validate, run the step loop, respond. No Triton imports.

The BLS model (`triton_repo/rsd/1/model.py`) hands each request's input tensors and a
`ResponseSink` to `RsdService.serve`. A request has 1 to MAX_BATCH_SIZE rows (TensorRT-LLM's
clients send [B, 1] tensors); every row is its own step loop, all on this task, so their
sub-requests meet in the engines' in-flight batcher; each response says its row
(`batch_index`). With `stream` each decided step is sent at once; otherwise one response per
row carries its whole text (after text_input when exclude_input_in_output is false). A row's
last response carries finish_reason and stats; the final flag comes with the last row's. The
sink is always closed (the final flag is sent), on success, error or cancellation: a decoupled
request without its final flag hangs its client. One row failing fails the request.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from runtime.core.errors import EngineError, Overloaded, RequestValidationError, RsdError
from runtime.core.loop import Request
from runtime.core.types import StepEvent
from runtime.in_server.admission import Admission
from runtime.in_server.metrics import RequestClock, RsdMetrics
from runtime.pipeline import Pipeline
from runtime.wire.bls_io import DEFAULT_MAX_PROMPT_BYTES, ParsedRequest, parse_inputs, row_count
from runtime.wire.bls_outputs import Progress, Wanted, response_outputs
from runtime.wire.model_env import ABORT_SUFFIX, DRAIN_ENV

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


def abort_flag() -> Callable[[], bool]:
    """True once the drain's grace expired (`rsd serve` creates RSD_DRAIN_FILE + ABORT_SUFFIX):
    requests still running fail at their next step instead of running on while the server stops."""
    path = os.environ.get(DRAIN_ENV, "")
    return (lambda: os.path.exists(path + ABORT_SUFFIX)) if path else (lambda: False)


@dataclass(slots=True)
class _Rows:
    """What the rows of one request share: the sink, and how many rows are still running (the
    final flag goes with the last row's last response)."""

    sink: ResponseSink
    running: int
    cancelled: bool = field(default=False)

    def send(self, outputs: dict[str, np.ndarray], row_done: bool) -> None:
        self.running -= row_done
        self.sink.send(outputs, final=self.running == 0)


@dataclass(slots=True)
class RsdService:
    pipeline: Pipeline
    metrics: RsdMetrics | None = None
    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES
    draining: Callable[[], bool] = lambda: False
    admission: Admission | None = None  # None: no bound (tests that drive `serve` directly)
    aborting: Callable[[], bool] = lambda: False  # the drain's grace expired: fail what still runs

    def submit(self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any], sink: ResponseSink,
               spawn: Callable[[Coroutine[Any, Any, None]], None], deadline: float) -> None:
        """Called from `execute`: hold room for the request's rows, blocking while the BLS is full (so
        Triton's queue holds the requests behind it), then run it as a task (`spawn`). Past `deadline`
        the request is refused with Overloaded, never started."""
        admission = self.admission
        if admission is None or self.draining():  # draining: it gets "shutting down" at once
            spawn(self.serve(inputs, parameters, sink))
            return
        try:
            rows = admission.acquire(row_count(inputs), deadline)
        except Overloaded as exc:
            log.warning("request refused: %s", exc)
            self._admission_changed(rejected=1)
            sink.fail(exc)
            sink.close()
            return
        self._admission_changed()
        spawn(self._serve_then_release(inputs, parameters, sink, rows))

    async def _serve_then_release(self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any],
                                  sink: ResponseSink, rows: int) -> None:
        assert self.admission is not None
        try:
            await self.serve(inputs, parameters, sink)
        finally:
            self.admission.release(rows)
            self._admission_changed()

    def _admission_changed(self, rejected: int = 0) -> None:
        if self.metrics is not None and self.admission is not None:
            self.metrics.admission(self.admission.running, self.admission.waiting, rejected)

    async def serve(self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any], sink: ResponseSink) -> None:
        """Run one request (all its rows) to its end; the sink is closed whatever happens."""
        arrival = time.time_ns()
        method, outcome = "unknown", "error"
        clock = self.metrics.request_started() if self.metrics else None
        try:
            if self.draining():
                raise EngineError("the server is shutting down and takes no new requests; retry on another instance")
            rows = parse_inputs(inputs, parameters, self.max_prompt_bytes)
            # Tokenising a long prompt takes milliseconds: off the loop, so other requests go on.
            requests = await asyncio.get_running_loop().run_in_executor(None, self._requests, rows)
            method = requests[0].params.method
            shared = _Rows(sink, len(rows))
            runs = [self._run_row(i, row, request, shared, method, clock, arrival)
                    for i, (row, request) in enumerate(zip(rows, requests))]
            outcome = await runs[0] if len(runs) == 1 else await _all(runs)
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

    def _requests(self, rows: tuple[ParsedRequest, ...]) -> list[Request]:
        """Validated and tokenised rows (every row before any runs: one bad row fails the request)."""
        ends = self.pipeline.tokenizer.eos_ids
        for row in rows:
            if row.end_id != -1 and row.end_id not in ends:
                raise RequestValidationError("end_id", f"this model ends on its tokenizer's end ids "
                                                       f"{sorted(ends)}; got {row.end_id} (send one of them, or -1)")
        return [self.pipeline.request(row.prompt, row.params) for row in rows]

    async def _run_row(self, index: int, row: ParsedRequest, request: Request, shared: _Rows, method: str,
                       clock: RequestClock | None, arrival_ns: int) -> str:
        p = request.params
        wanted = Wanted(p.return_log_probs, row.perf_metrics,
                        len(request.prompt_ids) if row.num_input_tokens else None, row.num_output_tokens)
        progress = Progress(arrival_ns=arrival_ns, scheduled_ns=time.time_ns())
        row_clock = RequestClock() if clock is not None and shared.running > 1 else clock
        events = self.pipeline.run(request)
        done: list[StepEvent] = []
        try:
            async for event in events:
                if self.metrics:
                    self.metrics.observe_step(method, event, row_clock)
                if shared.cancelled or shared.sink.is_cancelled():  # between steps: no sub-request in flight
                    shared.cancelled = True
                    log.info("request cancelled by the client after %d steps", len(done))
                    return "cancelled"
                if self.aborting() and not event.finished:
                    raise EngineError("the server shut down before the request finished (the drain's grace expired)")
                done.append(event)
                if row.stream:
                    progress = progress.after([event], time.time_ns())
                    shared.send(response_outputs(index, [event], event.text, progress, wanted), event.finished)
            if not row.stream:
                progress = progress.after(done, time.time_ns())
                text = "".join(e.text for e in done)
                shared.send(response_outputs(index, done, text if row.exclude_input else row.prompt + text,
                                             progress, wanted), True)
            return "ok"
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # run_request's finally releases caches


async def _all(runs: list[Any]) -> str:
    """Run the rows together; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(run) for run in runs]
    try:
        outcomes = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return "cancelled" if "cancelled" in outcomes else "ok"
