"""The process reward model behind Triton: StepScorer over the PRM contract.

The BLS formats the PRM input itself (`runtime.engines.prm_format`: question and accepted steps
encoded once per request, each candidate step encoded on its own) and sends one row per
candidate, prefix + candidate ids, with the reward read at the candidate's last token. The
sub-model only runs backbone + head; rows sharing the request's prefix reuse its KV cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    _history: PrmHistory = field(init=False)
    _seen: dict[str, tuple[int, ...]] = field(default_factory=dict)  # prefix the engine holds per request

    def __post_init__(self) -> None:
        self._history = PrmHistory(self.fmt)

    def release(self, key: str) -> None:
        self._history.release(key)
        self._seen.pop(key, None)

    async def reward(self, req: RewardRequest) -> RewardResult:
        prefix = tuple(self._history.prefix(req.key, req.question, req.steps))
        rows = tuple(prefix + tuple(self.fmt.step_ids(text)) for text in req.candidates)
        call = PrmCall(rows, tuple((len(row) - 1,) for row in rows))
        responses = await self.transport.infer(self.model, prm_request_tensors(call), PRM_OUTPUTS, req.key)
        rewards = parse_prm_reply(responses, call)
        return RewardResult(tuple(r[0] for r in rewards), Usage(prefill_tokens=self._fed(req.key, prefix, rows)))

    def _fed(self, key: str, prefix: tuple[int, ...], rows: tuple[tuple[int, ...], ...]) -> int:
        """Estimated tokens run: the prefix part not held yet, plus every candidate."""
        seen = self._seen.get(key, ())
        common = 0
        while common < min(len(seen), len(prefix)) and seen[common] == prefix[common]:
            common += 1
        self._seen[key] = rows[0] if len(rows) == 1 else prefix
        return len(prefix) - common + sum(len(row) - len(prefix) for row in rows)
