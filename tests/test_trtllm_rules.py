"""The faithful stand-in for the C++ `tensorrtllm` backend (tests/support/trtllm_rules.py, used by
the fake engine model): each rule of the real backend refuses what it refuses, and the mutations
the issue names are caught: a rendered config without a guided-decoding parameter fails to load,
and one that does not declare a perf output fails the request. Sources are cited in
tests/support/trtllm_rules.py (tensorrtllm_backend c2e65b8, TensorRT-LLM b35ac1b6 / 119c6e60 /
97e36d0b, Triton core r26.04)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from runtime.core.errors import ConfigError, EngineError
from runtime.engines.triton.contract import LmCall, lm_request_tensors
from support import trtllm_rules
from support.fake_trtllm import FakeEngine, FakeNet, FakeSpec
from support.fake_trtllm_repo import declared_outputs

GOOD_PARAMS = {"gpt_model_type": "inflight_fused_batching", "tokenizer_dir": "", "xgrammar_tokenizer_info_path": "",
               "guided_decoding_backend": ""}


def test_required_parameters_fail_the_load_when_missing(tmp_path):
    params = {**GOOD_PARAMS, "gpt_model_path": str(tmp_path)}
    trtllm_rules.check_model_parameters(params)  # empty guided-decoding values are accepted
    for key in trtllm_rules.REQUIRED_PARAMETERS:
        with pytest.raises(ConfigError, match=f"Cannot find parameter with name: {key}"):
            trtllm_rules.check_model_parameters({k: v for k, v in params.items() if k != key})
    with pytest.raises(ConfigError, match="Invalid gpt_model_type"):
        trtllm_rules.check_model_parameters({**params, "gpt_model_type": "inflight"})
    with pytest.raises(ConfigError, match="Both encoder and decoder model paths are empty"):
        trtllm_rules.check_model_parameters({**params, "gpt_model_path": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="does not exist"):
        trtllm_rules.check_model_parameters({**params, "guided_decoding_backend": "xgrammar",
                                             "xgrammar_tokenizer_info_path": str(tmp_path / "none.json")})


def test_the_shipped_template_declares_every_output_the_backend_emits():
    declared = declared_outputs()
    assert set(trtllm_rules.PERF_OUTPUTS) <= declared
    assert set(trtllm_rules.ALWAYS_OUTPUTS) <= declared
    template = open(trtllm_rules.__file__.replace("tests/support/trtllm_rules.py",
                                                  "triton_repo/tensorrt_llm/config.pbtxt")).read()
    for key in trtllm_rules.REQUIRED_PARAMETERS:
        assert re.search(rf'key: "{key}"', template), key


def _engine(**spec: object) -> FakeEngine:
    return FakeEngine(FakeNet.build(FakeSpec("lm", 16, seed=1, tokens=12, **spec)))  # type: ignore[arg-type]


def test_outputs_follow_the_request_flags_and_perf_metrics_come_unasked():
    engine = _engine()
    plain = engine.respond(lm_request_tensors(LmCall((3, 4, 5), 3, end_id=2)), frozenset({"output_ids", "sequence_length"}))
    assert set(plain[0]) == {"output_ids", "sequence_length"}
    wanted = frozenset({"output_ids", "sequence_length", "cum_log_probs", "output_log_probs", "sequence_index"})
    (logp,) = engine.respond(lm_request_tensors(LmCall((3, 4, 5), 3, end_id=2, logprobs=True)), wanted)
    assert {"cum_log_probs", "output_log_probs"} <= set(logp) and "sequence_index" not in logp  # n = 1
    assert logp["output_log_probs"].shape == logp["output_ids"].shape and logp["cum_log_probs"].shape == (1, 1)
    perf = engine.respond(lm_request_tensors(LmCall((3, 4, 5), 3, end_id=2, perf_metrics=True)), wanted)
    assert set(trtllm_rules.PERF_OUTPUTS) <= set(perf[0])  # emitted though not requested
    assert all(perf[0][name].shape == (1, 1) and perf[0][name].dtype == dtype
               for name, dtype in trtllm_rules.PERF_OUTPUTS.items())
    seqs = engine.respond(lm_request_tensors(LmCall((3, 4, 5), 3, n=2, temperature=0.7, end_id=2)), wanted)
    assert [int(r["sequence_index"][0, 0]) for r in seqs] == [0, 1]


def test_an_undeclared_output_fails_the_response_and_output_ids_must_be_requested():
    engine = _engine()
    (perf,) = engine.respond(lm_request_tensors(LmCall((3, 4, 5), 3, end_id=2, perf_metrics=True)))
    declared = declared_outputs() - {"acceptance_rate"}
    with pytest.raises(EngineError, match="unexpected inference output 'acceptance_rate' for model 'target'"):
        trtllm_rules.check_outputs(perf, {"output_ids", "sequence_length"}, declared, "target")
    trtllm_rules.check_outputs(perf, {"output_ids", "sequence_length"}, declared_outputs(), "target")
    with pytest.raises(EngineError, match="sequence_length tensor must be present"):
        trtllm_rules.check_outputs(perf, {"output_ids"}, declared_outputs(), "target")


@pytest.mark.parametrize(("call", "message"), [
    (LmCall((3, 4), 2, end_id=16), r"EndId \(16\) is not within acceptable range \[-1, 16\)"),
    (LmCall((3, 4), 0, end_id=2), "request_output_len: must be > 0"),
    (LmCall((3, 4), 2, end_id=2, bias=((5, 1.0),), vocab_size=12), "The embedding bias shape is not as expected"),
    (LmCall((3, 4), 2, end_id=2, generation_logits=True), "gather_generation_logits"),
    (LmCall((3, 4), 2, end_id=2, context_logits=True), "gather_context_logits"),
    (LmCall((3, 4), 2, end_id=2, draft_ids=(5,)), r"exceeds maximum draft tokens length \(0\)"),
])
def test_requests_the_real_backend_refuses(call, message):
    with pytest.raises(EngineError, match=message):
        _engine().respond(lm_request_tensors(call))


def test_what_the_real_backend_accepts_passes():
    """end_id -1 and a pad_id past the vocabulary (the executor checks end_id only), a bias exactly the
    engine's vocabulary wide (not the tokenizer's), and draft logits [1, G, V] on a draft engine."""
    engine = _engine()
    engine.respond(lm_request_tensors(LmCall((3, 4), 2, end_id=-1, pad_id=40)))
    engine.respond(lm_request_tensors(LmCall((3, 4), 2, end_id=2, bias=((5, 1.0),), vocab_size=16)))
    target = _engine(max_draft_len=4)
    good = {**lm_request_tensors(LmCall((3, 4), 3, end_id=2, temperature=0.7)),
            "draft_input_ids": np.array([[5, 6]], np.int32), "draft_logits": np.zeros((1, 2, 16), np.float32)}
    target.respond(good)
    with pytest.raises(EngineError, match="Incompatible buffer sizes"):
        target.respond({**good, "draft_logits": np.zeros((1, 2, 12), np.float32)})  # the tokenizer's width


def test_a_target_with_draft_tokens_ends_after_one_step():
    """TensorRT-LLM ends a draft_tokens_external request after the step that verifies the drafts."""
    target = _engine(max_draft_len=4)
    (greedy,) = target.respond(lm_request_tensors(LmCall((3, 4), 6, end_id=-1)))
    first = [int(t) for t in greedy["output_ids"][0, 0, :2]]
    tensors = {**lm_request_tensors(LmCall((3, 4), 6, end_id=-1)), "draft_input_ids": np.array([first], np.int32)}
    (verified,) = target.respond(tensors)
    assert int(verified["sequence_length"][0, 0]) == 3  # both drafts accepted + one token, not 6
