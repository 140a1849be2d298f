"""Fast tests of the Triton layer without a server: tensor contract, I/O table, rendering,
serving config, request service, metrics export, import boundaries."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.core.errors import ConfigError, EngineError, RequestValidationError
from runtime.core.params import RequestParams
from runtime.core.types import Finish, StepEvent, Usage
from runtime.deploy.config import parse_serve_config
from runtime.deploy.repo import fill, render_repository
from runtime.engines.triton import contract
from runtime.in_server.metrics import RsdMetrics
from runtime.wire import bls_io


def test_lm_contract_round_trip():
    call = contract.LmCall((5, 6, 7), 12, n=2, temperature=0.7, top_p=0.9, seed=42, end_id=2, pad_id=0,
                           stop_words=((9,), (3, 4)), logprobs=True)
    tensors = contract.lm_request_tensors(call)
    assert tensors["input_ids"].shape == (1, 3) and tensors["input_ids"].dtype == np.int32
    assert tensors["seed"].dtype == np.uint64 and tensors["runtime_top_k"][0, 0] == 0
    assert tensors["stop_words_list"].tolist() == [[[9, 3, 4], [1, 3, -1]]]
    assert contract.parse_lm_request(tensors) == dataclasses.replace(call, exclude_input=True)
    greedy = contract.parse_lm_request(contract.lm_request_tensors(dataclasses.replace(call, temperature=0.0)))
    assert greedy.temperature == 0.0  # sent as runtime_top_k = 1, temperature 1


def test_draft_tokens_and_continuations_cross_the_contract():
    logits = np.log(np.full((2, 5), 0.2, dtype=np.float32))
    call = contract.LmCall((5, 6, 7), 3, draft_ids=(8, 9), draft_logits=logits, continuations=((1, 2, 3), (), (4,)))
    tensors = contract.lm_request_tensors(call)
    assert tensors["draft_input_ids"].tolist() == [[8, 9]] and tensors["draft_logits"].shape == (1, 2, 5)
    assert tensors["continuation_ids"].tolist() == [[[1, 2, 3], [0, 0, 0], [4, 0, 0]]]
    parsed = contract.parse_lm_request(tensors)
    assert (parsed.draft_ids, parsed.continuations) == ((8, 9), ((1, 2, 3), (), (4,)))
    assert np.array_equal(parsed.draft_logits, logits)
    bad = (("draft_input_ids", np.zeros((2, 2), np.int32), "draft_input_ids"),
           ("draft_logits", np.zeros((1, 3, 5), np.float32), "draft_logits"),
           ("continuation_lengths", np.array([[3, 0]], np.int32), "continuation_ids"),
           ("continuation_lengths", np.array([[4, 0, 1]], np.int32), "continuation_ids"))
    for name, value, field in bad:
        with pytest.raises(EngineError, match=field):
            contract.parse_lm_request({**tensors, name: value})


def test_lm_reply_merges_sequences_and_responses():
    reply = contract.LmReply(((1, 2, 3), (4,)), (-1.5, -0.25), usage=Usage(5, 2, forwards=3),
                             finishes=(Finish.STEP, Finish.LENGTH))
    tensors = contract.lm_reply_tensors(reply, pad_id=0)
    assert tensors["output_ids"].shape == (1, 2, 3) and tensors["sequence_length"].tolist() == [[3, 1]]
    assert tensors["forwards"].dtype == np.int64 and tensors["forwards"].shape == (1, 1)
    parsed = contract.parse_lm_reply([tensors])
    assert parsed.sequences == reply.sequences and parsed.usage == Usage(5, 2, forwards=3)
    assert parsed.finishes == reply.finishes and tensors["finish_reason"].tolist() == [[2, 3]]
    # TensorRT-LLM style: one response per sequence, tagged sequence_index, in any order
    parts = [{"output_ids": np.array([[[4, 0]]]), "sequence_length": np.array([[1]]), "sequence_index": np.array([1])},
             {"output_ids": np.array([[[1, 2]]]), "sequence_length": np.array([[2]]), "sequence_index": np.array([0])}]
    assert contract.parse_lm_reply(parts).sequences == ((1, 2), (4,))
    assert contract.parse_lm_reply(parts).usage is None  # TensorRT-LLM reports none
    parts[1]["kv_cache_reused_blocks"] = np.array([[3]], np.int32)
    assert contract.parse_lm_reply(parts).reused_blocks == 3


def test_trtllm_usage_is_derived_from_its_outputs():
    """Prefill = input - reused blocks x block size (the last input token always runs); decode = the
    tokens drawn after the context pass, an end token left out of output_ids included."""
    from runtime.engines.triton.usage import trtllm_usage

    call = contract.LmCall(tuple(range(3, 23)), 8, n=2, end_id=2, stop_words=((9,),))
    reply = contract.LmReply(((5, 6, 9), (5, 6, 7, 8, 4, 4, 4, 4)), reused_blocks=2)  # a stop word; the cap
    assert trtllm_usage(call, reply, 4) == Usage(prefill_tokens=20 - 8, decode_tokens=2 + 7, forwards=8)
    ended = contract.LmReply(((5, 6),), reused_blocks=5)  # stopped early: on end_id, not returned
    assert trtllm_usage(call, ended, 4) == Usage(decode_tokens=1 + 2, forwards=3)  # reuse stops at 19 tokens
    assert trtllm_usage(call, ended, 0) == Usage(prefill_tokens=20, decode_tokens=2, forwards=3)  # no figure
    # native verification: prefix and draft in one pass, which emits accepted + 1 tokens; then decoding
    verify = contract.LmCall(tuple(range(3, 13)), 4, end_id=2)
    out = contract.LmReply(((5, 9, 4, 4),), reused_blocks=2)  # 1 of 3 accepted, then 2 more decoded
    assert trtllm_usage(verify, out, 4, draft_len=3, accepted=1) == Usage(10 - 8 + 3, 2, forwards=3)


class _Scripted:
    """A SubModelTransport answering every request with one reply."""

    def __init__(self, reply):
        self.reply = reply

    async def infer(self, model, inputs, outputs, key, kind=""):
        return [self.reply]

    def release(self, model, key):
        pass


def test_a_step_is_re_cut_only_for_tensorrt_llm():
    """TensorRT-LLM may run past a delimiter split over two tokens: its ids are cut with the core's
    segmenter. Our torch sub-model cut the step itself: its ids and finish_reason are kept."""
    import asyncio

    from runtime.core.segment import StepSegmenter
    from runtime.core.types import StepRequest
    from runtime.engines.triton.lm import TritonLM, TrtllmEngine

    pieces = {2: "</s>", 3: "a", 4: "\n", 5: "b"}
    seg = StepSegmenter(pieces.__getitem__, frozenset({2}))

    def step(reply, engine):
        transport = _Scripted(contract.lm_reply_tensors(reply, pad_id=0))
        lm = TritonLM("draft", "draft", transport, seg, 2, 0, (), 1, 64, 6, trtllm=engine)
        (gen,) = asyncio.run(lm.open("k").generate(StepRequest((3,), 1, 0.0, 1.0, 8, 0))).generations
        return gen.token_ids, gen.finish

    overshoot = contract.LmReply(((3, 4, 4, 5, 5),))  # "a\n\nbb": no single-token stop word ended it
    assert step(overshoot, TrtllmEngine()) == ((3, 4, 4), Finish.STEP)
    assert step(contract.LmReply(((3, 5),)), TrtllmEngine()) == ((3, 5), Finish.EOS)  # end_id left out
    ours = contract.LmReply(((3, 5, 2),), usage=Usage(1, 2, forwards=3), finishes=(Finish.EOS,))
    assert step(ours, None) == ((3, 5), Finish.EOS)
    ours = contract.LmReply(((3, 4, 5),), usage=Usage(1, 2, forwards=3), finishes=(Finish.LENGTH,))
    assert step(ours, None) == ((3, 4, 5), Finish.LENGTH)  # kept as the sub-model cut it
    with pytest.raises(EngineError, match="finish_reason"):
        step(contract.LmReply(((3, 5),), usage=Usage(1, 1, forwards=2)), None)


def test_lm_request_validation_names_the_tensor():
    good = contract.lm_request_tensors(contract.LmCall((1, 2), 4))
    for name, value, field in (("input_ids", np.zeros((2, 3), np.int32), "input_ids"),
                               ("request_output_len", np.array([[0]], np.int32), "request_output_len"),
                               ("runtime_top_k", np.array([[-1]], np.int32), "runtime_top_k")):
        with pytest.raises(EngineError, match=field):
            contract.parse_lm_request({**good, name: value})


def test_prm_contract_round_trip():
    call = contract.PrmCall(((1, 2, 3), (1, 2)), ((2,), (0, 1)))
    parsed = contract.parse_prm_request(contract.prm_request_tensors(call))
    assert parsed == call
    replies = [contract.prm_reply_tensors([[0.5], [0.1, 0.9]], Usage(prefill_tokens=4, forwards=2))]
    rewards = contract.parse_prm_reply(replies, call)
    assert contract.parse_usage(replies) == Usage(prefill_tokens=4, forwards=2)
    assert [len(r) for r in rewards] == [1, 2]
    assert sum(rewards, []) == pytest.approx([0.5, 0.1, 0.9])
    with pytest.raises(EngineError, match="step_positions"):
        contract.parse_prm_request(contract.prm_request_tensors(contract.PrmCall(((1, 2),), ((5,),))))


def test_io_table_covers_every_request_parameter():
    served = {s.field for s in bls_io.INPUTS if s.role == "param"}
    assert served == {f.name for f in dataclasses.fields(RequestParams)}
    names = [s.name for s in bls_io.INPUTS]
    assert len(names) == len(set(names))
    for name in ("text_input", "max_tokens", "stream", "exclude_input_in_output", "min_length", "random_seed"):
        assert name in names


def _t(value, dtype=None):
    return np.array([value], dtype=dtype or (np.object_ if isinstance(value, bytes) else None))


def test_parse_inputs_values_and_errors():
    (parsed,) = bls_io.parse_inputs({"text_input": _t(b"hi"), "stream": _t(True), "threshold": _t(0.7, np.float32),
                                     "random_seed": _t(3, np.uint64), "min_length": _t(5, np.int32),
                                     "bad_words": np.array([b""], dtype=np.object_)})
    assert parsed.prompt == "hi" and parsed.stream
    assert parsed.params == {"threshold": 0.7, "seed": 3, "min_tokens": 5, "bad_words": [""]}
    with pytest.raises(RequestValidationError, match="text_input"):
        bls_io.parse_inputs({})
    with pytest.raises(RequestValidationError, match="max_tokens"):
        bls_io.parse_inputs({"text_input": _t(b"hi"), "max_tokens": np.array([1, 2], np.int32)})
    with pytest.raises(RequestValidationError, match="beam_width"):
        bls_io.parse_inputs({"text_input": _t(b"hi"), "beam_width": np.array([2], dtype=np.int32)})
    with pytest.raises(RequestValidationError, match="text_input"):
        bls_io.parse_inputs({"text_input": _t(b"\xff\xfe")})


def test_parse_inputs_request_parameters():
    prompt = {"text_input": _t(b"hi")}
    # an HTTP generate body's unknown key arrives as a request parameter: an error naming it
    with pytest.raises(RequestValidationError, match="^methd: unknown request parameter"):
        bls_io.parse_inputs(prompt, {"methd": "target"})
    with pytest.raises(RequestValidationError, match="^bogus: unknown input"):
        bls_io.parse_inputs({**prompt, "bogus": _t(1, np.int32)})
    # a known name given as a parameter (gRPC parameters) is its value; Triton's own are skipped
    (parsed,) = bls_io.parse_inputs(prompt, {"method": "target", "threshold": "0.25", "random_seed": 9,
                                             "triton_enable_empty_final_response": True})
    assert parsed.params == {"method": "target", "threshold": 0.25, "seed": 9}
    with pytest.raises(RequestValidationError, match="^method: given both"):
        bls_io.parse_inputs({**prompt, "method": np.array([b"rsd"], dtype=np.object_)}, {"method": "target"})
    with pytest.raises(RequestValidationError, match="^threshold: must be a number"):
        bls_io.parse_inputs(prompt, {"threshold": "high"})


def test_parse_inputs_checks_prompt_bytes_before_decoding():
    big = {"text_input": _t(b"\xff" * 101)}  # not UTF-8 either: the size is checked first
    with pytest.raises(RequestValidationError, match="^text_input: is 101 bytes; this server accepts at most 100"):
        bls_io.parse_inputs(big, max_prompt_bytes=100)
    assert bls_io.parse_inputs({"text_input": _t("é".encode() * 50)}, max_prompt_bytes=100)[0].prompt == "é" * 50


def test_fill_rejects_leftover_placeholders_and_unknown_keys():
    assert fill("a ${x} b ${y}", {"x": "1", "y": "2"}, "t") == "a 1 b 2"
    with pytest.raises(ConfigError, match=r"\$\{y\}"):
        fill("a ${x} b ${y}", {"x": "1"}, "t")
    with pytest.raises(ConfigError, match="z"):
        fill("a ${x}", {"x": "1", "z": "2"}, "t")


def _serve(tmp_path: Path, pipeline: Path, **extra) -> object:
    return parse_serve_config({"pipeline": str(pipeline), **extra}, tmp_path)


def test_serve_config_is_strict(tmp_path):
    with pytest.raises(ConfigError, match="portz"):
        _serve(tmp_path, tmp_path / "p.yaml", portz={})
    with pytest.raises(ConfigError, match="ports.gprc"):
        _serve(tmp_path, tmp_path / "p.yaml", ports={"gprc": 1})
    with pytest.raises(ConfigError, match="instances.rsd"):
        _serve(tmp_path, tmp_path / "p.yaml", instances={"rsd": 0})
    with pytest.raises(ConfigError, match="backend"):
        _serve(tmp_path, tmp_path / "p.yaml", backend="onnx")
    with pytest.raises(ConfigError, match="pipeline"):
        parse_serve_config({}, tmp_path)


def test_render_repository(tmp_path, pipeline_config):
    cfg = _serve(tmp_path, pipeline_config, instances={"rsd": 2})
    repo = render_repository(cfg, tmp_path / "repo")
    assert sorted(p.name for p in repo.iterdir()) == ["draft", "prm", "rsd", "target"]
    for model in repo.iterdir():
        text = (model / "config.pbtxt").read_text()
        assert "${" not in text and f'name: "{model.name}"' in text and (model / "1" / "model.py").is_file()
    assert "count: 2" in (repo / "rsd" / "config.pbtxt").read_text()
    assert 'string_value: "target"' in (repo / "target" / "config.pbtxt").read_text()
    with pytest.raises(ConfigError, match="trtllm"):  # the trtllm layout needs its `trtllm` section
        render_repository(_serve(tmp_path, pipeline_config, backend="trtllm"), tmp_path / "trt")


def test_torch_free_imports():
    """The BLS side (adapters, formatting, serving glue) must import without torch or Triton."""
    code = ("import sys\n"
            "for name in ('torch', 'triton_python_backend_utils', 'tensorrt_llm'): sys.modules[name] = None\n"
            "import runtime.assembly.bls, runtime.engines.prm_format, runtime.in_server.bls\n"
            "import runtime.in_server.host, runtime.deploy.repo, runtime.clients.client, runtime.deploy.server\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parameter_estimate_matches_torch(pipeline_config):
    import torch

    from runtime.config import load_config
    from runtime.engines.hf import estimate_matmul_params
    from runtime.engines.torch.loading import load_backbone, load_causal_lm, matmul_params
    from runtime.engines.torch.prm import make_head

    cfg = load_config(pipeline_config)
    decoder, head, _ = load_causal_lm(cfg.target.path, "float32", "cpu")
    assert estimate_matmul_params(cfg.target.path) == matmul_params(decoder, head)
    backbone, _ = load_backbone(cfg.prm.path, "float32", "cpu")
    prm_head = make_head(cfg.prm.format, cfg.prm.path, torch.device("cpu"), "models.prm")
    assert estimate_matmul_params(cfg.prm.path, with_lm_head=False) == matmul_params(backbone, None) + prm_head.params


class FakeMetric:
    def __init__(self):
        self.value = 0.0
        self.observed: list[float] = []

    def increment(self, v):
        self.value += v

    def set(self, v):
        self.value = v

    def observe(self, v):
        self.observed.append(v)


class FakeFactory:
    def __init__(self):
        self.metrics: dict[tuple, FakeMetric] = {}

    def metric(self, name, description, kind, labels, buckets=None):
        return self.metrics.setdefault((name, tuple(sorted(labels.items()))), FakeMetric())


def test_metrics_export_the_request_stats():
    factory = FakeFactory()
    metrics = RsdMetrics(factory)
    metrics.request_started()
    stats = {"steps": 3, "steps_drafted": 3, "steps_accepted": 2, "target_calls": 1,
             "tokens_by_source": {"draft": 7, "target": 4},
             "models": {"draft": {"prefill_tokens": 12, "decode_tokens": 6, "forwards": 9}}}
    metrics.observe_step("rsd", StepEvent(0, "a", (1,), "draft", 0.9, True))
    metrics.observe_step("rsd", StepEvent(1, "b", (2,), "target", 0.1, False, finished=True, stats=stats))
    metrics.request_ended("rsd", "ok")
    m = {k[0] + str(dict(k[1])): v for k, v in factory.metrics.items()}
    assert m["rsd_steps_regenerated_total{'method': 'rsd'}"].value == 1
    assert m["rsd_tokens_total{'method': 'rsd', 'source': 'draft'}"].value == 7
    assert m["rsd_model_tokens_total{'method': 'rsd', 'model': 'draft', 'phase': 'prefill'}"].value == 12
    assert m["rsd_model_forwards_total{'method': 'rsd', 'model': 'draft'}"].value == 9
    assert m["rsd_prm_reward{'method': 'rsd'}"].observed == [0.9, 0.1]
    assert m["rsd_requests_total{'method': 'rsd', 'outcome': 'ok'}"].value == 1
    assert m["rsd_requests_in_flight{}"].value == 0


def test_render_likelihood_prm(tmp_path, pipeline_config):
    from runtime.config import load_config

    cfg = load_config(pipeline_config)
    for verifier, served in ((cfg.target.path, False), (cfg.prm.path, True)):
        pipeline = tmp_path / f"p{served}.yaml"
        pipeline.write_text(f"models:\n  draft: {{path: {cfg.draft.path}}}\n  target: {{path: {cfg.target.path}}}\n"
                            f"  prm: {{path: {verifier}, format: likelihood}}\n")
        repo = render_repository(_serve(tmp_path, pipeline), tmp_path / f"repo{served}")
        assert (repo / "prm").exists() == served
        if served:  # the verifier is a language model: served from the torch_lm template
            assert 'key: "role" value: { string_value: "prm" }' in (repo / "prm" / "config.pbtxt").read_text()


def test_prm_rows_of_several_requests_cross_the_contract():
    call = contract.PrmCall(((1, 2, 3), (1, 2), (4,)), ((2,), (1,), (0,)), ("req-a", "req-b", "req-a"))
    tensors = contract.prm_request_tensors(call)
    assert tensors["row_keys"].dtype == np.object_
    assert contract.parse_prm_request(tensors) == call
    assert call.groups() == {"req-a": [0, 2], "req-b": [1]}
    usage = [Usage(prefill_tokens=4, forwards=1), Usage(prefill_tokens=2, forwards=1), Usage()]
    replies = [contract.prm_reply_tensors([[0.5], [0.1], [0.9]], usage)]
    assert replies[0]["prefill_tokens"].shape == (3, 1)
    assert contract.parse_row_usage(replies, 3) == usage
    with pytest.raises(EngineError, match="usage for"):
        contract.parse_row_usage(replies, 2)
    with pytest.raises(EngineError, match="row_keys"):
        contract.parse_prm_request({**tensors, "row_keys": tensors["row_keys"][:2]})


class _PrmTransport:
    """Answers PRM sub-requests with reward = 0.1 x the row's last token, after a pause."""

    def __init__(self, fail: bool = False):
        self.calls: list[contract.PrmCall] = []
        self.fail = fail

    def release(self, model, key):  # type: ignore[no-untyped-def]
        pass

    async def infer(self, model, inputs, outputs, key, kind=""):  # type: ignore[no-untyped-def]
        import asyncio

        call = contract.parse_prm_request(inputs)
        self.calls.append(call)
        await asyncio.sleep(0.01)
        if self.fail:
            raise EngineError(f"{model}: down")
        rewards = [[0.1 * row[p] for p in pos] for row, pos in zip(call.rows, call.positions)]
        usage = [Usage(prefill_tokens=len(row), forwards=1) for row in call.rows]
        return [contract.prm_reply_tensors(rewards, usage)]


