"""The reference token verification rule: the target's rows over the draft tokens, then speculative sampling.

`verify_rows` is the one rule: the PyTorch engine applies it to the rows of its own forward on
the request's cache (`TorchLM.verify`, also behind the torch sub-model's draft_input_ids), and
`ReferenceVerifier` wraps sessions that only expose logits. TensorRT-LLM verifies in the engine
(draft_input_ids); tests check they agree. The target's rows go through the request's logit
rules and truncation (runtime.core.sampling) exactly as a generator's would, so the output
follows the processed target distribution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.core.protocols import TokenSession
from runtime.core.sampling import adjust, is_greedy, process, sampled_logprob, speculative_verify
from runtime.core.types import LogitsRequest, Usage, VerifyRequest, VerifyResult


def verify_rows(req: VerifyRequest, logits: npt.NDArray[np.floating[Any]], usage: Usage = Usage()) -> VerifyResult:
    """Speculative sampling of `req.draft_tokens` against the target's raw logits rows
    [len(draft) + 1, vocab] at prefix + draft[:i] (i = 0 .. len(draft)), seeded by `req.seed`."""
    ids = req.prefix + req.draft_tokens
    rows = [adjust(row, req.rules, ids[:len(req.prefix) + i], ban_ends=i < req.min_new_tokens)
            for i, row in enumerate(logits)]
    target = np.stack([process(z, req.temperature, req.top_p, req.top_k) for z in rows])
    rng = np.random.default_rng(req.seed)
    tokens, accepted = speculative_verify(req.draft_tokens, req.draft_probs, target, rng)
    greedy = is_greedy(req.temperature, req.top_k)
    logprobs = tuple(sampled_logprob(rows[i], target[i], t, greedy) for i, t in enumerate(tokens))
    return VerifyResult(tokens, accepted, usage, logprobs)


@dataclass(frozen=True, slots=True)
class ReferenceVerifier:
    model: TokenSession  # one request on the target

    async def verify(self, req: VerifyRequest) -> VerifyResult:
        ids = req.prefix + req.draft_tokens
        result = await self.model.logits(LogitsRequest(ids, len(req.draft_tokens) + 1))
        return verify_rows(req, result.logits, result.usage)
