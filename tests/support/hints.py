"""A target that never sees draft hints (StepRequest.draft_tokens): the "without" side of the
draft-hinted rewrite's A/B tests."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from runtime.core.methods import Engines
from runtime.core.types import GenerateResult, StepRequest
from runtime.pipeline import Pipeline


@dataclass(frozen=True, slots=True)
class NoHints:
    """Wraps an engine; its sessions drop `draft_tokens` before generating."""

    inner: Any

    @property
    def num_params(self) -> int:
        return int(self.inner.num_params)

    def open(self, key: str) -> NoHintSession:
        return NoHintSession(self.inner.open(key))


@dataclass(frozen=True, slots=True)
class NoHintSession:
    inner: Any

    async def generate(self, req: StepRequest) -> GenerateResult:
        return await self.inner.generate(replace(req, draft_tokens=()))

    def __getattr__(self, name: str) -> Any:  # score, logits, close: unchanged
        return getattr(self.inner, name)


def without_hints(pipeline: Pipeline) -> Pipeline:
    e = pipeline.engines
    return replace(pipeline, engines=Engines(e.draft, NoHints(e.target), e.prm))
