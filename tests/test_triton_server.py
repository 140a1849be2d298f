"""End-to-end tests against a real tritonserver (one per session, see tests/support/triton_fixture.py).

Every client call has a timeout; a hang fails the test instead of blocking CI.
"""
from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from runtime.clients.client import RsdClient, ServerError
from support.scrape import metrics_text

pytestmark = [pytest.mark.server, pytest.mark.slow]

TIMEOUT = 60.0
PROMPTS = ["1+1=", "2*3=", "what is 7-2?", "(4+4)/2", "abc", "x=3, x+1=", "9/3", "10-1", "five", "2+2+2",
           "q: 3*3", "a+b", "0.5*4", "sum 1 2 3", "12/4", "7*7"]
SHORT = {"max_tokens": 16}


def grpc(server, timeout: float = TIMEOUT) -> RsdClient:
    return RsdClient(server.grpc_url, "grpc", timeout_s=timeout)


def http(server, timeout: float = TIMEOUT) -> RsdClient:
    return RsdClient(server.http_url, "http", timeout_s=timeout)


def scrape(server) -> dict[str, float]:
    """rsd_* samples by name and labels, the served_model="rsd" label left out (every BLS metric has it)."""
    text = metrics_text(server.metrics_url)
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^(rsd_[^ ]+) ([0-9.eE+-]+|NaN)$", line)
        if match:
            key = re.sub(r',?served_model="rsd"', "", match.group(1)).replace("{,", "{").replace("{}", "")
            samples[key] = float(match.group(2))
    return samples


def test_grpc_stream_concatenates_to_unary(triton_server):
    steps = list(grpc(triton_server).stream(PROMPTS[0], SHORT))
    whole = grpc(triton_server).generate(PROMPTS[0], SHORT)
    assert len(steps) >= 2 and all(len(s.sources) == 1 for s in steps)
    assert "".join(s.text for s in steps) == whole.text
    assert [s.sources[0] for s in steps] == list(whole.sources)
    assert steps[-1].final and not any(s.final for s in steps[:-1])
    assert steps[-1].stats["tokens"] == whole.stats["tokens"] and whole.finish_reason == steps[-1].finish_reason


def test_http_generate_and_generate_stream_match_grpc(triton_server):
    reference = grpc(triton_server).generate(PROMPTS[1], SHORT)
    unary = http(triton_server).generate(PROMPTS[1], SHORT)
    streamed = list(http(triton_server).stream(PROMPTS[1], SHORT))
    assert unary.text == reference.text == "".join(s.text for s in streamed)
    assert unary.sources == reference.sources and unary.rewards == pytest.approx(reference.rewards)
    assert streamed[-1].final and streamed[-1].stats is not None


@pytest.mark.parametrize("method", ["rsd", "target", "draft", "gsi", "sd", "cos", "bon"])
def test_greedy_output_equals_in_process_pipeline(triton_server, in_process, method):
    params = {"method": method, "max_tokens": 16, "n": 3, "threshold": 0.3}
    expected = asyncio.run(in_process.generate(PROMPTS[2], params))
    got = grpc(triton_server).generate(PROMPTS[2], params)
    assert got.text == expected.text
    assert list(got.sources) == [s.source for s in expected.steps]
    assert got.rewards == pytest.approx([s.reward for s in expected.steps], abs=1e-5)
    assert got.finish_reason == expected.finish_reason


def test_sixteen_concurrent_requests_match_sequential(triton_server):
    params = {"max_tokens": 24, "threshold": 0.3}
    sequential = [grpc(triton_server).generate(p, params).text for p in PROMPTS]
    before = scrape(triton_server)
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda p: "".join(m.text for m in grpc(triton_server).stream(p, params)), PROMPTS))
    assert concurrent == sequential
    after = scrape(triton_server)
    forwards = after['rsd_engine_forwards{model="draft"}'] - before['rsd_engine_forwards{model="draft"}']
    rows = after['rsd_engine_batched_rows{model="draft"}'] - before['rsd_engine_batched_rows{model="draft"}']
    assert rows > forwards  # some forwards served several requests at once (in-flight batching)


