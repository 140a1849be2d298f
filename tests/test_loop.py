"""The step loop with scripted fake engines: who is called when, stop rules, errors, cleanup."""
from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import pytest

from runtime.core.errors import RequestValidationError
from runtime.core.methods import Engines
from runtime.core.params import RequestParams
from runtime.core.segment import StepSegmenter
from runtime.core.types import RewardRequest, RewardResult
from runtime.pipeline import Pipeline
from support.fakes import FakeLM, FakePRM, FakeTokenizer, ScriptedLM

TOK = FakeTokenizer()
DRAFT_STEPS = ["ab\n\n", "ba\n\n", "cc\n\n", "a1<eos>"]
TARGET_STEPS = ["11\n\n", "22\n\n", "12\n\n", "21<eos>"]


def pipeline(draft=None, target=None, prm=None, max_len: int = 1000) -> Pipeline:  # type: ignore[no-untyped-def]
    seg = StepSegmenter(TOK.piece, TOK.eos_ids)
    return Pipeline(Engines(draft, target, prm), TOK, seg, "a{question}", RequestParams(), max_len)


def scripted(rewards=(0.9,)):  # type: ignore[no-untyped-def]
    # the draft's step follows the prefix (its delimiters), so RSD's early next-step call
    # (runtime.core.lookahead) gets the step a call after the accepted prefix would get
    draft = ScriptedLM(TOK, DRAFT_STEPS, by_step_index=True)
    target, prm = ScriptedLM(TOK, TARGET_STEPS), FakePRM(rewards)
    return draft, target, prm, pipeline(draft, target, prm)


def test_rsd_accepts_by_threshold_and_regenerates_from_the_same_prefix() -> None:
    draft, target, prm, p = scripted(rewards=(0.9, 0.2, 0.7, 0.69))
    result = p.generate_sync("b", {"method": "rsd", "threshold": 0.7, "max_steps": 4})
    assert [s.source for s in result.steps] == ["draft", "target", "draft", "target"]
    assert [s.accepted for s in result.steps] == [True, False, True, False]
    assert [s.reward for s in result.steps] == [0.9, 0.2, 0.7, 0.69]
    assert result.text == "ab\n\n" + "11\n\n" + "cc\n\n" + "22\n\n"  # the scripted draft moves on
    assert result.finish_reason == "max_steps"
    # the target regenerated step 2 from exactly the prefix the rejected draft step started from
    assert target.prefixes[0] == draft.prefixes[1]
    # 5 draft calls: step 1 and step 3 are early calls made while the PRM scored the step before,
    # the early call after step 1 ("ba", rejected) was wasted and step 2 drafted afresh after "11"
    assert (draft.calls["generate"], prm.calls["reward"], target.calls["generate"]) == (5, 4, 2)
    assert draft.prefixes[2] == draft.prefixes[1] + tuple(TOK.encode("ba\n\n"))  # the wasted one
    assert draft.prefixes[3] == draft.prefixes[1] + tuple(TOK.encode("11\n\n"))
    assert result.steps[1].draft_text == "ba\n\n"
    stats = result.stats
    assert stats["step_acceptance_rate"] == 0.5 and stats["target_calls"] == 2


def test_greedy_rsd_hints_the_target_with_the_rejected_draft_step_and_sampled_rsd_does_not() -> None:
    draft, target, prm, p = scripted(rewards=(0.9, 0.2, 0.7, 0.69))
    p.generate_sync("b", {"method": "rsd", "threshold": 0.7, "max_steps": 4})
    assert target.hints == [tuple(TOK.encode("ba\n\n")), tuple(TOK.encode("a1"))]  # EOS is not in a step
    draft, target, prm, p = scripted(rewards=(0.2,))
    p.generate_sync("b", {"method": "rsd", "threshold": 0.7, "max_steps": 3, "temperature": 0.7})
    assert target.hints == [(), (), ()]
    draft, target, prm, p = scripted(rewards=(0.2,))
    p.generate_sync("b", {"method": "rsd", "threshold": 0.7, "max_steps": 2, "temperature": 0.7, "top_k": 1})
    assert target.hints == [tuple(TOK.encode("ab\n\n")), tuple(TOK.encode("ba\n\n"))]


def test_rsd_threshold_zero_never_calls_the_target_and_above_one_always_does() -> None:
    draft, target, prm, p = scripted(rewards=(0.0, 0.5))
    assert all(s.source == "draft" for s in p.generate_sync("b", {"method": "rsd", "threshold": 0.0}).steps)
    assert target.calls["generate"] == 0
    draft, target, prm, p = scripted(rewards=(1.0,))
    result = p.generate_sync("b", {"method": "rsd", "threshold": 1.01, "max_steps": 3})
    assert [s.source for s in result.steps] == ["target"] * 3 and target.calls["generate"] == 3


