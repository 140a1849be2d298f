"""RSD: Reward-Guided Speculative Decoding (Liao et al., ICML 2025, arXiv 2501.19324).

Per step, given the prefix z = (x, y_1..y_{i-1}):
  1. the draft writes one step y ~ P_draft(.|z) (up to "\n\n", EOS or the per-step cap);
  2. the PRM scores it: r = r(y | z) in [0, 1], the reward of that last step;
  3. keep y with probability omega(r) (see `runtime.core.omega`); otherwise the target
     regenerates the step from the same prefix, and its step is kept unchecked.
Induced distribution: P_RSD(y|z) = omega(r) P_draft(y|z) + nu(z) P_target(y|z), with
nu(z) = 1 - E_{y~P_draft}[omega(r(y|z))]. The default omega is the binary step 1[r >= delta],
optimal under a budget on target calls.
Defaults (reference code): delta = threshold = 0.7, greedy (temperature 0), max 100 steps.
Degenerate cases: threshold > 1 is target-only, threshold 0 is draft-only (binary omega).
Deliberate differences from the reference: no batch-wide "patience" cut-off (quirk Q1), a
per-step token cap, and sequences kept as token ids across steps (no re-tokenisation).
Draft-hinted rewrite (greedy only): the target gets the rejected draft step as draft tokens
(`StepRequest.draft_tokens`), checks them in the forward of its catch-up prefill, keeps the
prefix it agrees with and its correction, and decodes on only from there. At T = 0 the step is
exactly the target's greedy step, in fewer target forwards. At T > 0 RSD keeps plain target
decoding: the rejected step is distributed as the draft conditioned on a low reward, not as the
draft's own q, so no acceptance rule over it would leave the step distributed as P_target.
Early next draft step (`StepContext.speculate`, runtime.core.lookahead): the draft writes step
i + 1 after y while the PRM scores y; it is used when y is accepted (it is then a draft step
after the accepted prefix, drawn with its own seed) and wasted when y is rejected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from runtime.core import omega
from runtime.core.methods.base import Needs, StepContext
from runtime.core.params import RequestParams
from runtime.core.sampling import is_greedy
from runtime.core.types import StepOutcome


@dataclass(frozen=True, slots=True)
class Rsd:
    name: ClassVar[str] = "rsd"

    def needs(self, params: RequestParams) -> Needs:
        return Needs(step_roles=("draft", "target"), prm=True)

    async def step(self, ctx: StepContext) -> StepOutcome:
        p = ctx.params
        (draft,) = await ctx.generate("draft")
        ctx.speculate("draft", draft)  # the next draft step runs while the PRM scores this one
        (reward,) = await ctx.rewards((draft.token_ids,))
        if omega.accept(p.omega, reward, p.threshold, p.omega_sharpness, ctx.rng):
            return StepOutcome(draft.token_ids, draft.finish, "draft", reward, accepted=True,
                               token_logprobs=draft.token_logprobs)
        hint = draft.token_ids if is_greedy(p.temperature, p.top_k) else ()
        (target,) = await ctx.generate("target", draft_tokens=hint)
        return StepOutcome(target.token_ids, target.finish, "target", reward, accepted=False,
                           draft_token_ids=draft.token_ids, token_logprobs=target.token_logprobs)
