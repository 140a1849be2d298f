"""The BLS without a server: the same pipeline on engines that speak the sub-model tensor
contract, wired to the torch sub-model handlers in-process (tests/support/inprocess_triton.py)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.core.errors import EngineError, RequestValidationError

pytestmark = pytest.mark.slow  # real (tiny) models


@pytest.fixture(scope="module")
def pipelines(pipeline_config):
    from runtime.assembly.bls import build_bls_pipeline
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config
    from runtime.in_server.torch_submodels import build_lm_submodel, build_prm_submodel
    from support.inprocess_triton import InProcessTransport

    cfg = load_config(pipeline_config)
    handlers = {"draft": build_lm_submodel(cfg, "draft", 8), "target": build_lm_submodel(cfg, "target", 8),
                "prm": build_prm_submodel(cfg, 8)}
    transport = InProcessTransport(handlers)
    return build_pipeline(cfg), build_bls_pipeline(cfg, transport), transport


@pytest.mark.parametrize("method", ["rsd", "target", "draft", "gsi", "sd", "cos", "bon"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_bls_engines_reproduce_the_torch_pipeline(pipelines, method, temperature):
    torch_pipeline, bls_pipeline, _ = pipelines
    params = {"method": method, "n": 3, "temperature": temperature, "seed": 5, "threshold": 0.3, "max_tokens": 24}
    expected = torch_pipeline.generate_sync("1+1=", params)
    got = bls_pipeline.generate_sync("1+1=", params)
    assert got.text == expected.text
    assert [s.source for s in got.steps] == [s.source for s in expected.steps]
    assert [s.reward for s in got.steps] == pytest.approx([s.reward for s in expected.steps], abs=1e-5)


OWN_WORK: set[tuple[str, str]] = set()  # (method, role) whose engine work may differ between the two: none


@pytest.mark.parametrize("method", ["rsd", "target", "draft", "bon", "gsi", "sd", "cos"])
def test_bls_reports_the_usage_of_the_torch_pipeline(pipelines, method):
    """The sub-models report what their engine ran, so the BLS's token counts, forwards and FLOPs per
    role are the in-process pipeline's, for the same greedy requests (but see OWN_WORK)."""
    torch_pipeline, bls_pipeline, _ = pipelines
    params = {"method": method, "n": 3, "temperature": 0.0, "threshold": 0.3, "max_tokens": 24}
    for prompt in ("1+1=", "what is 7-2?"):
        expected = torch_pipeline.generate_sync(prompt, params).stats
        got = bls_pipeline.generate_sync(prompt, params).stats
        assert got["models"].keys() == expected["models"].keys()
        for role, mine in got["models"].items():
            theirs = expected["models"][role]
            if (method, role) in OWN_WORK:  # the same calls and tokens written, other work per call
                assert (mine["calls"], mine["generated_tokens"]) == (theirs["calls"], theirs["generated_tokens"])
            else:
                assert mine == pytest.approx(theirs), role
        assert all(m["forwards"] >= m["calls"] for m in got["models"].values())  # every call ran a pass


def test_a_step_is_cut_once_by_the_torch_sub_model(pipelines, monkeypatch):
    """The torch sub-model's TokenStep cuts each step and says why it ended (finish_reason); the BLS
    keeps that cut (re-cutting serves TensorRT-LLM engines only), and the steps are the in-process
    engine's: ids and finish alike, log-probs up to their float32 transfer."""
    from runtime.core.segment import StepSegmenter
    from runtime.core.types import StepRequest

    torch_pipeline, bls_pipeline, _ = pipelines
    monkeypatch.setattr(StepSegmenter, "cut", lambda *a: pytest.fail("the BLS re-cut a torch sub-model's step"))
    finishes = set()
    for question in ("1+1=", "what is 7-2?", "abc", "x=3, x+1="):
        prefix = tuple(torch_pipeline.request(question).prompt_ids)
        for cap, n, temperature in ((1, 1, 0.0), (4, 3, 0.9), (12, 1, 0.0), (40, 3, 0.9), (40, 1, 0.0)):
            req = StepRequest(prefix, n, temperature, 1.0, cap, 5, True)
            want = asyncio.run(torch_pipeline.engines.draft.open("a").generate(req)).generations
            got = asyncio.run(bls_pipeline.engines.draft.open("b").generate(req)).generations
            assert [(g.token_ids, g.finish) for g in got] == [(g.token_ids, g.finish) for g in want]
            assert [g.logprob for g in got] == pytest.approx([g.logprob for g in want], abs=1e-5)
            finishes.update(g.finish for g in got)
    assert finishes == {"step", "eos", "length"}


