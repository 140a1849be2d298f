"""The in-process pipeline on PyTorch engines, from a PipelineConfig."""
from __future__ import annotations

from typing import Any

from runtime.assembly.common import Generators, confidence_verifier, generators, prm_tokenizer, shared_verifier
from runtime.config import EngineConfig, ModelConfig, PipelineConfig
from runtime.core.errors import ConfigError
from runtime.core.methods import Engines
from runtime.engines.likelihood_prm import LikelihoodPRM
from runtime.engines.torch.factory import build_lm, build_prm, link_schedulers, set_threads
from runtime.engines.torch.generator import TorchLM
from runtime.pipeline import Pipeline


def build_pipeline(cfg: PipelineConfig) -> Pipeline:
    set_threads(cfg.engine.torch_threads)
    gen = generators(cfg)
    lms = {role: lm_for(role, m, gen, cfg.engine) for role, m in gen.models.items()}
    if len(lms) == 2 and lms["draft"].vocab_size != lms["target"].vocab_size:
        raise ConfigError("models", "draft and target logits have different vocabulary sizes")
    prm: Any = confidence_verifier(cfg)
    if prm is None and cfg.prm is not None:
        prm = (LikelihoodPRM(_verifier(cfg, lms, gen), gen.tok, cfg.prompt_template, cfg.step_delimiter)
               if cfg.prm.format == "likelihood" else prm_for(cfg.prm, cfg.engine))
    engines = Engines(draft=lms.get("draft"), target=lms.get("target"), prm=prm)
    link_schedulers(engines)
    max_len = min(lm.max_len for lm in lms.values())
    return Pipeline(engines, gen.tok, gen.segmenter, cfg.prompt_template, cfg.defaults, max_len)


def lm_for(role: str, model: ModelConfig, gen: Generators, engine: EngineConfig) -> TorchLM:
    return build_lm(role, model.folder, model.dtype, model.device, gen.segmenter, gen.tok, engine.max_batch_rows,
                    engine.lean_forward, engine.kv_cache_mb)


def prm_for(model: ModelConfig, engine: EngineConfig, with_format: bool = True) -> Any:
    assert model.format is not None, "PipelineConfig requires a PRM format"
    return build_prm(model.folder, model.format, model.dtype, model.device, engine.max_batch_rows, with_format,
                     engine.lean_forward, engine.kv_cache_mb)


def _verifier(cfg: PipelineConfig, lms: dict[str, TorchLM], gen: Generators) -> TorchLM:
    """The likelihood PRM's LM: a generator already loaded from the same weights, or a new one."""
    assert cfg.prm is not None
    role = shared_verifier(cfg)
    if role is not None:
        return lms[role]
    prm_tokenizer(cfg, gen.tok)
    return lm_for("prm", cfg.prm, gen, cfg.engine)
