"""The real server under load and faults: a soak at concurrency 16 with mixed methods, kill -9 of a
sub-model stub and of the BLS stub (errors within 5 s, readiness false, recovery), SIGTERM with
requests in flight (drain, then exit 0; past the grace: errors, not hangs), and kill -9 of
`rsd serve` itself (nothing left behind). `rsd serve`'s Supervisor runs the server. No test depends
on the machine's speed: a request a fault must meet in flight is deliberately long (SLOW) and has
streamed its first step before the fault strikes."""
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
from runtime.deploy.processes import rss_bytes
from runtime.deploy.server import free_ports

pytestmark = [pytest.mark.server, pytest.mark.slow]

SOAK_S = float(os.environ.get("RSD_SOAK_S", "180"))
CRASH = re.compile(r"Segmentation fault|malloc|double free|corrupted|core dumped|not healthy|"
                   r"Cannot remove future|Traceback", re.IGNORECASE)


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


def _streams(url: str, count: int, params: dict) -> tuple[list[threading.Thread], list[tuple[str, float]],
                                                       threading.Semaphore]:
    """`count` streamed requests in threads; each records (outcome, time it ended), and releases the
    semaphore once at its first streamed step (then it provably is in flight)."""
    ended: list[tuple[str, float]] = []
    started = threading.Semaphore(0)

    def one(i: int) -> None:
        try:
            for n, _ in enumerate(RsdClient(url, "grpc", timeout_s=120).stream(f"What is {i}+1?", params)):
                if n == 0:
                    started.release()
            ended.append(("ok", time.monotonic()))
        except Exception as exc:
            ended.append((f"error: {exc}", time.monotonic()))
            started.release()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    return threads, ended, started


def _all_started(started: threading.Semaphore, count: int) -> None:
    for _ in range(count):
        assert started.acquire(timeout=120), "a request never streamed its first step"


# Deliberately long: 480 one-token steps, no end token before them (min_tokens), each step n = 8
# candidates on the target, scored by the PRM. Several seconds even on a fast machine, so a
# request that streamed its first step is still running a second later; it still ends in well
# under a minute on 2 busy cores.
SLOW = {"max_tokens": 480, "min_tokens": 480, "max_step_tokens": 1, "max_steps": 1000, "method": "bon", "n": 8,
        "bon_model": "target", "temperature": 0.7}


@pytest.mark.parametrize(("stub", "method"), [("prm", "rsd"), ("target", "target"), ("rsd", "rsd")])
def test_kill_9_of_a_stub_fails_requests_fast_then_recovers(supervised, stub, method):
    """Requests that provably run (each streamed a step; SLOW uses the target and the PRM) when a stub
    is killed all get an error within 5 s, readiness turns false, and the server comes back."""
    client = RsdClient(supervised.grpc_url, "grpc", timeout_s=60)
    expected = client.generate("What is 9+8?", {"max_tokens": 12, "method": method}).text
    threads, ended, started = _streams(supervised.grpc_url, 6, SLOW)
    _all_started(started, 6)
    assert not ended, f"a request ended before the kill: {ended}"
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
    proc, grpc = _rsd_serve(pipeline_config, tmp_path, grace_s=120)
    try:
        threads, ended, started = _streams(f"127.0.0.1:{grpc}", 3, SLOW)
        _all_started(started, 3)
        assert not ended, f"a request ended before SIGTERM: {ended}"
        proc.send_signal(signal.SIGTERM)
        refused = None
        while refused is None:  # until the supervisor began the drain: a new request is refused
            try:
                RsdClient(f"127.0.0.1:{grpc}", "grpc", timeout_s=30).generate("What is 1+1?", {"max_tokens": 2})
            except ServerError as exc:
                refused = str(exc)
            assert proc.poll() is None, "rsd serve exited with requests in flight"
        assert "shutting down" in refused
        assert not ended, f"requests ended before the refusal could be checked: {ended}"  # they were in flight
        for t in threads:
            t.join(120)
        assert [outcome for outcome, _ in ended] == ["ok"] * 3
        assert proc.wait(60) == 0
    finally:
        _kill(proc)


def test_sigterm_grace_expiry_answers_with_errors_not_hangs(pipeline_config, tmp_path):
    """Requests still running when the grace expires fail at their next step with an error naming the
    shutdown (they do not run on, nor hang); `rsd serve` then stops and exits 0."""
    proc, grpc = _rsd_serve(pipeline_config, tmp_path, grace_s=1)
    try:
        threads, ended, started = _streams(f"127.0.0.1:{grpc}", 3, SLOW)
        _all_started(started, 3)
        assert not ended, f"a request ended before SIGTERM: {ended}"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert len(ended) == 3, "a request hung after the grace expired"
        assert all("shut down before the request finished" in outcome for outcome, _ in ended), ended
        assert max(at for _, at in ended) - signalled < 30
        assert proc.wait(60) == 0
    finally:
        _kill(proc)


def test_kill_9_of_rsd_serve_leaves_no_process_and_frees_its_ports(pipeline_config, tmp_path):
    """As an OOM killer would: tritonserver, every stub and the OpenAI front die with `rsd serve`, the
    ports are free within seconds, and a new `rsd serve` on the same ports starts and serves."""
    from runtime.deploy.processes import _children, process_alive
    from runtime.deploy.server import port_is_free

    ports = free_ports(4)
    proc, grpc = _rsd_serve(pipeline_config, tmp_path, grace_s=5, ports=ports)
    try:
        tree, todo = [], [proc.pid]
        while todo:
            kids = _children(todo.pop())
            tree += kids
            todo += kids
        assert len(tree) >= 6, tree  # tritonserver, 4 stubs, the OpenAI front
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while any(process_alive(p) for p in tree) or not all(port_is_free("127.0.0.1", p) for p in ports):
            assert time.monotonic() < deadline, ([p for p in tree if process_alive(p)],
                                                 [p for p in ports if not port_is_free("127.0.0.1", p)])
            time.sleep(0.1)
        again, _ = _rsd_serve(pipeline_config, tmp_path / "again", grace_s=5, ports=ports)
        try:
            text = RsdClient(f"127.0.0.1:{grpc}", "grpc", timeout_s=60).generate("What is 1+1?", {"max_tokens": 4}).text
            assert isinstance(text, str)
        finally:
            again.send_signal(signal.SIGTERM)
            assert again.wait(60) == 0
    finally:
        _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Never leave a server behind: its children die with it (PR_SET_PDEATHSIG, the stubs' parent watch)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _rsd_serve(pipeline: Path, tmp_path: Path, grace_s: float,
               ports: list[int] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    http, grpc, metrics, openai = ports or [*free_ports(3), 0]
    cmd = [sys.executable, "-m", "runtime.cli", "serve", "--pipeline", str(pipeline), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--openai-port", str(openai),
           "--grace-s", str(grace_s), "--repo", str(tmp_path / "repo"), "--log-file", str(tmp_path / "tritonserver.log")]
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while b"serving:" not in (tmp_path / "serve.log").read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill(proc)
            raise AssertionError(f"rsd serve did not become ready: {(tmp_path / 'serve.log').read_text()}")
        time.sleep(0.2)
    return proc, grpc
