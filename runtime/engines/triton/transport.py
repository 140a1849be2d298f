"""How BLS engine adapters reach a sub-model: one request in, its responses out.

Every sub-request gets an id of its own (`SubRequestTags`): Triton's stream answers an error
with the request id alone, so unique ids route every answer, errors included, to its call. The
request it belongs to (the sub-model's cache key) travels as the request parameter CACHE_KEY,
and the keys of requests that ended since the last sub-request to that model as RELEASED_KEYS,
so the sub-model frees their caches at once (TensorRT-LLM's backend ignores both parameters:
it reads only `request_type`, tensorrtllm_backend c2e65b8 `utils.h` getRequestType).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from runtime.core.errors import EngineError
from runtime.engines.triton.contract import REQUEST_KIND

log = logging.getLogger(__name__)


CACHE_KEY = "rsd_cache_key"  # request parameter: the BLS request a sub-request belongs to
RELEASED_KEYS = "rsd_released_keys"  # request parameter: requests that ended (comma-separated keys)


class SubModelTransport(Protocol):
    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                    key: str, kind: str = "") -> list[dict[str, np.ndarray]]:
        """Send one request to `model` for the BLS request `key` (the sub-model's cache key), of
        `kind` (an LM's request_kind; "" for none) and return all its responses' output tensors.
        Raises EngineError on an error response, an unavailable model or a timeout."""
        ...

    def release(self, model: str, key: str) -> None:
        """The request `key` ended: `model` may free what it holds for it (told with its next sub-request)."""
        ...


@dataclass(slots=True)
class SubRequestTags:
    """A unique id per sub-request, and the parameters that name its request and the ended ones."""

    _ids: Iterator[int] = field(default_factory=itertools.count)
    _ended: dict[str, list[str]] = field(default_factory=dict)  # model -> keys not yet told

    def release(self, model: str, key: str) -> None:
        assert "," not in key, key
        self._ended.setdefault(model, []).append(key)

    def tag(self, model: str, key: str, kind: str = "") -> tuple[str, dict[str, str]]:
        """(the sub-request's id, its request parameters)."""
        parameters = {CACHE_KEY: key, **({REQUEST_KIND: kind} if kind else {})}
        ended = self._ended.pop(model, None)
        if ended:
            parameters[RELEASED_KEYS] = ",".join(ended)
        return f"{key}.{next(self._ids)}", parameters


def released_keys(parameters: Mapping[str, Any]) -> tuple[str, ...]:
    """The sub-model side of RELEASED_KEYS."""
    return tuple(k for k in str(parameters.get(RELEASED_KEYS, "")).split(",") if k)


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