@pytest.mark.parametrize("method", ["sd", "cos", "gsi"])
def test_the_torch_backend_verifies_proposes_and_scores_on_the_request_cache(pipelines, method):
    """No context logits: sd verifies with draft_input_ids, a proposal is one draft request, CoS
    reads the target's rows as draft_input_ids + generation logits, GSI scores all candidates in
    one request."""
    from runtime.engines.triton.verify import NativeVerifyLM

    _, bls, transport = pipelines
    assert isinstance(bls.engines.target, NativeVerifyLM) and bls.engines.target.on_cache
    del transport.sent[:]
    result = bls.generate_sync("what is 7-2?", {"method": method, "n": 4, "temperature": 0.8, "seed": 3,
                                                "max_tokens": 24})
    flag = lambda inputs, name: bool(inputs.get(name, np.zeros(1))[0, ...].any())  # noqa: E731
    assert not any(flag(inputs, "return_context_logits") for _, inputs in transport.sent)
    target = [inputs for model, inputs in transport.sent if model == "target"]
    draft = [inputs for model, inputs in transport.sent if model == "draft"]
    if method == "sd":
        assert all("draft_input_ids" in t and "draft_logits" in t for t in target)
        assert len(draft) == len(target) == result.stats["models"]["target"]["calls"]
    elif method == "cos":
        assert all(flag(d, "return_generation_logits") for d in draft)
        assert any(flag(t, "return_generation_logits") and "draft_input_ids" in t for t in target)
    else:
        scored = [t for t in target if "continuation_ids" in t]
        assert len(scored) == len(result.steps)  # one scoring request per step, whatever the fallback does
        assert all(t["continuation_ids"].shape[1] == 4 for t in scored)


RULED = {"top_k": 4, "repetition_penalty": 1.8, "presence_penalty": 0.5, "frequency_penalty": 0.3,
         "bad_words": ["a", "e"], "embedding_bias_words": ["x"], "embedding_bias_weights": [2.0], "min_tokens": 30,
         "return_log_probs": True, "stop_words": ["zz"], "max_tokens": 40}