@pytest.mark.parametrize("method", ["rsd", "gsi"])
def test_degenerate_thresholds_equal_single_models_on_a_markov_lm(method: str) -> None:
    draft, target = FakeLM(TOK.vocab_size, 1), FakeLM(TOK.vocab_size, 2)
    prm = FakePRM((0.5, 0.95, 0.3))
    p = pipeline(draft, target, prm)
    common = {"max_tokens": 30, "temperature": 0.0, "n": 3}
    target_only = p.generate_sync("b", {**common, "method": "target"}).text
    draft_only = p.generate_sync("b", {**common, "method": "draft"}).text
    high = {"threshold": 1.5} if method == "rsd" else {"gsi_u": math.inf}
    low = {"threshold": 0.0} if method == "rsd" else {"gsi_u": -math.inf}
    assert p.generate_sync("b", {**common, "method": method, **high}).text == target_only
    assert p.generate_sync("b", {**common, "method": method, **low}).text == draft_only
    assert target_only != draft_only  # otherwise the equalities prove nothing


def test_gsi_u_minus_infinity_never_falls_back_plus_infinity_always_does() -> None:
    draft, target, prm, p = scripted(rewards=(0.3, 0.8))
    result = p.generate_sync("b", {"method": "gsi", "gsi_u": -math.inf, "n": 4, "temperature": 1.0})
    assert all(s.accepted for s in result.steps) and target.calls["generate"] == 0
    assert target.calls["score"] == len(result.steps)  # target log-probs of the candidates, every step
    draft, target, prm, p = scripted(rewards=(0.3, 0.8))
    result = p.generate_sync("b", {"method": "gsi", "gsi_u": math.inf, "n": 4, "temperature": 1.0})
    assert all(s.accepted is False and s.source == "target" for s in result.steps)
    assert target.calls["generate"] == len(result.steps)


def test_gsi_tilted_threshold_uses_the_importance_weight() -> None:
    """Candidates' log pi_B - log pi_S is 0 for ScriptedLM (same -len both), so the test is r >= u."""
    draft, target, prm, p = scripted(rewards=(0.6,))
    result = p.generate_sync("b", {"method": "gsi", "gsi_u": 0.6, "n": 2, "max_steps": 2})
    assert all(s.accepted for s in result.steps)
    draft, target, prm, p = scripted(rewards=(0.59,))
    result = p.generate_sync("b", {"method": "gsi", "gsi_u": 0.6, "n": 2, "max_steps": 2})
    assert not any(s.accepted for s in result.steps)


def test_best_of_n_keeps_the_best_reward() -> None:
    draft = ScriptedLM(TOK, ["aa\n\n", "bb\n\n", "cc\n\n"])
    prm = FakePRM(fn=lambda q, steps, cand: {"aa": 0.1, "bb": 0.8, "cc": 0.5}[cand])
    result = pipeline(draft, None, prm).generate_sync("b", {"method": "bon", "n": 3, "max_steps": 1})
    assert result.text == "bb\n\n" and result.steps[0].reward == 0.8


def test_prm_sees_question_accepted_steps_and_candidates_without_delimiters() -> None:
    draft, target, prm, p = scripted(rewards=(0.9,))
    p.generate_sync("b", {"method": "rsd", "max_steps": 3})
    assert prm.seen == [("b", (), ("ab",)), ("b", ("ab",), ("ba",)), ("b", ("ab", "ba"), ("cc",))]


@pytest.mark.parametrize(("params", "reason", "steps"), [
    ({"max_steps": 2}, "max_steps", 2),
    ({"max_tokens": 5}, "max_tokens", 2),  # 3 tokens, then a step cut at the 2 left
    ({}, "eos", 4),
])
def test_stop_rules(params: dict, reason: str, steps: int) -> None:
    draft = ScriptedLM(TOK, DRAFT_STEPS)
    result = pipeline(draft).generate_sync("b", {"method": "draft", **params})
    assert result.finish_reason == reason and len(result.steps) == steps
    assert sum(len(s.token_ids) for s in result.steps) <= params.get("max_tokens", 99)
    assert result.steps[-1].finished and not any(s.finished for s in result.steps[:-1])


def test_stop_at_boxed_and_context_limit() -> None:
    tok = FakeTokenizer(pieces=("<eos>", "\n\n", "a", "b", "\\boxed{1}", "x"))
    seg = StepSegmenter(tok.piece, tok.eos_ids)
    draft = ScriptedLM(tok, ["ab\n\n", "\\boxed{1}\n\n", "xx\n\n"])
    p = Pipeline(Engines(draft=draft), tok, seg, "a{question}", RequestParams(), 1000)
    assert p.generate_sync("b", {"method": "draft", "stop_at_boxed": True}).finish_reason == "boxed"
    assert len(p.generate_sync("b", {"method": "draft", "max_steps": 5}).steps) == 5
    short = Pipeline(Engines(draft=ScriptedLM(tok, ["ab\n\n"])), tok, seg, "a{question}", RequestParams(), 8)
    result = short.generate_sync("b", {"method": "draft"})
    assert result.finish_reason == "context" and sum(len(s.token_ids) for s in result.steps) == 8 - 2


