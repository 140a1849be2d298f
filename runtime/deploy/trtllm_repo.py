"""Placeholder values of the `trtllm` layout, read from the serving YAML and the engine manifests.

Models of the layout: `draft` and `target` (template `tensorrt_llm`), `prm` (template
`trtllm_prm`: the PRM contract, calling `prm_engine`), `prm_engine` (template `tensorrt_llm`,
the PRM engine built with --gather_context_logits). A likelihood PRM is an LM: its `prm` model
is a `tensorrt_llm` model on the prm engine and there is no `prm_engine`.

Each engine's `rsd_engine_manifest.json` is checked at render time, so a wrong folder fails
here, naming the key, instead of when tritonserver loads the engine: the role it was built for,
float32 logits (`logits_datatype` TYPE_FP32 in the template), one GPU id per tensor-parallel
rank, the PRM reward rule and its format, and a draft length on the target for native verification.
"""
from __future__ import annotations

import logging
from pathlib import Path

from runtime.config import PipelineConfig
from runtime.core.errors import ConfigError
from runtime.deploy.config import ServeConfig
from runtime.deploy.trtllm_config import TrtllmConfig
from runtime.in_server.engine_prm import ENGINE_MANIFEST, read_manifest, readout_of

log = logging.getLogger(__name__)

PRM_ENGINE_MODEL = "prm_engine"


def engine_role(model: str) -> str:
    """The engine (draft, target, prm) a model of the layout serves."""
    return "prm" if model == PRM_ENGINE_MODEL else model


def tensorrt_llm_values(model: str, cfg: ServeConfig) -> dict[str, str]:
    trt = _trtllm(cfg)
    role = engine_role(model)
    engine = trt.engine(role)
    return {
        "name": model,
        "instance_count": "1",  # one executor per engine (ServeConfig rejects other counts)
        "max_batch_size": str(cfg.max_batch_size),
        "max_queue_delay_us": str(cfg.max_queue_delay_us),
        "max_queue_size": str(trt.max_queue_size),
        "engine_dir": str(trt.engine_dir(role)),
        "batch_scheduler_policy": trt.batch_scheduler_policy,
        "max_tokens_in_paged_kv_cache": str(engine.max_tokens_in_paged_kv_cache),
        "kv_cache_free_gpu_mem_fraction": f"{engine.kv_cache_free_gpu_mem_fraction:g}",
        "enable_kv_cache_reuse": "true" if engine.enable_kv_cache_reuse else "false",
        "gpu_device_ids": ",".join(str(g) for g in engine.gpu_device_ids),
    }


def trtllm_prm_values(cfg: ServeConfig) -> dict[str, str]:
    trt = _trtllm(cfg)
    return {
        "name": "prm",
        "instance_count": str(cfg.instance_count("prm")),
        "engine_model": PRM_ENGINE_MODEL,
        "engine_manifest": str(trt.engine_dir("prm") / ENGINE_MANIFEST),
        "sub_request_timeout_s": f"{cfg.sub_request_timeout_s:g}",
        "bls_threads": str(cfg.bls_threads),
    }


def max_draft_len(cfg: ServeConfig) -> int:
    """Draft tokens the target verifies natively per request (0: the BLS uses the reference rule)."""
    if cfg.backend != "trtllm" or not _trtllm(cfg).native_verify:
        return 0
    return _int_field(_manifest(_trtllm(cfg), "target"), "max_draft_len", "trtllm.native_verify")


def engine_facts(cfg: ServeConfig, models: list[str]) -> str:
    """The rsd BLS's `trtllm_engines` parameter: model:tokens_per_block:max_seq_len of each LM engine,
    from its manifest (0: not recorded)."""
    trt = _trtllm(cfg)
    facts = []
    for m in models:
        manifest, key = _manifest(trt, engine_role(m)), f"trtllm.engines.{m}.engine_dir"
        limits = manifest.get("limits")
        max_seq_len = _int_field(limits, "max_seq_len", key) if isinstance(limits, dict) else 0
        facts.append(f"{m}:{_int_field(manifest, 'tokens_per_block', key)}:{max_seq_len}")
    return ",".join(facts)


