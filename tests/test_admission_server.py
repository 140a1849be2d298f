"""Admission control through a real tritonserver: the BLS runs at most max_running_rows rows; more
requests wait in Triton's bounded queue; past its size they are refused at once (gRPC
UNAVAILABLE "Exceeds maximum queue size", HTTP 503 on /generate), past the wait with "overloaded,
retry later"; no admitted request fails half-way; the gauges and the counter show it."""
from __future__ import annotations

import threading
import time
import urllib.request

import pytest
from server_support import render

from runtime.clients.client import RsdClient, ServerError
from runtime.deploy.server import TritonServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

# Long enough that the two running requests outlast everything the test does meanwhile (each
# streams its first step before the others are sent).
SLOW = {"max_tokens": 480, "min_tokens": 480, "max_step_tokens": 1, "max_steps": 1000, "method": "bon", "n": 8,
        "bon_model": "target", "temperature": 0.7}


@pytest.fixture(scope="module")
def small(pipeline_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("admission")
    repo, (http, grpc, metrics) = render(pipeline_config, root, max_running_rows=2, max_queue_size=2,
                                         queue_timeout_s=2.0)
    server = TritonServer(repo, http, grpc, metrics, exit_timeout_s=10, log_file=root / "tritonserver.log")
    server.start(300)
    try:
        yield server
    finally:
        server.stop()


def test_requests_beyond_capacity_wait_then_are_refused_never_failed_half_way(small):
    grpc = f"127.0.0.1:{small.grpc_port}"
    outcomes: dict[str, str] = {}
    first = threading.Semaphore(0)

    def running(name: str) -> None:
        try:
            for n, _ in enumerate(RsdClient(grpc, "grpc", timeout_s=300).stream(f"What is {name}?", SLOW)):
                if n == 0:
                    first.release()
            outcomes[name] = "ok"
        except Exception as exc:
            outcomes[name] = f"error: {exc}"
            first.release()

    runners = [threading.Thread(target=running, args=(f"run{i}",)) for i in range(2)]
    for t in runners:
        t.start()
    for _ in runners:
        assert first.acquire(timeout=120)
    assert not outcomes, outcomes  # both hold the capacity now

    refused: list[tuple[str, float]] = []

    def extra(i: int) -> None:
        started = time.monotonic()
        try:
            RsdClient(grpc, "grpc", timeout_s=60).generate(f"What is {i}+1?", {"max_tokens": 4})
            refused.append(("ok", time.monotonic() - started))
        except ServerError as exc:
            refused.append((str(exc), time.monotonic() - started))
            assert exc.overloaded, exc

    extras = [threading.Thread(target=extra, args=(i,)) for i in range(8)]
    for t in extras:
        t.start()
        time.sleep(0.05)
    time.sleep(0.5)
    with pytest.raises(ServerError) as http_error:  # the queue is full now: Triton core refuses
        RsdClient(f"127.0.0.1:{small.http_port}", "http", timeout_s=30).generate("What is 2+2?", {"max_tokens": 4})
    assert http_error.value.status == 503 and "Exceeds maximum queue size" in str(http_error.value)
    for t in extras:
        t.join(120)
    # none ran (the two running requests outlast the wait); some were refused at once (queue full),
    # the others after waiting (2 s) or when Triton's queue timed them out
    assert not any(outcome == "ok" for outcome, _ in refused), refused
    assert any("Exceeds maximum queue size" in o and took < 1.5 for o, took in refused), refused  # not after the wait
    assert any("overloaded, retry later" in o and took >= 1.9 for o, took in refused), refused
    time.sleep(0.6)  # two metric flushes (0.25 s each): the gauges show the state now
    with urllib.request.urlopen(f"http://127.0.0.1:{small.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'rsd_rows_running{served_model="rsd"} 2' in text and 'rsd_requests_waiting{served_model="rsd"} 0' in text
    rejected = [line for line in text.splitlines() if line.startswith("rsd_requests_rejected_total")]
    assert rejected and float(rejected[0].split()[-1]) >= 1
    for t in runners:
        t.join(300)
    assert outcomes == {"run0": "ok", "run1": "ok"}  # admitted requests ran to their end
    # once there is room again, requests run
    assert RsdClient(grpc, "grpc", timeout_s=60).generate("What is 1+1?", {"max_tokens": 4}).text is not None