@pytest.mark.parametrize("method", ["rsd", "target", "draft", "gsi", "sd", "cos", "bon"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_bls_engines_apply_the_request_rules_like_the_torch_pipeline(pipelines, method, temperature):
    """Penalties, bias, bad words, top-k and min_tokens cross the sub-model contract unchanged."""
    torch_pipeline, bls_pipeline, _ = pipelines
    params = {"method": method, "n": 3, "temperature": temperature, "seed": 5, "threshold": 0.3, **RULED}
    expected = torch_pipeline.generate_sync("what is 7-2?", params)
    got = bls_pipeline.generate_sync("what is 7-2?", params)
    banned = {bls_pipeline.tokenizer.encode(w)[0] for w in ("a", "e")}
    assert got.text == expected.text and not banned & {t for s in got.steps for t in s.token_ids}
    assert got.stats["tokens"] >= 30
    mine = [lp for s in got.steps for lp in s.token_logprobs]
    theirs = [lp for s in expected.steps for lp in s.token_logprobs]
    assert len(mine) == got.stats["tokens"] and mine == pytest.approx(theirs, abs=1e-4)


class FakeSink:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.sent: list[tuple[dict, bool]] = []
        self.errors: list[Exception] = []
        self.closed = 0
        self.cancel_after = cancel_after

    def send(self, outputs, final):
        self.sent.append((outputs, final))

    def fail(self, exc):
        self.errors.append(exc)

    def close(self):
        self.closed += 1

    def is_cancelled(self):
        return self.cancel_after is not None and len(self.sent) >= self.cancel_after


def _inputs(prompt: str, stream: bool, **params):
    tensors = {"text_input": np.array([prompt.encode()], dtype=np.object_), "stream": np.array([stream])}
    for key, value in params.items():
        tensors[key] = np.array([value.encode() if isinstance(value, str) else value])
    return tensors


def _serve(pipeline, inputs, sink):
    from runtime.in_server.bls import RsdService

    asyncio.run(RsdService(pipeline).serve(inputs, {}, sink))
    return sink


def test_service_streams_steps_then_closes(pipelines):
    bls = pipelines[1]
    streamed = _serve(bls, _inputs("2*3=", True, max_tokens=12), FakeSink())
    whole = _serve(bls, _inputs("2*3=", False, max_tokens=12), FakeSink())
    assert streamed.closed == whole.closed == 1 and not streamed.errors
    assert [final for _, final in streamed.sent] == [False] * (len(streamed.sent) - 1) + [True]
    text = b"".join(out["text_output"][0] for out, _ in streamed.sent)  # [1], as TensorRT-LLM's BLS
    (out, final), = whole.sent
    assert final and out["text_output"][0] == text and out["step_source"].shape == (1, len(streamed.sent))
    assert json.loads(out["stats"][0][0])["tokens"] <= 12 and out["finish_reason"][0][0] == b"max_tokens"


@pytest.mark.parametrize(("params", "field"), [({"max_tokens": 0}, "max_tokens"), ({"method": "x"}, "method"),
                                               ({"threshold": float("nan")}, "threshold")])
def test_service_answers_invalid_requests_with_a_typed_error(pipelines, params, field):
    sink = _serve(pipelines[1], _inputs("2*3=", True, **params), FakeSink())
    assert not sink.sent and sink.closed == 1
    (error,) = sink.errors
    assert isinstance(error, RequestValidationError) and error.field == field


def test_service_cancellation_stops_between_steps_and_closes_the_sessions(pipelines, monkeypatch):
    bls = pipelines[1]
    session_type, opened, closed = type(bls.engines.target.open("probe")), [], []
    original = session_type.__init__
    monkeypatch.setattr(session_type, "__init__", lambda s, *a: opened.append(s) or original(s, *a))
    monkeypatch.setattr(session_type, "close", lambda s: closed.append(s))
    sink = _serve(bls, _inputs("2*3=", True, max_tokens=200, max_step_tokens=2, method="target"), FakeSink(1))
    assert len(sink.sent) == 1 and sink.closed == 1 and not sink.errors
    assert len(opened) == len(closed) == 1 and closed[0] is opened[0]  # the loop closed the target session


def test_service_reports_engine_failures(pipelines):
    _, bls, transport = pipelines
    prm = transport.handlers
    transport.handlers = {k: v for k, v in prm.items() if k != "prm"}
    try:
        sink = _serve(bls, _inputs("2*3=", True, max_tokens=8), FakeSink())
    finally:
        transport.handlers = prm
    (error,) = sink.errors
    assert isinstance(error, EngineError) and "prm" in str(error) and sink.closed == 1


def test_service_turns_bugs_into_error_responses(pipelines, monkeypatch):
    bls = pipelines[1]

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(type(bls), "run", broken)
    sink = _serve(bls, _inputs("2*3=", True), FakeSink())
    (error,) = sink.errors
    assert isinstance(error, EngineError) and "ZeroDivisionError" in str(error) and sink.closed == 1


class _Session:
    def __init__(self, key, closed):
        self.key, self.closed = key, closed

    def close(self):
        self.closed.append(self.key)


def _table(bound):
    from runtime.in_server.torch_submodels import SessionTable

    closed: list[str] = []
    return SessionTable(type("Engine", (), {"open": lambda self, key: _Session(key, closed)})(), bound), closed


def test_session_table_closes_the_least_recently_used_idle_session():
    table, closed = _table(2)
    sessions = []
    for key in ("a", "b", "a", "c", "d"):
        with table.use(key) as session:
            sessions.append(session)
    assert sessions[0] is sessions[2] and closed == ["b", "a"] and len(table) == 2


def test_session_table_never_closes_a_session_in_use():
    """Bound 2, three calls in flight: none is closed (the old LRU closed the first, and its forward
    failed: 'a row's cache was freed'); once they end, the oldest idle ones go."""
    table, closed = _table(2)
    with table.use("a"), table.use("b"), table.use("c"):
        assert closed == [] and len(table) == 3
    with table.use("d"):
        pass
    assert closed == ["a", "b"] and len(table) == 2


def test_released_sessions_close_once_their_calls_end():
    table, closed = _table(8)
    with table.use("a"):
        table.release(["a", "never-seen"])
        assert closed == [] and table.in_use("a")
    assert closed == ["a"] and len(table) == 0
    with table.use("b"):
        pass
    table.release(["b"])
    assert closed == ["a", "b"]


def test_the_sub_model_serves_more_concurrent_requests_than_its_bound(pipeline_config):
    """Three concurrent requests on a draft sub-model that keeps 2 sessions: all three answer (they
    all failed with the LRU that evicted sessions in flight), and each equals the request alone."""
    from runtime.config import load_config
    from runtime.engines.triton.contract import LmCall, lm_request_tensors, parse_lm_reply
    from runtime.in_server.torch_submodels import build_lm_submodel

    sub = build_lm_submodel(load_config(pipeline_config), "draft", 2)
    calls = [LmCall(tuple(range(3, 9 + i)), 12, end_id=0) for i in range(3)]

    async def one(i: int) -> tuple[int, ...]:
        return parse_lm_reply([await sub.handle(lm_request_tensors(calls[i]), f"req-{i}")]).sequences[0]

    async def together() -> list[tuple[int, ...]]:
        return list(await asyncio.gather(*(one(i) for i in range(3))))

    got = asyncio.run(together())
    sub.release([f"req-{i}" for i in range(3)])
    assert len(sub.sessions) == 0
    assert got == [asyncio.run(one(i)) for i in range(3)]


def likelihood_config(tmp: Path, pipeline_config: Path, verifier: str) -> Path:
    """The tiny pipeline with a likelihood PRM on `verifier` (a role's folder, or the PRM folder)."""
    from runtime.config import load_config

    cfg = load_config(pipeline_config)
    path = {"target": cfg.target.path, "prm": cfg.prm.path}[verifier]
    file = tmp / f"likelihood-{verifier}.yaml"
    file.write_text(f"models:\n  draft: {{path: {cfg.draft.path}}}\n  target: {{path: {cfg.target.path}}}\n"
                    f"  prm: {{path: {path}, format: likelihood}}\n"
                    "prompt_template: \"Q: {question}\\n\"\ndefaults: {max_tokens: 24, max_step_tokens: 8}\n")
    return file


@pytest.mark.parametrize("verifier", ["target", "prm"])
def test_likelihood_prm_through_the_contract(tmp_path, pipeline_config, verifier):
    from runtime.assembly.bls import build_bls_pipeline
    from runtime.assembly.common import shared_verifier
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config
    from runtime.in_server.torch_submodels import build_lm_submodel
    from support.inprocess_triton import InProcessTransport

    cfg = load_config(likelihood_config(tmp_path, pipeline_config, verifier))
    assert shared_verifier(cfg) == ("target" if verifier == "target" else None)
    handlers = {role: build_lm_submodel(cfg, role, 8) for role in ("draft", "target")}
    if verifier == "prm":
        handlers["prm"] = build_lm_submodel(cfg, "prm", 8)  # served like draft and target
    transport = InProcessTransport(handlers)
    bls, local = build_bls_pipeline(cfg, transport), build_pipeline(cfg)
    params = {"method": "rsd", "threshold": 0.05}
    expected, got = local.generate_sync("1+1=", params), bls.generate_sync("1+1=", params)
    assert got.text == expected.text
    assert [s.reward for s in got.steps] == pytest.approx([s.reward for s in expected.steps], rel=1e-4)
    assert ("prm" in transport.calls) == (verifier == "prm")


def test_service_serves_every_row_of_a_batched_request(pipelines):
    """TensorRT-LLM clients batch rows ([B, 1] tensors): each row is its own loop, each response says
    its row, the final flag comes last, and row options (exclude_input_in_output, perf) are per row."""
    bls = pipelines[1]
    prompts = ["2*3=", "1+1="]
    alone = [_serve(bls, _inputs(p, False, max_tokens=12), FakeSink()).sent[0][0]["text_output"][0]
             for p in prompts]
    tensors = {"text_input": np.array([[p.encode()] for p in prompts], dtype=np.object_),
               "stream": np.array([[True], [False]]), "max_tokens": np.array([[12], [12]], np.int32),
               "exclude_input_in_output": np.array([[True], [False]]), "return_perf_metrics": np.array([[True], [True]])}
    sink = _serve(bls, tensors, FakeSink())
    assert not sink.errors and sink.closed == 1
    assert [final for _, final in sink.sent] == [False] * (len(sink.sent) - 1) + [True]
    rows: dict[int, bytes] = {}
    for out, _ in sink.sent:
        row = int(out["batch_index"][0][0])
        rows[row] = rows.get(row, b"") + out["text_output"][0]
        assert 0.0 <= out["acceptance_rate"][0][0] <= 1.0
        assert out["total_accepted_draft_tokens"][0][0] <= out["total_draft_tokens"][0][0]
    assert rows == {0: alone[0], 1: prompts[1].encode() + alone[1]}  # row 1 repeats its input (not excluded)


def test_service_checks_end_id_against_the_tokenizer(pipelines):
    bls = pipelines[1]
    ok = _serve(bls, _inputs("2*3=", False, max_tokens=4, end_id=np.int32(min(bls.tokenizer.eos_ids))), FakeSink())
    assert not ok.errors
    sink = _serve(bls, _inputs("2*3=", False, max_tokens=4, end_id=np.int32(7)), FakeSink())
    (error,) = sink.errors
    assert isinstance(error, RequestValidationError) and error.field == "end_id"


def test_concurrent_requests_share_prm_sub_requests_and_keep_their_own_rewards(pipelines):
    """PrmBatcher: the rows of concurrent requests go in one PRM sub-request (row_keys), each on its
    own request's cache; every request still gets exactly the in-process rewards and text."""
    torch_pipeline, bls_pipeline, _ = pipelines
    prompts = ["1+1=", "what is 7-2?", "abc", "x=3, x+1=", "2+2=", "9-1=", "5+5=", "hello"]
    params = {"method": "rsd", "threshold": 0.3, "max_tokens": 24}
    expected = [torch_pipeline.generate_sync(p, params) for p in prompts]
    batcher = bls_pipeline.engines.prm.batcher
    sent, rows = batcher.sent, batcher.rows_sent

    async def together():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(bls_pipeline.generate(p, params) for p in prompts))

    got = asyncio.run(together())
    assert [g.text for g in got] == [e.text for e in expected]
    for g, e in zip(got, expected):
        assert [s.reward for s in g.steps] == pytest.approx([s.reward for s in e.steps], abs=1e-5)
        assert g.stats["models"]["prm"] == pytest.approx(e.stats["models"]["prm"])  # usage split back per request
    scored = sum(e.stats["steps_drafted"] for e in expected)
    assert batcher.rows_sent - rows == scored
    assert batcher.sent - sent < scored  # some sub-requests carried several requests' rows


def test_the_sub_model_routes_on_the_request_kind_not_on_the_tensors(pipeline_config):
    """One and the same tensors (draft tokens, output_len = drafts + 1, no stop words: what the old
    routing guessed to be a verification) are a verification when the BLS says `verify` and a step
    with a hint when it says `generate`; an unknown kind is an error naming request_kind."""
    from runtime.config import load_config
    from runtime.engines.triton.contract import LmCall, lm_request_tensors, parse_lm_reply
    from runtime.in_server.torch_submodels import build_lm_submodel

    sub = build_lm_submodel(load_config(pipeline_config), "target", 4)
    greedy = parse_lm_reply([asyncio.run(sub.handle(lm_request_tensors(LmCall((3, 4, 5), 6, end_id=2)), "a"))])
    first = greedy.sequences[0][:2]
    wrong = (first[0], (first[1] + 1) % 40 + 3)  # the second draft token is not the target's choice
    tensors = lm_request_tensors(LmCall((3, 4, 5), 3, end_id=2, draft_ids=wrong))
    verified = parse_lm_reply([asyncio.run(sub.handle(tensors, "b", "verify"))]).sequences[0]
    stepped = parse_lm_reply([asyncio.run(sub.handle(tensors, "c", "generate"))]).sequences[0]
    assert verified == first  # accepted the first draft token, corrected the second, stopped
    assert stepped == greedy.sequences[0][:3]  # a greedy step of 3 tokens, the hint only checked
    with pytest.raises(EngineError, match="request_kind: unknown kind 'guess'"):
        asyncio.run(sub.handle(tensors, "d", "guess"))
