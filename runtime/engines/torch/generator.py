"""A draft or target LM on PyTorch: StepGenerator + TokenModel with per-request KV-cache reuse.

Each request (cache key) keeps one cache; a call crops it to the longest common prefix with the
ids it is given and runs only the rest, so a request's steps reuse its KV cache (prefix reuse,
as TensorRT-LLM's block reuse does). n > 1 candidates fork the prefix cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from runtime.core.segment import StepSegmenter, TokenStep
from runtime.core.types import (
    Finish,
    GenerateResult,
    Generation,
    LogitsRequest,
    LogitsResult,
    ScoreRequest,
    ScoreResult,
    StepRequest,
    Usage,
)
from runtime.engines.torch.kvcache import SeqCache
from runtime.engines.torch.runner import Row
from runtime.engines.torch.sampling import logprob_rows, sample_token
from runtime.engines.torch.scheduler import ForwardScheduler


@dataclass(slots=True)
class _Candidate:
    cache: SeqCache
    generator: torch.Generator
    step: TokenStep
    logprob: float = 0.0


@dataclass(slots=True)
class TorchLM:
    name: str
    scheduler: ForwardScheduler
    head: torch.nn.Module  # hidden -> vocabulary logits
    segmenter: StepSegmenter
    device: torch.device
    num_params: int
    max_len: int
    vocab_size: int
    _caches: dict[str, SeqCache] = field(default_factory=dict)

    def release(self, key: str) -> None:
        self._caches.pop(key, None)

    async def generate(self, req: StepRequest) -> GenerateResult:
        cache = self._cache(req.key, req.prefix, keep_new=1)
        fed = len(req.prefix) - cache.length
        (hidden,) = await self.scheduler.run([Row(cache, list(req.prefix[cache.length:]), 1)])
        first = self._logits(hidden)[0]
        cands = [_Candidate(cache if req.n == 1 else cache.fork(), self._generator(req.seed, i),
                            TokenStep(self.segmenter, req.max_new_tokens)) for i in range(req.n)]
        for cand in cands:
            self._push(cand, first, req)
        decoded = 0
        while active := [c for c in cands if c.step.finish is None]:
            hidden_rows = await self.scheduler.run([Row(c.cache, [c.step.out[-1]], 1) for c in active])
            logits = self._logits(torch.cat(hidden_rows))
            decoded += len(active)
            for cand, row in zip(active, logits):
                self._push(cand, row, req)
        gens = tuple(Generation(tuple(c.step.out), c.step.finish or Finish.LENGTH, c.logprob) for c in cands)
        usage = _usage(fed) + Usage(decode_tokens=decoded, generated_tokens=sum(len(g.token_ids) for g in gens))
        return GenerateResult(gens, usage)

    async def score(self, req: ScoreRequest) -> ScoreResult:
        cache = self._cache(req.key, req.prefix, keep_new=1)
        fed = len(req.prefix) - 1 - cache.length
        if fed > 0:
            await self.scheduler.run([Row(cache, list(req.prefix[cache.length:-1]), 0)])
        scored = [(i, c) for i, c in enumerate(req.continuations) if c]
        rows = [Row(cache.fork(), [req.prefix[-1], *c[:-1]], len(c)) for _, c in scored]
        hidden = await self.scheduler.run(rows) if rows else []
        logprobs = [0.0] * len(req.continuations)
        for (i, cont), h in zip(scored, hidden):
            logprobs[i] = logprob_rows(self._logits(h), list(cont), req.temperature)
        usage = Usage(prefill_tokens=max(fed, 0) + sum(len(c) for _, c in scored))
        return ScoreResult(tuple(logprobs), usage)

    async def logits(self, req: LogitsRequest) -> LogitsResult:
        cache = self._cache(req.key, req.ids, keep_new=req.count)
        fed = len(req.ids) - cache.length
        (hidden,) = await self.scheduler.run([Row(cache, list(req.ids[cache.length:]), req.count)])
        return LogitsResult(self._logits(hidden).cpu().numpy(), _usage(fed))

    def _cache(self, key: str, ids: tuple[int, ...], keep_new: int) -> SeqCache:
        """This request's cache, cropped to its common prefix with `ids`, leaving >= keep_new to run."""
        cache = self._caches.setdefault(key, SeqCache())
        cache.reuse(ids, keep_new)
        return cache

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.head(hidden).float()[..., : self.vocab_size]

    def _generator(self, seed: int, index: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed((seed + index) % (2**63))

    def _push(self, cand: _Candidate, logits: torch.Tensor, req: StepRequest) -> None:
        token, logprob = sample_token(logits, req.temperature, req.top_p, cand.generator)
        if token not in self.segmenter.eos_ids:  # EOS is not part of the step, nor of its log-prob
            cand.logprob += logprob
        cand.step.push(token)

def _usage(fed: int) -> Usage:
    """A pass feeding one token is a decode step; more is a context (prefill) pass."""
    return Usage(decode_tokens=fed) if fed == 1 else Usage(prefill_tokens=max(fed, 0))

