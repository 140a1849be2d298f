"""TensorRT-LLM 1.2's `tensorrt_llm` model contract, as data: every input and output its Triton
config declares (name, dtype, dims without the batch dim, reshaped to a scalar or not), from
triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt of TensorRT-LLM 1.x with
logits_datatype TYPE_FP32. Tests use it to check our template against the real contract, and the
fake engine (tests/support/fake_trtllm.py) validates every request against it, as the real
backend would: unknown names, wrong dtypes and wrong shapes are errors naming the tensor.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from runtime.core.errors import EngineError


@dataclass(frozen=True, slots=True)
class Tensor:
    dtype: str  # Triton type name
    dims: tuple[int, ...]  # without the batch dim; -1 = any
    scalar: bool = False  # `reshape: { shape: [ ] }`: one value per batch entry
    optional: bool = True


def _scalar(dtype: str, optional: bool = True) -> Tensor:
    return Tensor(dtype, (1,), scalar=True, optional=optional)


_SCALARS = {
    "input_lengths": _scalar("TYPE_INT32", optional=False), "request_output_len": _scalar("TYPE_INT32", optional=False),
    "encoder_output_lengths": _scalar("TYPE_INT32"), "num_return_sequences": _scalar("TYPE_INT32"),
    "decoder_input_lengths": _scalar("TYPE_INT32"), "draft_acceptance_threshold": _scalar("TYPE_FP32"),
    "end_id": _scalar("TYPE_INT32"), "pad_id": _scalar("TYPE_INT32"), "beam_width": _scalar("TYPE_INT32"),
    "temperature": _scalar("TYPE_FP32"), "runtime_top_k": _scalar("TYPE_INT32"), "runtime_top_p": _scalar("TYPE_FP32"),
    "runtime_top_p_min": _scalar("TYPE_FP32"), "runtime_top_p_decay": _scalar("TYPE_FP32"),
    "runtime_top_p_reset_ids": _scalar("TYPE_INT32"), "len_penalty": _scalar("TYPE_FP32"),
    "early_stopping": _scalar("TYPE_BOOL"), "repetition_penalty": _scalar("TYPE_FP32"),
    "min_tokens": _scalar("TYPE_INT32"), "beam_search_diversity_rate": _scalar("TYPE_FP32"),
    "presence_penalty": _scalar("TYPE_FP32"), "frequency_penalty": _scalar("TYPE_FP32"), "seed": _scalar("TYPE_UINT64"),
    "return_log_probs": _scalar("TYPE_BOOL"), "return_context_logits": _scalar("TYPE_BOOL"),
    "return_generation_logits": _scalar("TYPE_BOOL"), "return_perf_metrics": _scalar("TYPE_BOOL"),
    "return_num_input_tokens": _scalar("TYPE_BOOL"), "return_num_output_tokens": _scalar("TYPE_BOOL"),
    "exclude_input_in_output": _scalar("TYPE_BOOL"), "stop": _scalar("TYPE_BOOL"), "streaming": _scalar("TYPE_BOOL"),
    "prompt_vocab_size": _scalar("TYPE_INT32"), "lora_task_id": _scalar("TYPE_UINT64"),
}
_ARRAYS = {
    "input_ids": Tensor("TYPE_INT32", (-1,)), "encoder_input_features": Tensor("TYPE_FP16", (-1, -1)),
    "draft_input_ids": Tensor("TYPE_INT32", (-1,)), "decoder_input_ids": Tensor("TYPE_INT32", (-1,)),
    "draft_logits": Tensor("TYPE_FP32", (-1, -1)), "stop_words_list": Tensor("TYPE_INT32", (2, -1)),
    "bad_words_list": Tensor("TYPE_INT32", (2, -1)), "embedding_bias": Tensor("TYPE_FP32", (-1,)),
    "prompt_embedding_table": Tensor("TYPE_FP16", (-1, -1)), "prompt_table_extra_ids": Tensor("TYPE_UINT64", (-1,)),
    "cross_attention_mask": Tensor("TYPE_BOOL", (-1, -1)), "mrope_rotary_cos_sin": Tensor("TYPE_FP32", (-1,)),
    "mrope_position_deltas": Tensor("TYPE_INT64", (1,)), "lora_weights": Tensor("TYPE_FP16", (-1, -1)),
    "lora_config": Tensor("TYPE_INT32", (-1, 3)), "context_phase_params": Tensor("TYPE_UINT8", (-1,)),
    "skip_cross_attn_blocks": Tensor("TYPE_BOOL", (1,)), "retention_token_range_starts": Tensor("TYPE_INT32", (-1,)),
    "retention_token_range_ends": Tensor("TYPE_INT32", (-1,)),
    "retention_token_range_priorities": Tensor("TYPE_INT32", (-1,)),
    "retention_token_range_durations_ms": Tensor("TYPE_INT32", (-1,)),
    "retention_decode_priority": Tensor("TYPE_INT32", (1,)), "retention_decode_duration_ms": Tensor("TYPE_INT32", (1,)),
    "guided_decoding_guide_type": Tensor("TYPE_STRING", (1,)), "guided_decoding_guide": Tensor("TYPE_STRING", (1,)),
    "lookahead_window_size": Tensor("TYPE_INT32", (1,)), "lookahead_ngram_size": Tensor("TYPE_INT32", (1,)),
    "lookahead_verification_set_size": Tensor("TYPE_INT32", (1,)),
}
REAL_INPUTS: Mapping[str, Tensor] = {**_ARRAYS, **_SCALARS}
REAL_OUTPUTS: Mapping[str, Tensor] = {
    "output_ids": Tensor("TYPE_INT32", (-1, -1)), "sequence_length": Tensor("TYPE_INT32", (-1,)),
    "cum_log_probs": Tensor("TYPE_FP32", (-1,)), "output_log_probs": Tensor("TYPE_FP32", (-1, -1)),
    "context_logits": Tensor("TYPE_FP32", (-1, -1)), "generation_logits": Tensor("TYPE_FP32", (-1, -1, -1)),
    "batch_index": Tensor("TYPE_INT32", (1,)), "sequence_index": Tensor("TYPE_INT32", (1,)),
    "context_phase_params": Tensor("TYPE_UINT8", (-1,)), "kv_cache_alloc_new_blocks": Tensor("TYPE_INT32", (1,)),
    "kv_cache_reused_blocks": Tensor("TYPE_INT32", (1,)), "kv_cache_alloc_total_blocks": Tensor("TYPE_INT32", (1,)),
    "arrival_time_ns": Tensor("TYPE_INT64", (1,)), "first_scheduled_time_ns": Tensor("TYPE_INT64", (1,)),
    "first_token_time_ns": Tensor("TYPE_INT64", (1,)), "last_token_time_ns": Tensor("TYPE_INT64", (1,)),
    "acceptance_rate": Tensor("TYPE_FP32", (1,)), "total_accepted_draft_tokens": Tensor("TYPE_INT32", (1,)),
    "total_draft_tokens": Tensor("TYPE_INT32", (1,)), "num_input_tokens": Tensor("TYPE_INT32", (1,)),
    "num_output_tokens": Tensor("TYPE_INT32", (1,)),
}
NUMPY_TYPES = {"TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_UINT64": np.uint64, "TYPE_UINT8": np.uint8,
               "TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_BOOL": np.bool_, "TYPE_STRING": np.object_}


def check_request(tensors: Mapping[str, np.ndarray]) -> None:
    """Validate one request's tensors (batch size 1) against the real contract; raise naming the tensor."""
    for name, value in tensors.items():
        spec = REAL_INPUTS.get(name)
        if spec is None:
            raise EngineError(f"unexpected inference input '{name}' (not a tensorrt_llm input)")
        if np.asarray(value).dtype != NUMPY_TYPES[spec.dtype]:
            raise EngineError(f"{name}: expected {spec.dtype}, got {np.asarray(value).dtype}")
        if not _shape_ok(np.asarray(value).shape, spec):
            raise EngineError(f"{name}: shape {list(np.asarray(value).shape)} does not match [1, {spec.dims}]")
    for name, spec in REAL_INPUTS.items():
        if not spec.optional and name not in tensors:
            raise EngineError(f"{name}: required input is missing")


def _shape_ok(shape: tuple[int, ...], spec: Tensor) -> bool:
    if not shape or shape[0] != 1:
        return False  # the BLS sends one sequence per request
    if spec.scalar:  # Triton hands reshaped scalars over as [batch]; the sender has [batch, 1]
        return shape in ((1,), (1, 1))
    return len(shape) == len(spec.dims) + 1 and all(d == -1 or d == s for d, s in zip(spec.dims, shape[1:]))
