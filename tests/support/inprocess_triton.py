"""An in-process SubModelTransport: the BLS engine adapters talk to the torch sub-model handlers
directly, through the same tensors, without a server (fast contract tests)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.core.errors import EngineError
from runtime.engines.triton.transport import SubRequestTags, released_keys


@dataclass(slots=True)
class InProcessTransport:
    handlers: Mapping[str, Any]  # model name -> object with `async handle(tensors, key)`
    calls: dict[str, int] = field(default_factory=dict)
    sent: list[tuple[str, dict[str, np.ndarray]]] = field(default_factory=list)  # (model, inputs) per request
    tags: SubRequestTags = field(default_factory=SubRequestTags)  # released keys travel as over Triton

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                    key: str, kind: str = "") -> list[dict[str, np.ndarray]]:
        handler = self.handlers.get(model)
        if handler is None:
            raise EngineError(f"{model}: model is not loaded")
        self.calls[model] = self.calls.get(model, 0) + 1
        self.sent.append((model, dict(inputs)))
        _, parameters = self.tags.tag(model, key)
        handler.release(released_keys(parameters))
        reply = await handler.handle({k: np.array(v) for k, v in inputs.items()}, key, kind or "generate")
        return [{k: v for k, v in reply.items() if k in outputs}]

    def release(self, model: str, key: str) -> None:
        self.tags.release(model, key)
