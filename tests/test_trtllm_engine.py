"""The BLS adapters on the fake TensorRT-LLM engines, in process (no server): native draft-token
verification against the core's reference rule, the PRM engine wrapper and its KV-reuse
alignment, and the fake's own contract checks."""
from __future__ import annotations

import asyncio
import dataclasses
import math

import numpy as np
import pytest
from trtllm_helpers import fake_serve_config, in_process

from runtime.core.errors import ConfigError, EngineError
from runtime.core.types import StepRequest, VerifyRequest
from runtime.core.verify import ReferenceVerifier
from runtime.engines.triton.contract import LmCall, PrmCall, lm_request_tensors, prm_request_tensors
from runtime.engines.triton.lm import TritonLM
from runtime.engines.triton.verify import NativeVerifyLM, accepted_tokens, draft_logits
from runtime.in_server.engine_prm import readout_of
from support.fake_trtllm import FakeEngine, FakeNet, FakeSpec
from support.fake_trtllm_repo import FakeTransport

PROMPTS = ["1+1=", "2*3=", "what is 7-2?", "abc", "(4+4)/2", "x=3, x+1="]


@pytest.fixture(scope="module")
def fake_cfg(tmp_path_factory, tiny_config):
    return fake_serve_config(tmp_path_factory.mktemp("trtllm"), tiny_config, prm_reuse=True)


@pytest.fixture(scope="module")
def fakes(fake_cfg):
    return in_process(fake_cfg)


def test_accepted_tokens_rules():
    assert accepted_tokens((5, 6, 7), (5, 6, 7, 8), 2) == ((5, 6, 7, 8), 3)  # all accepted + bonus
    assert accepted_tokens((5, 6, 7), (5, 9), 2) == ((5, 9), 1)  # rejected at 1, corrected
    assert accepted_tokens((5, 6, 7), (5, 9, 4, 4), 2) == ((5, 9), 1)  # the engine kept decoding: cut
    assert accepted_tokens((5, 6, 7), (5,), 2) == ((5, 2), 1)  # ended on end_id, not returned
    assert accepted_tokens((5, 2), (5,), 2) == ((5, 2), 2)  # the draft proposed the end token
    assert accepted_tokens((5, 6), (5, 2), 2) == ((5, 2), 1)  # end token returned
    assert accepted_tokens((), (), 2) == ((2,), 0)


