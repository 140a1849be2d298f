"""Engine interfaces. Engines implement these structurally; the core never imports an engine.

Every call is per request and carries a cache `key`: an engine batches whatever concurrent
requests hand it (in-flight batching) and may reuse a request's KV cache across its steps by
matching the longest cached prefix of the ids it is given (as TensorRT-LLM's block reuse does).
`release(key)` frees that request's caches when it ends.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from runtime.core.types import (
    GenerateResult,
    LogitsRequest,
    LogitsResult,
    RewardRequest,
    RewardResult,
    ScoreRequest,
    ScoreResult,
    StepRequest,
    VerifyRequest,
    VerifyResult,
)


@runtime_checkable
class Tokenizer(Protocol):
    """The generators' shared tokenizer (draft and target must share one vocabulary)."""

    @property
    def eos_ids(self) -> frozenset[int]: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a request's prompt, with the special tokens the model expects first (BOS)."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def piece(self, token_id: int) -> str:
        """The text of one token on its own (used to find step delimiters)."""
        ...


@runtime_checkable
class StepGenerator(Protocol):
    """A draft or target LM generating whole steps (stops at a delimiter token, EOS, or the cap)."""

    @property
    def num_params(self) -> int: ...

    @property
    def max_len(self) -> int:
        """Longest sequence (prompt + generated) the model accepts."""
        ...

    async def generate(self, req: StepRequest) -> GenerateResult: ...

    async def score(self, req: ScoreRequest) -> ScoreResult: ...

    def release(self, key: str) -> None: ...


@runtime_checkable
class StepScorer(Protocol):
    """A process reward model: P(step is correct | question, previous steps)."""

    @property
    def num_params(self) -> int: ...

    async def reward(self, req: RewardRequest) -> RewardResult: ...

    def release(self, key: str) -> None: ...


@runtime_checkable
class TokenModel(Protocol):
    """Raw next-token logits, for token-level methods (speculative decoding, CoS)."""

    @property
    def num_params(self) -> int: ...

    async def logits(self, req: LogitsRequest) -> LogitsResult: ...

    def release(self, key: str) -> None: ...


@runtime_checkable
class TokenVerifier(Protocol):
    """Verifies draft tokens in one target pass. TensorRT-LLM does it natively (draft_input_ids);
    other engines use `runtime.core.verify.ReferenceVerifier`, the core's reference rule."""

    async def verify(self, req: VerifyRequest) -> VerifyResult: ...
