"""What the real C++ `tensorrtllm` Triton backend (and the TensorRT-LLM executor and Triton core
behind it) refuses, as rules the fake engine enforces, each with the source it comes from.

A Python-backend stand-in is lenient where the real one is not: python_backend prunes every output
that was not requested before Triton core sees the response (python_backend r26.04
src/infer_response.cc InferResponse::PruneOutputTensors, called from response_sender.cc Send), and
reads config parameters however it likes. So these rules are checked here explicitly; a test that
passes on the fake therefore passes the same checks the real backend makes. Sources (commits):
  BE    triton-inference-server/tensorrtllm_backend c2e65b8 (2025-05-13, the last with the C++
        backend; identical in NVIDIA/TensorRT-LLM triton_backend 0c8de69a = 1.2.0rc8):
        inflight_batcher_llm/src/{model_state,model_instance_state,utils}.cc, utils.h
  EX    NVIDIA/TensorRT-LLM b35ac1b6 (1.2.0rc2): cpp/tensorrt_llm/executor/executorImpl.cpp,
        cpp/tensorrt_llm/batch_manager/{createNewDecoderRequests,trtGptModelInflightBatching}.cpp;
        119c6e60 batch_manager/llmRequest.cpp; 97e36d0b executor/decodingConfig.cpp
  CORE  triton-inference-server/core r26.04: src/infer_response.cc, src/model.cc
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

from runtime.core.errors import ConfigError, EngineError

# BE model_instance_state.cc getBatchingTypeFromParams: any other value throws
MODEL_TYPES = ("V1", "v1", "inflight_batching", "inflight_fused_batching")
# BE getGuidedDecodingConfigFromParams reads these with GetParameter<std::string> and no try/catch:
# a missing key throws "Cannot find parameter with name: <key>" (BE model_state.cc GetParameter).
REQUIRED_PARAMETERS = ("gpt_model_type", "tokenizer_dir", "xgrammar_tokenizer_info_path", "guided_decoding_backend")
ALWAYS_OUTPUTS = ("output_ids", "sequence_length")
# BE fillTritonResponse: `if (requestData.returnPerfMetrics)` emits all ten, whatever was requested.
PERF_OUTPUTS: Mapping[str, type] = {
    "kv_cache_alloc_new_blocks": np.int32, "kv_cache_reused_blocks": np.int32, "kv_cache_alloc_total_blocks": np.int32,
    "arrival_time_ns": np.int64, "first_scheduled_time_ns": np.int64, "first_token_time_ns": np.int64,
    "last_token_time_ns": np.int64, "acceptance_rate": np.float32, "total_accepted_draft_tokens": np.int32,
    "total_draft_tokens": np.int32,
}


def check_model_parameters(params: Mapping[str, str]) -> None:
    """At load (the model instance's constructor): a ConfigError fails the load, as the real one does."""
    for key in REQUIRED_PARAMETERS:
        if key not in params:  # present with "" is fine: guided decoding is then off
            raise ConfigError(key, f"Cannot find parameter with name: {key}")
    if params["gpt_model_type"] not in MODEL_TYPES:
        raise ConfigError("gpt_model_type", "Invalid gpt_model_type. Must be v1/inflight_batching/inflight_fused_batching.")
    backend, info = params["guided_decoding_backend"], params["xgrammar_tokenizer_info_path"]
    if backend and info and not backend.startswith("${") and not info.startswith("${"):
        if backend != "xgrammar":
            raise ConfigError("guided_decoding_backend", "Guided decoding is currently supported with 'xgrammar' backend")
        if not Path(info).is_file():
            raise ConfigError("xgrammar_tokenizer_info_path", f"Xgrammar's tokenizer info path at {info} does not exist.")
    # BE ModelInstanceState constructor: a missing or non-existent gpt_model_path becomes "", then
    # TLLM_CHECK(!decoderModelPath.empty() || ...) throws this (misleading) message
    path = params.get("gpt_model_path", "")
    if not path or not Path(path).exists():
        raise ConfigError("gpt_model_path", "Both encoder and decoder model paths are empty")


def check_request(*, vocab_size: int, end_id: int, output_len: int, ids: tuple[int, ...], draft: tuple[int, ...],
                  draft_logits: np.ndarray | None, bias: np.ndarray | None, max_draft_len: int,
                  context_logits: bool, generation_logits: bool, gather_context: bool,
                  gather_generation: bool) -> None:
    """Per request: an EngineError becomes the request's error response, as the real one's do."""
    if not ids:  # EX requestImpl.h Request::Impl::validate: TLLM_CHECK(!mInputTokenIds.empty())
        raise EngineError("input_ids: the request has no input tokens")
    if output_len < 1:  # EX requestImpl.h: TLLM_CHECK(mMaxNewTokens > 0)
        raise EngineError(f"request_output_len: must be > 0, got {output_len}")
    # EX llmRequest.cpp LlmRequest::validate; no such check exists for pad_id (nor for input ids on
    # the TensorRT engine path: checkTokenIdRange is called by the PyTorch executor only)
    if not -1 <= end_id < vocab_size:
        raise EngineError(f"EndId ({end_id}) is not within acceptable range [-1, {vocab_size}).")
    if bias is not None:  # EX createNewDecoderRequests.cpp initializeEmbeddingBias (after BE squeezeTensor)
        if bias.ndim != 1 or bias.shape[0] != vocab_size:
            raise EngineError(f"The embedding bias shape is not as expected. Expected last dimension to be same as "
                              f"vocab size: {vocab_size}, got embedding_bias {list(bias.shape)}")
        if bias.dtype != np.float32:
            raise EngineError("Embedding bias data type must be same as model logits type.")
    if draft_logits is not None and not draft:
        raise EngineError("draft_logits without draft_input_ids")
    if draft:
        if len(draft) > max_draft_len:  # EX LlmRequest::validate
            raise EngineError(f"Draft tokens length ({len(draft)}) exceeds maximum draft tokens length ({max_draft_len}).")
        # EX decodingConfig.cpp ExternalDraftTokensConfig; createNewDecoderRequests.cpp copies the
        # logits into [G, vocab] of the target's logits dtype (bufferManager.cpp: dtype and size must match)
        if draft_logits is not None and (draft_logits.shape != (len(draft), vocab_size)
                                         or draft_logits.dtype != np.float32):
            raise EngineError(f"draft_logits: expected [1, {len(draft)}, {vocab_size}] float32 (Incompatible buffer "
                              f"sizes), got [1, {', '.join(map(str, draft_logits.shape))}] {draft_logits.dtype}")
    if context_logits and not gather_context:  # EX executorImpl.cpp fetchNewRequests
        raise EngineError("Return context logit need to build engine with gather_context_logits")
    if generation_logits and not gather_generation:  # EX fetchNewRequests; the backend never sets the executor's flag
        raise EngineError("To return generation logits, gather_generation_logits must be enabled in ExecutorConfig")


def check_outputs(emitted: Collection[str], requested: Collection[str], declared: Collection[str], model: str) -> None:
    """A response's outputs, as Triton core and the backend judge them: output_ids and
    sequence_length must be requested (BE fillTritonResponse: "%s tensor must be present in list of
    output tensors"), and an output the model's config does not declare fails the whole response
    (CORE infer_response.cc InferenceResponse::AddOutput -> model.cc Model::GetOutput, wrapped by
    BE utils.h getResponseBuffer and fillTritonResponse)."""
    for name in ALWAYS_OUTPUTS:
        if requested and name not in requested:
            raise EngineError(f"Error encountered while populating response: {name} tensor must be present in "
                              f"list of output tensors")
    for name in emitted:
        if name not in declared:
            raise EngineError(f"Error encountered while populating response: Could not get response output for "
                              f"output tensor {name}: unexpected inference output '{name}' for model '{model}'")


def perf_outputs(reused: int, new: int, total: int, arrival_ns: int, drafted: int = 0,
                 accepted: int = 0) -> dict[str, np.ndarray]:
    """The ten outputs of return_perf_metrics, [1, 1] each (BE fillTritonResponse processStats)."""
    values = {"kv_cache_alloc_new_blocks": new, "kv_cache_reused_blocks": reused, "kv_cache_alloc_total_blocks": total,
              "arrival_time_ns": arrival_ns, "first_scheduled_time_ns": arrival_ns, "first_token_time_ns": arrival_ns,
              "last_token_time_ns": arrival_ns, "acceptance_rate": accepted / drafted if drafted else 0.0,
              "total_accepted_draft_tokens": accepted, "total_draft_tokens": drafted}
    return {name: np.array([[values[name]]], dtype) for name, dtype in PERF_OUTPUTS.items()}
