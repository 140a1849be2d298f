"""Process reward models on PyTorch: the two PRM formats, chosen in config.

value_head (Skywork-o1-Open-PRM): input = [bos] + encode(question + "\\n"), then per step
  encode(step) + [id("\\n\\n")]; reward = sigmoid(v_head(h)) at the step's separator token, with
  v_head = `v_head.summary` Linear(hidden, 1) on the final (normed) hidden state.
two_class (Qwen2.5-Math-PRM): input = ChatML(system, user=question) + assistant steps joined and
  terminated by <extra_0>; reward = softmax(score(h))[1] at the step's <extra_0>, with
  score = Linear(h, h) -> ReLU -> Linear(h, 2) (`score.0`, `score.2`).
Each step is tokenised on its own and the request's PRM ids are kept, so each call runs only the
new step through the model (the reference re-encoded the whole prefix every step: O(L^2)).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from runtime.core.errors import ConfigError
from runtime.core.types import RewardRequest, RewardResult, Usage
from runtime.engines.torch.kvcache import SeqCache
from runtime.engines.torch.loading import HFTokenizer, load_tensors
from runtime.engines.torch.runner import Row
from runtime.engines.torch.scheduler import ForwardScheduler

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
PRM_FORMATS = ("value_head", "two_class")


@dataclass(frozen=True, slots=True)
class PrmFormat:
    """How a PRM reads (question, steps) and turns a hidden state into a reward."""

    prefix_ids: Callable[[str], list[int]]
    step_ids: Callable[[str], list[int]]
    head: Callable[[torch.Tensor], torch.Tensor]  # [rows, hidden] -> [rows] rewards
    head_params: int


def value_head_format(path: Path, tok: HFTokenizer, device: torch.device, key: str) -> PrmFormat:
    weights = load_tensors(path, "v_head.summary.")
    if "v_head.summary.weight" not in weights:
        raise ConfigError(key, f"{path}: no v_head.summary.weight tensor (value_head PRM format)")
    w = weights["v_head.summary.weight"].float().to(device)  # [1, hidden]
    b = weights.get("v_head.summary.bias", torch.zeros(1)).float().to(device)
    sep = tok.encode("\n\n")
    if not sep:
        raise ConfigError(key, f"{path}: the tokenizer cannot encode the step separator")
    bos = [tok.bos_id] if tok.bos_id is not None else []

    def head(hidden: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(hidden.float() @ w.T + b)[:, 0]

    return PrmFormat(lambda q: bos + tok.encode(q + "\n"), lambda s: tok.encode(s) + [sep[-1]], head, w.numel() + 1)


def two_class_format(path: Path, tok: HFTokenizer, device: torch.device, key: str) -> PrmFormat:
    weights = {k: v.float().to(device) for k, v in load_tensors(path, "score.").items()}
    missing = {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} - set(weights)
    if missing:
        raise ConfigError(key, f"{path}: missing {', '.join(sorted(missing))} (two_class PRM format)")
    step_token = tok.token_id("<extra_0>")
    if step_token is None:
        raise ConfigError(key, f"{path}: the tokenizer has no <extra_0> token (two_class PRM format)")

    def prefix(question: str) -> list[int]:
        messages = [{"role": "system", "content": QWEN_PRM_SYSTEM}, {"role": "user", "content": question}]
        return tok.encode(tok.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def head(hidden: torch.Tensor) -> torch.Tensor:
        x = torch.relu(hidden.float() @ weights["score.0.weight"].T + weights["score.0.bias"])
        return torch.softmax(x @ weights["score.2.weight"].T + weights["score.2.bias"], -1)[:, 1]

    return PrmFormat(prefix, lambda s: tok.encode(s) + [step_token], head, sum(w.numel() for w in weights.values()))


@dataclass(slots=True)
class TorchPRM:
    scheduler: ForwardScheduler
    fmt: PrmFormat
    num_params: int
    _caches: dict[str, SeqCache] = field(default_factory=dict)
    _step_ids: dict[str, list[tuple[str, list[int]]]] = field(default_factory=dict)

    def release(self, key: str) -> None:
        self._caches.pop(key, None)
        self._step_ids.pop(key, None)

    async def reward(self, req: RewardRequest) -> RewardResult:
        prefix = self._prefix(req)
        cache = self._caches.setdefault(req.key, SeqCache())
        cache.reuse(prefix)
        fed = len(prefix) - cache.length
        if fed:
            await self.scheduler.run([Row(cache, prefix[cache.length:], 0)])
        cand_ids = [self.fmt.step_ids(text) for text in req.candidates]
        forks = [cache] if len(cand_ids) == 1 else [cache.fork() for _ in cand_ids]
        hidden = await self.scheduler.run([Row(c, ids, 1) for c, ids in zip(forks, cand_ids)])
        with torch.inference_mode():
            rewards = self.fmt.head(torch.cat(hidden)).cpu().tolist()
        return RewardResult(tuple(float(r) for r in rewards), Usage(prefill_tokens=fed + sum(map(len, cand_ids))))

    def _prefix(self, req: RewardRequest) -> list[int]:
        """Question ids + each accepted step's ids, re-encoding only steps not seen before."""
        known = self._step_ids.setdefault(req.key, [])
        if not known or known[0][0] != req.question:
            known[:] = [(req.question, self.fmt.prefix_ids(req.question))]
        for i, text in enumerate(req.steps, start=1):
            if i < len(known) and known[i][0] == text:
                continue
            del known[i:]
            known.append((text, self.fmt.step_ids(text)))
        del known[len(req.steps) + 1:]
        return [t for _, ids in known for t in ids]
