"""The `torch` backend's sub-models: the PyTorch engine behind the BLS tensor contract.

Each handler turns one request's tensors (`runtime.engines.triton.contract`) into an engine
call and the result back into tensors; `triton_repo/torch_*/1/model.py` only moves tensors.
Requests run as concurrent coroutines, so the engine's ForwardScheduler batches them in flight.
Each BLS request (the sub-request's cache key) gets an engine session (its KV cache) from a
`SessionTable`: a session is never closed while a call on it is in flight; the BLS says which
requests ended with its next sub-request (runtime.engines.triton.transport.RELEASED_KEYS) and
their sessions close once idle; past `cache_requests` sessions the least recently used idle ones
close (requests whose end was never heard, e.g. after a BLS restart).

What a request is, the BLS says (`request_kind`, runtime.engines.triton.contract.REQUEST_KINDS),
all on the request's cache:
  generate: a step; draft_input_ids on it are a greedy step's hint, checked first, then decoding
      goes on to the step end (TensorRT-LLM verifies, then generates); ignored when sampling;
      with return_context_logits (other clients; no BLS hot path sends it): every row, on a
      throwaway cache;
  verify: speculative verification of draft_input_ids (TensorRT-LLM's draft_tokens_external
      target): accepted tokens + the corrected or bonus token;
  logits: the raw rows after input_ids and after each draft token (generation_logits);
  propose: request_output_len tokens (a token-level proposal) and their rows;
  score: the log-prob of each continuation (continuation_ids, ours), in one request.
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
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.config import PipelineConfig, load_config
from runtime.core.errors import ConfigError, EngineError
from runtime.core.sampling import softmax
from runtime.core.segment import StepSegmenter
from runtime.core.stopping import held_end_ids
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
    REQUEST_KINDS,
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
class _Entry:
    session: Any
    users: int = 0  # calls in flight on it
    ended: bool = False  # the BLS said its request ended: close once no call uses it


@dataclass(slots=True)
class SessionTable:
    """Engine sessions by request key, reference-counted: `use` holds one for a call; a session
    closes when its request ended (`release`) and no call uses it, or, past `bound` sessions, when
    it is the least recently used idle one. Sessions in use are never closed, so while every one is
    busy the table holds more than `bound` (the BLS's admission control keeps that from happening)."""

    engine: _Opens
    bound: int
    _entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)

    @contextmanager
    def use(self, key: str) -> Iterator[Any]:
        """The key's session for one call (opened on first use, now the most recently used)."""
        entry = self._entries.pop(key, None) or _Entry(self.engine.open(key))
        self._entries[key] = entry
        entry.users += 1
        try:
            self._evict()
            yield entry.session
        finally:
            entry.users -= 1
            if entry.ended and not entry.users:
                self._close(key)

    @contextmanager
    def use_all(self, keys: Sequence[str]) -> Iterator[list[Any]]:
        with ExitStack() as stack:
            yield [stack.enter_context(self.use(key)) for key in keys]

    def release(self, keys: Sequence[str]) -> None:
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None:
                entry.ended = True
                if not entry.users:
                    self._close(key)

    def in_use(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.users > 0

    def _evict(self) -> None:
        idle = [key for key, entry in self._entries.items() if not entry.users]  # least recently used first
        for key in idle[:max(0, len(self._entries) - self.bound)]:
            self._close(key)

    def _close(self, key: str) -> None:
        self._entries.pop(key).session.close()

    def __len__(self) -> int:
        return len(self._entries)


class _Counters(Protocol):
    def observe(self, forwards: int, rows: int) -> None: ...


def _report(engine: object, counters: _Counters | None) -> None:
    if counters is not None:
        scheduler = engine.scheduler  # type: ignore[attr-defined]
        counters.observe(scheduler.forwards, scheduler.batched_rows)


@dataclass(slots=True)
class LmSubModel:
    lm: object  # runtime.engines.torch.generator.TorchLM (typed loosely: torch imports stay lazy)
    sessions: SessionTable
    counters: _Counters | None = None  # e.g. runtime.in_server.metrics.EngineMetrics

    def release(self, keys: Sequence[str]) -> None:
        self.sessions.release(keys)

    async def handle(self, tensors: Mapping[str, np.ndarray], key: str, kind: str = "generate") -> dict[str, np.ndarray]:
        call = parse_lm_request(tensors)
        with self.sessions.use(key) as session:
            reply = await self._route(kind, call)(call, session)
        _report(self.lm, self.counters)
        if not call.exclude_input:
            per_token = (None if reply.token_logprobs is None else
                         tuple((0.0,) * len(call.ids) + row for row in reply.token_logprobs))
            reply = dataclasses.replace(reply, sequences=tuple(call.ids + s for s in reply.sequences),
                                        token_logprobs=per_token)
        return lm_reply_tensors(reply, call.pad_id)

    def _route(self, kind: str, call: LmCall) -> Callable[[LmCall, Any], Awaitable[LmReply]]:
        """The engine call of a request kind, all on the request's own session (its cache)."""
        routes = {"generate": self._context_logits if call.context_logits else self._generate,
                  "verify": self._verify, "logits": self._rows, "propose": self._propose, "score": self._score}
        route = routes.get(kind)
        if route is None:
            raise EngineError(f"request_kind: unknown kind {kind!r}; expected one of {', '.join(REQUEST_KINDS)}")
        return route

    def _rules(self, call: LmCall) -> LogitRules:
        eos_ids = self.lm.segmenter.eos_ids  # type: ignore[attr-defined]
        return LogitRules(call.repetition_penalty, call.presence_penalty, call.frequency_penalty, call.bias,
                          call.bad_words, held_end_ids(call.min_tokens, eos_ids))

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
    sessions: SessionTable
    counters: _Counters | None = None

    def release(self, keys: Sequence[str]) -> None:
        self.sessions.release(keys)

    async def handle(self, tensors: Mapping[str, np.ndarray], key: str, kind: str = "generate") -> dict[str, np.ndarray]:
        call = parse_prm_request(tensors)
        if not call.keys:
            with self.sessions.use(key) as session:
                rewards, usage = await session.rewards_at(call.rows, call.positions)
            _report(self.prm, self.counters)
            return prm_reply_tensors(rewards, usage)
        # rows of several BLS requests: each key's rows on its own session, all in one forward
        groups = call.groups()
        with self.sessions.use_all(list(groups)) as sessions:
            scored = await asyncio.gather(*(
                session.rewards_at([call.rows[i] for i in rows], [call.positions[i] for i in rows])
                for session, rows in zip(sessions, groups.values())))
        _report(self.prm, self.counters)
        per_row: list[list[float]] = [[] for _ in call.rows]
        for rows, (rewards, _) in zip(groups.values(), scored):
            for i, reward in zip(rows, rewards):
                per_row[i] = reward
        return prm_reply_tensors(per_row, call.row_usage([usage for _, usage in scored]))


def build_lm_submodel(cfg: PipelineConfig, role: str, cache_requests: int, threads: int = 0) -> LmSubModel:
    """The draft or target engine of a pipeline config, as a sub-model (threads 0: the config's)."""
    from runtime.engines.hf import check_folder, load_tokenizer
    from runtime.engines.torch.factory import build_lm, set_threads

    model = getattr(cfg, role, None)
    if model is None:
        raise ConfigError(f"models.{role}", f"the pipeline config has no {role} model")
    set_threads(threads or cfg.engine.torch_threads)
    tok = load_tokenizer(check_folder(model.folder, f"models.{role}.path"), f"models.{role}.path")
    segmenter = StepSegmenter(tok.piece, tok.eos_ids, cfg.step_delimiter)
    lm = build_lm(role, model.folder, model.dtype, model.device, segmenter, tok, cfg.engine.max_batch_rows,
                  cfg.engine.lean_forward, cfg.engine.kv_cache_mb)
    return LmSubModel(lm, SessionTable(lm, cache_requests))


def build_prm_submodel(cfg: PipelineConfig, cache_requests: int, threads: int = 0) -> PrmSubModel:
    from runtime.assembly.torch import prm_for
    from runtime.engines.torch.factory import set_threads

    if cfg.prm is None:
        raise ConfigError("models.prm", "the pipeline config has no PRM")
    set_threads(threads or cfg.engine.torch_threads)
    prm = prm_for(cfg.prm, cfg.engine, with_format=False)
    return PrmSubModel(prm, SessionTable(prm, cache_requests))
