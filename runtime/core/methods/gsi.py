"""GSI: Guided Speculative Inference (Geuter, Mroueh, Alvarez-Melis, ICLR 2026, arXiv 2506.04118).

Goal: sample each step from the reward-tilted target policy pi_B(y|z) exp(beta r(y|z)).
Per step:
  1. draw n candidates y_1..y_n ~ pi_S (the draft) with their log-probs log pi_S(y_i);
  2. score them with the PRM (r_i, the reward of the candidate step itself) and with the
     target (log pi_B(y_i), one prefill over each candidate);
  3. tilted score s_i = beta r_i + log pi_B(y_i) - log pi_S(y_i), i.e. self-normalised
     importance weights exp(beta r_i) pi_B / pi_S; pick i ~ softmax(s);
  4. accept y_i if s_i >= beta u; otherwise draw n samples from pi_B and pick one by soft
     best-of-n, j ~ softmax(beta r'_j).
Defaults: beta = 20, u = 0.5, n = 16 (reference job script), all per request.
u = -inf never falls back; u = +inf always does.

Which log-probs: log pi_S is taken under the distribution actually sampled from (temperature T,
top-p renormalised), because importance weights must divide by the true proposal density.
log pi_B is the target's log-prob at the same temperature T without top-p, because the
fallback branch samples pi_B at T: both branches then aim at the same tilted policy
pi_B^T exp(beta r), and the target log-prob stays finite on tokens outside its nucleus.
At T = 0 both are untempered (T = 1) log-probs. The request's logit rules and top-k shape both
models' samples (log pi_S includes them); log pi_B stays the tempered target without them, so with
penalties the tilt aims at the unpenalised target. Deliberate differences from the reference:
the candidate step itself is scored (the reference scores an empty trailing step, bug G2),
">=" on the threshold, and no early stop when all rewards are low (G6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from runtime.core.methods.base import Needs, StepContext
from runtime.core.params import RequestParams
from runtime.core.sampling import sample, softmax
from runtime.core.types import ScoreRequest, StepOutcome


@dataclass(frozen=True, slots=True)
class Gsi:
    name: ClassVar[str] = "gsi"

    def needs(self, params: RequestParams) -> Needs:
        return Needs(step_roles=("draft", "target"), prm=True)

    async def step(self, ctx: StepContext) -> StepOutcome:
        p = ctx.params
        candidates = await ctx.generate("draft", p.n, logprobs=True)
        ids = tuple(c.token_ids for c in candidates)
        rewards = np.array(await ctx.rewards(candidates))
        logp_target = np.array(await ctx.calls.score("target", ScoreRequest(ctx.prefix, ids, p.temperature)))
        logp_draft = np.array([c.logprob for c in candidates])
        tilted = p.beta * rewards + logp_target - logp_draft
        i = sample(softmax(tilted), ctx.rng)
        chosen = candidates[i]
        if tilted[i] >= p.beta * p.gsi_u:
            return StepOutcome(chosen.token_ids, chosen.finish, "draft", float(rewards[i]), accepted=True,
                               token_logprobs=chosen.token_logprobs if p.return_log_probs else ())
        fallback = await ctx.generate("target", p.n)
        fallback_rewards = np.array(await ctx.rewards(fallback))
        j = sample(softmax(p.beta * fallback_rewards), ctx.rng)
        return StepOutcome(fallback[j].token_ids, fallback[j].finish, "target", float(fallback_rewards[j]),
                           accepted=False, draft_token_ids=chosen.token_ids,
                           token_logprobs=fallback[j].token_logprobs)
