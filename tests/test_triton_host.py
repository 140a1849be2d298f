"""The Triton glue (runtime/serving/host.py) against a stand-in `triton_python_backend_utils`:
error conversion, the final flag, sub-request timeouts."""
from __future__ import annotations

import asyncio
import sys
import time
import types

import numpy as np
import pytest

from runtime.core.errors import ConfigError, EngineError, RequestValidationError
from runtime.serving import host

FINAL = 1


class FakeError:
    INVALID_ARG, UNAVAILABLE, INTERNAL = "INVALID_ARG", "UNAVAILABLE", "INTERNAL"

    def __init__(self, message, code=None):
        self.message, self.code = message, code


class FakeResponse:
    def __init__(self, output_tensors=None, error=None):
        self.output_tensors, self.error = output_tensors, error


class SlowRequest:
    delay = 1.0

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def exec(self, decoupled=False):
        time.sleep(self.delay)
        return []


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
    transport = host.PbTransport(timeout_s=0.2, threads=2)
    started = time.monotonic()
    with pytest.raises(EngineError, match="draft: no answer within 0.2 s"):
        asyncio.run(transport.infer("draft", {"input_ids": np.zeros((1, 2), np.int32)}, ["output_ids"], "req-1"))
    assert time.monotonic() - started < 0.9
