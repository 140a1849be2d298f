"""The `rsd` BLS model's outputs, as a table, and the tensors of one response of one row.

Every tensor but `text_output` has the batch dimension first ([1, ...]: each response is one
row's) and the response says which row with `batch_index`, as TensorRT-LLM's models do.
`text_output` is [1], a flat array of one encoded string, which is what TensorRT-LLM's
`tensorrt_llm_bls` and `ensemble` return (their postprocessing model builds np.array([bytes])) and
what their clients index (`end_to_end_grpc_client.py`: `output[0].decode("utf-8")`), whatever the
config's dims say. TensorRT-LLM's names: `text_output`, `cum_log_probs` [1, 1],
`output_log_probs` [1, 1, tokens] (when return_log_probs),
`batch_index`, `sequence_index` (always 0: one sequence per row) and, when return_perf_metrics,
on every response (its clients read them from each one):
  total_draft_tokens           draft tokens proposed so far in this row (judged step methods:
                               the tokens of every drafted step; sd/cos: proposed tokens)
  total_accepted_draft_tokens  of which accepted (rsd/gsi: the tokens of accepted draft steps)
  acceptance_rate              accepted / proposed, 0 while nothing was drafted
  arrival_time_ns, first_scheduled_time_ns, first_token_time_ns, last_token_time_ns
                               wall clock (ns): request received, row's loop started, first step
                               decided, this response's last step decided
  kv_cache_alloc_new_blocks, kv_cache_reused_blocks, kv_cache_alloc_total_blocks
                               -1: not measured (the sub-models keep KV caches per request)
  num_steps, target_step_share (ours) steps so far, and the share the target wrote
`num_input_tokens` (prompt tokens after the template) and `num_output_tokens` (tokens in this
response) when asked. Ours, always: `step_source`, `step_reward` per step in the response, and
`finish_reason`, `stats` (JSON of RequestStats) on a row's last response. `context_logits` and
`generation_logits` are declared (clients may ask for them by name) and never sent: asking for
them with return_*_logits is an error.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.core.types import StepEvent
from runtime.wire.bls_io import TensorSpec

OUTPUTS: tuple[TensorSpec, ...] = tuple(TensorSpec(name, kind, "output", dims=dims) for name, kind, dims in (
    ("text_output", "TYPE_STRING", (-1,)),  # the step (stream) or the whole text
    ("step_source", "TYPE_STRING", (-1,)),  # per step: draft | target | ensemble
    ("step_reward", "TYPE_FP32", (-1,)),  # per step PRM reward, NaN if none
    ("finish_reason", "TYPE_STRING", (1,)),  # a row's last response only
    ("stats", "TYPE_STRING", (1,)),  # a row's last response only: JSON of RequestStats
    ("batch_index", "TYPE_INT32", (1,)),
    ("sequence_index", "TYPE_INT32", (1,)),
    ("cum_log_probs", "TYPE_FP32", (-1,)),
    ("output_log_probs", "TYPE_FP32", (-1, -1)),
    ("context_logits", "TYPE_FP32", (-1, -1)),
    ("generation_logits", "TYPE_FP32", (-1, -1, -1)),
    ("acceptance_rate", "TYPE_FP32", (1,)),
    ("total_accepted_draft_tokens", "TYPE_INT32", (1,)),
    ("total_draft_tokens", "TYPE_INT32", (1,)),
    ("kv_cache_alloc_new_blocks", "TYPE_INT32", (1,)),
    ("kv_cache_reused_blocks", "TYPE_INT32", (1,)),
    ("kv_cache_alloc_total_blocks", "TYPE_INT32", (1,)),
    ("arrival_time_ns", "TYPE_INT64", (1,)),
    ("first_scheduled_time_ns", "TYPE_INT64", (1,)),
    ("first_token_time_ns", "TYPE_INT64", (1,)),
    ("last_token_time_ns", "TYPE_INT64", (1,)),
    ("num_steps", "TYPE_INT32", (1,)),
    ("target_step_share", "TYPE_FP32", (1,)),
    ("num_input_tokens", "TYPE_INT32", (1,)),
    ("num_output_tokens", "TYPE_INT32", (1,)),
))


@dataclass(frozen=True, slots=True)
class Progress:
    """A row's running figures up to a response."""

    drafted: int = 0
    accepted: int = 0
    steps: int = 0
    target_steps: int = 0
    arrival_ns: int = 0
    scheduled_ns: int = 0
    first_ns: int = 0
    last_ns: int = 0

    def after(self, events: Sequence[StepEvent], now_ns: int) -> Progress:
        return Progress(self.drafted + sum(e.draft_tokens for e in events),
                        self.accepted + sum(e.accepted_draft_tokens for e in events),
                        self.steps + len(events), self.target_steps + sum(e.source == "target" for e in events),
                        self.arrival_ns, self.scheduled_ns, self.first_ns or now_ns, now_ns)


