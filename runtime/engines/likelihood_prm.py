"""A likelihood verifier as PRM, for models that ship no trained reward head.

reward(step) = exp(mean_t log p_V(token_t | question prompt, accepted steps, step_<t)): the geometric
mean probability the verifier LM V assigns to the step's tokens. It needs no training; the
research behind this project measured the target's own likelihood of draft steps at AUROC 0.92
on the synthetic task (a trained value head is better where one exists). V shares the generators'
tokenizer; the question goes through the same prompt template.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from runtime.core.protocols import Engine, StepSession, Tokenizer
from runtime.core.types import RewardRequest, RewardResult, ScoreRequest


@dataclass(slots=True)
class LikelihoodPRM:
    verifier: Engine  # a draft or target LM; may be the target itself (a session of its own)
    tokenizer: Tokenizer
    prompt_template: str
    delimiter: str

    @property
    def num_params(self) -> int:
        return self.verifier.num_params

    def open(self, key: str) -> LikelihoodSession:
        # a key of its own: a server's sub-model caches the target's own session under `key`
        session = self.verifier.open(key + "#prm")
        assert isinstance(session, StepSession), "the assembly gives the likelihood PRM a step generator"
        return LikelihoodSession(self, session)


@dataclass(slots=True)
class LikelihoodSession:
    """One request on a LikelihoodPRM: a scoring session on the verifier LM."""

    prm: LikelihoodPRM
    verifier: StepSession

    async def reward(self, req: RewardRequest) -> RewardResult:
        prm = self.prm
        prompt = prm.prompt_template.replace("{question}", req.question)
        history = "".join(step + prm.delimiter for step in req.steps)
        prefix = tuple(prm.tokenizer.encode_prompt(prompt + history))
        conts = tuple(tuple(prm.tokenizer.encode(text)) for text in req.candidates)
        scored = await self.verifier.score(ScoreRequest(prefix, conts, temperature=1.0))
        rewards = tuple(math.exp(lp / len(c)) if c else 0.0 for lp, c in zip(scored.logprobs, conts))
        return RewardResult(rewards, scored.usage)

    def close(self) -> None:
        self.verifier.close()
