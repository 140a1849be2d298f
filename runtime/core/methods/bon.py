"""Best-of-n with the PRM, per step (process best-of-n), on the draft or the target.

Per step: draw n candidate steps from the chosen model, score each with the PRM, keep
  - hard best-of-n: the argmax of the reward (ties to the lowest index);
  - soft best-of-n (Verdun et al. 2025): i ~ softmax(beta r_i), which tends to the tilted
    policy pi exp(beta r) as n grows (the fallback branch of GSI).
Defaults: n = 16, beta = 20, model = draft, hard. This is the step-level search baseline
RSD and GSI compare against; the cost is n candidates and n PRM scores per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from runtime.core.methods.base import Needs, StepContext
from runtime.core.params import RequestParams
from runtime.core.sampling import sample, softmax
from runtime.core.types import StepOutcome


@dataclass(frozen=True, slots=True)
class BestOfN:
    name: ClassVar[str] = "bon"

    def needs(self, params: RequestParams) -> Needs:
        return Needs(step_roles=(params.bon_model,), prm=True)

    async def step(self, ctx: StepContext) -> StepOutcome:
        p = ctx.params
        candidates = await ctx.generate(p.bon_model, p.n)
        rewards = np.array(await ctx.rewards(candidates))
        i = sample(softmax(p.beta * rewards), ctx.rng) if p.bon_soft else int(np.argmax(rewards))
        return StepOutcome(candidates[i].token_ids, candidates[i].finish, p.bon_model, float(rewards[i]),
                           token_logprobs=candidates[i].token_logprobs)
