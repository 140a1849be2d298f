"""The `trtllm` layout on a real tritonserver, with fake engines in place of TensorRT-LLM.

The repository is rendered from the shipped configs/triton/trtllm.yaml exactly as for a GPU; only
the three `tensorrtllm` models are switched to the python backend running the fake engine
(tests/fake_trtllm/model.py), which validates every request against TensorRT-LLM's real tensor
contract. The real `rsd` BLS and the real `trtllm_prm` wrapper run unchanged. Native verification
is on (the fake target has max_draft_len 8) and the PRM engine reuses its KV cache, so suffix-only
context logits are exercised through Triton.
"""
from __future__ import annotations

import asyncio
import math

import pytest
from trtllm_helpers import fake_serve_config, in_process

from runtime.clients.client import RsdClient, ServerError
from runtime.core.errors import EngineError
from runtime.deploy.repo import render_repository
from runtime.deploy.server import TritonServer, free_ports
from support.fake_trtllm_repo import substitute_fakes

pytestmark = [pytest.mark.server, pytest.mark.slow]

TIMEOUT = 60.0
PROMPTS = ["1+1=", "what is 7-2?", "abc", "(4+4)/2"]


@pytest.fixture(scope="module")
def trt_server(tmp_path_factory, tiny_config):
    root = tmp_path_factory.mktemp("trtllm_server")
    http, grpc, metrics = free_ports(3)
    cfg = fake_serve_config(root, tiny_config, prm_reuse=True, http_port=http, grpc_port=grpc, metrics_port=metrics,
                            sub_request_timeout_s=60.0)
    repo = render_repository(cfg, root / "repo")
    assert substitute_fakes(repo) == ["draft", "prm_engine", "target"]
    server = TritonServer(repo, http, grpc, metrics, cfg.address, exit_timeout_s=10, log_file=root / "tritonserver.log",
                          internal_token=INTERNAL_TOKEN)
    server.start(ready_timeout_s=300)
    try:
        yield cfg
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reference(trt_server):
    """The same BLS pipeline on the same fakes, in process."""
    pipeline, _ = in_process(trt_server)
    return pipeline


def client(cfg, protocol: str = "grpc") -> RsdClient:
    port = cfg.grpc_port if protocol == "grpc" else cfg.http_port
    return RsdClient(f"127.0.0.1:{port}", protocol, timeout_s=TIMEOUT)


@pytest.mark.parametrize("method", ["rsd", "target", "sd", "draft"])
def test_greedy_requests_equal_the_in_process_pipeline(trt_server, reference, method):
    params = {"method": method, "max_tokens": 32, "threshold": 0.5}
    for prompt in PROMPTS[:2]:
        got = client(trt_server).generate(prompt, params)
        want = asyncio.run(reference.generate(prompt, params))
        assert got.final and got.text == want.text and got.finish_reason == want.finish_reason
        assert list(got.sources) == [s.source for s in want.steps]
        assert got.rewards == pytest.approx([s.reward for s in want.steps], abs=1e-5, nan_ok=True)


def test_rsd_uses_draft_and_target_steps(trt_server):
    sources = set()
    for prompt in PROMPTS:
        sources |= set(client(trt_server).generate(prompt, {"max_tokens": 48, "threshold": 0.5}).sources)
    assert sources == {"draft", "target"}


def test_stream_concatenates_to_unary(trt_server):
    params = {"max_tokens": 40, "threshold": 0.5}
    steps = list(client(trt_server).stream(PROMPTS[1], params))
    whole = client(trt_server, "http").generate(PROMPTS[1], params)
    assert len(steps) >= 2 and "".join(s.text for s in steps) == whole.text
    assert [s.sources[0] for s in steps] == list(whole.sources) and steps[-1].final


def test_sd_at_temperature_0_equals_target_greedy_with_native_verification(trt_server):
    for prompt in PROMPTS:
        sd = client(trt_server).generate(prompt, {"method": "sd", "max_tokens": 32, "temperature": 0.0})
        target = client(trt_server).generate(prompt, {"method": "target", "max_tokens": 32, "temperature": 0.0})
        assert sd.text == target.text
        assert sd.stats["draft_tokens_drafted"] > 0  # verified through draft_input_ids ...
    # ... since the fake target (like a draft_tokens_external engine) has no context logits:
    with pytest.raises(ServerError, match="gather_context_logits"):
        client(trt_server).generate(PROMPTS[0], {"method": "gsi", "max_tokens": 8})


def test_sampled_candidates_merge_sequence_responses(trt_server, reference):
    params = {"method": "rsd", "n": 3, "temperature": 0.7, "seed": 11, "max_tokens": 32, "threshold": 0.5}
    got = client(trt_server).generate(PROMPTS[2], params)
    want = asyncio.run(reference.generate(PROMPTS[2], params))
    assert got.text == want.text and list(got.sources) == [s.source for s in want.steps]


INTERNAL_TOKEN = "trtllm-test-token"


def _prm_request(cfg, call):
    """One request to the `prm` model (the PRM contract), over gRPC streaming: (rewards, error)."""
    import tritonclient.grpc as grpcclient

    from runtime.engines.triton.contract import prm_request_tensors

    grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{cfg.grpc_port}")
    results: list = []
    try:
        grpc_client.start_stream(callback=lambda result, error: results.append((result, error)))
        inputs = []
        for name, value in prm_request_tensors(call).items():
            tensor = grpcclient.InferInput(name, list(value.shape), "INT32")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        # `prm` is internal: only requests with the server's token (as the BLS sends) are answered
        grpc_client.async_stream_infer("prm", inputs, request_id="prm-test",
                                       parameters={"rsd_internal_token": INTERNAL_TOKEN})
        grpc_client.stop_stream()  # waits for the outstanding responses
    finally:
        grpc_client.close()
    result, error = results[0]
    return (None if result is None else result.as_numpy("step_rewards")), error


