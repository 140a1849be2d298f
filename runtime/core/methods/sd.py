"""Standard speculative sampling (Leviathan et al. 2023; Chen et al. 2023): lossless.

Per round: the draft proposes gamma tokens x_1..x_gamma ~ q autoregressively; the target scores
them in one pass, giving p_1..p_{gamma+1}; x_i is accepted with probability min(1, p_i/q_i);
at the first rejection a token is drawn from norm(max(0, p_i - q_i)); if all are accepted a bonus
token is drawn from p_{gamma+1}. The output is distributed exactly as the target's own sampling
(at temperature 0: identical to target greedy). Rounds repeat until the step ends (delimiter,
EOS, cap); the draft stops proposing at a step end. Default gamma = 5.
A proposal is one draft call where the draft session is a DraftProposer (the torch engine, the
torch sub-model), else one logits call per token. Verification goes through the target's
TokenVerifier (TensorRT-LLM's draft_input_ids; the torch engine on the request's own cache) or
the core's reference rule (`runtime.core.verify`); both apply `speculative_verify`. The request's logit rules and top-k
apply to both models' rows (runtime.core.sampling.adjust / process), so the output follows the
processed target distribution; reported log-probs are the target's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from runtime.core.errors import RequestValidationError
from runtime.core.methods.base import Needs, StepContext
from runtime.core.methods.propose import propose
from runtime.core.params import RequestParams
from runtime.core.segment import TokenStep
from runtime.core.types import StepOutcome


@dataclass(frozen=True, slots=True)
class SpeculativeDecoding:
    name: ClassVar[str] = "sd"

    def needs(self, params: RequestParams) -> Needs:
        return Needs(token_roles=("draft", "target"))

    async def step(self, ctx: StepContext) -> StepOutcome:
        p = ctx.params
        step = TokenStep(ctx.segmenter, ctx.max_new_tokens)
        drafted = accepted = 0
        logprobs: list[float] = []
        while step.finish is None:  # one speculative round
            base = ctx.prefix + tuple(step.out)
            # 1. the draft proposes up to gamma tokens, each with the distribution q it was drawn from
            #    (room for its bonus token; never an empty proposal: a bonus past the cap is dropped)
            gamma = max(1, min(p.gamma, step.room - 1))
            proposal = await propose(ctx, "draft", base, gamma, len(step.out), step.proposal_ends)
            # 2. the target checks them in one pass: the accepted prefix, then a corrected or bonus token
            verified = await ctx.calls.verify("target", ctx.rule.verify_request(
                base, tuple(proposal.tokens), proposal.probs(), len(step.out), ctx.next_seed()))
            if p.return_log_probs and len(verified.logprobs) != len(verified.tokens):
                raise RequestValidationError("return_log_probs", "the target's verifier reports no log-probs; "
                                                                 "send it false for method sd on this server")
            drafted += len(proposal.tokens)
            accepted += verified.num_accepted
            # 3. the emitted tokens extend the step until it ends
            for token, lp in zip(verified.tokens, verified.logprobs or (0.0,) * len(verified.tokens)):
                ended = step.push(token)
                if token not in ctx.segmenter.eos_ids:
                    logprobs.append(lp)
                if ended:
                    break
        assert step.finish is not None
        return StepOutcome(tuple(step.out), step.finish, "target", drafted_tokens=drafted,
                           accepted_draft_tokens=accepted,
                           token_logprobs=tuple(logprobs) if p.return_log_probs else ())
