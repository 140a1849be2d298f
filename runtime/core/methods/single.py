"""Single-model baselines: `target` (the accuracy reference) and `draft` (the cost reference).

Same step segmentation and stopping as every other method, so their outputs, token counts and
FLOPs compare one to one. RSD with threshold > 1 reduces to `target`, threshold 0 to `draft`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from runtime.core.methods.base import Needs, StepContext
from runtime.core.params import RequestParams
from runtime.core.types import StepOutcome


@dataclass(frozen=True, slots=True)
class SingleModel:
    role: str
    name: ClassVar[str] = "single"

    def needs(self, params: RequestParams) -> Needs:
        return Needs(step_roles=(self.role,))

    async def step(self, ctx: StepContext) -> StepOutcome:
        (gen,) = await ctx.generate(self.role)
        return StepOutcome(gen.token_ids, gen.finish, source=self.role, token_logprobs=gen.token_logprobs)
