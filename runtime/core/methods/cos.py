"""CoS: collaborative decoding via speculation (Fu et al., ICML 2025, arXiv 2502.01662).

Collaborative decoding samples from a combined distribution r of several models sharing a
vocabulary: weighted ensemble r = lambda q + (1 - lambda) p (WE, default lambda 0.5) or
contrastive decoding r = softmax((l_p - mu l_q) / T) (CD, default mu 0.1), where q is the draft
(small) model and p the target. CoS gets r's samples faster by speculation:
  - a proposer drafts gamma tokens from its own distribution; the other models score them in one
    pass each; token x is accepted with probability min(1, r(x) / q_prop(x)); at the first
    rejection a token is drawn from norm(max(0, r - q_prop)) and all caches are cleared;
  - alternate proposal (APF): when every proposed token is accepted, the last scorer's bonus
    token (drawn from its own distribution) becomes the first token of its own proposal, it
    drafts gamma_i - 1 more, and the roles swap; after a rejection the default proposer (the
    draft, gamma = `gamma`, default 5) starts again; the target's gamma is `cos_gamma_target`
    (default 1), the paper's two-model setting.
The output follows r exactly (lossless w.r.t. r). Greedy (T = 0) means argmax of r, computed
from untempered distributions (the reference returned model 0's greedy token for WE, bug C3).
Models are scored in the fixed order [draft, target] whatever the proposer (bug C5/npu order).
The request's logit rules and top-k apply to the proposer's q and inside r (see
`runtime.core.sampling.combine`); reported log-probs are log r (untempered r when greedy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from runtime.core.methods.base import Needs, StepContext
from runtime.core.methods.propose import propose
from runtime.core.params import RequestParams
from runtime.core.sampling import adjust, combine, is_greedy, residual, sample
from runtime.core.segment import TokenStep
from runtime.core.types import LogitsRequest, StepOutcome

ROLES = ("draft", "target")
Logits = npt.NDArray[np.floating[Any]]  # one model's raw logits at one position


@dataclass(slots=True)
class _Speculation:
    """Unverified proposal tokens and each model's logits rows at those positions."""

    tokens: list[int] = field(default_factory=list)
    proposer_q: list[npt.NDArray[np.float64]] = field(default_factory=list)  # [len(tokens)] proposer distributions
    rows: dict[str, list[Logits]] = field(default_factory=lambda: {r: [] for r in ROLES})

    def pop_front(self) -> None:
        self.tokens.pop(0)
        self.proposer_q.pop(0)
        for rows in self.rows.values():
            rows.pop(0)


@dataclass(frozen=True, slots=True)
class CollaborativeSpeculation:
    name: ClassVar[str] = "cos"

    def needs(self, params: RequestParams) -> Needs:
        return Needs(token_roles=ROLES)

    async def step(self, ctx: StepContext) -> StepOutcome:
        step = TokenStep(ctx.segmenter, ctx.max_new_tokens)
        counts = [0, 0]  # drafted, accepted
        logprobs: list[float] = []
        while step.finish is None:
            await self._cycle(ctx, step, counts, logprobs)
        return StepOutcome(tuple(step.out), step.finish, "ensemble", drafted_tokens=counts[0],
                           accepted_draft_tokens=counts[1],
                           token_logprobs=tuple(logprobs[:len(step.out)]) if ctx.params.return_log_probs else ())

    async def _cycle(self, ctx: StepContext, step: TokenStep, counts: list[int], logprobs: list[float]) -> None:
        """From a clean state: default proposer drafts, then score/verify/alternate until a
        rejection (return to the caller for a fresh cycle) or the end of the step."""
        spec = _Speculation()
        await self._draft(ctx, step, spec, "draft", None, self._gamma(ctx, "draft"))
        while step.finish is None:
            scorer = min(ROLES, key=lambda r: len(spec.rows[r]))
            bonus_row = await self._score(ctx, step, spec, scorer)
            while spec.tokens and all(spec.rows[r] for r in ROLES):
                if not self._verify_front(ctx, step, spec, counts, logprobs):
                    return  # rejected (a corrected token was emitted) or the step ended
            if step.finish is None and not spec.tokens:
                await self._draft(ctx, step, spec, scorer, bonus_row, self._gamma(ctx, scorer))

    def _gamma(self, ctx: StepContext, role: str) -> int:
        return ctx.params.gamma if role == "draft" else ctx.params.cos_gamma_target

    async def _score(self, ctx: StepContext, step: TokenStep, spec: _Speculation, role: str) -> Logits:
        """One pass of `role` over the proposal positions it has not seen, plus one more."""
        seen = len(spec.rows[role])
        ids = ctx.prefix + tuple(step.out) + tuple(spec.tokens)
        logits = await ctx.calls.logits(role, LogitsRequest(ids, len(spec.tokens) - seen + 1))
        spec.rows[role].extend(logits[:-1])
        bonus: Logits = logits[-1]
        return bonus

    async def _draft(self, ctx: StepContext, step: TokenStep, spec: _Speculation, role: str,
                     first_row: Logits | None, gamma: int) -> None:
        """`role` proposes up to gamma tokens; `first_row` is its already-computed next row."""
        gamma = min(gamma, step.room)
        if first_row is not None and gamma > 0:
            ids = ctx.prefix + tuple(step.out) + tuple(spec.tokens)
            _, q = ctx.rule.processed(first_row, ids, len(step.out) + len(spec.tokens))
            self._append(spec, role, sample(q, ctx.rng), first_row, q)
            gamma -= 1
            if step.proposal_ends(spec.tokens):
                return
        base = ctx.prefix + tuple(step.out) + tuple(spec.tokens)
        drawn = await propose(ctx, role, base, gamma, len(step.out) + len(spec.tokens),
                              lambda tokens: step.proposal_ends(spec.tokens + tokens))
        for token, row, q in zip(drawn.tokens, drawn.rows, drawn.qs):
            self._append(spec, role, token, row, q)

    @staticmethod
    def _append(spec: _Speculation, role: str, token: int, row: Logits, q: npt.NDArray[np.float64]) -> None:
        spec.tokens.append(token)
        spec.proposer_q.append(q)
        spec.rows[role].append(row)

    def _verify_front(self, ctx: StepContext, step: TokenStep, spec: _Speculation, counts: list[int],
                      logprobs: list[float]) -> bool:
        """Verify the first proposal token against r; False ends the cycle."""
        p = ctx.params
        weights = (p.cos_lambda, 1.0 - p.cos_lambda)
        ids = ctx.prefix + tuple(step.out)
        ban = ctx.rule.min_new_tokens(len(step.out)) > 0

        def rule(z: Logits) -> npt.NDArray[np.float64]:
            return adjust(z, ctx.rule.rules, ids, ban_ends=ban)

        rows = [spec.rows[x][0] for x in ROLES]
        r = combine(rows, p.cos_combine, weights, p.cos_mu, p.temperature, p.top_p, p.top_k, rule)
        token, q = spec.tokens[0], spec.proposer_q[0]
        counts[0] += 1
        accepted = q[token] > 0.0 and ctx.rng.random() < min(1.0, r[token] / q[token])
        if not accepted:
            token = sample(residual(r, q), ctx.rng)
        if p.return_log_probs:
            soft = r if not is_greedy(p.temperature, p.top_k) else combine(
                rows, p.cos_combine, weights, p.cos_mu, p.temperature, p.top_p, p.top_k, rule, soft=True)
            logprobs.append(float(np.log(soft[token])))
        if accepted:
            counts[1] += 1
            spec.pop_front()
            return not step.push(token)
        step.push(token)
        return False
