"""The reference token verifier: one target pass over the draft tokens, then speculative sampling.

Sessions of engines without native verification (the PyTorch engine) are wrapped in this; the
TensorRT-LLM adapter verifies in the engine (draft_input_ids) and a test checks both agree. The target's rows
go through the request's logit rules and truncation (runtime.core.sampling) exactly as a
generator's would, so the output follows the processed target distribution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.core.protocols import TokenSession
from runtime.core.sampling import adjust, is_greedy, process, sampled_logprob, speculative_verify
from runtime.core.types import LogitsRequest, VerifyRequest, VerifyResult


@dataclass(frozen=True, slots=True)
class ReferenceVerifier:
    model: TokenSession  # one request on the target

    async def verify(self, req: VerifyRequest) -> VerifyResult:
        ids = req.prefix + req.draft_tokens
        result = await self.model.logits(LogitsRequest(ids, len(req.draft_tokens) + 1))
        rows = [adjust(row, req.rules, ids[:len(req.prefix) + i], ban_ends=i < req.min_new_tokens)
                for i, row in enumerate(result.logits)]
        target = np.stack([process(z, req.temperature, req.top_p, req.top_k) for z in rows])
        rng = np.random.default_rng(req.seed)
        tokens, accepted = speculative_verify(req.draft_tokens, req.draft_probs, target, rng)
        greedy = is_greedy(req.temperature, req.top_k)
        logprobs = tuple(sampled_logprob(rows[i], target[i], t, greedy) for i, t in enumerate(tokens))
        return VerifyResult(tokens, accepted, result.usage, logprobs)
