"""The `torch` backend's sub-models: the PyTorch engine behind the BLS tensor contract.

Each handler turns one request's tensors (`runtime.engines.triton.contract`) into an engine
call and the result back into tensors; `triton_repo/torch_*/1/model.py` only moves tensors.
Requests run as concurrent coroutines, so the engine's ForwardScheduler batches them in flight.
Each BLS request id gets an engine session (its KV cache) from an LRU of sessions: the BLS
cannot tell the sub-model that a request ended, so an abandoned request's session is closed
when it is evicted instead of leaking.

What a request is (`LmSubModel._route`), on TensorRT-LLM's names, all on the request's cache:
  draft_input_ids, request_output_len = len(draft) + 1, no stop words: verification (TensorRT-LLM's
      draft_tokens_external target): accepted tokens + the corrected or bonus token;
  draft_input_ids on a step's generation request (it has stop words): a greedy step that checks
      them first, then decodes on to the step end (TensorRT-LLM verifies, then generates); ignored
      when sampling;
  draft_input_ids + return_generation_logits: the logits rows after input_ids and each draft token;
  return_generation_logits alone: request_output_len tokens (a token-level proposal) and their rows;
  continuation_ids (ours): the log-prob of each continuation, in one request;
  return_context_logits: every row, on a throwaway cache (no BLS hot path sends it).
Differences from TensorRT-LLM's `tensorrt_llm`, invisible to the BLS: generation stops at the
pipeline's step delimiter and the tokenizer's EOS ids (the same rules the BLS encodes in
`stop_words_list` / `end_id`), and so do proposals; a verification stops after the corrected
token; `output_log_probs` gives 0 for an appended end token. Every reply also carries the engine's
`Usage` for the request (prefill_tokens, decode_tokens, forwards), and a generation reply each
sequence's `finish_reason`: the engine cuts the step (runtime.core.segment.TokenStep), the BLS
takes the cut as it is.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.config import PipelineConfig, load_config
from runtime.core.errors import ConfigError, EngineError
from runtime.core.sampling import softmax
from runtime.core.segment import StepSegmenter
from runtime.core.types import (
    Finish,
    LogitRules,
    LogitsRequest,
    ProposeRequest,
    ScoreRequest,
    StepRequest,
    VerifyRequest,
)
from runtime.engines.triton.contract import (
    LmCall,
    LmReply,
    lm_reply_tensors,
    parse_lm_request,
    parse_prm_request,
    prm_reply_tensors,
)

log = logging.getLogger(__name__)


class _Opens(Protocol):
    def open(self, key: str) -> Any: ...


@dataclass(slots=True)
class KeyLru:
    """The sessions of the most recently used request keys; an evicted session is closed."""

    engine: _Opens
    bound: int
    _sessions: OrderedDict[str, Any] = field(default_factory=OrderedDict)

    def session(self, key: str) -> Any:
        """The key's session, opened on first use, now the most recently used."""
        session = self._sessions.pop(key, None)
        self._sessions[key] = session if session is not None else self.engine.open(key)
        while len(self._sessions) > self.bound:
            self._sessions.popitem(last=False)[1].close()
        return self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)


class _Counters(Protocol):
    def observe(self, forwards: int, rows: int) -> None: ...


def _report(engine: object, counters: _Counters | None) -> None:
    if counters is not None:
        scheduler = engine.scheduler  # type: ignore[attr-defined]
        counters.observe(scheduler.forwards, scheduler.batched_rows)


