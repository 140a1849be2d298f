"""Build a Pipeline on the PyTorch engine from a PipelineConfig."""
from __future__ import annotations

import logging
from typing import Any

import torch

from runtime.config import ModelConfig, PipelineConfig
from runtime.core.errors import ConfigError
from runtime.core.methods import Engines
from runtime.core.segment import StepSegmenter
from runtime.engines.prm_format import PrmFormat, make_prm_format
from runtime.engines.torch.generator import TorchLM
from runtime.engines.torch.likelihood_prm import LikelihoodPRM
from runtime.engines.torch.loading import (
    HFTokenizer,
    check_folder,
    load_backbone,
    load_causal_lm,
    load_tokenizer,
    matmul_params,
    max_positions,
)
from runtime.engines.torch.prm import PrmHead, TorchPRM, make_head
from runtime.engines.torch.runner import BatchRunner
from runtime.engines.torch.scheduler import ForwardScheduler
from runtime.pipeline import Pipeline

log = logging.getLogger(__name__)

# Loop turns a forward may wait for more rows while other models have work queued (measured on
# the embedded models, rsd at c = 16: 428 tokens/s with none, 577 with these; BENCHMARKS.md).
PRM_PATIENCE = 12
TARGET_PATIENCE = 6  # the target rewrites few steps; alone, each rewrite would run at batch 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{name} requested but no CUDA device is available")
    return torch.device(name)


def build_lm(role: str, cfg: ModelConfig, segmenter: StepSegmenter, tok: HFTokenizer, max_rows: int) -> TorchLM:
    path = check_folder(cfg.path, f"models.{role}.path")
    device = resolve_device(cfg.device)
    decoder, head, config = load_causal_lm(path, cfg.dtype, str(device))
    log.info("loaded %s from %s on %s", role, path, device)
    return lm_engine(role, decoder, head, segmenter, device, max_rows, max_positions(config, tok.tok), tok.vocab_size)


def lm_engine(role: str, decoder: torch.nn.Module, head: torch.nn.Module, segmenter: StepSegmenter,
              device: torch.device, max_rows: int, max_len: int, vocab_size: int) -> TorchLM:
    """A generator on loaded modules (a headless decoder and its output head)."""
    runner = BatchRunner(decoder, device, max_rows=max_rows, head=head, vocab_size=vocab_size, max_len=max_len)
    return TorchLM(role, ForwardScheduler(runner, name=role), head, segmenter, device, matmul_params(decoder, head),
                   max_len, vocab_size)


def build_prm(cfg: ModelConfig, max_rows: int, with_format: bool = True) -> TorchPRM:
    """The PRM engine; `with_format=False` for a server sub-model that receives token ids."""
    path = check_folder(cfg.path, "models.prm.path")
    device = resolve_device(cfg.device)
    decoder, config = load_backbone(path, cfg.dtype, str(device))
    assert cfg.format is not None, "PipelineConfig requires a PRM format"
    head = make_head(cfg.format, path, device, "models.prm")
    fmt = make_prm_format(cfg.format, load_tokenizer(path, "models.prm.path"), "models.prm") if with_format else None
    return prm_engine(decoder, head, device, max_rows, max_positions(config), fmt)


def prm_engine(decoder: torch.nn.Module, head: PrmHead, device: torch.device, max_rows: int, max_len: int,
               fmt: PrmFormat | None) -> TorchPRM:
    """A PRM on a loaded backbone and reward head."""
    runner = BatchRunner(decoder, device, max_rows=max_rows, max_len=max_len)
    return TorchPRM(ForwardScheduler(runner, name="prm"), head, matmul_params(decoder, None) + head.params, fmt)


def build_pipeline(cfg: PipelineConfig) -> Pipeline:
    if cfg.engine.torch_threads:
        torch.set_num_threads(cfg.engine.torch_threads)
    roles = {role: getattr(cfg, role) for role in ("draft", "target") if getattr(cfg, role) is not None}
    toks = {role: load_tokenizer(check_folder(m.path, f"models.{role}.path"), f"models.{role}.path")
            for role, m in roles.items()}
    tok = next(iter(toks.values()))
    if len(toks) == 2 and toks["draft"].tok.get_vocab() != toks["target"].tok.get_vocab():
        raise ConfigError("models", "draft and target must share one tokenizer (their vocabularies differ)")
    segmenter = StepSegmenter(tok.piece, tok.eos_ids, cfg.step_delimiter)
    rows = cfg.engine.max_batch_rows
    lms = {role: build_lm(role, m, segmenter, tok, rows) for role, m in roles.items()}
    if len(lms) == 2 and lms["draft"].vocab_size != lms["target"].vocab_size:
        raise ConfigError("models", "draft and target logits have different vocabulary sizes")
    prm: Any = None
    if cfg.prm is not None and cfg.prm.format == "likelihood":
        prm = LikelihoodPRM(_verifier(cfg, lms, segmenter, tok, rows), tok, cfg.prompt_template, cfg.step_delimiter)
    elif cfg.prm is not None:
        prm = build_prm(cfg.prm, rows)
    engines = Engines(draft=lms.get("draft"), target=lms.get("target"), prm=prm)
    link_schedulers(engines)
    max_len = min(lm.max_len for lm in lms.values())
    return Pipeline(engines, tok, segmenter, cfg.prompt_template, cfg.defaults, max_len)


def link_schedulers(engines: Engines, prm_patience: int = PRM_PATIENCE,
                    target_patience: int = TARGET_PATIENCE) -> None:
    """Let the PRM's and the target's schedulers see the other models' queues, so they batch
    steps that end close together (see ForwardScheduler.patience). Alone (target-only, or one
    request) nothing waits: the other models have nothing queued."""
    schedulers = [e.scheduler for e in (engines.draft, engines.target, engines.prm) if hasattr(e, "scheduler")]
    for scheduler in schedulers:
        scheduler.peers = schedulers
    if isinstance(engines.prm, TorchPRM):
        engines.prm.scheduler.patience = prm_patience
    if isinstance(engines.target, TorchLM) and engines.draft is not None:
        engines.target.scheduler.patience = target_patience


def _verifier(cfg: PipelineConfig, lms: dict[str, TorchLM], segmenter: StepSegmenter, tok: HFTokenizer,
              rows: int) -> TorchLM:
    """The likelihood PRM's LM: a generator already loaded from the same weights, or a new one
    (which must share the generators' vocabulary: it scores their token ids' text)."""
    assert cfg.prm is not None
    key = (cfg.prm.path, cfg.prm.dtype, cfg.prm.device)
    for role, lm in lms.items():
        model = getattr(cfg, role)
        if (model.path, model.dtype, model.device) == key:
            return lm
    own = load_tokenizer(check_folder(cfg.prm.path, "models.prm.path"), "models.prm.path")
    if own.tok.get_vocab() != tok.tok.get_vocab():
        raise ConfigError("models.prm", "a likelihood PRM must share the generators' tokenizer")
    return build_lm("prm", cfg.prm, segmenter, tok, rows)
