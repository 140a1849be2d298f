"""RSD's early next draft step (runtime.core.lookahead): started while the PRM scores, used when
the step is accepted, wasted (and counted) when it is rejected, never left running.

Fakes here; the same behaviour on the real models and server: RSD at threshold 0 equals draft-only
token for token (tests/test_degenerate.py, tests/test_triton_server.py) and the BLS's usage per
role equals the in-process pipeline's (tests/test_native_verify_server.py)."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from runtime.core.lookahead import Lookahead
from runtime.core.methods import Engines
from runtime.core.params import RequestParams
from runtime.core.segment import StepSegmenter
from runtime.core.types import Finish, GenerateResult, Generation, RewardRequest, RewardResult, StepRequest, Usage
from runtime.pipeline import Pipeline
from support.fakes import FakePRM, FakeTokenizer, ScriptedLM

TOK = FakeTokenizer()
DRAFT = ["ab\n\n", "ba\n\n", "cc\n\n", "a1<eos>"]
TARGET = ["11\n\n", "22\n\n", "12\n\n", "21<eos>"]


def pipeline(draft, target, prm) -> Pipeline:  # type: ignore[no-untyped-def]
    return Pipeline(Engines(draft, target, prm), TOK, StepSegmenter(TOK.piece, TOK.eos_ids), "a{question}",
                    RequestParams(), 1000)


@dataclasses.dataclass(slots=True)
class SlowPRM(FakePRM):
    """Scores after a pause, noting how many draft calls had been made by then."""

    draft: ScriptedLM | None = None
    drafts_seen: list[int] = dataclasses.field(default_factory=list)

    async def reward(self, req: RewardRequest) -> RewardResult:
        await asyncio.sleep(0.01)
        assert self.draft is not None
        self.drafts_seen.append(self.draft.calls["generate"])
        return await FakePRM.reward(self, req)


def test_accepted_steps_use_the_call_started_while_the_prm_scored() -> None:
    draft, target = ScriptedLM(TOK, DRAFT, by_step_index=True), ScriptedLM(TOK, TARGET)
    prm = SlowPRM((0.9,), draft=draft)
    result = pipeline(draft, target, prm).generate_sync("b", {"method": "rsd", "threshold": 0.5})
    assert result.text == "ab\n\nba\n\ncc\n\na1" and result.finish_reason == "eos"
    # while step i was scored, step i + 1 had already been asked for (none after the EOS step)
    assert prm.drafts_seen == [2, 3, 4, 4]
    assert draft.calls["generate"] == 4 and target.calls["generate"] == 0  # nothing wasted
    assert result.stats["models"]["draft"]["calls"] == 4


def test_without_the_early_call_the_prm_would_see_one_draft_call_per_step() -> None:
    """The deliberately wrong rule: a loop that drafts only after the PRM answered is told apart."""
    draft, target = ScriptedLM(TOK, DRAFT, by_step_index=True), ScriptedLM(TOK, TARGET)
    prm = SlowPRM((0.9,), draft=draft)
    p = pipeline(draft, target, prm)
    original = Lookahead.start
    try:
        Lookahead.start = lambda self, role, req, call: call.close()  # type: ignore[method-assign]
        result = p.generate_sync("b", {"method": "rsd", "threshold": 0.5})
    finally:
        Lookahead.start = original  # type: ignore[method-assign]
    assert result.text == "ab\n\nba\n\ncc\n\na1"
    assert prm.drafts_seen == [1, 2, 3, 4] != [2, 3, 4, 4]


def test_a_rejected_step_wastes_its_early_call_and_counts_it() -> None:
    draft, target = ScriptedLM(TOK, DRAFT, by_step_index=True), ScriptedLM(TOK, TARGET)
    result = pipeline(draft, target, FakePRM((0.9, 0.1, 0.9))).generate_sync(
        "b", {"method": "rsd", "threshold": 0.5, "max_steps": 3})
    assert [s.source for s in result.steps] == ["draft", "target", "draft"]
    assert result.text == "ab\n\n11\n\ncc\n\n"
    # step 0, early "ba" (used as step 1), early "cc" after "ba" (wasted: step 1 was rejected),
    # step 2 afresh after "11"; none after step 2 (max_steps)
    assert draft.calls["generate"] == 4
    assert result.stats["models"]["draft"]["calls"] == 4
    assert draft.prefixes[2][-3:] == tuple(TOK.encode("ba\n\n"))


def test_no_early_call_when_the_step_ends_the_request() -> None:
    draft, target = ScriptedLM(TOK, ["ab<eos>", "ba\n\n"], by_step_index=True), ScriptedLM(TOK, TARGET)
    result = pipeline(draft, target, FakePRM((0.9,))).generate_sync("b", {"method": "rsd", "threshold": 0.5})
    assert result.finish_reason == "eos" and draft.calls["generate"] == 1
    draft = ScriptedLM(TOK, DRAFT, by_step_index=True)
    result = pipeline(draft, target, FakePRM((0.9,))).generate_sync(
        "b", {"method": "rsd", "threshold": 0.5, "max_tokens": 6})
    assert result.finish_reason == "max_tokens" and draft.calls["generate"] == 2  # 3 + 3 tokens: no third


@dataclasses.dataclass(slots=True)
class HangingLM(ScriptedLM):
    """Answers its first `answers` calls; every later call waits until cancelled (and says so)."""

    answers: int = 2
    cancelled: int = 0

    async def generate(self, req: StepRequest) -> GenerateResult:
        if self.calls["generate"] < self.answers:
            return await ScriptedLM.generate(self, req)
        self.calls["generate"] += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")


def test_a_pending_early_call_is_cancelled_when_the_request_ends() -> None:
    """A stop string spanning two steps ("\\n\\nb": step 0's end, step 1's start) is missed by the
    end check, so the early call after step 1 is pending when the request ends: it is cancelled
    and the sessions close, nothing hangs."""
    draft, target = HangingLM(TOK, ["ab\n\n", "ba\n\n", "cc\n\n"], by_step_index=True), ScriptedLM(TOK, TARGET)
    p = pipeline(draft, target, SlowPRM((0.9,), draft=draft))  # the early call runs while it scores
    params = {"method": "rsd", "threshold": 0.5, "stop_words": ["\n\nb"]}
    result = asyncio.run(asyncio.wait_for(p.generate("b", params), 10))
    assert result.finish_reason == "stop" and result.text == "ab\n\nb"
    assert draft.calls["generate"] == 3 and draft.cancelled == 1
    assert draft.calls["open"] == draft.calls["close"] == 1


def test_a_pending_call_is_used_only_for_the_same_request_seed_aside() -> None:
    used: list[str] = []

    async def call(tag: str) -> GenerateResult:
        used.append(tag)
        return GenerateResult((Generation((1,), Finish.STEP),), Usage(prefill_tokens=3))

    recorded: list[tuple[str, Usage]] = []

    async def run() -> None:
        ahead = Lookahead(lambda role, usage: recorded.append((role, usage)))
        req = StepRequest((5, 6), 1, 0.0, 1.0, 8, seed=1)
        ahead.start("draft", req, call("a"))
        assert (await ahead.take("draft", dataclasses.replace(req, seed=99))) is not None  # seed aside
        ahead.start("draft", req, call("b"))
        assert (await ahead.take("draft", dataclasses.replace(req, max_new_tokens=7))) is None  # another cap
        assert recorded == [("draft", Usage(prefill_tokens=3))]  # the wasted call counted
        ahead.start("draft", req, call("c"))
        extra = call("d")
        with pytest.raises(RuntimeError, match="already pending"):
            ahead.start("draft", req, extra)
        extra.close()
        await ahead.settle("draft")
        assert not ahead.pending("draft") and (ahead.started, ahead.used) == (3, 1)

    asyncio.run(run())
    assert used == ["a", "b", "c"]
