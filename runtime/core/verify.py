"""The reference token verifier: one target pass over the draft tokens, then speculative sampling.

Engines without native verification (the PyTorch engine) are wrapped in this; the TensorRT-LLM
adapter verifies in the engine (draft_input_ids) and a test checks both agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.core.protocols import TokenModel
from runtime.core.sampling import process, speculative_verify
from runtime.core.types import LogitsRequest, VerifyRequest, VerifyResult


@dataclass(frozen=True, slots=True)
class ReferenceVerifier:
    model: TokenModel

    async def verify(self, req: VerifyRequest) -> VerifyResult:
        ids = req.prefix + req.draft_tokens
        result = await self.model.logits(LogitsRequest(req.key, ids, len(req.draft_tokens) + 1))
        target = np.stack([process(row, req.temperature, req.top_p) for row in result.logits])
        rng = np.random.default_rng(req.seed)
        tokens, accepted = speculative_verify(req.draft_tokens, req.draft_probs, target, rng)
        return VerifyResult(tokens, accepted, result.usage)
