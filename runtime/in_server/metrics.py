"""Export the core's RequestStats and the BLS's timings as Triton custom metrics (:8002/metrics).

Nothing is recomputed: each finished request's `RequestStats.to_dict()` (carried by its last
step event) is added to counters; each step's PRM reward feeds a histogram; durations are
measured by the BLS (a `RequestClock` per request) and by the sub-request transport. Definitions:
  rsd_requests_total{method, outcome}              requests ended: ok | invalid | error | cancelled
  rsd_requests_in_flight                           requests being served now (gauge)
  rsd_rows_running                                 rows (step loops) running now, at most the admission
                                                   capacity (gauge; runtime.in_server.admission)
  rsd_requests_waiting                             requests handed to the BLS waiting for room (gauge;
                                                   Triton's queue before it: nv_inference_pending_request_count)
  rsd_requests_rejected_total                      requests refused at capacity after waiting in the BLS
                                                   (Triton's own queue refusals: nv_inference_request_failure)
  rsd_request_duration_seconds{method}             histogram: start to last step, requests that ended ok
  rsd_time_to_first_step_seconds{method}           histogram: start to the first decided step
  rsd_step_duration_seconds{method, source}        histogram: time to decide one step (since the
                                                   previous one), by the model that wrote it
  rsd_submodel_call_duration_seconds{model}        histogram: one sub-model request (BLS -> draft,
                                                   target, prm), sent to answered
  rsd_steps_total{method}                          steps decided (RequestStats.steps)
  rsd_steps_drafted_total{method}                  draft steps a judge decided on (steps_drafted)
  rsd_steps_accepted_total{method}                 of which accepted (steps_accepted)
  rsd_steps_regenerated_total{method}              of which rejected and rewritten by the target
  rsd_draft_tokens_total{method}                   draft tokens proposed (draft_tokens_drafted;
                                                   vLLM's spec_decode_num_draft_tokens)
  rsd_draft_tokens_accepted_total{method}          of which kept (draft_tokens_accepted;
                                                   vLLM's spec_decode_num_accepted_tokens)
  rsd_tokens_total{method, source}                 tokens written, by the model that wrote them
  rsd_target_calls_total{method}                   calls to the target model (generate/score/logits/verify)
  rsd_model_tokens_total{method, model, phase}     tokens each model ran for requests: prefill | decode
                                                   (RequestStats models.*.prefill_tokens / decode_tokens,
                                                   as the sub-models report them)
  rsd_model_forwards_total{method, model}          model passes the requests' calls waited on (models.*.forwards)
  rsd_prm_reward{method}                           histogram of the reward of each judged step
  rsd_engine_forwards{model}                       counter: forwards the torch sub-model ran
  rsd_engine_batched_rows{model}                   counter: rows in those forwards; rows / forwards > 1
                                                   = in-flight batching
Every metric of a BLS carries `served_model` (its model name: `rsd`, or `ensemble` /
`tensorrt_llm_bls` under `rsd serve --model-name`), so several names served side by side keep
their own series; Triton's own nv_* metrics carry `model`. Step acceptance rate = accepted / drafted steps; token acceptance rate = accepted / drafted
tokens (RSD: tokens of accepted vs all draft steps), as in runtime.core.stats. The factory is
injected (`runtime.in_server.host.PbMetricFactory` in the server) so this module never imports Triton.

Off the hot path: in the server every metric operation of the Python backend is a synchronous
round trip to tritonserver (the stub writes the operation to shared memory and waits for the
parent's answer), measured at 10-19% of each model loop's samples under load (py-spy, c = 16).
`BufferedFactory` makes an operation a list append; a thread of its own applies them every
`interval_s` (0.25 s), increments of one counter summed into one, a gauge's last value only,
histogram observations one by one. A scrape therefore lags by up to one interval.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.core.types import StepEvent

log = logging.getLogger(__name__)

REWARD_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Seconds, 1 ms to 5 min: a sub-model call on a GPU to a long request on a small CPU.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)


class Metric(Protocol):
    def increment(self, value: float) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, value: float) -> None: ...


class MetricFactory(Protocol):
    def metric(self, name: str, description: str, kind: str, labels: Mapping[str, str],
               buckets: Sequence[float] | None = None) -> Metric:
        """A metric of family `name` (kind: counter | gauge | histogram) with these labels."""
        ...


@dataclass(slots=True)
class _Recorder:
    """A metric whose operations are queued on its BufferedFactory."""

    owner: BufferedFactory
    key: tuple[str, str, str, tuple[tuple[str, str], ...], tuple[float, ...] | None]

    def increment(self, value: float) -> None:
        self.owner.record(self.key, "increment", value)

    def set(self, value: float) -> None:
        self.owner.record(self.key, "set", value)

    def observe(self, value: float) -> None:
        self.owner.record(self.key, "observe", value)


@dataclass(slots=True)
class BufferedFactory:
    """A MetricFactory whose metrics only queue their operations; `flush` (every `interval_s`, on a
    daemon thread started with the first operation, and from `close`) applies them to `factory`'s."""

    factory: MetricFactory
    interval_s: float = 0.25
    _pending: list[tuple[Any, str, float]] = field(default_factory=list)
    _real: dict[Any, Metric] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _flushing: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def metric(self, name: str, description: str, kind: str, labels: Mapping[str, str],
               buckets: Sequence[float] | None = None) -> Metric:
        key = (name, description, kind, tuple(sorted(labels.items())), None if buckets is None else tuple(buckets))
        return _Recorder(self, key)

    def record(self, key: Any, op: str, value: float) -> None:
        with self._lock:
            self._pending.append((key, op, value))
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        """Apply every queued operation (counters summed, gauges' last value, each observation)."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, []
            increments: dict[Any, float] = {}
            sets: dict[Any, float] = {}
            try:
                for key, op, value in pending:
                    if op == "increment":
                        increments[key] = increments.get(key, 0.0) + value
                    elif op == "set":
                        sets[key] = value
                    else:
                        self._metric(key).observe(value)
                for key, value in increments.items():
                    metric = self._metric(key)  # created even at 0: the family shows in a scrape
                    if value:
                        metric.increment(value)
                for key, value in sets.items():
                    self._metric(key).set(value)
            except Exception:  # metrics must never take the model down
                log.exception("applying metrics failed")

    def _metric(self, key: Any) -> Metric:
        metric = self._real.get(key)
        if metric is None:
            name, description, kind, labels, buckets = key
            metric = self._real[key] = self.factory.metric(name, description, kind, dict(labels),
                                                           None if buckets is None else list(buckets))
        return metric

    def close(self) -> None:
        """Stop the thread and apply what is queued (the model's finalize)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(5)
        self.flush()


_FAMILIES: dict[str, tuple[str, str, Sequence[float] | None]] = {
    "rsd_requests_total": ("counter", "Requests ended, by method and outcome (ok, invalid, error, cancelled)", None),
    "rsd_requests_in_flight": ("gauge", "Requests being served", None),
    "rsd_rows_running": ("gauge", "Rows (step loops) running, at most the admission capacity", None),
    "rsd_requests_waiting": ("gauge", "Requests handed to the BLS waiting for room to run", None),
    "rsd_requests_rejected_total": ("counter", "Requests refused at capacity after waiting in the BLS", None),
    "rsd_request_duration_seconds": ("histogram", "Request latency, start to last step (requests that ended ok)",
                                     SECONDS_BUCKETS),
    "rsd_time_to_first_step_seconds": ("histogram", "Time from the request's start to its first decided step",
                                       SECONDS_BUCKETS),
    "rsd_step_duration_seconds": ("histogram", "Time to decide one step, by the model that wrote it",
                                  SECONDS_BUCKETS),
    "rsd_submodel_call_duration_seconds": ("histogram", "Latency of one sub-model request made by the BLS",
                                           SECONDS_BUCKETS),
    "rsd_steps_total": ("counter", "Steps decided", None),
    "rsd_steps_drafted_total": ("counter", "Draft steps a judge (PRM) decided on", None),
    "rsd_steps_accepted_total": ("counter", "Draft steps accepted", None),
    "rsd_steps_regenerated_total": ("counter", "Draft steps rejected and regenerated by the target", None),
    "rsd_draft_tokens_total": ("counter", "Draft tokens proposed (steps judged, or tokens verified)", None),
    "rsd_draft_tokens_accepted_total": ("counter", "Draft tokens accepted", None),
    "rsd_tokens_total": ("counter", "Tokens written, by source model", None),
    "rsd_target_calls_total": ("counter", "Calls to the target model", None),
    "rsd_model_tokens_total": ("counter", "Tokens a model ran for requests, by phase (prefill, decode)", None),
    "rsd_model_forwards_total": ("counter", "Model passes the requests' calls waited on", None),
    "rsd_prm_reward": ("histogram", "PRM reward of each judged step", REWARD_BUCKETS),
    "rsd_engine_forwards": ("counter", "Forwards run by a torch sub-model", None),
    "rsd_engine_batched_rows": ("counter", "Rows (sequences) in those forwards", None),
}


@dataclass(slots=True)
class RequestClock:
    """One request's timing (time.perf_counter seconds): when it started, when its last step was decided."""

    started: float = field(default_factory=time.perf_counter)
    last_step: float | None = None


@dataclass(slots=True)
class RsdMetrics:
    factory: MetricFactory
    served_model: str = ""  # the BLS's model name (rsd, ensemble, ...): every metric's `served_model` label
    _cache: dict[tuple[str, tuple[tuple[str, str], ...]], Metric] = field(default_factory=dict)
    _in_flight: int = 0

    def metric(self, name: str, **labels: str) -> Metric:
        if self.served_model:
            labels["served_model"] = self.served_model
        key = (name, tuple(sorted(labels.items())))
        metric = self._cache.get(key)
        if metric is None:
            kind, description, buckets = _FAMILIES[name]
            metric = self._cache[key] = self.factory.metric(name, description, kind, labels, buckets)
        return metric

    def request_started(self) -> RequestClock:
        self._in_flight += 1
        self.metric("rsd_requests_in_flight").set(self._in_flight)
        return RequestClock()

    def admission(self, running_rows: int, waiting: int, rejected: int = 0) -> None:
        """The admission state after a change (runtime.in_server.admission)."""
        self.metric("rsd_rows_running").set(running_rows)
        self.metric("rsd_requests_waiting").set(waiting)
        self.metric("rsd_requests_rejected_total").increment(rejected)

    def request_ended(self, method: str, outcome: str, clock: RequestClock | None = None) -> None:
        self._in_flight -= 1
        self.metric("rsd_requests_in_flight").set(self._in_flight)
        self.metric("rsd_requests_total", method=method, outcome=outcome).increment(1)
        if clock is not None and outcome == "ok":
            self.metric("rsd_request_duration_seconds", method=method).observe(time.perf_counter() - clock.started)

    def observe_step(self, method: str, event: StepEvent, clock: RequestClock | None = None) -> None:
        if clock is not None:
            self._time_step(method, event.source, clock)
        if event.reward is not None:
            self.metric("rsd_prm_reward", method=method).observe(event.reward)
        if event.stats is not None:
            self.observe_stats(method, event.stats)

    def _time_step(self, method: str, source: str, clock: RequestClock) -> None:
        now = time.perf_counter()
        if clock.last_step is None:
            self.metric("rsd_time_to_first_step_seconds", method=method).observe(now - clock.started)
        since = clock.started if clock.last_step is None else clock.last_step
        self.metric("rsd_step_duration_seconds", method=method, source=source).observe(now - since)
        clock.last_step = now

    def observe_submodel_call(self, model: str, seconds: float) -> None:
        """One sub-model request's latency (the transport calls this once per answered request)."""
        self.metric("rsd_submodel_call_duration_seconds", model=model).observe(seconds)

    def observe_stats(self, method: str, stats: Mapping[str, Any]) -> None:
        """Add one finished request's RequestStats.to_dict() to the counters."""
        drafted, accepted = stats.get("steps_drafted", 0), stats.get("steps_accepted", 0)
        for name, value in (("rsd_steps_total", stats.get("steps", 0)),
                            ("rsd_steps_drafted_total", drafted),
                            ("rsd_steps_accepted_total", accepted),
                            ("rsd_steps_regenerated_total", drafted - accepted),
                            ("rsd_draft_tokens_total", stats.get("draft_tokens_drafted", 0)),
                            ("rsd_draft_tokens_accepted_total", stats.get("draft_tokens_accepted", 0)),
                            ("rsd_target_calls_total", stats.get("target_calls", 0))):
            self.metric(name, method=method).increment(value)
        for source, count in (stats.get("tokens_by_source") or {}).items():
            self.metric("rsd_tokens_total", method=method, source=source).increment(count)
        for model, used in (stats.get("models") or {}).items():
            for phase in ("prefill", "decode"):
                self.metric("rsd_model_tokens_total", method=method, model=model, phase=phase).increment(
                    used.get(f"{phase}_tokens", 0))
            self.metric("rsd_model_forwards_total", method=method, model=model).increment(used.get("forwards", 0))


@dataclass(slots=True)
class EngineMetrics:
    """A torch sub-model's batching counters. The ForwardScheduler keeps running totals; each
    `observe` adds what they grew by since the last one (Prometheus counters only go up)."""

    factory: MetricFactory
    model: str
    _metrics: RsdMetrics | None = None
    _seen: tuple[int, int] = (0, 0)

    def observe(self, forwards: int, rows: int) -> None:
        if self._metrics is None:
            self._metrics = RsdMetrics(self.factory)
        seen_forwards, seen_rows = self._seen
        self._metrics.metric("rsd_engine_forwards", model=self.model).increment(max(forwards - seen_forwards, 0))
        self._metrics.metric("rsd_engine_batched_rows", model=self.model).increment(max(rows - seen_rows, 0))
        self._seen = (max(forwards, seen_forwards), max(rows, seen_rows))