def test_per_step_cap() -> None:
    draft = ScriptedLM(TOK, ["aaaaaaaa\n\n"])
    result = pipeline(draft).generate_sync("b", {"method": "draft", "max_step_tokens": 3, "max_steps": 2})
    assert [s.text for s in result.steps] == ["aaa", "aaa"]


@dataclass(slots=True)
class PausingPRM(FakePRM):
    async def reward(self, req: RewardRequest) -> RewardResult:
        await asyncio.sleep(0)  # hand the event loop over, so a cancel lands mid-request
        return await FakePRM.reward(self, req)


def test_every_session_opened_is_closed_on_completion_early_close_error_and_cancel() -> None:
    draft, target, prm = ScriptedLM(TOK, DRAFT_STEPS), ScriptedLM(TOK, TARGET_STEPS), PausingPRM()
    p = pipeline(draft, target, prm)
    p.generate_sync("b", {"method": "rsd", "max_steps": 1})
    assert draft.calls["open"] == target.calls["open"] == prm.calls["open"] == 1
    assert draft.calls["close"] == target.calls["close"] == prm.calls["close"] == 1

    async def first_only() -> None:
        stream = p.stream("b", {"method": "rsd"})
        await stream.__anext__()
        await stream.aclose()

    asyncio.run(first_only())
    prm.fn = lambda question, steps, candidate: 1 / 0  # an engine failing mid-request
    with pytest.raises(ZeroDivisionError):
        p.generate_sync("b", {"method": "rsd"})
    prm.fn = None

    async def cancelled() -> None:
        task = asyncio.ensure_future(p.generate("b", {"method": "rsd", "max_steps": 50}))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    with pytest.raises(RequestValidationError):  # the prompt is checked once the sessions are open
        pipeline(draft, target, prm, max_len=2).generate_sync("bbbb", {"method": "rsd"})
    for fake in (draft, target, prm):
        assert fake.calls["open"] == fake.calls["close"] == 5, fake.calls


@pytest.mark.parametrize(("engines", "params", "field"), [
    ({"draft": True}, {"method": "rsd"}, "method"),  # no target, no PRM
    ({"draft": True, "target": True}, {"method": "gsi"}, "method"),  # no PRM
    ({"draft": True, "target": True, "prm": True}, {"method": "magic"}, "method"),
    ({"draft": True, "target": True, "prm": True}, {"method": "sd"}, "method"),  # scripted LMs have no logits
    ({"draft": True, "target": True, "prm": True}, {"threshold": -1}, "threshold"),
])
def test_request_errors_name_the_field(engines: dict, params: dict, field: str) -> None:
    made = {"draft": ScriptedLM(TOK, DRAFT_STEPS), "target": ScriptedLM(TOK, TARGET_STEPS), "prm": FakePRM()}
    p = pipeline(**{k: made[k] for k in engines})
    with pytest.raises(RequestValidationError) as err:
        p.generate_sync("b", params)
    assert err.value.field == field


def test_empty_and_too_long_prompts() -> None:
    p = pipeline(ScriptedLM(TOK, DRAFT_STEPS), max_len=5)
    for question in ("", "   "):
        with pytest.raises(RequestValidationError) as err:
            p.generate_sync(question, {"method": "draft"})
        assert err.value.field == "text_input"
    with pytest.raises(RequestValidationError) as err:
        p.generate_sync("bbbbbbbb", {"method": "draft"})
    assert err.value.field == "text_input" and "at most 4" in str(err.value)


def test_usage_and_flops_are_counted_per_model_call() -> None:
    """Hand-counted: the prompt "ab" is 2 tokens; both RSD steps are rejected, so the draft and then
    the target each start step 1 from 2 tokens and step 2 from 2 + 3 (the target's "11\\n\\n");
    the draft also ran one early call after its own rejected step 1 (2 + 3 tokens, "ab\\n\\n"),
    wasted work that counts like any call (none after step 2: it is the last, max_steps 2).
    Scripted LMs report prefill = prefix length (1000 parameters), the PRM one token per candidate
    (500 parameters); FLOPs = 2 x parameters x processed tokens."""
    draft, target, prm, p = scripted(rewards=(0.2,))
    stats = p.generate_sync("b", {"method": "rsd", "max_steps": 2}).stats
    m = stats["models"]
    assert (m["target"]["calls"], m["target"]["prefill_tokens"], m["target"]["generated_tokens"]) == (2, 2 + 5, 3 + 3)
    assert m["target"]["flops"] == 2 * 1000 * 7
    assert (m["draft"]["calls"], m["draft"]["prefill_tokens"], m["draft"]["generated_tokens"]) == (3, 2 + 5 + 5, 9)
    assert m["draft"]["flops"] == 2 * 1000 * 12
    assert (m["prm"]["calls"], m["prm"]["prefill_tokens"], m["prm"]["flops"]) == (2, 2, 2 * 500 * 2)
    assert stats["total_flops"] == 24000 + 14000 + 2000 and stats["target_calls"] == 2