@dataclass(frozen=True, slots=True)
class Wanted:
    """Which optional outputs a row asked for."""

    log_probs: bool = False
    perf_metrics: bool = False
    input_tokens: int | None = None  # num_input_tokens, when asked
    output_tokens: bool = False


def response_outputs(index: int, events: Sequence[StepEvent], text: str, progress: Progress,
                     wanted: Wanted = Wanted()) -> dict[str, np.ndarray]:
    """One response of row `index`: `text` and the steps `events` it carries; the row's final
    event (if among them) adds finish_reason and stats."""
    out = {
        # [1]: one string per response, a flat array as TensorRT-LLM's postprocessing model builds it
        # (np.array of bytes, one per beam) and its clients index it (output[0].decode())
        "text_output": np.array([text.encode("utf-8")], dtype=np.object_),
        "step_source": _strings([e.source for e in events]),
        "step_reward": np.array([[math.nan if e.reward is None else e.reward for e in events]], dtype=np.float32),
        "batch_index": _one(index, np.int32),
        "sequence_index": _one(0, np.int32),
    }
    last = events[-1] if events else None
    if last is not None and last.finished:
        out["finish_reason"] = _strings([last.finish_reason or ""])
        out["stats"] = _strings([json.dumps(last.stats or {})])
    if wanted.log_probs:
        per_token = [lp for e in events for lp in e.token_logprobs]
        out["cum_log_probs"] = _one(sum(per_token), np.float32)
        out["output_log_probs"] = np.array([[per_token]], dtype=np.float32).reshape(1, 1, len(per_token))
    if wanted.perf_metrics:
        out.update(_perf(progress))
    if wanted.input_tokens is not None:
        out["num_input_tokens"] = _one(wanted.input_tokens, np.int32)
    if wanted.output_tokens:
        out["num_output_tokens"] = _one(sum(len(e.token_ids) for e in events), np.int32)
    return out


def _perf(p: Progress) -> dict[str, np.ndarray]:
    return {
        "acceptance_rate": _one(p.accepted / p.drafted if p.drafted else 0.0, np.float32),
        "total_accepted_draft_tokens": _one(p.accepted, np.int32),
        "total_draft_tokens": _one(p.drafted, np.int32),
        **{name: _one(-1, np.int32) for name in ("kv_cache_alloc_new_blocks", "kv_cache_reused_blocks",
                                                 "kv_cache_alloc_total_blocks")},
        "arrival_time_ns": _one(p.arrival_ns, np.int64),
        "first_scheduled_time_ns": _one(p.scheduled_ns, np.int64),
        "first_token_time_ns": _one(p.first_ns, np.int64),
        "last_token_time_ns": _one(p.last_ns, np.int64),
        "num_steps": _one(p.steps, np.int32),
        "target_step_share": _one(p.target_steps / p.steps if p.steps else 0.0, np.float32),
    }


def _one(value: float | int, dtype: type) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array([[v.encode("utf-8") for v in values]], dtype=np.object_).reshape(1, len(values))