def check_engines(cfg: ServeConfig, pipeline: PipelineConfig, models: list[str]) -> None:
    """Cross-check every engine a rendered `tensorrt_llm` model (`models`) points at with its manifest."""
    trt = _trtllm(cfg)
    for model in models:
        role = engine_role(model)
        manifest = _manifest(trt, role)
        key = f"trtllm.engines.{role}"
        built_for = manifest.get("role")
        if model != "prm" and built_for != role:  # a likelihood PRM may be any LM engine
            raise ConfigError(f"{key}.engine_dir", f"holds the {built_for!r} engine, not the {role} engine")
        if manifest.get("logits_dtype") != "float32":
            raise ConfigError(f"{key}.engine_dir", "the engine must be built with --logits_dtype float32")
        tp = _int_field(manifest, "tp_size", f"{key}.engine_dir")
        if tp != len(trt.engine(role).gpu_device_ids):
            raise ConfigError(f"{key}.gpu_device_ids", f"needs one GPU id per tensor-parallel rank ({tp})")
        if model == PRM_ENGINE_MODEL:
            _check_prm(manifest, pipeline, key)
        _warn_on_other_source(manifest, pipeline, role)
    if max_draft_len(cfg) < 1 and trt.native_verify:
        raise ConfigError("trtllm.native_verify", "the target engine was built without --max_draft_len "
                                                  "(set max_draft_len on the target engine, or native_verify: false)")
    if trt.native_verify and not trt.engine("target").enable_kv_cache_reuse:
        # trtGptModelInflightBatching.cpp (1.2.0rc2): "KV cache block reuse must be enabled for speculative
        # decoding target model": the target would fail to load
        raise ConfigError("trtllm.engines.target.enable_kv_cache_reuse", "a target that verifies draft tokens "
                                                                         "(native_verify) needs KV-cache reuse")
    if "draft" in models and not _manifest(trt, "draft").get("gather_generation_logits", False):
        log.warning("the draft engine was built without --gather_generation_logits: sd and cos, whose proposals "
                    "read its generation logits, will fail (rebuild it with python -m build_engines)")


def _check_prm(manifest: dict[str, object], pipeline: PipelineConfig, key: str) -> None:
    readout = readout_of(manifest, f"{key}.engine_dir")
    wanted = pipeline.prm.format if pipeline.prm is not None else None
    if readout.prm_format != wanted:
        raise ConfigError(f"{key}.engine_dir", f"the PRM engine reads {readout.prm_format!r} rewards, "
                                               f"the pipeline's PRM format is {wanted!r}")


def _warn_on_other_source(manifest: dict[str, object], pipeline: PipelineConfig, role: str) -> None:
    """The BLS tokenizes with the pipeline's model folders; the engine should come from the same model
    (paths may legitimately differ between the build host and this one, so this only warns)."""
    model = getattr(pipeline, role, None)
    source = manifest.get("source_model")
    if model is not None and source is not None and Path(str(source)).resolve() != Path(model.path).resolve():
        log.warning("the %s engine was built from %s; the pipeline's %s model is %s", role, source, role, model.path)


def _manifest(trt: TrtllmConfig, role: str) -> dict[str, object]:
    return read_manifest(trt.engine_dir(role) / ENGINE_MANIFEST, f"trtllm.engines.{role}.engine_dir")


def _int_field(manifest: dict[str, object], name: str, key: str) -> int:
    value = manifest.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(key, f"the engine manifest's {name} is not an integer: {value!r}")
    return value


def _trtllm(cfg: ServeConfig) -> TrtllmConfig:
    assert cfg.trtllm is not None, "ServeConfig requires the trtllm section for backend trtllm"
    return cfg.trtllm
