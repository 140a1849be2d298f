"""How BLS engine adapters reach a sub-model: one request in, its responses out."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from runtime.core.errors import EngineError

log = logging.getLogger(__name__)


class SubModelTransport(Protocol):
    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                    request_id: str) -> list[dict[str, np.ndarray]]:
        """Send one request to `model` (tagged `request_id`, the BLS request's cache key) and
        return all its responses' output tensors. Raises EngineError on an error response,
        an unavailable model or a timeout."""
        ...


async def timed(model: str, request_id: str, call: Awaitable[Any], timeout_s: float,
                observe: Callable[[str, float], None] | None) -> Any:
    """A sub-request under its timeout (an EngineError naming the model), its latency observed."""
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(call, timeout_s)
    except asyncio.TimeoutError:
        raise EngineError(f"{model}: no answer within {timeout_s:g} s") from None
    elapsed = time.perf_counter() - started
    if observe is not None:
        observe(model, elapsed)
    log.debug("%s answered %s in %.1f ms", model, request_id, 1000 * elapsed)
    return result
