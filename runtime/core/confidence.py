"""A verifier with no model: the producing model's own confidence in its step (PRM format `confidence`).

reward(step) = exp(reduce_t log p(token_t | prefix, step_<t)), the log-probs being those the model
reported while writing the step (StepRequest.want_logprobs; at temperature 0 its unscaled
distribution, else the one it sampled from), so it costs no forward and no model. `reduce`:
- mean: the geometric mean probability of the step's tokens (the likelihood PRM's formula, read
  from the draft instead of a verifier);
- min: the least likely token's probability (one unsure token condemns the step);
- last: the probability of the token that ended the step.
An empty step (the model ended at once) scores 0, as with the likelihood PRM. ConfSpec (2025)
and SpecReason judge steps by confidence the same way; which reduction separates right from wrong
steps best on the embedded task is measured in BENCHMARKS.md ("A verifier with no trained PRM").
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.core.errors import EngineError
from runtime.core.types import RewardRequest, RewardResult, Usage

REDUCTIONS = ("mean", "min", "last")
DEFAULT_REDUCTION = "mean"


def confidence(logprobs: Sequence[float], reduction: str) -> float:
    """The reward of one step from its token log-probs."""
    if not logprobs:
        return 0.0
    if reduction == "mean":
        return math.exp(sum(logprobs) / len(logprobs))
    if reduction == "min":
        return math.exp(min(logprobs))
    if reduction == "last":
        return math.exp(logprobs[-1])
    raise ValueError(f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}")


@dataclass(frozen=True, slots=True)
class ConfidenceVerifier:
    """The `prm` engine of a pipeline whose PRM format is confidence: it runs nothing."""

    reduction: str = "mean"
    num_params: int = 0  # no model: no FLOPs

    def open(self, key: str) -> ConfidenceSession:
        return ConfidenceSession(self.reduction)


@dataclass(frozen=True, slots=True)
class ConfidenceSession:
    reduction: str

    async def reward(self, req: RewardRequest) -> RewardResult:
        if len(req.logprobs) != len(req.candidates):
            raise EngineError(f"the confidence verifier got log-probs for {len(req.logprobs)} of "
                              f"{len(req.candidates)} steps (their generator did not report them)")
        return RewardResult(tuple(confidence(lps, self.reduction) for lps in req.logprobs), Usage())

    def close(self) -> None:
        pass
