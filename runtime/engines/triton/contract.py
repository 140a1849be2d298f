"""The tensor contract between the `rsd` BLS and its sub-models, in numpy (no Triton, no torch).

Draft and target speak TensorRT-LLM's `tensorrt_llm` names and shapes (batch dim first), so the
BLS cannot tell a `torch` sub-model from a `tensorrt_llm` one:
  inputs  input_ids INT32 [1, L], input_lengths INT32 [1, 1], request_output_len INT32 [1, 1],
          end_id / pad_id INT32 [1, 1], stop_words_list INT32 [1, 2, K], temperature FP32 [1, 1],
          runtime_top_k INT32 [1, 1] (0 = off, 1 = greedy), runtime_top_p FP32 [1, 1], and when
          they apply repetition_penalty / presence_penalty / frequency_penalty FP32 [1, 1],
          min_tokens INT32 [1, 1], bad_words_list INT32 [1, 2, K], embedding_bias FP32 [1, V],
          seed UINT64 [1, 1], num_return_sequences INT32 [1, 1], and BOOL [1, 1] flags
          return_log_probs, return_context_logits, return_generation_logits, exclude_input_in_output,
          return_perf_metrics (TensorRT-LLM engines only);
          for native verification draft_input_ids INT32 [1, G] (+ draft_logits FP32 [1, G, V]);
          the torch sub-model's one extension: continuation_ids INT32 [1, n, K] with
          continuation_lengths INT32 [1, n] (score n continuations of input_ids in one request;
          cum_log_probs [1, n] answers)
  outputs output_ids INT32 [1, n, len], sequence_length INT32 [1, n], cum_log_probs FP32 [1, n],
          output_log_probs FP32 [1, n, len],
          context_logits FP32 [1, L, V], generation_logits FP32 [1, n, len, V], sequence_index INT32 [1, 1],
          kv_cache_reused_blocks INT32 [1, 1] (TensorRT-LLM, with return_perf_metrics)
TensorRT-LLM may answer n sequences as n responses tagged `sequence_index`; `parse_lm_reply`
merges them. The PRM contract is ours (TensorRT-LLM has no reward model type):
  inputs  input_ids INT32 [B, L] (right-padded), input_lengths INT32 [B],
          step_positions INT32 [B, P] (indices into each row, padded with -1),
          optional row_keys BYTES [B]: the BLS request each row belongs to (its cache key), when
          one PRM request carries the rows of several (runtime.engines.triton.prm.PrmBatcher);
          without it every row is the request's own (its request id)
  outputs step_rewards FP32 [B, P] (NaN where padded)
Our own sub-models (torch_lm, torch_prm, trtllm_prm) also report what they ran for the request:
  outputs prefill_tokens, decode_tokens, forwards INT64 [1, 1] (runtime.core.types.Usage);
          [B, 1] on a PRM request with row_keys: each key's usage on its first row, 0 on its others
and torch_lm why each sequence ended, having cut it at the step's end itself:
  outputs finish_reason INT32 [1, n] (TensorRT-LLM's FinishReason codes: 1 end id, 2 stop word, 3 length)
TensorRT-LLM reports no token counts: `runtime.engines.triton.usage` derives them.
Each side builds and parses with the functions here, so the contract lives in one file.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.core.errors import EngineError
from runtime.core.types import Finish, Usage

LM_OUTPUTS = ("output_ids", "sequence_length", "cum_log_probs", "output_log_probs", "context_logits",
              "generation_logits")
USAGE_OUTPUTS = ("prefill_tokens", "decode_tokens", "forwards")  # Usage fields, as our sub-models report them
REUSED_BLOCKS = "kv_cache_reused_blocks"  # TensorRT-LLM's KV blocks a request found cached (return_perf_metrics)
PRM_OUTPUTS = ("step_rewards",) + USAGE_OUTPUTS
FINISH_REASON = "finish_reason"
FINISH_CODES = {Finish.EOS: 1, Finish.STEP: 2, Finish.LENGTH: 3}  # TensorRT-LLM's kEND_ID, kSTOP_WORDS, kLENGTH


# What an LM sub-request is, sent as the request parameter `request_kind` (TensorRT-LLM's backend
# ignores unknown parameters: it reads `request_type` alone, tensorrtllm_backend c2e65b8 utils.h):
#   generate  a step (n sequences; draft_input_ids: a greedy step's hint, checked first)
#   propose   request_output_len tokens of a token-level proposal and the rows they were drawn from
#   verify    speculative verification of draft_input_ids (+ draft_logits): accepted + one token
#   logits    the raw rows after input_ids and after each draft_input_ids token
#   score     cum_log_probs of each continuation_ids row after input_ids
REQUEST_KIND = "request_kind"
REQUEST_KINDS = ("generate", "propose", "verify", "logits", "score")


@dataclass(frozen=True, slots=True)
class LmCall:
    ids: tuple[int, ...]
    output_len: int
    n: int = 1
    temperature: float = 0.0  # 0 = greedy (sent as runtime_top_k = 1)
    top_p: float = 1.0
    seed: int = 0
    end_id: int = 0
    pad_id: int = 0
    stop_words: tuple[tuple[int, ...], ...] = ()
    logprobs: bool = False
    context_logits: bool = False
    generation_logits: bool = False
    exclude_input: bool = True
    top_k: int = 0  # with temperature > 0 (0 = off); greedy is sent as runtime_top_k = 1
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0
    bad_words: tuple[tuple[int, ...], ...] = ()
    bias: tuple[tuple[int, float], ...] = ()  # sent as a dense embedding_bias [1, vocab]
    vocab_size: int = 0  # the width of embedding_bias
    perf_metrics: bool = False  # ask a TensorRT-LLM engine for its KV-cache figures (return_perf_metrics)
    draft_ids: tuple[int, ...] = ()  # draft_input_ids
    draft_logits: np.ndarray | None = field(default=None, compare=False)  # [G, V] (sampled drafts only)
    continuations: tuple[tuple[int, ...], ...] = ()  # [n][K_i] to score after ids
    kind: str = "generate"  # REQUEST_KINDS: travels as the request parameter, not a tensor


@dataclass(frozen=True, slots=True)
class LmReply:
    sequences: tuple[tuple[int, ...], ...]  # [n][len] (end_id included when the engine ended on it)
    cum_logprobs: tuple[float, ...] | None = None  # [n]
    context_logits: np.ndarray | None = None  # [L, V]
    generation_logits: np.ndarray | None = None  # [n, len, V]
    token_logprobs: tuple[tuple[float, ...], ...] | None = None  # [n][len]
    usage: Usage | None = None  # what the sub-model ran for the request, when it reports it (ours do)
    reused_blocks: int | None = None  # TensorRT-LLM's kv_cache_reused_blocks, when asked for
    finishes: tuple[Finish, ...] | None = None  # [n] why each sequence ended (torch_lm reports it)


@dataclass(frozen=True, slots=True)
class PrmCall:
    rows: tuple[tuple[int, ...], ...]  # [B][L_b]
    positions: tuple[tuple[int, ...], ...]  # [B][P_b]
    keys: tuple[str, ...] = ()  # [B] each row's BLS request (row_keys); (): all the request's own

    def groups(self) -> dict[str, list[int]]:
        """Row indices by key, keys in order of first appearance (rows of one key stay in order)."""
        out: dict[str, list[int]] = {}
        for i, key in enumerate(self.keys):
            out.setdefault(key, []).append(i)
        return out

    def row_usage(self, per_key: Sequence[Usage]) -> list[Usage]:
        """Per-row usage for the reply: each key's usage (in `groups` order) on its first row."""
        rows = [Usage() for _ in self.rows]
        for members, usage in zip(self.groups().values(), per_key):
            rows[members[0]] = usage
        return rows


