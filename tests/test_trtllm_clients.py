"""`rsd` as a drop-in for TensorRT-LLM's `tensorrt_llm_bls` / `ensemble` clients, on the real tritonserver.

The requests are built the way TensorRT-LLM's own clients build them (tensorrtllm_backend
`inflight_batcher_llm/client/end_to_end_grpc_client.py` and `inflight_batcher_llm_client.py`,
read, not copied): every tensor has a batch dimension (`[[value]]`, word lists `[1, n]` BYTES),
`beam_width` and `temperature` are always sent, outputs are requested by name, and streamed
responses are read one by one. Then the same fields over HTTP `/generate`. The behaviour is
asserted, not only the absence of errors: a stop word stops, a bad word never appears,
min_length forces the length, top_k = 1 is greedy, log-probs add up, spec-decode figures are in
range, and what cannot be served is an error naming the field over gRPC and HTTP alike.

The server is the session's (one tritonserver for the whole run); every call has a timeout.
"""
from __future__ import annotations

import json
import math
import queue
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow]

TIMEOUT = 60.0
PROMPT = "what is 7-2?"
PERF = ("kv_cache_alloc_new_blocks", "kv_cache_reused_blocks", "kv_cache_alloc_total_blocks", "arrival_time_ns",
        "first_scheduled_time_ns", "first_token_time_ns", "last_token_time_ns", "acceptance_rate",
        "total_accepted_draft_tokens", "total_draft_tokens")


class Failed(Exception):
    """The server answered with an error response."""


def tensor(value: Any, dtype: Any) -> np.ndarray:
    """One row, as TensorRT-LLM's clients send it: [[value]], or [values] for a word list."""
    if isinstance(value, (list, tuple)):
        return np.array([list(value)], dtype=dtype)
    return np.array([[value]], dtype=dtype)


def end_to_end_inputs(prompt: str, max_tokens: int, **extra: Any) -> dict[str, np.ndarray]:
    """`end_to_end_grpc_client.py`'s request: what it always sends, plus the optional fields given."""
    kinds = {"stream": bool, "beam_width": np.int32, "temperature": np.float32, "top_k": np.int32,
             "top_p": np.float32, "random_seed": np.uint64, "seed": np.uint64, "num_return_sequences": np.int32,
             "repetition_penalty": np.float32, "presence_penalty": np.float32, "frequency_penalty": np.float32,
             "length_penalty": np.float32, "min_length": np.int32, "min_tokens": np.int32, "end_id": np.int32,
             "pad_id": np.int32, "exclude_input_in_output": bool, "return_log_probs": bool,
             "return_context_logits": bool, "return_generation_logits": bool, "return_perf_metrics": bool,
             "stop_words": object, "bad_words": object, "embedding_bias_words": object,
             "embedding_bias_weights": np.float32, "lora_task_id": np.uint64, "num_draft_tokens": np.int32,
             "method": object, "threshold": np.float32}
    values: dict[str, Any] = {"stream": False, "beam_width": 1, "temperature": 1.0, "exclude_input_in_output": False}
    values.update(extra)
    inputs = {"text_input": np.array([[prompt]], dtype=object), "max_tokens": tensor(max_tokens, np.int32)}
    for name, value in values.items():
        dtype = kinds[name]
        if dtype is object:
            value = [v.encode() for v in value] if isinstance(value, (list, tuple)) else value.encode()
        inputs[name] = tensor(value, dtype)
    return inputs


