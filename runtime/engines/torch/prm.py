"""Process reward models on PyTorch: backbone + reward head, run at given token positions.

Input formatting (question and steps to token ids) is torch-free in `runtime.engines.prm_format`;
here live the two heads, chosen in config:
value_head (Skywork-o1-Open-PRM): reward = sigmoid(v_head(h)) with v_head = `v_head.summary`
  Linear(hidden, 1) on the final (normed) hidden state.
two_class (Qwen2.5-Math-PRM): reward = softmax(score(h))[1] with score = Linear(h, h) -> ReLU ->
  Linear(h, 2) (`score.0`, `score.2`).
A request's session (`TorchPRM.open`) owns its KV cache and its PRM ids. `rewards_at` is the
ids-level entry point (the Triton PRM sub-model calls it): rows that share a prefix reuse the
request's cache for it, so each call runs only new tokens (the reference re-encoded the whole
prefix every step: O(L^2)). `reward` formats text then calls it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from runtime.core.errors import ConfigError, EngineError
from runtime.core.tokens import common_prefix
from runtime.core.types import RewardRequest, RewardResult, Usage
from runtime.engines.prm_format import QWEN_PRM_SYSTEM, PrmFormat, PrmHistory
from runtime.engines.torch.kvcache import SeqCache
from runtime.engines.torch.loading import load_tensors
from runtime.engines.torch.runner import Row
from runtime.engines.torch.scheduler import ForwardScheduler

__all__ = ["QWEN_PRM_SYSTEM", "PrmHead", "PrmSession", "TorchPRM", "make_head", "two_class_head", "value_head"]


@dataclass(frozen=True, slots=True)
class PrmHead:
    """Turns final hidden states into rewards."""

    fn: Callable[[torch.Tensor], torch.Tensor]  # [rows, hidden] -> [rows] rewards in [0, 1]
    params: int


def value_head(path: Path, device: torch.device, key: str) -> PrmHead:
    weights = load_tensors(path, "v_head.summary.")
    if "v_head.summary.weight" not in weights:
        raise ConfigError(key, f"{path}: no v_head.summary.weight tensor (value_head PRM format)")
    w = weights["v_head.summary.weight"].float().to(device)  # [1, hidden]
    b = weights.get("v_head.summary.bias", torch.zeros(1)).float().to(device)

    def head(hidden: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(hidden.float() @ w.T + b)[:, 0]

    return PrmHead(head, w.numel() + 1)


def two_class_head(path: Path, device: torch.device, key: str) -> PrmHead:
    weights = {k: v.float().to(device) for k, v in load_tensors(path, "score.").items()}
    missing = {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} - set(weights)
    if missing:
        raise ConfigError(key, f"{path}: missing {', '.join(sorted(missing))} (two_class PRM format)")

    def head(hidden: torch.Tensor) -> torch.Tensor:
        x = torch.relu(hidden.float() @ weights["score.0.weight"].T + weights["score.0.bias"])
        return torch.softmax(x @ weights["score.2.weight"].T + weights["score.2.bias"], -1)[:, 1]

    return PrmHead(head, sum(w.numel() for w in weights.values()))


def make_head(kind: str, path: Path, device: torch.device, key: str) -> PrmHead:
    return value_head(path, device, key) if kind == "value_head" else two_class_head(path, device, key)


@dataclass(slots=True)
class TorchPRM:
    scheduler: ForwardScheduler
    head: PrmHead
    num_params: int
    fmt: PrmFormat | None = None  # needed by `reward` (text input) only

    def open(self, key: str) -> PrmSession:
        """A request's session, with its own cache and PRM ids (the engine keeps nothing per request)."""
        history = PrmHistory(self.fmt) if self.fmt is not None else None
        return PrmSession(self, self.scheduler.runner.new_cache(), history)

    async def rewards_at(self, cache: SeqCache, rows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
                         ) -> tuple[list[list[float]], Usage]:
        """Rewards read at `positions[i]` (indices into `rows[i]`) of each token row.

        The request's cache is cropped to what it shares with the rows; one row then runs on it
        directly, several rows run their common prefix (up to the first position read) on it
        once and their remainders on forks of it.
        """
        if not rows or len(rows) != len(positions):
            raise EngineError(f"rewards_at needs one position list per row, got {len(rows)} rows, {len(positions)}")
        for row, pos in zip(rows, positions):
            if not pos or min(pos) < 0 or max(pos) >= len(row):
                raise EngineError(f"reward positions {list(pos)} out of range for a row of {len(row)} tokens")
        outputs = [len(row) - min(pos) for row, pos in zip(rows, positions)]
        passes = 1
        if len(rows) == 1:  # run the row on the request's cache itself: one forward
            cache.reuse(list(rows[0]), keep_new=outputs[0])
            fed = len(rows[0]) - cache.length
            hidden = await self._hidden([Row(cache, list(rows[0][cache.length:]), outputs[0])])
        else:
            shared = min(common_prefix(*rows), *(len(row) - n for row, n in zip(rows, outputs)))
            cache.reuse(list(rows[0][:shared]))
            fed = shared - cache.length
            if fed:
                await self._hidden([Row(cache, list(rows[0][cache.length:shared]), 0)])
                passes += 1
            fed += sum(len(row) - shared for row in rows)
            forks = [Row(cache.fork(), list(row[shared:]), n) for row, n in zip(rows, outputs)]
            try:
                hidden = await self._hidden(forks)
            finally:
                for fork in forks:
                    fork.cache.free()
        rewards = []
        for row, pos, h in zip(rows, positions, hidden):
            first = len(row) - h.shape[0]
            with torch.inference_mode():
                rewards.append([float(r) for r in self.head.fn(h[[p - first for p in pos]]).cpu().tolist()])
        return rewards, Usage(prefill_tokens=fed, forwards=passes)

    async def _hidden(self, rows: list[Row]) -> list[torch.Tensor]:
        return [h for h in await self.scheduler.run(rows) if isinstance(h, torch.Tensor)]


@dataclass(slots=True)
class PrmSession:
    """One request on a TorchPRM: its KV cache and, for text input, its PRM ids so far."""

    prm: TorchPRM
    cache: SeqCache
    history: PrmHistory | None

    async def reward(self, req: RewardRequest) -> RewardResult:
        if self.history is None:
            raise EngineError("this PRM was built without an input format; call rewards_at with token ids")
        prefix = self.history.prefix(req.question, req.steps)
        rows = [prefix + self.history.fmt.step_ids(text) for text in req.candidates]
        rewards, usage = await self.rewards_at(rows, [[len(r) - 1] for r in rows])
        return RewardResult(tuple(r[0] for r in rewards), usage)

    async def rewards_at(self, rows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
                         ) -> tuple[list[list[float]], Usage]:
        return await self.prm.rewards_at(self.cache, rows, positions)

    def close(self) -> None:
        self.cache.free()