def _scalar(value: float | int | bool, dtype: type) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def lm_request_tensors(call: LmCall) -> dict[str, np.ndarray]:
    greedy = call.temperature == 0.0
    tensors = {
        "input_ids": np.array([call.ids], dtype=np.int32),
        "input_lengths": _scalar(len(call.ids), np.int32),
        "request_output_len": _scalar(call.output_len, np.int32),
        "end_id": _scalar(call.end_id, np.int32),
        "pad_id": _scalar(call.pad_id, np.int32),
        "temperature": _scalar(1.0 if greedy else call.temperature, np.float32),
        "runtime_top_k": _scalar(1 if greedy else call.top_k, np.int32),
        "runtime_top_p": _scalar(call.top_p, np.float32),
        "seed": _scalar(call.seed, np.uint64),
        "num_return_sequences": _scalar(call.n, np.int32),
        "return_log_probs": _scalar(call.logprobs, bool),
        "return_context_logits": _scalar(call.context_logits, bool),
        "return_generation_logits": _scalar(call.generation_logits, bool),
        "exclude_input_in_output": _scalar(call.exclude_input, bool),
    }
    if call.stop_words:
        tensors["stop_words_list"] = stop_words_tensor(call.stop_words)
    if call.perf_metrics:
        tensors["return_perf_metrics"] = _scalar(True, bool)
    tensors.update(_rule_tensors(call))
    if call.draft_ids:
        tensors.update(draft_tensors(call.draft_ids, call.draft_logits))
    if call.continuations:
        tensors.update(continuation_tensors(call.continuations))
    return tensors


