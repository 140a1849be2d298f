"""What a sub-model ran for one request: reported by our sub-models, derived for TensorRT-LLM.

The torch sub-models and the trtllm_prm wrapper report it in their replies (`LmReply.usage`,
contract.USAGE_OUTPUTS): the engine that ran the tokens counted them, so the BLS keeps no copy
of what each sub-model cached. TensorRT-LLM's `tensorrt_llm` model reports no token counts;
`trtllm_usage` derives them from what it returns, and nothing else is kept across requests:
- prefill = input length - reused tokens (+ the draft tokens of native verification, which run in
  the same context pass), reused = kv_cache_reused_blocks x tokens_per_block (the request asked for
  return_perf_metrics), at most input length - 1: TensorRT-LLM never reuses the last input token,
  whose logits it needs. Exact when whole blocks match; a partly matched last block
  (enable_partial_reuse) counts as a whole one, so prefill is then short by < tokens_per_block.
  Without the figure (unknown block size, or an engine that does not return it) no reuse is
  assumed: the input length, an upper bound. A context pass of one token is a decode token, as
  in the torch engine.
- decode = per sequence, the tokens it drew after those of the context pass (1, or accepted + 1
  when verifying drafts); drawn = returned, plus the end token when the sequence stopped early
  without a stop word or its end token (TensorRT-LLM may leave end_id out of output_ids).
- forwards = the context pass + the longest sequence's decode passes (n sequences decode side by side).
"""
from __future__ import annotations

from runtime.core.types import Usage
from runtime.engines.triton.contract import LmCall, LmReply


def trtllm_usage(call: LmCall, reply: LmReply, tokens_per_block: int, draft_len: int = 0,
                 accepted: int = 0) -> Usage:
    reused = min((reply.reused_blocks or 0) * tokens_per_block, len(call.ids) - 1)
    context = len(call.ids) - reused + draft_len
    first = accepted + 1 if draft_len else 1
    decodes = [max(drawn(call, seq) - first, 0) for seq in reply.sequences] or [0]
    ran = Usage(decode_tokens=context) if context == 1 else Usage(prefill_tokens=context)
    return ran + Usage(decode_tokens=sum(decodes), forwards=1 + max(decodes))


def drawn(call: LmCall, seq: tuple[int, ...]) -> int:
    """Tokens a TensorRT-LLM sequence drew: those returned, and an end token it left out."""
    stopped = any(len(w) <= len(seq) and seq[len(seq) - len(w):] == w for w in call.stop_words)
    ended = bool(seq) and seq[-1] == call.end_id
    return len(seq) if stopped or ended or len(seq) >= call.output_len else len(seq) + 1
