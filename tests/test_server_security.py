"""Closed by default, and every input checked, against the real server (the session fixture):
model control, configs, shared memory and statistics refused without the admin key; sub-models
refuse clients; unknown keys, oversized, non-UTF-8, NaN, out-of-range and wrong-type inputs get
errors naming the field, and the server keeps serving correct answers."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from runtime.clients.client import RsdClient, ServerError
from runtime.deploy.server import ADMIN_HEADER, GRPC_ADMIN_HEADER

pytestmark = [pytest.mark.server, pytest.mark.slow]

TIMEOUT = 60.0


def _grpc(server):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.grpc_url)


def _http(server, method: str, path: str, body: object = None, headers: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{server.http_url}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _still_serving(server) -> None:
    assert RsdClient(server.grpc_url, "grpc", timeout_s=TIMEOUT).generate("1+1=", {"max_tokens": 4}).final


def test_model_control_is_refused_on_grpc_and_http(triton_server):
    from tritonclient.utils import InferenceServerException

    client = _grpc(triton_server)
    for call in (lambda: client.unload_model("target"), lambda: client.load_model("rsd"),
                 lambda: client.load_model("evil", config='{"backend": "python"}',
                                           files={"file:1/model.py": b"import os; os.system('touch /tmp/pwned')"})):
        with pytest.raises(InferenceServerException):
            call()
    for path in ("/v2/repository/models/target/unload", "/v2/repository/models/rsd/load", "/v2/repository/index"):
        status, _ = _http(triton_server, "POST", path, {})
        assert status in (400, 403), path
    status, _ = _http(triton_server, "POST", "/v2/repository/models/evil/load",
                      {"parameters": {"config": "{}", "file:1/model.py": "aW1wb3J0IG9z"}})
    assert status in (400, 403)
    assert client.is_model_ready("target")
    _still_serving(triton_server)


def test_read_only_apis_are_open_on_loopback_and_the_rest_needs_the_admin_key(triton_server):
    """What perf_analyzer, genai-perf and Model Analyzer read (model config, metadata, statistics)
    answers without a header on loopback; shared memory (and repository control, logging, trace)
    does not, over gRPC and HTTP."""
    from tritonclient.utils import InferenceServerException

    client = _grpc(triton_server)
    assert client.get_model_config("rsd").config.name == "rsd"
    assert client.get_model_metadata("rsd").name == "rsd"
    assert client.get_inference_statistics("rsd") is not None
    for method, path in (("GET", "/v2/models/rsd/config"), ("GET", "/v2/models/rsd"), ("GET", "/v2/models/stats")):
        assert _http(triton_server, method, path)[0] == 200, path
    for call in (lambda: client.register_system_shared_memory("x", "/rsd_probe", 64),
                 lambda: client.get_system_shared_memory_status(), lambda: client.get_log_settings(),
                 lambda: client.get_trace_settings(), lambda: client.get_model_repository_index(),
                 lambda: client.unload_model("target")):
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
    for method, path in (("POST", "/v2/systemsharedmemory/region/x/register"), ("GET", "/v2/systemsharedmemory/status"),
                         ("GET", "/v2/logging"), ("POST", "/v2/repository/index"),
                         ("POST", "/v2/repository/models/target/unload")):
        status, _ = _http(triton_server, method, path, {"key": "/rsd_probe", "offset": 0, "byte_size": 64}
                          if method == "POST" else None)
        assert status == 403, path
    # the operator's key opens them (header on HTTP, metadata on gRPC)
    key = {ADMIN_HEADER: triton_server.admin_key}
    assert _http(triton_server, "GET", "/v2/systemsharedmemory/status", headers=key)[0] == 200
    assert client.get_system_shared_memory_status(headers={GRPC_ADMIN_HEADER: triton_server.admin_key}) is not None
    assert client.is_model_ready("target")


@pytest.mark.parametrize("model", ["draft", "target", "prm"])
def test_sub_models_refuse_clients(triton_server, model):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    from runtime.engines.triton import contract

    # a well-formed request of the sub-model's own contract, as the BLS would send it
    tensors = (contract.prm_request_tensors(contract.PrmCall(((1, 5, 6),), ((2,),))) if model == "prm"
               else contract.lm_request_tensors(contract.LmCall((1, 5, 6), 2)))
    inputs = []
    for name, array in tensors.items():
        t = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(array)
        inputs.append(t)
    errors: list = []
    client = _grpc(triton_server)
    client.start_stream(callback=lambda result, error: errors.append(error))
    client.async_stream_infer(model, inputs)
    deadline = time.monotonic() + TIMEOUT
    while not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    client.stop_stream()
    assert errors and errors[0] is not None and "internal model" in str(errors[0])
    _still_serving(triton_server)


def test_unknown_json_key_and_grpc_parameter_are_errors_naming_them(triton_server):
    status, body = _http(triton_server, "POST", "/v2/models/rsd/generate",
                         {"text_input": "1+1=", "max_tokens": 4, "methd": "target"})
    assert status == 400 and "methd" in body
    import tritonclient.grpc as grpcclient

    prompt = grpcclient.InferInput("text_input", [1, 1], "BYTES")  # [batch, 1]
    prompt.set_data_from_numpy(np.array([[b"1+1="]], dtype=np.object_))
    errors: list = []
    client = _grpc(triton_server)
    client.start_stream(callback=lambda result, error: errors.append(error))
    client.async_stream_infer("rsd", [prompt], parameters={"temprature": 2})
    deadline = time.monotonic() + TIMEOUT
    while not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    client.stop_stream()
    assert errors and errors[0] is not None and "temprature" in str(errors[0])
    # a known name as a gRPC parameter is honoured, the same as the input tensor
    by_param, by_tensor = [], []
    client = _grpc(triton_server)
    client.start_stream(callback=lambda result, error: by_param.append((result, error)))
    client.async_stream_infer("rsd", [prompt], parameters={"method": "target", "max_tokens": 6})
    deadline = time.monotonic() + TIMEOUT
    while not by_param and time.monotonic() < deadline:
        time.sleep(0.05)
    client.stop_stream()
    (result, error), = by_param
    assert error is None
    by_tensor = RsdClient(triton_server.grpc_url, "grpc", timeout_s=TIMEOUT).generate("1+1=", {"method": "target",
                                                                                               "max_tokens": 6})
    assert result.as_numpy("text_output")[0].decode() == by_tensor.text


def test_huge_prompt_is_refused_without_stalling_other_requests(triton_server):
    huge = "1+" * (5 * 2**20 // 2)  # 5 MB
    client = RsdClient(triton_server.grpc_url, "grpc", timeout_s=TIMEOUT)
    small: list[float] = []

    def neighbour() -> None:
        t0 = time.monotonic()
        client.generate("2+2=", {"max_tokens": 8, "method": "draft"})
        small.append(time.monotonic() - t0)

    baseline = time.monotonic()
    neighbour()
    baseline = time.monotonic() - baseline
    thread = threading.Thread(target=neighbour)
    t0 = time.monotonic()
    thread.start()
    with pytest.raises(ServerError, match="text_input: is 5242880 bytes"):
        RsdClient(triton_server.grpc_url, "grpc", timeout_s=TIMEOUT).generate(huge, {"max_tokens": 4})
    refused = time.monotonic() - t0
    thread.join(TIMEOUT)
    assert refused < 5.0 and small[-1] < baseline + 2.0, (refused, small, baseline)


BAD = [
    ("text_input", np.array([b"\xff\xfe bad"], dtype=np.object_), "BYTES", "UTF-8"),
    ("threshold", np.array([float("nan")], dtype=np.float32), "FP32", "NaN"),
    ("threshold", np.array([float("inf")], dtype=np.float32), "FP32", "finite"),
    ("top_p", np.array([1.5], dtype=np.float32), "FP32", "<= 1"),
    ("temperature", np.array([-1.0], dtype=np.float32), "FP32", ">= 0"),
    ("max_tokens", np.array([2**31 - 1], dtype=np.int32), "INT32", None),  # in range: capped by the context
    ("n", np.array([100000], dtype=np.int32), "INT32", "<= 1024"),
    ("method", np.array(["target\x00".encode()], dtype=np.object_), "BYTES", "unknown value"),
    ("max_tokens", np.array([3.5], dtype=np.float32), "FP32", "max_tokens"),  # wrong type: Triton's check
]


@pytest.mark.parametrize(("name", "value", "dtype", "message"), BAD)
def test_bad_values_get_errors_naming_the_field(triton_server, name, value, dtype, message):
    import tritonclient.grpc as grpcclient

    inputs = {"text_input": (np.array([b"1+1="], dtype=np.object_), "BYTES"), name: (value, dtype)}
    tensors = []
    for key, (array, kind) in inputs.items():
        array = array.reshape(1, -1)  # [batch, 1]
        t = grpcclient.InferInput(key, list(array.shape), kind)
        t.set_data_from_numpy(array)
        tensors.append(t)
    got: list = []
    client = _grpc(triton_server)
    client.start_stream(callback=lambda result, error: got.append((result, error)))
    client.async_stream_infer("rsd", tensors, enable_empty_final_response=True)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not (got and (got[-1][1] is not None or got[-1][0].get_response()
                                                        .parameters["triton_final_response"].bool_param)):
        time.sleep(0.05)
    client.stop_stream()
    error = got[-1][1] if got else None
    if message is None:
        assert error is None
    else:
        assert error is not None and name in str(error) and message in str(error), error
    _still_serving(triton_server)
