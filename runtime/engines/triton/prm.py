"""The process reward model behind Triton: scorer sessions over the PRM contract.

The BLS formats the PRM input itself (`runtime.engines.prm_format`: question and accepted steps
encoded once per request, each candidate step encoded on its own) and sends one row per
candidate, prefix + candidate ids, with the reward read at the candidate's last token. The
sub-model only runs backbone + head; rows sharing the request's prefix reuse its KV cache, and
it reports what it ran (both PRM sub-models are ours). A request's session holds its key and
its PRM ids.
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.core.errors import EngineError
from runtime.core.types import RewardRequest, RewardResult
from runtime.engines.prm_format import PrmFormat, PrmHistory
from runtime.engines.triton.contract import PRM_OUTPUTS, PrmCall, parse_prm_reply, parse_usage, prm_request_tensors
from runtime.engines.triton.transport import SubModelTransport


@dataclass(slots=True)
class TritonPRM:
    model: str
    transport: SubModelTransport
    fmt: PrmFormat
    num_params: int

    def open(self, key: str) -> TritonPrmSession:
        return TritonPrmSession(self, key, PrmHistory(self.fmt))


@dataclass(slots=True)
class TritonPrmSession:
    prm: TritonPRM
    key: str
    history: PrmHistory

    async def reward(self, req: RewardRequest) -> RewardResult:
        prm = self.prm
        prefix = tuple(self.history.prefix(req.question, req.steps))
        rows = tuple(prefix + tuple(prm.fmt.step_ids(text)) for text in req.candidates)
        call = PrmCall(rows, tuple((len(row) - 1,) for row in rows))
        responses = await prm.transport.infer(prm.model, prm_request_tensors(call), PRM_OUTPUTS, self.key)
        rewards, usage = parse_prm_reply(responses, call), parse_usage(responses)
        if usage is None:
            raise EngineError(f"{prm.model} reported no usage")
        return RewardResult(tuple(r[0] for r in rewards), usage)

    def close(self) -> None:
        """The sub-model's LRU evicts the request's cache."""