def test_prm_batcher_sends_waiting_rows_together_and_hands_each_request_its_own():
    import asyncio

    from runtime.engines.triton.prm import PrmBatcher

    transport = _PrmTransport()
    batcher = PrmBatcher("prm", transport, max_rows=4)

    async def run():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(batcher.score(f"r{i}", ((9, i),), ((1,),)) for i in range(6)))

    results = asyncio.run(run())
    assert [r[0][0][0] for r in results] == pytest.approx([0.1 * i for i in range(6)])
    assert [r[1] for r in results] == [Usage(prefill_tokens=2, forwards=1)] * 6
    # all six arrived together: at most max_rows rows a sub-request, each row tagged with its request
    assert [len(c.rows) for c in transport.calls] == [4, 2]
    assert transport.calls[0].keys == ("r0", "r1", "r2", "r3")
    lone = asyncio.run(batcher.score("solo", ((1, 2, 3), (1, 2, 4)), ((2,), (2,))))  # a lone request goes at once
    assert sum(lone[0], []) == pytest.approx([0.3, 0.4]) and transport.calls[-1].keys == ("solo", "solo")


def test_prm_batcher_fails_every_waiting_request_when_the_sub_request_fails():
    import asyncio

    from runtime.engines.triton.prm import PrmBatcher

    batcher = PrmBatcher("prm", _PrmTransport(fail=True))

    async def run():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(batcher.score(f"r{i}", ((1, 2),), ((1,),)) for i in range(3)),
                                    return_exceptions=True)

    errors = asyncio.run(run())
    assert all(isinstance(e, EngineError) and "down" in str(e) for e in errors)
    assert batcher._task is None and not batcher._queue  # nothing left behind for the next request


def test_prm_batcher_waits_briefly_for_the_other_open_requests_rows():
    import asyncio
    import time

    from runtime.engines.triton.prm import PrmBatcher

    transport = _PrmTransport()
    batcher = PrmBatcher("prm", transport, max_wait_s=0.5)
    batcher.open_requests = 3

    async def late(i: int, delay: float):  # type: ignore[no-untyped-def]
        await asyncio.sleep(delay)
        return await batcher.score(f"r{i}", ((1, i),), ((1,),))

    async def run():  # type: ignore[no-untyped-def]
        return await asyncio.gather(late(0, 0.0), late(1, 0.005), late(2, 0.01))

    results = asyncio.run(run())
    assert [len(c.rows) for c in transport.calls] == [3]  # the first row waited for the two others
    assert [r[0][0][0] for r in results] == pytest.approx([0.0, 0.1, 0.2])
    batcher.max_wait_s = 0.05  # a request that never sends rows holds the others up at most max_wait_s
    started = time.monotonic()
    asyncio.run(batcher.score("alone", ((1, 2),), ((1,),)))
    assert 0.04 < time.monotonic() - started < 2.0 and len(transport.calls[-1].rows) == 1  # not forever