def grpc_stream(server, inputs: Mapping[str, np.ndarray], outputs: tuple[str, ...] = ("text_output",),
                model: str = "rsd") -> list[dict[str, np.ndarray]]:
    """One request on a gRPC stream, as the TensorRT-LLM clients send it; every response's outputs."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    client = grpcclient.InferenceServerClient(server.grpc_url)
    got: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    tensors = []
    for name, array in inputs.items():
        t = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(array)
        tensors.append(t)
    requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
    responses: list[dict[str, np.ndarray]] = []
    try:
        client.async_stream_infer(model, tensors, outputs=requested, request_id=uuid.uuid4().hex,
                                  enable_empty_final_response=True)
        while True:
            try:
                result, error = got.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no response within {TIMEOUT:g} s")
            if error is not None:
                raise Failed(error.message() if hasattr(error, "message") else str(error))
            arrays = {name: result.as_numpy(name) for name in outputs}
            if any(a is not None for a in arrays.values()):
                responses.append({k: v for k, v in arrays.items() if v is not None})
            if result.get_response().parameters["triton_final_response"].bool_param:
                return responses
    finally:
        client.stop_stream()
        client.close()


def http_generate(server, body: Mapping[str, Any], stream: bool = False) -> list[dict[str, Any]]:
    endpoint = "generate_stream" if stream else "generate"
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/rsd/{endpoint}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            if not stream:
                return [json.loads(resp.read())]
            events = [json.loads(line[5:]) for line in resp if line.startswith(b"data:")]
    except urllib.error.HTTPError as exc:
        raise Failed(json.loads(exc.read()).get("error", "")) from None
    for event in events:
        if "error" in event:
            raise Failed(event["error"])
    return events


def text(responses: list[dict[str, np.ndarray]]) -> str:
    return "".join(r["text_output"].reshape(-1)[0].decode() for r in responses)


def scalar(response: Mapping[str, np.ndarray], name: str) -> Any:
    array = response[name]
    assert array.shape == (1, 1), (name, array.shape)  # [batch, 1], as the TensorRT-LLM clients read it
    return array[0][0].item()


def greedy(server, prompt: str = PROMPT, max_tokens: int = 32, **extra: Any) -> tuple[str, dict[str, Any]]:
    """The whole text and the stats of a greedy request (exclude_input_in_output true)."""
    responses = grpc_stream(server, end_to_end_inputs(prompt, max_tokens, temperature=0.0,
                                                      exclude_input_in_output=True, **extra),
                            ("text_output", "finish_reason", "stats"))
    (only,) = responses
    return text(responses), {"finish_reason": only["finish_reason"].reshape(-1)[0].decode(),
                             **json.loads(only["stats"].reshape(-1)[0])}


def test_end_to_end_client_request_streams_with_log_probs_and_perf_metrics(triton_server):
    inputs = end_to_end_inputs(PROMPT, 24, stream=True, temperature=0.8, top_k=8, top_p=0.9, random_seed=7,
                               return_log_probs=True, return_perf_metrics=True, repetition_penalty=1.1,
                               end_id=2, pad_id=0)
    outputs = ("text_output", "cum_log_probs", "output_log_probs", "batch_index", *PERF)
    streamed = grpc_stream(triton_server, inputs, outputs)
    assert len(streamed) >= 2  # one response per decided step
    drafted = accepted = 0
    for r in streamed:
        assert scalar(r, "batch_index") == 0
        per_token = r["output_log_probs"]
        assert per_token.ndim == 3 and per_token.shape[:2] == (1, 1)  # [batch, beam, tokens]
        assert np.all(np.isfinite(per_token)) and np.all(per_token <= 0.0)
        assert math.isclose(scalar(r, "cum_log_probs"), float(per_token.sum()), rel_tol=1e-4, abs_tol=1e-4)
        rate = scalar(r, "acceptance_rate")
        drafted, accepted = scalar(r, "total_draft_tokens"), scalar(r, "total_accepted_draft_tokens")
        assert 0.0 <= rate <= 1.0 and 0 <= accepted <= drafted
        assert rate == pytest.approx(accepted / drafted if drafted else 0.0)
        times = [scalar(r, name) for name in ("arrival_time_ns", "first_scheduled_time_ns", "first_token_time_ns",
                                              "last_token_time_ns")]
        assert times == sorted(times) and times[0] > 0
    assert drafted > 0  # rsd drafts every step
    # the same request unary: the whole text at once, the prompt first (exclude_input_in_output false)
    inputs["stream"] = np.array([[False]])
    (whole,) = grpc_stream(triton_server, inputs, ("text_output",))
    assert text([whole]) == PROMPT + text(streamed)  # streaming never repeats the input


def test_stop_word_stops_the_request_after_it(triton_server):
    full, _ = greedy(triton_server)
    stop = full[6:9]
    assert len(stop.strip()) == 3, full
    expected = full[:full.index(stop) + len(stop)]
    cut, stats = greedy(triton_server, stop_words=[stop, ""])  # "" is how the clients send "no word"
    assert cut == expected and stats["finish_reason"] == "stop"
    streamed = grpc_stream(triton_server, end_to_end_inputs(PROMPT, 32, stream=True, temperature=0.0,
                                                            exclude_input_in_output=True, stop_words=[stop]))
    assert text(streamed) == expected
    (body,) = http_generate(triton_server, {"text_input": PROMPT, "max_tokens": 32, "temperature": 0.0,
                                            "stop_words": [stop]})
    assert body["text_output"] == expected and body["finish_reason"] == "stop"


def test_bad_word_never_appears(triton_server):
    full, _ = greedy(triton_server)
    banned = next(ch for ch in full if ch.isalnum() and ch not in "<pad></s>")  # special tokens print as text
    out, _ = greedy(triton_server, bad_words=[banned])
    assert out != full and banned not in out
    (body,) = http_generate(triton_server, {"text_input": PROMPT, "max_tokens": 32, "temperature": 0.0,
                                            "bad_words": [banned]})
    assert body["text_output"] == out


def test_min_length_forces_the_length(triton_server):
    def run(seed: int, **extra: Any) -> dict[str, Any]:
        (only,) = grpc_stream(triton_server, end_to_end_inputs(PROMPT, 48, temperature=0.8, random_seed=seed, **extra),
                              ("finish_reason", "stats"))
        return {"finish_reason": only["finish_reason"].reshape(-1)[0].decode(), **json.loads(only["stats"][0][0])}

    seed, stats = next(((s, st) for s in range(12) if (st := run(s))["finish_reason"] == "eos" and st["tokens"] <= 30),
                       (None, None))
    assert seed is not None, "no seed ends early on EOS with the tiny models"
    want = stats["tokens"] + 10
    for name in ("min_length", "min_tokens"):  # TensorRT-LLM 0.x and 1.x names
        forced = run(seed, **{name: want})
        assert forced["tokens"] >= want, (name, forced)
    (body,) = http_generate(triton_server, {"text_input": PROMPT, "max_tokens": 48, "temperature": 0.8,
                                            "random_seed": seed, "min_length": want})
    assert json.loads(body["stats"])["tokens"] >= want


def test_top_k_one_is_greedy_whatever_the_seed_and_temperature(triton_server):
    reference, _ = greedy(triton_server)
    for seed in (1, 2):
        responses = grpc_stream(triton_server, end_to_end_inputs(PROMPT, 32, temperature=1.3, top_k=1,
                                                                 random_seed=seed, exclude_input_in_output=True))
        assert text(responses) == reference


def test_penalties_change_the_output_like_the_in_process_pipeline(triton_server, in_process):
    import asyncio

    params = {"repetition_penalty": 1.8, "presence_penalty": 0.5, "frequency_penalty": 0.3, "top_k": 4,
              "max_tokens": 32, "temperature": 0.0}
    plain, _ = greedy(triton_server)
    served, _ = greedy(triton_server, repetition_penalty=1.8, presence_penalty=0.5, frequency_penalty=0.3, top_k=4)
    expected = asyncio.run(in_process.generate(PROMPT, params))
    assert served == expected.text and served != plain


def test_batched_request_serves_every_row(triton_server):
    prompts = [PROMPT, "2*3="]
    single = [greedy(triton_server, p, max_tokens=16)[0] for p in prompts]
    rows = [end_to_end_inputs(p, 16, temperature=0.0, exclude_input_in_output=True) for p in prompts]
    batched = {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}
    responses = grpc_stream(triton_server, batched, ("text_output", "batch_index"))
    by_row = {scalar(r, "batch_index"): text([r]) for r in responses}
    assert by_row == {0: single[0], 1: single[1]}


def test_inflight_batcher_client_style_stream_with_end_and_pad_ids(triton_server):
    """`inflight_batcher_llm_client.py`'s fields (end_id / pad_id, beam_width, streaming with
    exclude_input_in_output) on the text model: the stream concatenates to the unary text."""
    fields = {"temperature": 0.0, "end_id": 2, "pad_id": 0, "exclude_input_in_output": True, "top_p": 1.0}
    unary = grpc_stream(triton_server, end_to_end_inputs(PROMPT, 24, **fields))
    streamed = grpc_stream(triton_server, end_to_end_inputs(PROMPT, 24, stream=True, **fields))
    assert len(streamed) >= 2 and text(streamed) == text(unary)
    with pytest.raises(Failed, match="end_id"):
        grpc_stream(triton_server, end_to_end_inputs(PROMPT, 8, end_id=5))


def test_http_generate_takes_the_same_fields_as_grpc(triton_server):
    body = {"text_input": PROMPT, "max_tokens": 24, "temperature": 0.0, "top_k": 4, "top_p": 1.0,
            "beam_width": 1, "end_id": 2, "pad_id": 0, "exclude_input_in_output": False, "stop_words": [""],
            "bad_words": "", "return_log_probs": True, "return_perf_metrics": True, "length_penalty": 1.0,
            "num_return_sequences": 1, "random_seed": 3}
    (unary,) = http_generate(triton_server, body)
    streamed = http_generate(triton_server, {**body, "stream": True}, stream=True)
    inputs = end_to_end_inputs(PROMPT, 24, temperature=0.0, top_k=4, end_id=2, pad_id=0, random_seed=3,
                               return_log_probs=True, return_perf_metrics=True)
    (grpc_whole,) = grpc_stream(triton_server, inputs, ("text_output", "cum_log_probs", "acceptance_rate"))
    assert unary["text_output"] == text([grpc_whole]) == PROMPT + "".join(e["text_output"] for e in streamed)
    assert unary["cum_log_probs"] == pytest.approx(scalar(grpc_whole, "cum_log_probs"), abs=1e-4)
    assert unary["acceptance_rate"] == pytest.approx(scalar(grpc_whole, "acceptance_rate"))
    with pytest.raises(Failed, match="beam_widht"):
        http_generate(triton_server, {**body, "beam_widht": 1})  # a typo is an error, never dropped
    with pytest.raises(Failed, match="beam_widht"):
        grpc_stream(triton_server, {**inputs, "beam_widht": tensor(1, np.int32)})


UNSERVABLE = [
    ({"beam_width": 2}, "beam_width"),
    ({"num_return_sequences": 2}, "num_return_sequences"),
    ({"return_context_logits": True}, "return_context_logits"),
    ({"return_generation_logits": True}, "return_generation_logits"),
    ({"length_penalty": 1.5}, "length_penalty"),
    ({"lora_task_id": 3}, "lora_task_id"),
    ({"embedding_bias_words": ["a", "b"], "embedding_bias_weights": [1.0]}, "embedding_bias_weights"),
    ({"top_k": -1}, "top_k"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"min_length": 1, "min_tokens": 2}, "min_tokens"),
]


@pytest.mark.parametrize(("fields", "name"), UNSERVABLE)
def test_what_cannot_be_served_is_an_error_naming_the_field_over_grpc_and_http(triton_server, fields, name):
    with pytest.raises(Failed, match=name):
        grpc_stream(triton_server, end_to_end_inputs(PROMPT, 8, **fields))
    with pytest.raises(Failed, match=name):
        http_generate(triton_server, {"text_input": PROMPT, "max_tokens": 8, **fields})


@pytest.fixture(scope="module")
def in_process(pipeline_config):
    """The same pipeline config on the in-process PyTorch engine."""
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config

    return build_pipeline(load_config(pipeline_config))