def continuation_tensors(continuations: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    width = max((len(c) for c in continuations), default=0)
    ids = np.zeros((1, len(continuations), max(width, 1)), dtype=np.int32)
    for i, cont in enumerate(continuations):
        ids[0, i, :len(cont)] = cont
    return {"continuation_ids": ids,
            "continuation_lengths": np.array([[len(c) for c in continuations]], dtype=np.int32)}


def _rule_tensors(call: LmCall) -> dict[str, np.ndarray]:
    """Only what applies: an engine without these inputs still serves requests that use none."""
    out: dict[str, np.ndarray] = {}
    for name, neutral in (("repetition_penalty", 1.0), ("presence_penalty", 0.0), ("frequency_penalty", 0.0)):
        if getattr(call, name) != neutral:
            out[name] = _scalar(getattr(call, name), np.float32)
    if call.min_tokens > 0:
        out["min_tokens"] = _scalar(call.min_tokens, np.int32)
    if call.bad_words:
        out["bad_words_list"] = stop_words_tensor(call.bad_words)
    if call.bias:
        bias = np.zeros((1, call.vocab_size), dtype=np.float32)
        for token, weight in call.bias:
            bias[0, token] += weight
        out["embedding_bias"] = bias
    return out


def draft_tensors(draft: Sequence[int], draft_logits: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Native verification (an engine built with draft_tokens_external): the draft tokens as
    draft_input_ids [1, G] and, when sampling, their distributions as draft_logits [1, G, V]."""
    out: dict[str, np.ndarray] = {"draft_input_ids": np.array([list(draft)], dtype=np.int32)}
    if draft_logits is not None:
        out["draft_logits"] = np.asarray(draft_logits, dtype=np.float32)[None]
    return out


def stop_words_tensor(words: Sequence[Sequence[int]]) -> np.ndarray:
    """TensorRT-LLM's [1, 2, K] format: row 0 the concatenated ids, row 1 cumulative end offsets
    padded with -1 (as `preprocessing/1/model.py::_to_word_list_format` builds it)."""
    flat = [t for word in words for t in word]
    offsets = np.cumsum([len(w) for w in words]).tolist()
    out = np.zeros((1, 2, max(len(flat), 1)), dtype=np.int32)
    out[0, 0, :len(flat)] = flat
    out[0, 1, :] = -1
    out[0, 1, :len(offsets)] = offsets
    return out


def parse_stop_words(tensor: np.ndarray) -> tuple[tuple[int, ...], ...]:
    flat, offsets = tensor.reshape(2, -1).tolist()
    words, start = [], 0
    for end in offsets:
        if end < 0:
            break
        words.append(tuple(flat[start:end]))
        start = end
    return tuple(words)


def parse_lm_request(t: Mapping[str, np.ndarray]) -> LmCall:
    """Sub-model side: validates shapes and values, naming the tensor at fault."""
    ids = _required(t, "input_ids")
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise EngineError(f"input_ids: expected shape [1, L], got {list(ids.shape)} (one sequence per request)")
    length = _int(t, "input_lengths", ids.shape[1])
    if not 0 < length <= ids.shape[1]:
        raise EngineError(f"input_lengths: {length} is not in 1..{ids.shape[1]}")
    top_k = _int(t, "runtime_top_k", 0)
    if top_k < 0:
        raise EngineError(f"runtime_top_k: must be >= 0, got {top_k}")
    stop, bad, bias = t.get("stop_words_list"), t.get("bad_words_list"), t.get("embedding_bias")
    dense = np.asarray(bias, dtype=np.float64).reshape(-1) if bias is not None else np.zeros(0)
    return LmCall(
        ids=tuple(int(x) for x in ids[0, :length]),
        output_len=_positive(_int(t, "request_output_len", None), "request_output_len"),
        n=_positive(_int(t, "num_return_sequences", 1), "num_return_sequences"),
        temperature=0.0 if top_k == 1 else _float(t, "temperature", 1.0),
        top_p=_float(t, "runtime_top_p", 1.0),
        seed=_int(t, "seed", 0),
        end_id=_int(t, "end_id", 0),
        pad_id=_int(t, "pad_id", 0),
        stop_words=parse_stop_words(stop) if stop is not None else (),
        logprobs=_bool(t, "return_log_probs", False),
        context_logits=_bool(t, "return_context_logits", False),
        generation_logits=_bool(t, "return_generation_logits", False),
        exclude_input=_bool(t, "exclude_input_in_output", False),
        top_k=0 if top_k == 1 else top_k,
        repetition_penalty=_float(t, "repetition_penalty", 1.0),
        presence_penalty=_float(t, "presence_penalty", 0.0),
        frequency_penalty=_float(t, "frequency_penalty", 0.0),
        min_tokens=_int(t, "min_tokens", 0),
        bad_words=parse_stop_words(bad) if bad is not None else (),
        bias=tuple((int(i), float(dense[i])) for i in np.flatnonzero(dense)),
        vocab_size=int(dense.shape[0]),
        **_draft_fields(t),
        continuations=_continuations(t),
    )


def _draft_fields(t: Mapping[str, np.ndarray]) -> dict[str, object]:
    if "draft_input_ids" not in t:
        return {}
    draft = np.asarray(t["draft_input_ids"])
    if draft.ndim != 2 or draft.shape[0] != 1:
        raise EngineError(f"draft_input_ids: expected shape [1, G], got {list(draft.shape)}")
    logits = t.get("draft_logits")
    if logits is not None:
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 3 or logits.shape[:2] != (1, draft.shape[1]):
            raise EngineError(f"draft_logits: expected shape [1, {draft.shape[1]}, V], got {list(logits.shape)}")
        logits = logits[0]
    return {"draft_ids": tuple(int(x) for x in draft[0]), "draft_logits": logits}


def _continuations(t: Mapping[str, np.ndarray]) -> tuple[tuple[int, ...], ...]:
    if "continuation_ids" not in t:
        return ()
    ids, lengths = np.asarray(t["continuation_ids"]), np.asarray(_required(t, "continuation_lengths")).reshape(-1)
    if ids.ndim != 3 or ids.shape[0] != 1 or ids.shape[1] != lengths.shape[0] or (lengths > ids.shape[2]).any() \
            or (lengths < 0).any():
        raise EngineError(f"continuation_ids [1, n, K] and continuation_lengths [1, n] disagree: "
                          f"{list(ids.shape)}, {list(lengths.shape)}")
    return tuple(tuple(int(x) for x in row[:n]) for row, n in zip(ids[0], lengths))


def lm_reply_tensors(reply: LmReply, pad_id: int) -> dict[str, np.ndarray]:
    n = len(reply.sequences)
    width = max((len(s) for s in reply.sequences), default=0)
    ids = np.full((1, n, max(width, 1)), pad_id, dtype=np.int32)
    for i, seq in enumerate(reply.sequences):
        ids[0, i, :len(seq)] = seq
    out = {"output_ids": ids,
           "sequence_length": np.array([[len(s) for s in reply.sequences]], dtype=np.int32)}
    if reply.cum_logprobs is not None:
        out["cum_log_probs"] = np.array([reply.cum_logprobs], dtype=np.float32)
    if reply.token_logprobs is not None:
        lps = np.zeros((1, n, max(width, 1)), dtype=np.float32)
        for i, row in enumerate(reply.token_logprobs):
            lps[0, i, :len(row)] = row
        out["output_log_probs"] = lps
    if reply.context_logits is not None:
        out["context_logits"] = reply.context_logits[None].astype(np.float32)
    if reply.generation_logits is not None:
        out["generation_logits"] = reply.generation_logits[None].astype(np.float32)
    if reply.usage is not None:
        out.update(usage_tensors(reply.usage))
    if reply.finishes is not None:
        out[FINISH_REASON] = np.array([[FINISH_CODES[f] for f in reply.finishes]], dtype=np.int32)
    return out


def usage_tensors(usage: Usage) -> dict[str, np.ndarray]:
    return {name: _scalar(getattr(usage, name), np.int64) for name in USAGE_OUTPUTS}


def parse_usage(responses: Sequence[Mapping[str, np.ndarray]]) -> Usage | None:
    """The usage a sub-model reported (summed over its responses), None if it reports none."""
    found = [r for r in responses if all(name in r for name in USAGE_OUTPUTS)]
    if not found:
        return None
    total = {name: sum(int(np.asarray(r[name]).reshape(-1)[0]) for r in found) for name in USAGE_OUTPUTS}
    return Usage(**total)


def parse_lm_reply(responses: Sequence[Mapping[str, np.ndarray]]) -> LmReply:
    """BLS side: one response with n sequences, or n responses tagged `sequence_index`."""
    parts = [r for r in responses if "output_ids" in r]
    if not parts:
        raise EngineError("the language model returned no output_ids")
    parts.sort(key=lambda r: int(np.asarray(r.get("sequence_index", 0)).reshape(-1)[0]))
    seqs: list[tuple[int, ...]] = []
    logps: list[float] = []
    per_token: list[tuple[float, ...]] = []
    finishes: list[Finish] = []
    for r in parts:
        ids = np.asarray(r["output_ids"]).reshape(-1, np.asarray(r["output_ids"]).shape[-1])
        lengths = np.asarray(r["sequence_length"]).reshape(-1)
        seqs.extend(tuple(int(x) for x in row[:n]) for row, n in zip(ids, lengths))
        if "cum_log_probs" in r:
            logps.extend(float(x) for x in np.asarray(r["cum_log_probs"]).reshape(-1))
        if "output_log_probs" in r:
            rows = np.asarray(r["output_log_probs"], dtype=np.float64)
            rows = rows.reshape(-1, rows.shape[-1])
            per_token.extend(tuple(float(x) for x in row[:n]) for row, n in zip(rows, lengths))
        if FINISH_REASON in r:
            finishes.extend(_finish(int(code)) for code in np.asarray(r[FINISH_REASON]).reshape(-1))
    first = parts[0]
    context = first.get("context_logits")
    generation = first.get("generation_logits")
    reused = [int(np.asarray(r[REUSED_BLOCKS]).reshape(-1)[0]) for r in responses if REUSED_BLOCKS in r]
    return LmReply(tuple(seqs), tuple(logps) if logps else None,
                   None if context is None else np.asarray(context).reshape(context.shape[-2:]),
                   None if generation is None else np.asarray(generation)[0],
                   tuple(per_token) if len(per_token) == len(seqs) else None,
                   parse_usage(responses), max(reused) if reused else None,
                   tuple(finishes) if finishes and len(finishes) == len(seqs) else None)


def _finish(code: int) -> Finish:
    for finish, known in FINISH_CODES.items():
        if code == known:
            return finish
    raise EngineError(f"{FINISH_REASON}: unknown code {code} (1 end id, 2 stop word, 3 length)")


def prm_request_tensors(call: PrmCall) -> dict[str, np.ndarray]:
    width = max(len(r) for r in call.rows)
    slots = max(len(p) for p in call.positions)
    ids = np.zeros((len(call.rows), width), dtype=np.int32)
    pos = np.full((len(call.rows), slots), -1, dtype=np.int32)
    for b, (row, p) in enumerate(zip(call.rows, call.positions)):
        ids[b, :len(row)] = row
        pos[b, :len(p)] = p
    tensors = {"input_ids": ids, "input_lengths": np.array([len(r) for r in call.rows], dtype=np.int32),
               "step_positions": pos}
    if call.keys:
        tensors["row_keys"] = np.array([key.encode() for key in call.keys], dtype=np.object_)
    return tensors


def parse_prm_request(t: Mapping[str, np.ndarray]) -> PrmCall:
    ids, lengths, pos = _required(t, "input_ids"), _required(t, "input_lengths"), _required(t, "step_positions")
    if ids.ndim != 2 or pos.ndim != 2 or lengths.reshape(-1).shape[0] != ids.shape[0] or pos.shape[0] != ids.shape[0]:
        raise EngineError(f"input_ids [B, L], input_lengths [B] and step_positions [B, P] disagree: "
                          f"{list(ids.shape)}, {list(lengths.shape)}, {list(pos.shape)}")
    rows = tuple(tuple(int(x) for x in row[:n]) for row, n in zip(ids, lengths.reshape(-1)))
    positions = tuple(tuple(int(p) for p in row if p >= 0) for row in pos)
    for row, p in zip(rows, positions):
        if not p or max(p) >= len(row):
            raise EngineError(f"step_positions: {list(p)} out of range for a row of {len(row)} tokens")
    keys: tuple[str, ...] = ()
    if "row_keys" in t:
        raw = np.asarray(t["row_keys"]).reshape(-1)
        if raw.shape[0] != len(rows):
            raise EngineError(f"row_keys: {raw.shape[0]} keys for {len(rows)} rows")
        keys = tuple(k.decode() if isinstance(k, bytes) else str(k) for k in raw)
    return PrmCall(rows, positions, keys)


def prm_reply_tensors(rewards: Sequence[Sequence[float]], usage: Usage | Sequence[Usage]) -> dict[str, np.ndarray]:
    """`usage`: the request's, or one per row (a request with row_keys)."""
    out = np.full((len(rewards), max(len(r) for r in rewards)), np.nan, dtype=np.float32)
    for b, row in enumerate(rewards):
        out[b, :len(row)] = row
    if isinstance(usage, Usage):
        return {"step_rewards": out, **usage_tensors(usage)}
    per_row = {name: np.array([[getattr(u, name)] for u in usage], dtype=np.int64) for name in USAGE_OUTPUTS}
    return {"step_rewards": out, **per_row}


def parse_row_usage(responses: Sequence[Mapping[str, np.ndarray]], rows: int) -> list[Usage] | None:
    """Per-row usage of a PRM request with row_keys ([B, 1] each), None if none is reported."""
    found = [r for r in responses if all(name in r for name in USAGE_OUTPUTS)]
    if not found:
        return None
    columns = {name: np.asarray(found[0][name]).reshape(-1) for name in USAGE_OUTPUTS}
    if any(c.shape[0] != rows for c in columns.values()):
        raise EngineError(f"the PRM reported usage for {[c.shape[0] for c in columns.values()]} rows, sent {rows}")
    return [Usage(**{name: int(columns[name][b]) for name in USAGE_OUTPUTS}) for b in range(rows)]


def parse_prm_reply(responses: Sequence[Mapping[str, np.ndarray]], call: PrmCall) -> list[list[float]]:
    found = [r["step_rewards"] for r in responses if "step_rewards" in r]
    if not found:
        raise EngineError("the PRM returned no step_rewards")
    rewards = np.asarray(found[0], dtype=np.float64)
    if rewards.ndim != 2 or rewards.shape[0] != len(call.rows):
        raise EngineError(f"the PRM returned step_rewards of shape {list(rewards.shape)} for {len(call.rows)} rows")
    return [[float(x) for x in rewards[b, :len(p)]] for b, p in enumerate(call.positions)]


def _required(t: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in t:
        raise EngineError(f"{name}: required input is missing")
    return np.asarray(t[name])


def _scalar_of(t: Mapping[str, np.ndarray], name: str) -> np.generic | None:
    if name not in t:
        return None
    flat = np.asarray(t[name]).reshape(-1)
    if flat.shape[0] != 1:
        raise EngineError(f"{name}: expected one value, got shape {list(np.asarray(t[name]).shape)}")
    return flat[0]


def _int(t: Mapping[str, np.ndarray], name: str, default: int | None) -> int:
    value = _scalar_of(t, name)
    if value is None:
        if default is None:
            raise EngineError(f"{name}: required input is missing")
        return default
    return int(value.item())


def _float(t: Mapping[str, np.ndarray], name: str, default: float) -> float:
    value = _scalar_of(t, name)
    if value is None:
        return default
    if value.dtype == np.float32:
        # float32 0.7 is 0.699999988; its shortest repr gives back the number the sender meant,
        # so sampling matches the in-process engine, which uses the float64 value.
        return float(repr(value))
    return float(value.item())


def _bool(t: Mapping[str, np.ndarray], name: str, default: bool) -> bool:
    value = _scalar_of(t, name)
    return default if value is None else bool(value.item())


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise EngineError(f"{name}: must be >= 1, got {value!r}")
    return value
