"""The process reward model behind Triton: scorer sessions over the PRM contract.

The BLS formats the PRM input itself (`runtime.engines.prm_format`: question and accepted steps
encoded once per request, each candidate step encoded on its own) and sends one row per
candidate, prefix + candidate ids, with the reward read at the candidate's last token. The
sub-model only runs backbone + head; rows sharing the request's prefix reuse its KV cache.
A request's session holds its key, its PRM ids and the prefix the sub-model holds for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.core.tokens import common_prefix
from runtime.core.types import RewardRequest, RewardResult, Usage
from runtime.engines.prm_format import PrmFormat, PrmHistory
from runtime.engines.triton.contract import PRM_OUTPUTS, PrmCall, parse_prm_reply, prm_request_tensors
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
    seen: tuple[int, ...] = ()  # the prefix the sub-model holds

    async def reward(self, req: RewardRequest) -> RewardResult:
        prm = self.prm
        prefix = tuple(self.history.prefix(req.question, req.steps))
        rows = tuple(prefix + tuple(prm.fmt.step_ids(text)) for text in req.candidates)
        call = PrmCall(rows, tuple((len(row) - 1,) for row in rows))
        responses = await prm.transport.infer(prm.model, prm_request_tensors(call), PRM_OUTPUTS, self.key)
        rewards = parse_prm_reply(responses, call)
        return RewardResult(tuple(r[0] for r in rewards), Usage(prefill_tokens=self._fed(prefix, rows)))

    def close(self) -> None:
        self.seen = ()

    def _fed(self, prefix: tuple[int, ...], rows: tuple[tuple[int, ...], ...]) -> int:
        """Estimated tokens run: the prefix part not held yet, plus every candidate."""
        common = common_prefix(self.seen, prefix)
        self.seen = rows[0] if len(rows) == 1 else prefix
        return len(prefix) - common + sum(len(row) - len(prefix) for row in rows)
