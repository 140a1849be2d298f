"""What a method is, and the per-step context the loop hands it.

A method is a stateless strategy: `step(ctx)` decides one reasoning step and returns a
`StepOutcome`. It declares the engines it needs (`Needs`) so the loop can reject a request up
front instead of branching on method names. The context keeps three concerns apart:
- the step's data: the request's parameters, the prefix, the accepted steps, the token cap;
- `ctx.rule` (runtime.core.methods.rule): the sampling rule, and the requests that carry it;
- `ctx.calls` (runtime.core.methods.calls): the engine calls, each recorded in the request's stats.
`generate`, `speculate` and `rewards` are the step-level calls most methods make.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from runtime.core.methods.calls import EngineCalls
from runtime.core.methods.rule import StepRule
from runtime.core.methods.sessions import Engines, Needs, Sessions
from runtime.core.params import RequestParams
from runtime.core.protocols import Tokenizer
from runtime.core.segment import StepSegmenter, prm_step_text
from runtime.core.types import Generation, RewardRequest, StepOutcome

__all__ = ["Engines", "Method", "Needs", "Sessions", "StepContext"]


class Method(Protocol):
    name: ClassVar[str]

    def needs(self, params: RequestParams) -> Needs: ...

    async def step(self, ctx: StepContext) -> StepOutcome: ...


@dataclass(slots=True)
class StepContext:
    """Everything a method may use to decide one step."""

    params: RequestParams
    question: str
    prefix: tuple[int, ...]  # prompt + accepted tokens
    steps: tuple[str, ...]  # accepted steps as the PRM sees them
    max_new_tokens: int  # cap for this step (per-step cap, remaining budget, context)
    tokenizer: Tokenizer
    segmenter: StepSegmenter
    rng: np.random.Generator
    rule: StepRule
    calls: EngineCalls
    # what a target budget counts over (RSD's target_budget_scope: methods.rsd.BudgetWindow): how many of
    # the steps the target wrote, and their rewards; this request's judged steps so far, or the server's recent ones
    budget_target_steps: int = 0
    budget_rewards: tuple[float, ...] = ()
    # (cap, min new tokens) of the next step if a generation were accepted now; None: it would end the request
    next_step: Callable[[Generation], tuple[int, int] | None] | None = None

    def next_seed(self) -> int:
        return int(self.rng.integers(0, 2**63 - 1))

    async def generate(self, role: str, n: int = 1, logprobs: bool = False,
                       draft_tokens: tuple[int, ...] = ()) -> tuple[Generation, ...]:
        """n candidates for this step from `role`; `draft_tokens`: a proposal the engine may check
        in one pass (StepRequest.draft_tokens)."""
        req = self.rule.step_request(self.prefix, self.max_new_tokens, self.rule.min_new_tokens(), self.next_seed(),
                                     n, logprobs, draft_tokens)
        return await self.calls.generate(role, req)

    def speculate(self, role: str, gen: Generation) -> None:
        """Start `role`'s next step now, as if `gen` were accepted as it is; the next step's
        `generate` uses it if it asks the same. Nothing when accepting `gen` would end the request."""
        if self.next_step is None or self.calls.ahead is None or self.calls.ahead.pending(role):
            return
        after = self.next_step(gen)
        if after is not None:
            self.calls.start_early(role, self.rule.step_request(self.prefix + gen.token_ids, *after, self.next_seed()))

    async def rewards(self, candidates: tuple[Generation, ...]) -> tuple[float, ...]:
        """The PRM's reward of each candidate step after the accepted ones (with their token log-probs,
        which the rule asks of every step when the PRM reads them: StepRule.logprobs)."""
        texts = tuple(prm_step_text(self.tokenizer.decode(c.token_ids), self.segmenter.delimiter) for c in candidates)
        logprobs = tuple(c.token_logprobs for c in candidates) if self.rule.logprobs else ()
        return await self.calls.rewards(RewardRequest(self.question, self.steps, texts, logprobs))
