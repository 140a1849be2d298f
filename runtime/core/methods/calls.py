"""A request's engine calls: each on the request's own session of a role, each recorded in its stats.

A call on a role first settles the early call pending on it, if any (runtime.core.lookahead: the
session is never asked two things at once); `generate` uses that early call's result when it asked
the same. Verification goes to the session's own verifier (TensorRT-LLM's draft_input_ids, the
torch engine on the request's cache) or to the core's reference rule over its logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.core.errors import EngineError
from runtime.core.lookahead import Lookahead
from runtime.core.methods.sessions import Sessions
from runtime.core.protocols import DraftProposer, TokenVerifier
from runtime.core.stats import RequestStats
from runtime.core.types import (
    Generation,
    LogitsRequest,
    ProposeRequest,
    ProposeResult,
    RewardRequest,
    ScoreRequest,
    StepRequest,
    Usage,
    VerifyRequest,
    VerifyResult,
)
from runtime.core.verify import ReferenceVerifier


@dataclass(slots=True)
class EngineCalls:
    sessions: Sessions
    stats: RequestStats
    ahead: Lookahead | None = None  # calls started early for the next step

    async def generate(self, role: str, req: StepRequest) -> tuple[Generation, ...]:
        early = await self.ahead.take(role, req) if self.ahead is not None else None
        result = early if early is not None else await self.sessions.role(role).generate(req)
        self._record(role, result.usage)
        if len(result.generations) != req.n:
            raise EngineError(f"{role} returned {len(result.generations)} generations, asked for {req.n}")
        return result.generations

    def start_early(self, role: str, req: StepRequest) -> bool:
        """Start `req` on `role` now, for the next step's `generate`; False when one is pending already."""
        if self.ahead is None or self.ahead.pending(role):
            return False
        self.ahead.start(role, req, self.sessions.role(role).generate(req))
        return True

    async def score(self, role: str, req: ScoreRequest) -> tuple[float, ...]:
        result = await (await self._settled(role)).score(req)
        self._record(role, result.usage)
        return tuple(result.logprobs)

    async def rewards(self, req: RewardRequest) -> tuple[float, ...]:
        result = await self.sessions.role("prm").reward(req)
        self._record("prm", result.usage)
        if len(result.rewards) != len(req.candidates):
            raise EngineError(f"prm returned {len(result.rewards)} rewards for {len(req.candidates)} steps")
        return tuple(result.rewards)

    async def logits(self, role: str, req: LogitsRequest) -> npt.NDArray[np.float32]:
        result = await (await self._settled(role)).logits(req)
        self._record(role, result.usage)
        rows: npt.NDArray[np.float32] = result.logits
        return rows

    def proposes(self, role: str) -> bool:
        """Whether the role's session drafts a proposal in one call (DraftProposer)."""
        return isinstance(self.sessions.role(role), DraftProposer)

    async def propose(self, role: str, req: ProposeRequest) -> ProposeResult:
        session: DraftProposer = await self._settled(role)  # `proposes(role)` said it is one
        result = await session.propose(req)
        self._record(role, result.usage)
        return result

    async def verify(self, role: str, req: VerifyRequest) -> VerifyResult:
        session = await self._settled(role)
        verifier = session if isinstance(session, TokenVerifier) else ReferenceVerifier(session)
        result = await verifier.verify(req)
        self._record(role, result.usage)
        return result

    async def _settled(self, role: str) -> Any:
        """The role's session, once no early call is pending on it."""
        if self.ahead is not None:
            await self.ahead.settle(role)
        return self.sessions.role(role)

    def _record(self, role: str, usage: Usage) -> None:
        self.stats.observe_call(role, usage, self.sessions.engines.role(role).num_params)
