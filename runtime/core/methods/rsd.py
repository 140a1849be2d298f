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
Target budget (`target_budget` b in [0, 1], per request): the target writes at most a share b
of the answer's steps, and spends that share on the lowest-scored steps. A step the rule would
reject (omega said no) is rewritten only when both hold, with n the steps decided so far, this
one included, t the target's steps before it and r_(1) <= ... <= r_(n) this request's rewards
so far, this step's included:
  - the cap: t + 1 <= floor(b n). By induction t_n <= floor(b n) <= b n after every step, so the
    share never exceeds b, wherever the answer ends (it can end after any step);
  - the adapted threshold: r <= r_(floor(b n)), i.e. the step is among the lowest-scored
    floor(b n) of the request's steps. The effective threshold is min(delta, r_(floor(b n))), which
    falls as the request goes on when most steps score low, so the budget goes to the worst ones.
Otherwise the draft step is kept (accepted, as by omega). b = 1 is plain RSD: the cap is t + 1 <= n
and the threshold r_(n) is the largest reward, both always true. The rule is online (later steps
are unknown), so a step rewritten early can score higher than one kept later. The cost of the
guarantee: the first floor(1/b) steps are never the target's (floor(b n) = 0 there), so an answer of a
few steps loses its early rewrites. `target_budget_scope: server` counts the same rule over the
server's last `BudgetWindow.size` budgeted steps (all requests) instead of the request's: the share
holds over that window (give or take the requests deciding at the same moment), not per request,
and an early step can be rewritten once the window has room.
Early next draft step (`StepContext.speculate`, runtime.core.lookahead): the draft writes step
i + 1 after y while the PRM scores y; it is used when y is accepted (it is then a draft step
after the accepted prefix, drawn with its own seed) and wasted when y is rejected.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
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
        (reward,) = await ctx.rewards((draft,))
        if (omega.accept(p.omega, reward, p.threshold, p.omega_sharpness, ctx.rng)
                or not within_budget(p.target_budget, ctx.budget_target_steps, reward, ctx.budget_rewards)):
            return StepOutcome(draft.token_ids, draft.finish, "draft", reward, accepted=True,
                               token_logprobs=draft.token_logprobs)
        hint = draft.token_ids if is_greedy(p.temperature, p.top_k) else ()
        (target,) = await ctx.generate("target", draft_tokens=hint)
        return StepOutcome(target.token_ids, target.finish, "target", reward, accepted=False,
                           draft_token_ids=draft.token_ids, token_logprobs=target.token_logprobs)


def within_budget(budget: float, target_steps: int, reward: float, earlier: Sequence[float]) -> bool:
    """May the target rewrite this step (scored `reward`) under `budget`, after `earlier` judged steps
    of which it wrote `target_steps`? The rule and its maths are in the module docstring."""
    if budget >= 1.0:
        return True
    seen = sorted((*earlier, reward))
    allowed = math.floor(budget * len(seen) + 1e-9)  # + 1e-9: 0.29 * 100 is 28.999... in floats
    return target_steps + 1 <= allowed and reward <= seen[allowed - 1]


@dataclass(slots=True)
class BudgetWindow:
    """The server's last `size` RSD steps decided under a budget with scope server: (reward, by the
    target). One per pipeline (one BLS instance): the history `within_budget` counts over."""

    size: int = 1000
    steps: deque[tuple[float, bool]] = field(default_factory=deque)

    def history(self) -> tuple[int, tuple[float, ...]]:
        """(target steps, rewards) of the steps the next one will share the window with: the last
        size - 1, so the cap is checked over the window as it will be once the next step is in."""
        kept = list(self.steps)[len(self.steps) - self.size + 1:] if len(self.steps) >= self.size else list(self.steps)
        return sum(by_target for _, by_target in kept), tuple(r for r, _ in kept)

    def record(self, reward: float, by_target: bool) -> None:
        self.steps.append((reward, by_target))
        while len(self.steps) > self.size:
            self.steps.popleft()
