"""The Triton glue (runtime/in_server/host.py) against a stand-in `triton_python_backend_utils`:
error conversion, the final flag, sub-request timeouts."""
from __future__ import annotations

import asyncio
import sys
import time
import types

import numpy as np
import pytest

from runtime.core.errors import ConfigError, EngineError, RequestValidationError
from runtime.in_server import host

FINAL = 1


class FakeError:
    INVALID_ARG, UNAVAILABLE, INTERNAL = "INVALID_ARG", "UNAVAILABLE", "INTERNAL"

    def __init__(self, message, code=None):
        self.message, self.code = message, code


class FakeResponse:
    def __init__(self, output_tensors=None, error=None):
        self.output_tensors, self.error = output_tensors, error


class SlowRequest:
    """Like pb_utils.InferenceRequest.async_exec: the blocking exec on the loop's default executor."""

    delay = 1.0

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def async_exec(self, decoupled=False):
        return asyncio.get_running_loop().run_in_executor(None, lambda: time.sleep(self.delay) or [])


@pytest.fixture
def pb(monkeypatch):
    fake = types.ModuleType("triton_python_backend_utils")
    fake.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    fake.TritonError = FakeError
    fake.InferenceResponse = FakeResponse
    fake.InferenceRequest = SlowRequest
    fake.Tensor = lambda name, value: (name, value)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    return fake


def test_typed_errors_map_to_triton_codes(pb):
    assert host.to_triton_error(RequestValidationError("max_tokens", "bad")).code == "INVALID_ARG"
    assert host.to_triton_error(EngineError("prm: gone")).code == "UNAVAILABLE"
    assert host.to_triton_error(ConfigError("x", "y")).code == "INTERNAL"
    error = host.to_triton_error(KeyError("k"))
    assert error.code == "INTERNAL" and "KeyError" in error.message


class Sender:
    def __init__(self):
        self.sent = []

    def send(self, response=None, flags=0):
        self.sent.append((response, flags))

    def is_cancelled(self):
        return False


def test_sink_sends_exactly_one_final_flag(pb):
    sender = Sender()
    sink = host.PbSink(sender)
    sink.send({"text_output": np.array([b"a"], dtype=np.object_)}, final=False)
    sink.close()
    sink.close()
    assert [flags for _, flags in sender.sent] == [0, FINAL]
    sender = Sender()
    sink = host.PbSink(sender)
    sink.fail(RequestValidationError("threshold", "must not be NaN"))
    sink.close()
    ((response, flags),) = sender.sent
    assert flags == FINAL and response.error.message == "threshold: must not be NaN"


def test_sub_request_timeout_is_an_engine_error(pb):
    transport = host.PbTransport(timeout_s=0.2, token="t0k")

    async def timed():
        started = time.monotonic()
        with pytest.raises(EngineError, match="draft: no answer within 0.2 s"):
            await transport.infer("draft", {"input_ids": np.zeros((1, 2), np.int32)}, ["output_ids"], "req-1")
        return time.monotonic() - started

    assert asyncio.run(timed()) < 0.9


def test_stub_loop_runs_sub_requests_concurrently_up_to_its_threads(pb):
    """48 concurrent 1 s sub-requests on a 64-thread loop take about 1 s, not 48 x 1 / (cpu + 4) = 8 s
    (asyncio's default executor on 2 cores); the bound leaves a busy machine 3 s of slack."""
    loop = host.StubLoop("bls", threads=64)
    transport = host.PbTransport(timeout_s=10.0)

    async def many():
        await asyncio.gather(*(transport.infer("draft", {}, [], f"r{i}") for i in range(48)))

    try:
        started = time.monotonic()
        loop.run(many(), timeout_s=30)
        assert time.monotonic() - started < 4.0
    finally:
        loop.shutdown(grace_s=1)


def test_stub_loop_shutdown_cancels_what_outlives_the_grace(pb):
    loop = host.StubLoop("bls", threads=2)
    ended = []

    async def request(seconds):
        try:
            await asyncio.sleep(seconds)
            ended.append(("done", seconds))
        except asyncio.CancelledError:
            ended.append(("cancelled", seconds))
            raise

    loop.spawn(request(0.05))
    loop.spawn(request(60))
    time.sleep(0.2)
    started = time.monotonic()
    loop.shutdown(grace_s=0.5)
    assert time.monotonic() - started < 3
    assert sorted(ended) == [("cancelled", 60), ("done", 0.05)]


def test_guard_refuses_requests_without_the_servers_token():
    from runtime.core.errors import AccessDenied

    guard = host.Guard("draft", "s3cret")
    guard.check({"rsd_internal_token": "s3cret"})
    for parameters in ({}, {"rsd_internal_token": "guess"}):
        with pytest.raises(AccessDenied, match="draft: an internal model"):
            guard.check(parameters)
    host.Guard("draft", "").check({})  # no token configured: open (and logged at start)
