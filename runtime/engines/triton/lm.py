"""A draft or target LM behind Triton: step and token sessions over the `tensorrt_llm` contract.

- generate: one request per step with `num_return_sequences = n`, stop words = every token
  containing the step delimiter (plus the extra EOS ids), end_id = the tokenizer's EOS. A step is
  cut in one place: the torch sub-model cuts it (it runs the core's TokenStep) and says why it
  ended (`finish_reason`); a TensorRT-LLM engine's ids are cut with the core's segmenter, as it
  may overshoot a delimiter split over two tokens and may include or omit the end token.
- logits (token-level methods): count == 1 reads `generation_logits` of a one-token request
  (the engine reuses the request's KV cache); count > 1 sends the last count - 1 ids as
  draft_input_ids and reads count rows of `generation_logits` on the torch sub-model (`on_cache`),
  and the last rows of `context_logits` (the whole prefix, no cache) on TensorRT-LLM.
- score (GSI, the likelihood PRM): on the torch sub-model every continuation in one request
  (continuation_ids, on the request's cache); on TensorRT-LLM from the `context_logits` of
  prefix + continuation, one concurrent request per continuation.
- propose (sd, CoS; torch sub-model only): a token-level proposal in one generation request with
  its `generation_logits` (TensorRT-LLM's sampler is not the core's rule, so its draft proposes a
  token per logits request and the core draws it).
- a greedy step's draft hint (StepRequest.draft_tokens) goes as draft_input_ids on the generation
  request to the torch sub-model, which checks it and decodes on to the step end (a TensorRT-LLM
  target without draft_tokens_external would ignore it: it is not sent there).
Every request names what it is (`request_kind`, contract.REQUEST_KINDS): the torch sub-model
routes on it; TensorRT-LLM ignores it and reads the tensors as its own requests.
Usage (prefill / decode tokens, forwards) is what the sub-model reports in its reply; for a
TensorRT-LLM engine, which reports none, it is derived from what the engine returns
(`runtime.engines.triton.usage`). A request's session (`TritonLM.open`) holds only its key,
by which the sub-model caches the request: nothing here shadows the sub-model's cache; closing it
tells the sub-model the request ended.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.core.errors import EngineError
from runtime.core.sampling import is_greedy, sequence_logprob
from runtime.core.segment import StepSegmenter
from runtime.core.types import (
    Finish,
    GenerateResult,
    Generation,
    LogitRules,
    LogitsRequest,
    LogitsResult,
    ProposeRequest,
    ProposeResult,
    ScoreRequest,
    ScoreResult,
    StepRequest,
    Usage,
)
from runtime.engines.triton.contract import (
    FINISH_REASON,
    LM_OUTPUTS,
    USAGE_OUTPUTS,
    LmCall,
    LmReply,
    lm_request_tensors,
    parse_lm_reply,
)
from runtime.engines.triton.transport import SubModelTransport
from runtime.engines.triton.usage import trtllm_usage


@dataclass(frozen=True, slots=True)
class TrtllmEngine:
    """A TensorRT-LLM engine behind a TritonLM: it reports no usage (derived from its outputs,
    runtime.engines.triton.usage) and may overshoot a multi-token delimiter (its output is re-cut)."""

    tokens_per_block: int = 0  # its KV-cache block size (0: unknown; cached tokens then go uncounted)
    # prompt + output tokens it holds (0: unknown): its prompts are at most max_seq_len - 1 tokens
    # (trtGptModel.h maxInputLen = min(max_seq_len - 1, max_num_tokens); --max_input_len is ignored)
    max_seq_len: int = 0


@dataclass(slots=True)
class TritonLM:
    role: str
    model: str  # sub-model name in the repository
    transport: SubModelTransport
    segmenter: StepSegmenter
    end_id: int
    pad_id: int
    stop_words: tuple[tuple[int, ...], ...]
    num_params: int
    max_len: int
    vocab_size: int  # the tokenizer's: ids past it never occur, logits past it are trimmed
    outputs: tuple[str, ...] = LM_OUTPUTS + USAGE_OUTPUTS + (FINISH_REASON,)  # trtllm: assembly.bls._outputs
    trtllm: TrtllmEngine | None = None  # None: one of our sub-models (it reports usage)
    # The model's vocabulary (its config's vocab_size: embedding and logits rows, often padded past the
    # tokenizer's; 0: vocab_size). A TensorRT-LLM engine requires embedding_bias and draft_logits exactly
    # this wide (createNewDecoderRequests.cpp, "The embedding bias shape is not as expected").
    logits_width: int = 0

    @property
    def width(self) -> int:
        return self.logits_width or self.vocab_size

    @property
    def on_cache(self) -> bool:
        """Our torch sub-model: rows, proposals and scores on the request's cache (TensorRT-LLM has no
        such requests)."""
        return self.trtllm is None

    def open(self, key: str) -> TritonLmSession:
        return (ProposingSession if self.on_cache else TritonLmSession)(self, key)

    def _ruled(self, prefix: tuple[int, ...], output_len: int, n: int, temperature: float, top_p: float, seed: int,
               top_k: int, r: LogitRules, min_new: int, **extra: Any) -> LmCall:
        """A generation request under a request's logit rules (what the engine applies itself)."""
        return LmCall(prefix, output_len, n, temperature, top_p, seed, self.end_id, self.pad_id, self.stop_words,
                      top_k=top_k, repetition_penalty=r.repetition_penalty, presence_penalty=r.presence_penalty,
                      frequency_penalty=r.frequency_penalty, min_tokens=min_new if r.end_ids else 0,
                      bad_words=r.bad_words, bias=r.bias, vocab_size=self.width, perf_metrics=self.perf_metrics,
                      **extra)

    async def generate(self, session: TritonLmSession, req: StepRequest) -> GenerateResult:
        # a greedy step's hint (our torch sub-model checks it first; a TensorRT-LLM engine would verify it)
        greedy = req.n == 1 and is_greedy(req.temperature, req.top_k)
        hint = req.draft_tokens[:req.max_new_tokens] if self.on_cache and greedy else ()
        call = self._ruled(req.prefix, req.max_new_tokens, req.n, req.temperature, req.top_p, req.seed, req.top_k,
                           req.rules, req.min_new_tokens, logprobs=req.want_logprobs, draft_ids=hint)
        reply = await self._call(session.key, call)
        if len(reply.sequences) != req.n:
            raise EngineError(f"{self.model} returned {len(reply.sequences)} sequences, asked for {req.n}")
        logps = reply.cum_logprobs or (0.0,) * req.n
        per_token = reply.token_logprobs if req.want_logprobs else None
        finishes = reply.finishes if self.trtllm is None else (None,) * req.n  # None: re-cut here
        if finishes is None:
            raise EngineError(f"{self.model} returned no finish_reason")
        gens = tuple(self._generation(seq, lp, req.max_new_tokens, per_token[i] if per_token else None, finishes[i])
                     for i, (seq, lp) in enumerate(zip(reply.sequences, logps)))
        usage = self.usage(call, reply) + Usage(generated_tokens=sum(len(g.token_ids) for g in gens))
        return GenerateResult(gens, usage)

    async def propose(self, session: TritonLmSession, req: ProposeRequest) -> ProposeResult:
        """One generation request for the whole proposal, its rows as generation_logits."""
        call = self._ruled(req.prefix, req.gamma, 1, req.temperature, req.top_p, req.seed, req.top_k, req.rules,
                           req.min_new_tokens, generation_logits=True, kind="propose")
        reply = await self._call(session.key, call)
        if reply.generation_logits is None or not reply.sequences:
            raise EngineError(f"{self.model} returned no generation_logits")
        rows = self._trim(reply.generation_logits.reshape(-1, reply.generation_logits.shape[-1]))
        tokens = reply.sequences[0]
        if len(rows) == len(tokens) + 1:  # an engine that leaves the end token out
            tokens += (self.end_id,)
        tokens = tokens[:len(rows)]
        return ProposeResult(tokens, rows[:len(tokens)], self.usage(call, reply) + Usage(generated_tokens=len(tokens)))

    async def logits(self, session: TritonLmSession, req: LogitsRequest) -> LogitsResult:
        if req.count == 1:
            # TensorRT-LLM: the row of a one-token generation; our sub-model: the row itself ("logits")
            call = LmCall(req.ids, 1, generation_logits=True, end_id=self.end_id, perf_metrics=self.perf_metrics,
                          kind="logits")
            reply = await self._call(session.key, call)
            if reply.generation_logits is None:
                raise EngineError(f"{self.model} returned no generation_logits")
            rows = reply.generation_logits.reshape(-1, reply.generation_logits.shape[-1])[:1]
            return LogitsResult(self._trim(rows), self.usage(call, reply))
        if self.on_cache:  # the last count - 1 ids as draft tokens: count rows from one pass on the cache
            split = len(req.ids) - req.count + 1
            call = LmCall(req.ids[:split], req.count, end_id=self.end_id, generation_logits=True,
                          draft_ids=req.ids[split:], kind="logits")
            reply = await self._call(session.key, call)
            if reply.generation_logits is None:
                raise EngineError(f"{self.model} returned no generation_logits")
            rows = reply.generation_logits.reshape(-1, reply.generation_logits.shape[-1])
            return LogitsResult(self._trim(rows[-req.count:]), self.usage(call, reply))
        rows, usage = await self._context_logits(session.key, req.ids)
        return LogitsResult(self._trim(rows[-req.count:]), usage)

    async def score(self, session: TritonLmSession, req: ScoreRequest) -> ScoreResult:
        if self.on_cache:  # every continuation in one request
            call = LmCall(req.prefix, 1, temperature=req.temperature, end_id=self.end_id,
                          continuations=req.continuations, kind="score")
            reply = await self._call(session.key, call)
            if reply.cum_logprobs is None or len(reply.cum_logprobs) != len(req.continuations):
                raise EngineError(f"{self.model} returned no cum_log_probs for {len(req.continuations)} continuations")
            return ScoreResult(reply.cum_logprobs, self.usage(call, reply))
        scored = [(i, c) for i, c in enumerate(req.continuations) if c]
        replies = await asyncio.gather(*(self._context_logits(session.key, req.prefix + c) for _, c in scored))
        logprobs = [0.0] * len(req.continuations)
        start = len(req.prefix) - 1
        for (i, cont), (logits, _) in zip(scored, replies):
            logprobs[i] = sequence_logprob(self._trim(logits[start:start + len(cont)]), cont, req.temperature)
        return ScoreResult(tuple(logprobs), sum((u for _, u in replies), Usage()))

    async def _context_logits(self, key: str, ids: tuple[int, ...]) -> tuple[np.ndarray, Usage]:
        call = LmCall(ids, 1, context_logits=True, end_id=self.end_id, perf_metrics=self.perf_metrics)
        reply = await self._call(key, call)
        if reply.context_logits is None or reply.context_logits.shape[0] != len(ids):
            raise EngineError(f"{self.model} returned no context_logits for {len(ids)} input tokens")
        return reply.context_logits, self.usage(call, reply)

    async def _call(self, key: str, call: LmCall) -> LmReply:
        responses = await self.transport.infer(self.model, lm_request_tensors(call), self.outputs, key, call.kind)
        return parse_lm_reply(responses)

    @property
    def perf_metrics(self) -> bool:
        """Ask for TensorRT-LLM's KV-cache figures (only an engine of known block size needs them)."""
        return self.trtllm is not None and self.trtllm.tokens_per_block > 0

    def usage(self, call: LmCall, reply: LmReply, draft_len: int = 0, accepted: int = 0) -> Usage:
        """What the sub-model ran for `call`: as it reported, or derived from a TensorRT-LLM reply."""
        if reply.usage is not None:
            return reply.usage
        if self.trtllm is None:
            raise EngineError(f"{self.model} reported no usage ({', '.join(USAGE_OUTPUTS)})")
        return trtllm_usage(call, reply, self.trtllm.tokens_per_block, draft_len, accepted)

    def _generation(self, seq: tuple[int, ...], logprob: float, cap: int,
                    token_logprobs: tuple[float, ...] | None = None, finish: Finish | None = None) -> Generation:
        """One step from a returned sequence: as the sub-model cut it (`finish` given), or re-cut."""
        if finish is not None:
            ids = seq[:-1] if finish == Finish.EOS and seq and seq[-1] == self.end_id else seq
        else:
            ids, finish = self._recut(seq, cap)
        if token_logprobs is None:
            return Generation(ids[:cap], finish, logprob)
        kept = token_logprobs[:len(ids[:cap])]  # what the cut dropped (an end token, an overshoot) is not ours
        return Generation(ids[:cap], finish, float(sum(kept)), tuple(kept))

    def _recut(self, seq: tuple[int, ...], cap: int) -> tuple[tuple[int, ...], Finish]:
        ids, end = self.segmenter.cut(seq)
        if end == "step":
            return ids, Finish.STEP
        if end == "eos" or len(ids) < cap:  # stopped early without a delimiter: it hit end_id
            return ids, Finish.EOS
        return ids, Finish.LENGTH

    def _trim(self, rows: np.ndarray) -> np.ndarray:
        """Engines may pad the vocabulary (TensorRT-LLM does); ids past the tokenizer never occur."""
        return np.ascontiguousarray(rows[..., : self.vocab_size], dtype=np.float32)


@dataclass(slots=True)
class TritonLmSession:
    """One request on a TritonLM: the key the sub-model caches it by."""

    lm: TritonLM
    key: str

    async def generate(self, req: StepRequest) -> GenerateResult:
        return await self.lm.generate(self, req)

    async def score(self, req: ScoreRequest) -> ScoreResult:
        return await self.lm.score(self, req)

    async def logits(self, req: LogitsRequest) -> LogitsResult:
        return await self.lm.logits(self, req)

    def close(self) -> None:
        """Tell our torch sub-model the request ended (with its next sub-request), so it frees the
        request's cache; a TensorRT-LLM engine holds nothing per request between calls."""
        if self.lm.on_cache:
            self.lm.transport.release(self.lm.model, self.key)


@dataclass(slots=True)
class ProposingSession(TritonLmSession):
    """A request on a TritonLM over the torch sub-model: also a DraftProposer."""

    async def propose(self, req: ProposeRequest) -> ProposeResult:
        return await self.lm.propose(self, req)

