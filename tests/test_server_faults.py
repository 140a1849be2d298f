"""The real server under load and faults: a soak at concurrency 16 with mixed methods, kill -9 of a
sub-model stub and of the BLS stub (errors within 5 s, readiness false, recovery), and SIGTERM
with requests in flight (drain, then exit 0). `rsd serve`'s Supervisor runs the server."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from server_support import supervised_server

from runtime.clients.client import RsdClient, ServerError
from runtime.clients.soak import soak
from runtime.config import REPO_ROOT
from runtime.deploy.server import free_ports, rss_bytes

pytestmark = [pytest.mark.server, pytest.mark.slow]

SOAK_S = float(os.environ.get("RSD_SOAK_S", "180"))
CRASH = re.compile(r"Segmentation fault|malloc|double free|corrupted|core dumped|not healthy|"
                   r"Cannot remove future|Traceback", re.IGNORECASE)
# Long requests (many 2-token steps) so they are still running when the fault strikes.
LONG = {"max_tokens": 400, "max_steps": 1000, "max_step_tokens": 2}


@pytest.fixture(scope="module")
def supervised(pipeline_config, tmp_path_factory):
    with supervised_server(pipeline_config, tmp_path_factory.mktemp("supervised")) as handle:
        yield handle


def test_soak_mixed_methods_at_concurrency_16(supervised):
    """Minutes of 16 concurrent clients over rsd, target, sd, gsi (n = 4), cos, draft, bon: no error,
    no request over 60 s, under 5% RSS growth per server process, no crash in the log."""
    log_start = supervised.server.log_file.stat().st_size
    result = soak(supervised.grpc_url, SOAK_S, concurrency=16, warmup_s=30, processes=supervised.server.processes,
                  rss=rss_bytes, base={"max_tokens": 32})
    print(result.summary())
    assert result.errors == []
    assert result.requests >= 100 and max(result.latencies_s) < 60
    assert set(result.rss_start) == set(result.rss_end) and len(result.rss_start) == 5  # server + 4 stubs
    growth = result.rss_growth()
    assert all(g < 0.05 for g in growth.values()), growth
    assert supervised.supervisor.restarts == 0
    text = supervised.server.log_file.read_text(errors="replace")[log_start:]
    assert not CRASH.search(text), CRASH.search(text)


def _in_flight(url: str, count: int, params: dict) -> tuple[list[threading.Thread], list[tuple[str, float]]]:
    """`count` long streamed requests in threads; each records (outcome, time it ended)."""
    ended: list[tuple[str, float]] = []

    def one(i: int) -> None:
        try:
            list(RsdClient(url, "grpc", timeout_s=120).stream(f"What is {i}+1?", params))
            ended.append(("ok", time.monotonic()))
        except Exception as exc:
            ended.append((f"error: {exc}", time.monotonic()))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    return threads, ended


def _wait_in_flight(server, count: int) -> None:
    deadline = time.monotonic() + 60
    while (server.in_flight() or 0) < count:
        assert time.monotonic() < deadline, "the requests never started"
        time.sleep(0.05)


@pytest.mark.parametrize(("stub", "method"), [("prm", "rsd"), ("target", "target"), ("rsd", "rsd")])
def test_kill_9_of_a_stub_fails_requests_fast_then_recovers(supervised, stub, method):
    client = RsdClient(supervised.grpc_url, "grpc", timeout_s=60)
    expected = client.generate("What is 9+8?", {"max_tokens": 12, "method": method}).text
    threads, ended = _in_flight(supervised.grpc_url, 6, {**LONG, "method": method})
    _wait_in_flight(supervised.server, 6)
    restarts = supervised.supervisor.restarts
    pid = supervised.server.processes()[f"stub:{stub}"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    not_ready = None
    while time.monotonic() - killed < 10 and not_ready is None:
        if not supervised.server.ready():
            not_ready = time.monotonic() - killed
        time.sleep(0.05)
    for t in threads:
        t.join(10)
    assert len(ended) == 6, "a request hung after the kill"
    assert all(outcome != "ok" for outcome, _ in ended), ended
    assert max(at for _, at in ended) - killed < 5.0, [at - killed for _, at in ended]
    assert not_ready is not None and not_ready < 5.0
    supervised.wait_ready(300)
    assert supervised.supervisor.restarts == restarts + 1
    assert RsdClient(supervised.grpc_url, "grpc", timeout_s=60).generate(
        "What is 9+8?", {"max_tokens": 12, "method": method}).text == expected


def test_sigterm_drains_in_flight_requests_then_exits_0(pipeline_config, tmp_path):
    """`rsd serve` (the real CLI): requests in flight at SIGTERM finish; new ones are refused; exit 0."""
    proc, grpc = _rsd_serve(pipeline_config, tmp_path, grace_s=60)
    try:
        # LONG: still running after the refusal below (short requests ended first on a fast engine,
        # and then the refusal was "unknown model": the server had already unloaded)
        threads, ended = _in_flight(f"127.0.0.1:{grpc}", 4, {**LONG, "method": "target"})
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert not ended, f"requests ended before the refusal could be checked: {ended}"
        with pytest.raises(ServerError, match="shutting down"):
            RsdClient(f"127.0.0.1:{grpc}", "grpc", timeout_s=30).generate("What is 1+1?", {"max_tokens": 4})
        for t in threads:
            t.join(90)
        assert [outcome for outcome, _ in ended] == ["ok"] * 4
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_grace_expiry_answers_with_errors_not_hangs(pipeline_config, tmp_path):
    proc, grpc = _rsd_serve(pipeline_config, tmp_path, grace_s=1)
    try:
        threads, ended = _in_flight(f"127.0.0.1:{grpc}", 3, {**LONG, "method": "target"})
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(40)
        assert len(ended) == 3 and all(outcome.startswith("error") for outcome, _ in ended), ended
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _rsd_serve(pipeline: Path, tmp_path: Path, grace_s: float) -> tuple[subprocess.Popen[bytes], int]:
    http, grpc, metrics = free_ports(3)
    cmd = [sys.executable, "-m", "runtime.cli", "serve", "--pipeline", str(pipeline), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--openai-port", "0", "--grace-s", str(grace_s),
           "--repo", str(tmp_path / "repo"), "--log-file", str(tmp_path / "tritonserver.log")]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=open(tmp_path / "serve.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while b"serving:" not in (tmp_path / "serve.log").read_bytes():
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        assert time.monotonic() < deadline, "rsd serve did not become ready"
        time.sleep(0.2)
    return proc, grpc
