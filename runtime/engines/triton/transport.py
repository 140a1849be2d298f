"""How BLS engine adapters reach a sub-model: one request in, its responses out."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np


class SubModelTransport(Protocol):
    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                    request_id: str) -> list[dict[str, np.ndarray]]:
        """Send one request to `model` (tagged `request_id`, the BLS request's cache key) and
        return all its responses' output tensors. Raises EngineError on an error response,
        an unavailable model or a timeout."""
        ...
