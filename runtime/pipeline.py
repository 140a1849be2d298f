"""The in-process entry point: a question and parameters in, step events and a result out.

Engine-agnostic: the CLI and tests build it on the PyTorch engine; the Triton BLS builds it on
engines that call the draft/target/PRM sub-models. The same loop runs in all three.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.core.errors import RequestValidationError
from runtime.core.loop import Request, run_request
from runtime.core.methods import Engines
from runtime.core.methods.rsd import BudgetWindow
from runtime.core.params import RequestParams
from runtime.core.protocols import Tokenizer
from runtime.core.segment import StepSegmenter
from runtime.core.types import StepEvent


@dataclass(frozen=True, slots=True)
class Result:
    text: str
    steps: tuple[StepEvent, ...]
    finish_reason: str
    stats: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "steps": [{"text": s.text, "source": s.source, "reward": s.reward, "accepted": s.accepted}
                      for s in self.steps],
            "finish_reason": self.finish_reason,
            "stats": self.stats,
        }


@dataclass(frozen=True, slots=True)
class Pipeline:
    engines: Engines
    tokenizer: Tokenizer
    segmenter: StepSegmenter
    prompt_template: str
    defaults: RequestParams
    max_len: int
    # the recent steps a target budget with scope server counts over: one per pipeline, shared by its requests
    budget_window: BudgetWindow = field(default_factory=BudgetWindow)

    def params(self, values: RequestParams | Mapping[str, Any] | None = None) -> RequestParams:
        if isinstance(values, RequestParams):
            return values
        return RequestParams.from_mapping(values or {}, base=self.defaults)

    def request(self, question: str, params: RequestParams | Mapping[str, Any] | None = None,
                request_id: str | None = None) -> Request:
        if not isinstance(question, str) or not question.strip():
            raise RequestValidationError("text_input", "must be a non-empty string")
        prompt = self.prompt_template.replace("{question}", question)
        return Request(request_id or uuid.uuid4().hex, question, tuple(self.tokenizer.encode_prompt(prompt)),
                       self.params(params))

    def stream(self, question: str, params: RequestParams | Mapping[str, Any] | None = None,
               request_id: str | None = None) -> AsyncIterator[StepEvent]:
        """Validates at once (raises before the first step), then yields steps as decided."""
        return self.run(self.request(question, params, request_id))

    def run(self, request: Request) -> AsyncIterator[StepEvent]:
        """The steps of a request built by `request` (which tokenises; servers call it off their loop)."""
        return run_request(request, self.engines, self.tokenizer, self.segmenter, self.max_len, self.budget_window)

    async def generate(self, question: str, params: RequestParams | Mapping[str, Any] | None = None,
                       request_id: str | None = None) -> Result:
        steps = [event async for event in self.stream(question, params, request_id)]
        last = steps[-1]
        return Result("".join(s.text for s in steps), tuple(steps), last.finish_reason or "", last.stats or {})

    def generate_sync(self, question: str, params: RequestParams | Mapping[str, Any] | None = None) -> Result:
        return asyncio.run(self.generate(question, params))