def test_draft_logits_give_back_the_draft_distribution():
    q = np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    rows = draft_logits(q, width=5)
    assert rows.shape == (2, 5) and rows.dtype == np.float32
    softmax = np.exp(rows - rows.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    assert np.allclose(softmax[:, :3], q, atol=1e-6) and np.all(softmax[:, 3:] < 1e-30)


def _reference_target(native: NativeVerifyLM, engine: FakeEngine) -> TritonLM:
    """The same target as a plain TritonLM on an engine that returns context logits (as the torch
    sub-model does): the core's ReferenceVerifier runs on its logits."""
    spec = dataclasses.replace(engine.net.spec, gather_context_logits=True, max_draft_len=0)
    transport = FakeTransport({"target": FakeEngine(FakeNet.build(spec))})
    return TritonLM("target", "target", transport, native.segmenter, native.end_id, native.pad_id, native.stop_words,
                    native.num_params, native.max_len, native.vocab_size, native.outputs, native.trtllm)


def _until_eos(tokens: tuple[int, ...], eos: int) -> tuple[int, ...]:
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


def test_native_verification_agrees_with_the_reference_rule_at_temperature_0(fakes):
    pipeline, transport = fakes
    native = pipeline.engines.target
    assert isinstance(native, NativeVerifyLM) and native.max_draft_len == 8
    reference_lm = _reference_target(native, transport.engines["target"])
    rng = np.random.default_rng(0)
    eos, accepted_counts = native.end_id, set()
    for trial in range(120):
        prefix = tuple(pipeline.tokenizer.encode(f"Q: {PROMPTS[trial % len(PROMPTS)]}\n")) + tuple(
            int(t) for t in rng.integers(3, native.vocab_size, size=trial % 5))
        greedy = transport.engines["target"].respond(lm_request_tensors(LmCall(prefix, 8, end_id=eos)))
        draft = [int(t) for t in greedy[0]["output_ids"][0, 0, :int(greedy[0]["sequence_length"][0, 0])]]
        for i in range(len(draft)):  # corrupt some positions so acceptance varies
            if rng.random() < 0.15:
                draft[i] = int(rng.integers(3, native.vocab_size))
        draft_t = _until_eos(tuple(draft[:int(rng.integers(1, 9))]), eos) or (5,)
        probs = np.eye(native.vocab_size)[list(draft_t)]
        req = VerifyRequest(prefix, draft_t, probs, 0.0, 1.0, trial)
        got = asyncio.run(native.open(f"r{trial}").verify(req))
        want = asyncio.run(ReferenceVerifier(reference_lm.open(f"r{trial}")).verify(req))
        assert (_until_eos(got.tokens, eos), got.num_accepted) == (_until_eos(want.tokens, eos), want.num_accepted)
        accepted_counts.add(got.num_accepted)
    assert len(accepted_counts) >= 4  # rejections early, late and full acceptance all occurred


def test_native_verification_sends_drafts_to_the_engine(fakes):
    pipeline, transport = fakes
    before = len(transport.requests)
    probs = np.full((3, pipeline.engines.target.vocab_size), 1.0 / pipeline.engines.target.vocab_size)
    long_draft = tuple(range(3, 13))  # longer than max_draft_len: cut to 8
    asyncio.run(pipeline.engines.target.open("k").verify(VerifyRequest((3, 4), long_draft, np.tile(probs[:1], (10, 1)),
                                                                       0.8, 1.0, 3)))
    model, sent = transport.requests[before]
    assert model == "target" and sent["draft_input_ids"].tolist() == [list(range(3, 11))]
    assert sent["draft_logits"].shape == (1, 8, pipeline.engines.target.logits_width)
    assert sent["request_output_len"].tolist() == [[9]]


def test_sd_on_native_verification_equals_target_greedy(fakes):
    pipeline, transport = fakes
    for prompt in PROMPTS[:4]:
        before = len(transport.requests)
        sd = asyncio.run(pipeline.generate(prompt, {"method": "sd", "max_tokens": 32}))
        target = asyncio.run(pipeline.generate(prompt, {"method": "target", "max_tokens": 32}))
        assert sd.text == target.text and sd.finish_reason == target.finish_reason
        verified = [t for m, t in transport.requests[before:] if m == "target" and "draft_input_ids" in t]
        assert verified and sd.stats["draft_tokens_drafted"] > 0
        assert not any(t["return_context_logits"].item() for m, t in transport.requests[before:] if m == "target")


def test_rsd_and_candidates_complete(fakes):
    pipeline, _ = fakes
    result = asyncio.run(pipeline.generate(PROMPTS[2], {"method": "rsd", "max_tokens": 48, "threshold": 0.5}))
    assert result.finish_reason in ("eos", "max_tokens") and {s.source for s in result.steps} == {"draft", "target"}
    generations = asyncio.run(pipeline.engines.draft.open("n").generate(
        StepRequest(tuple(pipeline.tokenizer.encode("Q: abc\n")), 3, 0.7, 1.0, 12, 5, True)))
    assert len(generations.generations) == 3  # three responses tagged sequence_index, merged


@pytest.mark.parametrize("reuse", [True, False])
def test_usage_follows_the_engines_kv_reuse(fake_cfg, reuse):
    """TensorRT-LLM reports no token counts: the BLS derives prefill from kv_cache_reused_blocks. With
    block reuse a step runs what the previous step's request left uncached (the fake caches input
    blocks only) plus under a block; without it, every step runs its whole prefix again."""
    assert fake_cfg.trtllm is not None
    engines = tuple(dataclasses.replace(e, enable_kv_cache_reuse=reuse) for e in fake_cfg.trtllm.engines)
    pipeline, transport = in_process(dataclasses.replace(fake_cfg, trtllm=dataclasses.replace(fake_cfg.trtllm,
                                                                                             engines=engines)))
    result = asyncio.run(pipeline.generate(PROMPTS[2], {"method": "target", "max_tokens": 48, "max_step_tokens": 6}))
    sent = [t for model, t in transport.requests if model == "target"]
    lengths, m = [int(t["input_lengths"].item()) for t in sent], result.stats["models"]["target"]
    assert len(lengths) == m["calls"] >= 4 and all(t["return_perf_metrics"].item() for t in sent)
    if reuse:
        assert 0 < m["prefill_tokens"] <= lengths[-1] + 4 * (len(lengths) - 1)  # 4 tokens per fake block
    else:
        assert m["prefill_tokens"] == sum(lengths)
    assert m["forwards"] == m["calls"] + m["decode_tokens"]  # a context pass, then one token per pass


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_prm_engine_rewards_on_every_row_as_reuse_is_off(fakes, fake_cfg):
    """A PRM engine is built with --gather_context_logits, and TensorRT-LLM turns KV reuse off for such
    an engine whatever its config asks: the rows of a prefix seen before still come back whole."""
    _, transport = fakes
    prm, engine = transport.handlers["prm"], transport.engines["prm_engine"]
    assert not engine.reuse and prm.readout.bias == pytest.approx(-0.5)
    rows = ((5, 6, 7, 8, 9, 10, 11, 12, 13), (5, 6, 7, 8, 9, 20, 21, 22, 23, 24))
    call = PrmCall(rows, ((3, 8), (9,)))
    first = asyncio.run(prm.handle(prm_request_tensors(call), "p"))["step_rewards"]
    want = [[_sigmoid(engine.net.context_rows(rows[0])[p, 0] - 0.5) for p in (3, 8)],
            [_sigmoid(engine.net.context_rows(rows[1])[9, 0] - 0.5)]]
    assert first[0].tolist() == pytest.approx(want[0], abs=1e-6) and first[1, 0] == pytest.approx(want[1][0], abs=1e-6)
    again = asyncio.run(prm.handle(prm_request_tensors(PrmCall((rows[0],), ((3, 8),))), "p"))["step_rewards"]
    assert again[0].tolist() == pytest.approx(want[0], abs=1e-6)


def test_readout_from_manifest_errors():
    with pytest.raises(ConfigError, match="no `prm` readout"):
        readout_of({"prm": None}, "k")
    with pytest.raises(ConfigError, match="bias is unknown"):
        readout_of({"prm": {"prm_format": "value_head", "head_layout": "vocab_row", "op": "sigmoid", "index": 0,
                            "bias": None, "num_labels": 1, "separator": "\n\n", "separator_token_id": 5,
                            "engine_vocab_size": 9, "input_format": ""}}, "k")
    with pytest.raises(ConfigError, match="invalid `prm` readout"):
        readout_of({"prm": {"op": "tanh"}}, "k")


def test_fake_engine_enforces_the_real_contract(fakes):
    _, transport = fakes
    engine = transport.engines["draft"]
    good = lm_request_tensors(LmCall((3, 4, 5), 4, end_id=2))
    for bad, message in (({**good, "random_seed": np.array([[1]], np.uint64)}, "unexpected inference input 'random_seed'"),
                         ({**good, "seed": np.array([[1]], np.int64)}, "seed: expected TYPE_UINT64"),
                         ({**good, "stop_words_list": np.zeros((1, 3, 2), np.int32)}, "stop_words_list: shape"),
                         ({k: v for k, v in good.items() if k != "input_lengths"}, "input_lengths: required"),
                         ({**good, "return_context_logits": np.array([[True]])}, "gather_context_logits"),
                         ({**good, "bad_words_list": np.zeros((1, 2, 1), np.int32)}, "does not implement"),
                         ({**good, "draft_input_ids": np.array([[3]], np.int32)}, r"exceeds maximum draft tokens length \(0\)")):
        with pytest.raises(EngineError, match=message):
            engine.respond(bad)
    spec = FakeSpec("lm", 9, seed=1)
    assert FakeEngine(FakeNet.build(spec)).respond(lm_request_tensors(LmCall((3,), 2, end_id=2)))[0]["output_ids"].shape[:2] == (1, 1)
