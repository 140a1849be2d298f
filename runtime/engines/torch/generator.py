"""A draft or target LM on PyTorch: step and token sessions with per-request KV-cache reuse.

Each request's session (`TorchLM.open`) owns one cache; a call crops it to the longest common
prefix with the ids it is given and runs only the rest, so a request's steps reuse its KV cache
(prefix reuse, as TensorRT-LLM's block reuse does); closing the session frees it. n > 1
candidates fork the prefix cache. Tokens are drawn in the batched forward itself (`Row.sample`),
so concurrent requests share the output head too. A greedy step with draft tokens
(`StepRequest.draft_tokens`) runs them with its catch-up prefill in one forward, keeps those its
greedy choice agrees with and its correction, and decodes on from there: the same step in fewer
forwards (TensorRT-LLM's draft_input_ids on a generation request). Sessions verify draft
tokens on their own cache with the core's rule (`verify`) and draw token-level proposals in
one call (`propose`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from runtime.core.sampling import is_greedy
from runtime.core.segment import StepSegmenter, TokenStep
from runtime.core.types import (
    Finish,
    GenerateResult,
    Generation,
    LogitsRequest,
    LogitsResult,
    ProposeRequest,
    ProposeResult,
    ScoreRequest,
    ScoreResult,
    StepRequest,
    Usage,
    VerifyRequest,
    VerifyResult,
)
from runtime.core.verify import verify_rows
from runtime.engines.torch.kvcache import SeqCache
from runtime.engines.torch.runner import Drawn, Row, Sampler
from runtime.engines.torch.sampling import RuleState, greedy_tokens, logprob_rows, sample_token
from runtime.engines.torch.scheduler import ForwardScheduler


@dataclass(slots=True)
class _Candidate:
    cache: SeqCache
    sampler: Sampler
    step: TokenStep
    logprob: float = 0.0
    logprobs: list[float] = field(default_factory=list)  # per token, EOS excluded


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

    def open(self, key: str) -> LmSession:
        """A request's session, with its own cache (the engine keeps nothing per request)."""
        return LmSession(self, self.scheduler.runner.new_cache())

    async def generate(self, cache: SeqCache, req: StepRequest) -> GenerateResult:
        cache.reuse(req.prefix, keep_new=1)
        fed = len(req.prefix) - cache.length
        new = list(req.prefix[cache.length:])
        rules = RuleState.start(req.rules, req.prefix, req.min_new_tokens)
        samplers = [Sampler(req.temperature, req.top_p, self._generator(req.seed, i), req.want_logprobs, req.top_k,
                            rules.fork() if rules is not None else None) for i in range(req.n)]
        cands: list[_Candidate] = []
        try:
            if req.n == 1:
                cands.append(_Candidate(cache, samplers[0], TokenStep(self.segmenter, req.max_new_tokens)))
                if hint := _hint(req):
                    await self._check_hint(cands[0], new, hint, len(req.prefix))
                    fed += len(hint)
                else:
                    (drawn,) = await self._draw([Row(cache, new, sample=samplers[0])])
                    self._push(cands[0], drawn)
            else:  # candidates share the prefix's forward, then fork its cache
                (hidden,) = await self._hidden([Row(cache, new, 1)])
                first = self._logits(hidden)[0]
                for s in samplers:
                    cands.append(_Candidate(cache.fork(), s, TokenStep(self.segmenter, req.max_new_tokens)))
                    row = s.rules.apply(first) if s.rules is not None else first
                    self._push(cands[-1], Drawn(*sample_token(row, req.temperature, req.top_p, s.generator, req.top_k)))
            decoded, passes = 0, 1  # the prefix's pass drew every candidate's first token
            while active := [c for c in cands if c.step.finish is None]:
                drawn_rows = await self._draw([Row(c.cache, [c.step.out[-1]], sample=c.sampler) for c in active])
                decoded += len(active)
                passes += 1
                for cand, d in zip(active, drawn_rows):
                    self._push(cand, d)
        finally:
            if req.n > 1:
                for cand in cands:
                    cand.cache.free()
        gens = tuple(Generation(tuple(c.step.out), c.step.finish or Finish.LENGTH, c.logprob,
                                tuple(c.logprobs) if req.want_logprobs else ()) for c in cands)
        usage = _usage(fed) + Usage(decode_tokens=decoded, generated_tokens=sum(len(g.token_ids) for g in gens),
                                    forwards=passes)
        return GenerateResult(gens, usage)

    async def _check_hint(self, cand: _Candidate, new: list[int], hint: tuple[int, ...], start: int) -> None:
        """The step's first tokens from one forward over the uncached prefix + the hint: each hint
        token the greedy choice agrees with, then the greedy correction (or the bonus token after
        the whole hint), as decoding would have drawn them; the cache keeps prefix + agreed tokens."""
        (hidden,) = await self._hidden([Row(cand.cache, new + list(hint), len(hint) + 1)])
        agreed = 0
        for i, row in enumerate(self._logits(hidden)):
            drawn = _greedy(row, cand.sampler)
            self._push(cand, drawn)
            if i == len(hint) or drawn.token != hint[i]:
                break
            agreed += 1
            if cand.step.finish is not None:
                break
        cand.cache.crop(start + agreed)

    async def score(self, cache: SeqCache, req: ScoreRequest) -> ScoreResult:
        cache.reuse(req.prefix, keep_new=1)
        fed = len(req.prefix) - 1 - cache.length
        scored = [(i, c) for i, c in enumerate(req.continuations) if c]
        passes = 0
        if len(scored) == 1:  # one continuation runs on the request's cache itself (kept for reuse)
            rows = [Row(cache, list(req.prefix[cache.length:]) + list(scored[0][1][:-1]), len(scored[0][1]))]
        else:
            if fed > 0:
                await self._hidden([Row(cache, list(req.prefix[cache.length:-1]), 0)])
                passes += 1
            rows = [Row(cache.fork(), [req.prefix[-1], *c[:-1]], len(c)) for _, c in scored]
        try:
            hidden = await self._hidden(rows) if rows else []
        finally:
            for row in rows:
                if row.cache is not cache:
                    row.cache.free()
        logprobs = [0.0] * len(req.continuations)
        for (i, cont), h in zip(scored, hidden):
            logprobs[i] = logprob_rows(self._logits(h), list(cont), req.temperature)
        usage = Usage(prefill_tokens=max(fed, 0) + sum(len(c) for _, c in scored), forwards=passes + bool(rows))
        return ScoreResult(tuple(logprobs), usage)

    async def logits(self, cache: SeqCache, req: LogitsRequest) -> LogitsResult:
        cache.reuse(req.ids, keep_new=req.count)
        fed = len(req.ids) - cache.length
        (hidden,) = await self._hidden([Row(cache, list(req.ids[cache.length:]), req.count)])
        return LogitsResult(self._logits(hidden).cpu().numpy(), _usage(fed) + Usage(forwards=1))

    async def verify(self, cache: SeqCache, req: VerifyRequest) -> VerifyResult:
        """One forward over the uncached prefix + the draft tokens on the request's own cache
        (len(draft) + 1 rows, no context logits), then the core's rule on those rows; the cache
        keeps prefix + the accepted tokens."""
        cache.reuse(req.prefix, keep_new=1)
        new = list(req.prefix[cache.length:]) + list(req.draft_tokens)
        (hidden,) = await self._hidden([Row(cache, new, len(req.draft_tokens) + 1)])
        result = verify_rows(req, self._logits(hidden).cpu().numpy(), _usage(len(new)) + Usage(forwards=1))
        cache.crop(len(req.prefix) + result.num_accepted)
        return result

    async def propose(self, cache: SeqCache, req: ProposeRequest) -> ProposeResult:
        """Up to gamma tokens drawn as `generate` draws a candidate (its seed, rules and sampling),
        ending after a step end or an end token, each with the raw logits row it was drawn from."""
        cache.reuse(req.prefix, keep_new=1)
        fed = len(req.prefix) - cache.length
        new = list(req.prefix[cache.length:])
        rules = RuleState.start(req.rules, req.prefix, req.min_new_tokens)
        generator = self._generator(req.seed, 0)
        tokens: list[int] = []
        rows: list[torch.Tensor] = []
        tail = ""
        while len(tokens) < req.gamma:
            (hidden,) = await self._hidden([Row(cache, new, 1)])
            rows.append(self._logits(hidden)[0])
            z = rules.apply(rows[-1]) if rules is not None else rows[-1]
            token, _ = sample_token(z, req.temperature, req.top_p, generator, req.top_k)
            tokens.append(token)
            if rules is not None:
                rules.push(token)
            end, tail = self.segmenter.feed(tail, token)
            if end is not None:
                break
            new = [token]
        usage = _usage(fed) + Usage(decode_tokens=max(len(tokens) - 1, 0), generated_tokens=len(tokens),
                                    forwards=len(tokens))
        logits = torch.stack(rows).cpu().numpy() if rows else torch.zeros(0, self.vocab_size).numpy()
        return ProposeResult(tuple(tokens), logits, usage)

    async def _hidden(self, rows: list[Row]) -> list[torch.Tensor]:
        return [h for h in await self.scheduler.run(rows) if isinstance(h, torch.Tensor)]

    async def _draw(self, rows: list[Row]) -> list[Drawn]:
        return [d for d in await self.scheduler.run(rows) if isinstance(d, Drawn)]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.head(hidden).float()[..., : self.vocab_size]

    def _generator(self, seed: int, index: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed((seed + index) % (2**63))

    def _push(self, cand: _Candidate, drawn: Drawn) -> None:
        if drawn.token not in self.segmenter.eos_ids:  # EOS is not part of the step, nor of its log-prob
            cand.logprob += drawn.logprob
            cand.logprobs.append(drawn.logprob)
        if cand.sampler.rules is not None:
            cand.sampler.rules.push(drawn.token)
        cand.step.push(drawn.token)


@dataclass(slots=True)
class LmSession:
    """One request on a TorchLM: its KV cache, cropped and extended step by step."""

    lm: TorchLM
    cache: SeqCache

    async def generate(self, req: StepRequest) -> GenerateResult:
        return await self.lm.generate(self.cache, req)

    async def score(self, req: ScoreRequest) -> ScoreResult:
        return await self.lm.score(self.cache, req)

    async def logits(self, req: LogitsRequest) -> LogitsResult:
        return await self.lm.logits(self.cache, req)

    async def verify(self, req: VerifyRequest) -> VerifyResult:
        return await self.lm.verify(self.cache, req)

    async def propose(self, req: ProposeRequest) -> ProposeResult:
        return await self.lm.propose(self.cache, req)

    def close(self) -> None:
        self.cache.free()


def _hint(req: StepRequest) -> tuple[int, ...]:
    """The draft tokens worth checking: only a greedy single candidate follows them (at T > 0 the
    step is a sample, which a proposal must not change), never past the step's cap."""
    greedy = is_greedy(req.temperature, req.top_k)
    return req.draft_tokens[:req.max_new_tokens] if greedy and req.n == 1 else ()


def _greedy(logits: torch.Tensor, sampler: Sampler) -> Drawn:
    """The token a greedy Sampler draws from one row (its rules applied, then the greedy pick)."""
    z = sampler.rules.apply(logits) if sampler.rules is not None else logits
    return Drawn(*greedy_tokens(z, (sampler.logprobs,))[0])


def _usage(fed: int) -> Usage:
    """A pass feeding one token is a decode step; more is a context (prefill) pass."""
    return Usage(decode_tokens=fed) if fed == 1 else Usage(prefill_tokens=max(fed, 0))
