"""runtime.in_server.metrics on a recording factory: seconds histograms, token counters, engine counters."""
from __future__ import annotations

import time

from runtime.core.types import StepEvent
from runtime.in_server.metrics import SECONDS_BUCKETS, BufferedFactory, EngineMetrics, RsdMetrics


class Recorded:
    def __init__(self, kind: str, buckets):
        self.kind, self.buckets = kind, buckets
        self.value = 0.0
        self.observed: list[float] = []

    def increment(self, v):
        assert self.kind == "counter" and v >= 0, "counters only go up"
        self.value += v

    def set(self, v):
        assert self.kind == "gauge"
        self.value = v

    def observe(self, v):
        assert self.kind == "histogram"
        self.observed.append(v)


class Factory:
    def __init__(self):
        self.metrics: dict[str, Recorded] = {}

    def metric(self, name, description, kind, labels, buckets=None):
        key = name + "".join(f",{k}={v}" for k, v in sorted(labels.items()))
        return self.metrics.setdefault(key, Recorded(kind, buckets))


def test_request_step_and_submodel_durations_are_seconds_histograms():
    factory = Factory()
    metrics = RsdMetrics(factory)
    clock = metrics.request_started()
    time.sleep(0.01)
    metrics.observe_step("rsd", StepEvent(0, "a", (1,), "draft", 0.9, True), clock)
    time.sleep(0.01)
    stats = {"steps": 2, "steps_drafted": 2, "steps_accepted": 1, "draft_tokens_drafted": 5,
             "draft_tokens_accepted": 2, "tokens_by_source": {"draft": 2, "target": 3}}
    metrics.observe_step("rsd", StepEvent(1, "b", (2,), "target", 0.1, False, finished=True, stats=stats), clock)
    metrics.observe_submodel_call("draft", 0.004)
    metrics.request_ended("rsd", "ok", clock)
    m = factory.metrics
    (first,) = m["rsd_time_to_first_step_seconds,method=rsd"].observed
    (draft_step,) = m["rsd_step_duration_seconds,method=rsd,source=draft"].observed
    (target_step,) = m["rsd_step_duration_seconds,method=rsd,source=target"].observed
    (whole,) = m["rsd_request_duration_seconds,method=rsd"].observed
    assert first == draft_step >= 0.01 and target_step >= 0.01 and whole >= first + target_step
    assert m["rsd_submodel_call_duration_seconds,model=draft"].observed == [0.004]
    assert m["rsd_request_duration_seconds,method=rsd"].buckets == SECONDS_BUCKETS
    assert m["rsd_draft_tokens_total,method=rsd"].value == 5
    assert m["rsd_draft_tokens_accepted_total,method=rsd"].value == 2


def test_failed_requests_count_but_are_not_timed():
    factory = Factory()
    metrics = RsdMetrics(factory)
    metrics.request_ended("rsd", "invalid", metrics.request_started())
    assert factory.metrics["rsd_requests_total,method=rsd,outcome=invalid"].value == 1
    assert "rsd_request_duration_seconds,method=rsd" not in factory.metrics


def test_engine_running_totals_become_counter_increments():
    factory = Factory()
    engine = EngineMetrics(factory, "draft")
    for forwards, rows in ((2, 3), (5, 9), (5, 9)):
        engine.observe(forwards, rows)
    assert factory.metrics["rsd_engine_forwards,model=draft"].value == 5
    assert factory.metrics["rsd_engine_batched_rows,model=draft"].value == 9
    assert factory.metrics["rsd_engine_forwards,model=draft"].kind == "counter"


class CountingFactory(Factory):
    """Counts the operations that reach the real metrics (each is an IPC round trip in the server)."""

    def __init__(self):
        super().__init__()
        self.operations = 0

    def metric(self, name, description, kind, labels, buckets=None):
        real = super().metric(name, description, kind, labels, buckets)
        factory = self

        class Counted:
            def increment(self, v):
                factory.operations += 1
                real.increment(v)

            def set(self, v):
                factory.operations += 1
                real.set(v)

            def observe(self, v):
                factory.operations += 1
                real.observe(v)

        return Counted()


def test_buffered_metrics_apply_summed_counters_last_gauges_and_every_observation():
    real = CountingFactory()
    buffered = BufferedFactory(real, interval_s=60.0)  # no timed flush during the test
    metrics = RsdMetrics(buffered)
    for _ in range(50):
        clock = metrics.request_started()
        metrics.observe_submodel_call("draft", 0.002)
        metrics.request_ended("rsd", "ok", clock)
    metrics.metric("rsd_engine_forwards", model="prm").increment(0)
    assert real.metrics == {} and real.operations == 0  # nothing applied yet: the hot path only appends
    buffered.flush()
    m = real.metrics
    assert m["rsd_requests_total,method=rsd,outcome=ok"].value == 50
    assert m["rsd_requests_in_flight"].value == 0
    assert len(m["rsd_submodel_call_duration_seconds,model=draft"].observed) == 50
    assert len(m["rsd_request_duration_seconds,method=rsd"].observed) == 50
    assert m["rsd_engine_forwards,model=prm"].value == 0  # created at 0, so the family is scraped
    # 50 + 50 observations, one summed increment, one gauge set (not 100 sets and 50 increments)
    assert real.operations == 100 + 1 + 1
    metrics.metric("rsd_requests_total", method="rsd", outcome="ok").increment(2)
    buffered.close()  # the model's finalize applies what is left
    assert m["rsd_requests_total,method=rsd,outcome=ok"].value == 52


def test_buffered_metrics_flush_on_their_own_thread():
    real = Factory()
    buffered = BufferedFactory(real, interval_s=0.02)
    buffered.metric("rsd_steps_total", "", "counter", {"method": "rsd"}).increment(3)
    deadline = time.monotonic() + 5
    while "rsd_steps_total,method=rsd" not in real.metrics and time.monotonic() < deadline:
        time.sleep(0.01)
    assert real.metrics["rsd_steps_total,method=rsd"].value == 3
    buffered.close()
