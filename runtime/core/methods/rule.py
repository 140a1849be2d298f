"""The sampling rule of one step, and the engine requests that carry it.

Every generator call of a step follows one rule: the request's logit rules (penalties, bad words,
bias), min_tokens holding end ids back, then temperature / top-k / top-p (runtime.core.sampling).
`StepRule` applies it to a logits row here (proposals drawn token by token, CoS), and puts it in
the requests engines apply it to themselves (a step, a proposal, a verification).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.core.params import RequestParams
from runtime.core.sampling import adjust, is_greedy, process, sampled_logprob
from runtime.core.types import NO_RULES, LogitRules, ProposeRequest, StepRequest, VerifyRequest


@dataclass(frozen=True, slots=True)
class StepRule:
    params: RequestParams
    rules: LogitRules = NO_RULES  # the request's logit rules (runtime.core.stopping.logit_rules)
    generated: int = 0  # tokens the request has output before this step
    logprobs: bool = False  # every step reports its token log-probs (the PRM reads them: runtime.core.confidence)

    def min_new_tokens(self, emitted: int = 0) -> int:
        """Tokens this step must still write before an end id may be drawn (`emitted` already)."""
        return max(0, self.params.min_tokens - self.generated - emitted)

    def processed(self, row: npt.NDArray[np.floating[Any]], ids: tuple[int, ...], emitted: int
                  ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(adjusted logits, the distribution to sample from) for the token after `ids`, `emitted`
        tokens into this step."""
        p = self.params
        z = adjust(row, self.rules, ids, ban_ends=self.min_new_tokens(emitted) > 0)
        return z, process(z, p.temperature, p.top_p, p.top_k)

    def logprob(self, z: npt.NDArray[np.float64], probs: npt.NDArray[np.float64], token: int) -> float:
        return sampled_logprob(z, probs, token, is_greedy(self.params.temperature, self.params.top_k))

    def step_request(self, prefix: tuple[int, ...], cap: int, min_new: int, seed: int, n: int = 1,
                     logprobs: bool = False, draft_tokens: tuple[int, ...] = ()) -> StepRequest:
        """The one way a step request is built (a step now, or the next step started early: an early
        call is used only when it equals what is built then, seed aside)."""
        p = self.params
        want_logprobs = logprobs or self.logprobs or p.return_log_probs
        return StepRequest(prefix, n, p.temperature, p.top_p, cap, seed, want_logprobs, p.top_k, self.rules, min_new,
                           draft_tokens)

    def propose_request(self, base: tuple[int, ...], gamma: int, emitted: int, seed: int) -> ProposeRequest:
        p = self.params
        return ProposeRequest(base, gamma, p.temperature, p.top_p, seed, p.top_k, self.rules,
                              self.min_new_tokens(emitted))

    def verify_request(self, prefix: tuple[int, ...], tokens: tuple[int, ...], probs: npt.NDArray[np.float64],
                       emitted: int, seed: int) -> VerifyRequest:
        p = self.params
        return VerifyRequest(prefix, tokens, probs, p.temperature, p.top_p, seed, p.top_k, self.rules,
                             self.min_new_tokens(emitted))
