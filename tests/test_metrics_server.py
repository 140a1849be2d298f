"""A Prometheus scrape of the real tritonserver: the seconds histograms and token counters move,
running totals are counters (their # TYPE lines), and the sub-model call histogram is per model."""
from __future__ import annotations

import re

import pytest

from runtime.clients.client import RsdClient
from support.scrape import metrics_text

pytestmark = [pytest.mark.server, pytest.mark.slow]

TIMEOUT = 60.0
HISTOGRAMS = ("rsd_request_duration_seconds", "rsd_time_to_first_step_seconds", "rsd_step_duration_seconds",
              "rsd_submodel_call_duration_seconds", "rsd_prm_reward")
COUNTERS = ("rsd_engine_forwards", "rsd_engine_batched_rows", "rsd_draft_tokens_total",
            "rsd_draft_tokens_accepted_total", "rsd_requests_total")


Sample = tuple[str, frozenset[tuple[str, str]], float]


def scrape(server) -> tuple[list[Sample], dict[str, str]]:
    """Samples (name, labels, value), and each family's # TYPE."""
    text = metrics_text(server.metrics_url)
    samples, types = [], {}
    for line in text.splitlines():
        kind = re.match(r"^# TYPE (rsd_\w+) (\w+)$", line)
        if kind:
            types[kind.group(1)] = kind.group(2)
        sample = re.match(r"^(rsd_\w+)(?:\{(.*)\})? ([0-9.eE+-]+|NaN|\+Inf)$", line)
        if sample:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', sample.group(2) or ""))
            samples.append((sample.group(1), labels, float(sample.group(3))))
    return samples, types


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include these (all others summed over)."""
    want = set(labels.items())
    return sum(v for n, have, v in samples if n == name and want <= have)


@pytest.fixture(scope="module")
def moved(triton_server):
    before, _ = scrape(triton_server)
    client = RsdClient(triton_server.grpc_url, "grpc", timeout_s=TIMEOUT)
    steps = list(client.stream("1+1=", {"max_tokens": 16, "threshold": 0.3}))
    after, types = scrape(triton_server)
    return before, after, types, steps


def test_request_first_step_and_step_histograms_move(moved):
    before, after, types, steps = moved

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("rsd_request_duration_seconds_count", method="rsd") == 1
    assert delta("rsd_time_to_first_step_seconds_count", method="rsd") == 1
    assert delta("rsd_step_duration_seconds_count", method="rsd") == len(steps) == steps[-1].stats["steps"]
    whole, first = delta("rsd_request_duration_seconds_sum", method="rsd"), delta("rsd_time_to_first_step_seconds_sum", method="rsd")
    assert whole >= first > 0
    assert delta("rsd_request_duration_seconds_bucket", method="rsd", le="+Inf") == 1  # +Inf counts everything
    stats = steps[-1].stats
    assert delta("rsd_draft_tokens_total", method="rsd") == stats["draft_tokens_drafted"]
    assert delta("rsd_draft_tokens_accepted_total", method="rsd") == stats["draft_tokens_accepted"]


def test_families_have_prometheus_types(moved):
    _, _, types, _ = moved
    assert {name: types.get(name) for name in HISTOGRAMS} == dict.fromkeys(HISTOGRAMS, "histogram")
    assert {name: types.get(name) for name in COUNTERS} == dict.fromkeys(COUNTERS, "counter")


def test_submodel_call_histogram_moves_per_model(moved):
    before, after, _, _ = moved
    for model in ("draft", "prm"):
        moved_by = (total(after, "rsd_submodel_call_duration_seconds_count", model=model)
                    - total(before, "rsd_submodel_call_duration_seconds_count", model=model))
        assert moved_by >= 1, model


def test_the_dashboard_reads_only_families_the_server_exports(moved):
    """Every rsd_* family the Grafana dashboard and the manifests' tests know (tests/test_k8s_manifests.py
    DASHBOARD_METRICS, which checks every dashboard query against it) is in a live scrape, with its type."""
    from test_k8s_manifests import DASHBOARD_METRICS

    _, after, types, _ = moved
    exported = {name for name, _, _ in after}
    for family, kind in DASHBOARD_METRICS.items():
        assert types.get(family) == kind, (family, types.get(family))
        samples = {family + "_count"} if kind == "histogram" else {family}
        assert samples & exported, family