def test_prm_model_contract(trt_server):
    """The PRM engine's rows at every asked position, also for rows sharing a prefix with an earlier
    request: an engine built with --gather_context_logits never reuses KV blocks (its config asks for
    reuse here, and TensorRT-LLM turns it off), so every context-logit row comes back."""
    from runtime.engines.triton.contract import PrmCall
    from support.fake_trtllm_repo import load_fake_engine

    net = load_fake_engine(trt_server.trtllm.engine_dir("prm")).net

    def want(row, p):
        return 1 / (1 + math.exp(-(net.context_rows(row)[p, 0] - 0.5)))

    rows = ((9, 8, 7, 6, 5, 4, 3, 10, 11, 12), (9, 8, 7, 6, 5, 4, 3, 10, 13))
    rewards, error = _prm_request(trt_server, PrmCall(rows[:1], ((2, 9),)))
    assert error is None and rewards[0].tolist() == pytest.approx([want(rows[0], 2), want(rows[0], 9)], abs=1e-5)
    rewards, error = _prm_request(trt_server, PrmCall(rows, ((2,), (8,))))  # the shared prefix too
    assert error is None and rewards[:, 0].tolist() == pytest.approx([want(rows[0], 2), want(rows[1], 8)], abs=1e-5)


def test_the_default_layout_scores_with_the_torch_prm(tmp_path, tiny_config):
    """trtllm.prm: torch (the default): draft and target on engines, the PRM on our PyTorch engine in
    the same server (the narrowed-vocabulary PRM engine stays opt-in); greedy RSD equals the same
    pipeline in process, rewards included."""
    http, grpc, metrics = free_ports(3)
    cfg = fake_serve_config(tmp_path, tiny_config, prm="torch", http_port=http, grpc_port=grpc,
                            metrics_port=metrics, sub_request_timeout_s=60.0)
    repo = render_repository(cfg, tmp_path / "repo")
    assert substitute_fakes(repo) == ["draft", "target"] and "PyTorch engine" in (repo / "prm" / "1" / "model.py").read_text()
    reference, _ = in_process(cfg)
    server = TritonServer(repo, http, grpc, metrics, cfg.address, exit_timeout_s=10,
                          log_file=tmp_path / "tritonserver.log")
    server.start(ready_timeout_s=300)
    try:
        params = {"method": "rsd", "max_tokens": 32, "threshold": 0.5}
        got = client(cfg).generate(PROMPTS[1], params)
        want = asyncio.run(reference.generate(PROMPTS[1], params))
        assert got.text == want.text and list(got.sources) == [s.source for s in want.steps]
        assert got.rewards == pytest.approx([s.reward for s in want.steps], abs=1e-5, nan_ok=True)
    finally:
        server.stop()


def test_log_probs_and_a_logit_bias_reach_the_engines(trt_server, reference):
    """A logit bias travels as embedding_bias exactly the engine's vocabulary wide (the model's config
    vocab_size, past the tokenizer's: the tiny models pad it like Qwen2.5 does); per-token log-probs
    come from the engine's output_log_probs."""
    params = {"method": "target", "max_tokens": 16, "embedding_bias_words": ["1"], "embedding_bias_weights": [8.0],
              "return_log_probs": True}
    got = client(trt_server).generate(PROMPTS[0], params)
    want = asyncio.run(reference.generate(PROMPTS[0], params))
    assert got.text == want.text and "1" in got.text
    assert got.log_probs is not None and len(got.log_probs) > 0
    plain = client(trt_server).generate(PROMPTS[0], {"method": "target", "max_tokens": 16})
    assert plain.text != got.text  # the bias changed the output


def _mutated_server(root, tiny_config, mutate):  # type: ignore[no-untyped-def]
    http, grpc, metrics = free_ports(3)
    cfg = fake_serve_config(root, tiny_config, http_port=http, grpc_port=grpc, metrics_port=metrics,
                            sub_request_timeout_s=60.0)
    repo = render_repository(cfg, root / "repo")
    substitute_fakes(repo)
    config = repo / "target" / "config.pbtxt"
    config.write_text(mutate(config.read_text()))
    return cfg, TritonServer(repo, http, grpc, metrics, cfg.address, exit_timeout_s=10,
                             log_file=root / "tritonserver.log", internal_token=INTERNAL_TOKEN)


def test_a_config_without_a_guided_decoding_parameter_does_not_load(tmp_path, tiny_config):
    """Mutation check: the real backend's constructor throws on the missing key, so must the stand-in."""
    _, server = _mutated_server(tmp_path, tiny_config, lambda text: "\n".join(
        line for line in text.splitlines() if '"tokenizer_dir"' not in line))
    with pytest.raises(EngineError, match="while starting"):
        server.start(ready_timeout_s=300)
    log = (tmp_path / "tritonserver.log").read_text(errors="replace")
    assert "failed to load 'target'" in log and "Cannot find parameter with name: tokenizer_dir" in log


def test_a_config_that_does_not_declare_a_perf_output_fails_the_request(tmp_path, tiny_config):
    """Mutation check: with return_perf_metrics the backend emits all ten perf outputs, and Triton core
    fails a response carrying one the config does not declare."""
    cfg, server = _mutated_server(tmp_path, tiny_config, lambda text: "\n".join(
        line for line in text.splitlines() if '"acceptance_rate"' not in line))
    server.start(ready_timeout_s=300)
    try:
        with pytest.raises(ServerError, match="unexpected inference output 'acceptance_rate' for model 'target'"):
            client(cfg).generate(PROMPTS[0], {"method": "target", "max_tokens": 8})
    finally:
        server.stop()
