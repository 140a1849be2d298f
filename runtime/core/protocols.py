"""Engine interfaces. Engines implement these structurally; the core never imports an engine.

An engine holds no per-request state: `open(key)` gives one request its own session (its KV
cache, or the ids a server holds for it), every call of that request goes through the session,
and the loop closes it when the request ends, fails or is cancelled. An engine batches whatever
concurrent sessions hand it (in-flight batching); a session reuses its cache across the
request's steps by matching the longest cached prefix of the ids it is given (as TensorRT-LLM's
block reuse does). `key` names the request where a server must tell requests apart.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from runtime.core.types import (
    GenerateResult,
    LogitsRequest,
    LogitsResult,
    ProposeRequest,
    ProposeResult,
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


class Session(Protocol):
    def close(self) -> None:
        """Free the request's state in the engine (idempotent)."""
        ...


@runtime_checkable
class StepSession(Session, Protocol):
    """One request on a draft or target LM: whole steps (stop at a delimiter, EOS, or the cap)."""

    async def generate(self, req: StepRequest) -> GenerateResult: ...

    async def score(self, req: ScoreRequest) -> ScoreResult: ...


@runtime_checkable
class TokenSession(Session, Protocol):
    """One request on an LM's raw next-token logits, for token-level methods (sd, CoS)."""

    async def logits(self, req: LogitsRequest) -> LogitsResult: ...


@runtime_checkable
class ScorerSession(Session, Protocol):
    """One request on a process reward model: P(step is correct | question, previous steps)."""

    async def reward(self, req: RewardRequest) -> RewardResult: ...


class Engine(Protocol):
    """A draft, target or PRM model; what its sessions offer says which roles it can play."""

    @property
    def num_params(self) -> int: ...

    def open(self, key: str) -> Session: ...


@runtime_checkable
class TokenVerifier(Protocol):
    """A session that verifies draft tokens in one target pass. TensorRT-LLM does it natively
    (draft_input_ids), the PyTorch engine on the request's own cache with the core's rule
    (`runtime.core.verify.verify_rows`); sessions that only expose logits are wrapped in
    `runtime.core.verify.ReferenceVerifier`, the same rule."""

    async def verify(self, req: VerifyRequest) -> VerifyResult: ...


@runtime_checkable
class DraftProposer(Protocol):
    """A session that draws a token-level proposal in one call (one request to a server) and
    returns each token's raw logits row; the method computes the distributions they were drawn
    from with the core's rule. Other token sessions propose one `logits` call per token."""

    async def propose(self, req: ProposeRequest) -> ProposeResult: ...
