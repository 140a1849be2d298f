"""Native token verification: the TokenVerifier used by sd on a TensorRT-LLM target and on the torch sub-model.

The target engine is built with --speculative_decoding_mode draft_tokens_external and
--max_draft_len G. One request carries the prefix as input_ids and the draft tokens as
draft_input_ids, with request_output_len = len(draft) + 1. The engine runs prefix + draft in one
pass, accepts draft tokens while they agree with it (greedy: token match; sampling with
draft_logits: speculative sampling against the draft distributions), then emits one corrected or
bonus token. TensorRT-LLM does not report how many it accepted; it is the longest common prefix of
draft and output, which is exact: a corrected token never equals the rejected draft token (greedy:
it is the argmax the draft differed from; sampling: the residual max(0, p - q) is 0 where q > p).

Two engine behaviours the sources leave open are handled:
- after a rejection the request may keep decoding up to request_output_len: the output is cut
  after the first token that is not an accepted draft token (the rest is target decoding, billed
  as decode tokens);
- the end token may be left out of the output: an output that stops right after the accepted
  tokens ended on end_id, which is appended (and counted as accepted when the draft proposed it).
Drafts longer than the engine's max_draft_len are cut to it (still lossless: a shorter proposal).
The torch sub-model verifies the same request on the request's cache with the core's rule
(runtime.core.verify.verify_rows: the same result as the reference verifier for the same seed) and
stops after the corrected token; it reports output_log_probs, which become the result's log-probs.
At temperature > 0, draft_logits = log q of the processed draft distributions q, padded to the
engine vocabulary; whether the engine re-applies temperature to them is unverified (see
docs/production_gpu.md). At temperature 0 the result equals the core's reference rule.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.core.types import ProposeRequest, ProposeResult, VerifyRequest, VerifyResult
from runtime.engines.triton.contract import LmCall, draft_tensors, lm_request_tensors, parse_lm_reply
from runtime.engines.triton.lm import TritonLM, TritonLmSession

NO_PROBABILITY = -1.0e4  # draft logit of a token the draft could not sample (or a padded vocabulary id)


def accepted_tokens(draft: tuple[int, ...], output: tuple[int, ...], end_id: int) -> tuple[tuple[int, ...], int]:
    """(accepted draft tokens + the corrected or bonus token, number accepted) from an engine output."""
    k = 0
    while k < len(draft) and k < len(output) and output[k] == draft[k]:
        k += 1
    if k < len(output):
        return output[:k + 1], k
    # the engine stopped right after the accepted tokens: it ended on end_id without returning it
    accepted = k + 1 if k < len(draft) and draft[k] == end_id else k
    return output[:k] + (end_id,), accepted


def draft_logits(probs: np.ndarray, width: int) -> np.ndarray:
    """log q per draft position, [G, width]: softmax of these rows is q again."""
    q = np.asarray(probs, dtype=np.float64)
    out = np.full((q.shape[0], max(width, q.shape[1])), NO_PROBABILITY, dtype=np.float32)
    with np.errstate(divide="ignore"):
        out[:, :q.shape[1]] = np.where(q > 0.0, np.log(q), NO_PROBABILITY)
    return out


@dataclass(slots=True)
class NativeVerifyLM(TritonLM):
    """A target LM whose engine verifies draft tokens (its sessions are runtime.core.protocols.TokenVerifier)."""

    max_draft_len: int = 0

    def open(self, key: str) -> NativeVerifySession:
        return (ProposingVerifySession if self.on_cache else NativeVerifySession)(self, key)

    async def verify(self, session: TritonLmSession, req: VerifyRequest) -> VerifyResult:
        # the engine cuts drafts that do not fit its prompt limit (max_seq_len - 1) but not their logits,
        # and then refuses the request (llmRequest.cpp validate; "Incompatible buffer sizes"): cut both here
        room = max(0, self.max_len - 1 - len(req.prefix))
        draft = req.draft_tokens[:min(self.max_draft_len, room)]
        r = req.rules  # the engine applies the request's rules and top-k to its own rows
        call = LmCall(req.prefix, len(draft) + 1, 1, req.temperature, req.top_p, req.seed, self.end_id, self.pad_id,
                      top_k=req.top_k, repetition_penalty=r.repetition_penalty, presence_penalty=r.presence_penalty,
                      frequency_penalty=r.frequency_penalty, min_tokens=req.min_new_tokens if r.end_ids else 0,
                      bad_words=r.bad_words, bias=r.bias, vocab_size=self.width, perf_metrics=self.perf_metrics,
                      logprobs=True, kind="verify")
        tensors = lm_request_tensors(call)
        if draft:
            sampled = req.temperature > 0.0
            tensors.update(draft_tensors(draft, draft_logits(req.draft_probs[:len(draft)], self.width)
                                         if sampled else None))
        responses = await self.transport.infer(self.model, tensors, self.outputs, session.key, call.kind)
        reply = parse_lm_reply(responses)
        output = reply.sequences[0] if reply.sequences else ()
        tokens, accepted = accepted_tokens(draft, output, self.end_id)
        lps = reply.token_logprobs[0] if reply.token_logprobs else ()
        # decoding past a rejection (discarded) is billed as decode tokens
        return VerifyResult(tokens, accepted, self.usage(call, reply, len(draft), accepted),
                            lps[:len(tokens)] if len(lps) >= len(tokens) else ())


@dataclass(slots=True)
class NativeVerifySession(TritonLmSession):
    """A request on a NativeVerifyLM: a TokenVerifier session."""

    async def verify(self, req: VerifyRequest) -> VerifyResult:
        assert isinstance(self.lm, NativeVerifyLM)
        return await self.lm.verify(self, req)


@dataclass(slots=True)
class ProposingVerifySession(NativeVerifySession):
    """A target request on the torch sub-model: a TokenVerifier and a DraftProposer (CoS's target proposes)."""

    async def propose(self, req: ProposeRequest) -> ProposeResult:
        return await self.lm.propose(self, req)