@dataclass(slots=True)
class LmSubModel:
    lm: object  # runtime.engines.torch.generator.TorchLM (typed loosely: torch imports stay lazy)
    lru: KeyLru
    counters: _Counters | None = None  # e.g. runtime.in_server.metrics.EngineMetrics

    async def handle(self, tensors: Mapping[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
        call = parse_lm_request(tensors)
        reply = await self._route(call)(call, self.lru.session(key))
        _report(self.lm, self.counters)
        if not call.exclude_input:
            per_token = (None if reply.token_logprobs is None else
                         tuple((0.0,) * len(call.ids) + row for row in reply.token_logprobs))
            reply = dataclasses.replace(reply, sequences=tuple(call.ids + s for s in reply.sequences),
                                        token_logprobs=per_token)
        return lm_reply_tensors(reply, call.pad_id)

    def _route(self, call: LmCall) -> Callable[[LmCall, Any], Awaitable[LmReply]]:
        """Which engine call a request is, all on the request's own session (its cache)."""
        if call.continuations:
            return self._score
        if call.context_logits:
            return self._context_logits
        if call.draft_ids and call.generation_logits:
            return self._rows
        if call.draft_ids and call.output_len == len(call.draft_ids) + 1 and not call.stop_words:
            return self._verify
        if call.generation_logits:
            return self._propose
        return self._generate  # draft tokens on a step's request (stop words): a hint (StepRequest.draft_tokens)

    def _rules(self, call: LmCall) -> LogitRules:
        ends = self.lm.segmenter.eos_ids if call.min_tokens > 0 else frozenset()  # type: ignore[attr-defined]
        return LogitRules(call.repetition_penalty, call.presence_penalty, call.frequency_penalty, call.bias,
                          call.bad_words, frozenset(ends))

    async def _generate(self, call: LmCall, session: Any) -> LmReply:
        req = StepRequest(call.ids, call.n, call.temperature, call.top_p, call.output_len,
                          call.seed % (2**63), call.logprobs, call.top_k, self._rules(call), call.min_tokens,
                          call.draft_ids)
        result = await session.generate(req)
        ended = [g.finish == Finish.EOS for g in result.generations]
        seqs = tuple(g.token_ids + ((call.end_id,) if end else ()) for g, end in zip(result.generations, ended))
        finishes = tuple(g.finish for g in result.generations)
        if not call.logprobs:
            return LmReply(seqs, usage=result.usage, finishes=finishes)
        # the end token is not part of the step, nor of its log-prob (0 keeps the rows aligned)
        per_token = tuple(g.token_logprobs + ((0.0,) if end else ()) for g, end in zip(result.generations, ended))
        return LmReply(seqs, tuple(g.logprob for g in result.generations), token_logprobs=per_token,
                       usage=result.usage, finishes=finishes)

    async def _verify(self, call: LmCall, session: Any) -> LmReply:
        """Speculative sampling of the draft tokens on the request's cache (TorchLM.verify, the
        core's rule): the accepted tokens and the corrected or bonus token, as TensorRT-LLM returns
        them. The draft distributions are softmax(draft_logits), or the draft tokens themselves
        (one-hot) when none are sent (greedy)."""
        vocab = self.lm.vocab_size  # type: ignore[attr-defined]
        if call.draft_logits is not None:
            probs = softmax(call.draft_logits[:, :vocab])
        else:
            probs = np.zeros((len(call.draft_ids), vocab))
            probs[np.arange(len(call.draft_ids)), list(call.draft_ids)] = 1.0
        req = VerifyRequest(call.ids, call.draft_ids, probs, call.temperature, call.top_p, call.seed % (2**63),
                            call.top_k, self._rules(call), call.min_tokens)
        result = await session.verify(req)
        if not call.logprobs:
            return LmReply((result.tokens,), usage=result.usage)
        return LmReply((result.tokens,), (float(sum(result.logprobs)),), token_logprobs=(result.logprobs,),
                       usage=result.usage)

    async def _propose(self, call: LmCall, session: Any) -> LmReply:
        """request_output_len tokens with each one's raw logits row (generation_logits), drawn as a
        step's tokens are, ending after a step end or an end token (TorchLM.propose)."""
        if call.n != 1:
            raise EngineError("num_return_sequences: generation logits are returned for one sequence")
        req = ProposeRequest(call.ids, call.output_len, call.temperature, call.top_p, call.seed % (2**63),
                             call.top_k, self._rules(call), call.min_tokens)
        result = await session.propose(req)
        return LmReply((result.tokens,), generation_logits=result.logits[None], usage=result.usage)

    async def _rows(self, call: LmCall, session: Any) -> LmReply:
        """The raw logits after input_ids and after each draft token (len(draft) + 1 rows) from one
        pass on the request's cache, as generation_logits; output_ids holds the last row's argmax."""
        ids = call.ids + call.draft_ids
        result = await session.logits(LogitsRequest(ids, len(call.draft_ids) + 1))
        return LmReply(((int(np.argmax(result.logits[-1])),),), generation_logits=result.logits[None],
                       usage=result.usage)

    async def _score(self, call: LmCall, session: Any) -> LmReply:
        """cum_log_probs of each continuation after input_ids at the request's temperature (0:
        untempered), all in one engine call on the request's cache (TorchLM.score forks it)."""
        result = await session.score(ScoreRequest(call.ids, call.continuations, call.temperature))
        return LmReply(call.continuations, result.logprobs, usage=result.usage)

    async def _context_logits(self, call: LmCall, session: Any) -> LmReply:
        """TensorRT-LLM's return_context_logits, for the contract's other clients: the BLS sends it
        on no hot path to this sub-model (it verifies, scores and reads rows on the cache instead)."""
        if call.output_len != 1 or call.n != 1:
            raise EngineError("request_output_len: logits are returned for one output token and one sequence")
        # every row is needed, so nothing cached helps; a throwaway session keeps the request's cache as it is
        scratch = self.lm.open("context-logits")  # type: ignore[attr-defined]
        try:
            result = await scratch.logits(LogitsRequest(call.ids, len(call.ids)))
        finally:
            scratch.close()
        rows = result.logits
        return LmReply(((int(np.argmax(rows[-1])),),), None, rows,
                       rows[-1][None, None] if call.generation_logits else None, usage=result.usage)


@dataclass(slots=True)
class PrmSubModel:
    prm: object  # runtime.engines.torch.prm.TorchPRM
    lru: KeyLru
    counters: _Counters | None = None

    async def handle(self, tensors: Mapping[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
        call = parse_prm_request(tensors)
        if not call.keys:
            rewards, usage = await self.lru.session(key).rewards_at(call.rows, call.positions)
            _report(self.prm, self.counters)
            return prm_reply_tensors(rewards, usage)
        # rows of several BLS requests: each key's rows on its own session, all in one forward
        groups = call.groups()
        if len(groups) > self.lru.bound:
            raise EngineError(f"row_keys: {len(groups)} requests in one call, more than the {self.lru.bound} "
                              f"sessions kept (cache_requests)")
        sessions = [self.lru.session(k) for k in groups]
        scored = await asyncio.gather(*(
            session.rewards_at([call.rows[i] for i in rows], [call.positions[i] for i in rows])
            for session, rows in zip(sessions, groups.values())))
        _report(self.prm, self.counters)
        per_row: list[list[float]] = [[] for _ in call.rows]
        for rows, (rewards, _) in zip(groups.values(), scored):
            for i, reward in zip(rows, rewards):
                per_row[i] = reward
        return prm_reply_tensors(per_row, call.row_usage([usage for _, usage in scored]))


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    return load_config(Path(path))


def build_lm_submodel(cfg: PipelineConfig, role: str, cache_requests: int, threads: int = 0) -> LmSubModel:
    """The draft or target engine of a pipeline config, as a sub-model (threads 0: the config's)."""
    from runtime.engines.hf import check_folder, load_tokenizer
    from runtime.engines.torch.factory import build_lm, set_threads

    model = getattr(cfg, role, None)
    if model is None:
        raise ConfigError(f"models.{role}", f"the pipeline config has no {role} model")
    set_threads(threads or cfg.engine.torch_threads)
    tok = load_tokenizer(check_folder(model.path, f"models.{role}.path"), f"models.{role}.path")
    segmenter = StepSegmenter(tok.piece, tok.eos_ids, cfg.step_delimiter)
    lm = build_lm(role, model.path, model.dtype, model.device, segmenter, tok, cfg.engine.max_batch_rows,
                  cfg.engine.lean_forward)
    return LmSubModel(lm, KeyLru(lm, cache_requests))


def build_prm_submodel(cfg: PipelineConfig, cache_requests: int, threads: int = 0) -> PrmSubModel:
    from runtime.assembly.torch import prm_for
    from runtime.engines.torch.factory import set_threads

    if cfg.prm is None:
        raise ConfigError("models.prm", "the pipeline config has no PRM")
    set_threads(threads or cfg.engine.torch_threads)
    prm = prm_for(cfg.prm, cfg.engine, with_format=False)
    return PrmSubModel(prm, KeyLru(prm, cache_requests))
