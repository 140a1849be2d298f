"""The OpenAI front's request mapping, stop strings and error classification (no server)."""
from __future__ import annotations

import pytest

from runtime.frontends.openai_protocol import (
    ChatRequest,
    CompletionRequest,
    OpenAIError,
    StopTail,
    chat_question,
    generation,
)
from runtime.frontends.triton_backend import ModelSpec, classify, tensor_names

INPUTS = {"text_input": "BYTES", "stream": "BOOL", "max_tokens": "INT32", "temperature": "FP32", "top_p": "FP32",
          "random_seed": "UINT64", "method": "BYTES", "threshold": "FP32", "n": "INT32", "min_length": "INT32",
          "stop_words": "BYTES"}


def gen(**body):
    req = CompletionRequest(model="rsd", prompt="q", **body)
    return generation(req, "q", INPUTS, tensor_names())


def test_openai_and_extension_parameters_map_to_inputs():
    g = gen(max_tokens=8, temperature=0, seed=3, stop="\n\n", rsd={"method": "target", "n": 4}, threshold=0.5,
            stream=True, stream_options={"include_usage": True}, user="someone")
    assert g.values == {"max_tokens": 8, "temperature": 0.0, "random_seed": 3, "method": "target", "n": 4,
                        "threshold": 0.5, "stop_words": ["\n\n"]}
    assert g.stop == ("\n\n",) and g.stream and g.include_usage
    assert gen(min_tokens=5).values == {"min_length": 5}  # sent only because the model has min_length


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 2}, "n"),
    ({"presence_penalty": 0.5}, "presence_penalty"),  # no such input: only the neutral value
    ({"logprobs": 3}, "logprobs"),
    ({"echo": True}, "echo"),
    ({"bogus": 1}, "bogus"),
    ({"rsd": {"bogus": 1}}, "rsd.bogus"),
    ({"rsd": {"seed": 1}, "seed": 2}, "rsd.seed"),
    ({"rsd": {"threshold": -1}}, "threshold"),
    ({"temperature": -1}, "temperature"),
    ({"stop": ["a", ""]}, "stop"),
])
def test_what_would_change_the_output_is_a_400_naming_it(body, param):
    with pytest.raises(OpenAIError) as err:
        gen(**body)
    assert err.value.status == 400 and err.value.param == param
    assert err.value.body()["error"]["type"] == "invalid_request_error"


def test_chat_is_system_messages_then_one_question():
    req = ChatRequest(model="rsd", messages=[{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": [{"type": "text", "text": "2+2?"}]}])
    assert chat_question(req) == "Be brief.\n\n2+2?"
    turns = ChatRequest(model="rsd", messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                               {"role": "user", "content": "c"}])
    with pytest.raises(OpenAIError, match="multi-turn"):
        chat_question(turns)
    both = ChatRequest(model="rsd", messages=[{"role": "user", "content": "a"}], max_tokens=4, max_completion_tokens=5)
    with pytest.raises(OpenAIError, match="max_completion_tokens"):
        generation(both, "a", INPUTS, tensor_names())


def test_stop_strings_are_held_back_and_dropped_when_the_server_stops_on_one():
    """The server found the stop across steps and ended the output right after it ("abc E" | "ND"):
    the front held " E" back, and leaves "END" out (OpenAI's semantics)."""
    tail = StopTail(["END"])
    assert tail.feed("abc E") == "abc"  # " E" could start END
    assert tail.finish("ND", stopped=True) == " "
    plain = StopTail([])
    assert plain.feed("x") == "x" and plain.finish("", stopped=False) == ""
    late = StopTail(["zz"])
    assert late.feed("abz") == "ab" and late.finish("", stopped=False) == "z"  # not a stop after all
    both = StopTail(["B", "AB"])
    assert both.finish("xAB", stopped=True) == "x"  # the longest stop the output ends with


def test_stop_strings_go_to_the_server_as_stop_words():
    req = CompletionRequest(model="rsd", prompt="a", stop=["END", "\n\nQ"], max_tokens=4)
    assert generation(req, "a", INPUTS, tensor_names()).values["stop_words"] == ["END", "\n\nQ"]
    without = {k: v for k, v in INPUTS.items() if k != "stop_words"}
    with pytest.raises(OpenAIError) as err:
        generation(req, "a", without, tensor_names())
    assert (err.value.status, err.value.param) == (400, "stop")


def test_stream_errors_are_classified_by_their_form():
    spec = ModelSpec("rsd", False, INPUTS)
    cases = {
        "text_input: must be a non-empty string": (400, "text_input"),
        "[request id: 7] unexpected shape for input 'max_tokens' for model 'rsd'": (400, "max_tokens"),
        "prm: no answer within 60 s": (503, None),
        "draft: CUDA out of memory": (503, None),
        "Request for unknown model: 'rsd' is not found": (503, None),
        "internal error: KeyError: 'x'": (500, None),
    }
    for message, (status, param) in cases.items():
        err = classify(message, spec)
        assert (err.status, err.param) == (status, param), message


def test_a_full_server_is_503_with_retry_after_and_other_failures_are_not():
    """Refusals of a request that never started (Triton's queue full or timed out, the BLS at
    capacity) are retryable: 503 with Retry-After; a sub-model failure is 503 without it."""
    from runtime.frontends.openai_api import create_app
    from runtime.frontends.triton_backend import BackendError

    spec = ModelSpec("rsd", False, INPUTS)
    for message in ("[request id: 9] Exceeds maximum queue size", "Request timeout expired",
                    "overloaded, retry later: the server is at capacity (64 of 64 rows running)"):
        err = classify(message, spec)
        assert (err.status, err.retry_after_s) == (503, 1), message
    assert classify("prm: no answer within 60 s", spec).retry_after_s is None

    from fastapi.testclient import TestClient

    class Full:
        url, model = "127.0.0.1:1", "rsd"

        async def ready(self) -> bool:
            return True

        async def spec(self) -> ModelSpec:
            raise BackendError(503, "Exceeds maximum queue size", retry_after_s=1)

    class Front:
        backend, model_name, api_key = Full(), "rsd", ""

        async def serve(self, req):  # type: ignore[no-untyped-def]
            from runtime.frontends.openai_api import _backend

            await _backend(self.backend.spec())

    client = TestClient(create_app(Front()))  # type: ignore[arg-type]
    resp = client.post("/v1/completions", json={"model": "rsd", "prompt": "1+1"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert resp.json()["error"]["code"] == "overloaded"


def test_batched_models_are_detected_from_metadata():
    meta = {"name": "rsd", "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": ["-1", "1"]}]}
    assert ModelSpec.from_metadata(meta).batched
    meta["inputs"][0]["shape"] = ["1"]
    assert not ModelSpec.from_metadata(meta).batched