BAD_INPUTS = [
    ({"text_input": ""}, "text_input"),
    ({"text_input": "1+" * 5000}, "text_input"),  # longer than any configured context
    ({"method": "nope"}, "method"),
    ({"threshold": -0.5}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"top_p": 0.0}, "top_p"),
]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize(("values", "field"), BAD_INPUTS)
def test_bad_input_is_an_error_naming_the_field(triton_server, protocol, values, field):
    client = grpc(triton_server) if protocol == "grpc" else http(triton_server)
    prompt = values.get("text_input", PROMPTS[0])
    params = {k: v for k, v in values.items() if k != "text_input"}
    with pytest.raises(ServerError, match=field):
        list(client.stream(prompt, params))
    assert client.generate(PROMPTS[0], {"max_tokens": 4}).final  # still serving


def test_wrong_dtype_and_shape_are_errors_naming_the_field(triton_server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    prompt = grpcclient.InferInput("text_input", [1, 1], "BYTES")  # [batch, 1]
    prompt.set_data_from_numpy(np.array([[b"1+1="]], dtype=np.object_))
    wrong_type = grpcclient.InferInput("max_tokens", [1, 1], "FP32")
    wrong_type.set_data_from_numpy(np.array([[3.0]], dtype=np.float32))
    wrong_shape = grpcclient.InferInput("max_tokens", [1, 2], "INT32")
    wrong_shape.set_data_from_numpy(np.array([[3, 4]], dtype=np.int32))
    for bad in (wrong_type, wrong_shape):
        errors = []
        client.start_stream(callback=lambda result, error: errors.append(error))
        client.async_stream_infer("rsd", [prompt, bad])
        deadline = time.monotonic() + TIMEOUT
        while not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        client.stop_stream()
        assert errors and errors[0] is not None and "max_tokens" in str(errors[0])
    client.close()
    assert grpc(triton_server).generate(PROMPTS[0], {"max_tokens": 4}).final


def test_metrics_counters_move(triton_server):
    before = scrape(triton_server)
    grpc(triton_server).generate(PROMPTS[3], {"max_tokens": 16, "threshold": 0.3})
    grpc(triton_server).generate(PROMPTS[3], {"max_tokens": 8, "method": "target"})
    deadline = time.monotonic() + 10  # counters move just after the final response is sent
    while True:
        after = scrape(triton_server)
        if after.get("rsd_requests_in_flight", 1) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('rsd_requests_total{method="rsd",outcome="ok"}') == 1
    assert delta('rsd_requests_total{method="target",outcome="ok"}') == 1
    drafted = delta('rsd_steps_drafted_total{method="rsd"}')
    accepted = delta('rsd_steps_accepted_total{method="rsd"}')
    assert drafted >= 1 and drafted == accepted + delta('rsd_steps_regenerated_total{method="rsd"}')
    assert delta('rsd_prm_reward_count{method="rsd"}') == drafted
    assert delta('rsd_target_calls_total{method="target"}') >= 1
    assert after['rsd_requests_in_flight'] == 0


def test_cancelled_stream_frees_its_request(triton_server):
    before = scrape(triton_server)
    long = {"max_tokens": 450, "max_steps": 1000, "max_step_tokens": 2, "method": "target"}
    stream = grpc(triton_server).stream(PROMPTS[4], long)
    first = next(stream)
    assert not first.final
    stream.close()  # leaving the stream cancels the request on the server
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = scrape(triton_server)
        cancelled = after.get('rsd_requests_total{method="target",outcome="cancelled"}', 0.0)
        if after["rsd_requests_in_flight"] == 0 and cancelled > before.get(
                'rsd_requests_total{method="target",outcome="cancelled"}', 0.0):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the cancelled request is still in flight")
    assert grpc(triton_server).generate(PROMPTS[0], {"max_tokens": 4}).final


@pytest.fixture(scope="module")
def in_process(pipeline_config):
    """The same pipeline config on the in-process PyTorch engine."""
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config

    return build_pipeline(load_config(pipeline_config))
