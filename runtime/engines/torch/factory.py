"""Build PyTorch engines from model folders (config-free: `runtime.assembly.torch` reads the config)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from runtime.core.errors import ConfigError
from runtime.core.methods import Engines
from runtime.core.segment import StepSegmenter
from runtime.engines.prm_format import PrmFormat, make_prm_format
from runtime.engines.torch.generator import TorchLM
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

log = logging.getLogger(__name__)

# Loop turns a forward may wait for more rows while other models have work queued (measured on
# the embedded models, rsd at c = 16: 428 tokens/s with none, 577 with these; docs/benchmarks-history.md,
# "Engine: in-process decode against the bare loop, and scaling").
PRM_PATIENCE = 12
TARGET_PATIENCE = 6  # the target rewrites few steps; alone, each rewrite would run at batch 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{name} requested but no CUDA device is available")
    return torch.device(name)


def build_lm(role: str, path: Path, dtype: str, device_name: str, segmenter: StepSegmenter, tok: HFTokenizer,
             max_rows: int, lean: bool = True, kv_cache_mb: int = 0) -> TorchLM:
    """A generator from a Hugging Face causal-LM folder (`role` names it in logs and errors);
    `lean`: its forward as plain torch calls where the architecture allows (runtime.engines.torch.lean)."""
    path = check_folder(path, f"models.{role}.path")
    device = resolve_device(device_name)
    decoder, head, config = load_causal_lm(path, dtype, str(device))
    log.info("loaded %s from %s on %s", role, path, device)
    return lm_engine(role, decoder, head, segmenter, device, max_rows, max_positions(config, tok.tok), tok.vocab_size,
                     lean, kv_cache_mb)


def lm_engine(role: str, decoder: torch.nn.Module, head: torch.nn.Module, segmenter: StepSegmenter,
              device: torch.device, max_rows: int, max_len: int, vocab_size: int, lean: bool = True,
              kv_cache_mb: int = 0) -> TorchLM:
    """A generator on loaded modules (a headless decoder and its output head)."""
    runner = BatchRunner(decoder, device, max_rows=max_rows, head=head, vocab_size=vocab_size, max_len=max_len,
                         lean=lean, name=role, kv_budget_bytes=kv_cache_mb << 20)
    return TorchLM(role, ForwardScheduler(runner, name=role), head, segmenter, device, matmul_params(decoder, head),
                   max_len, vocab_size)


def build_prm(path: Path, prm_format: str, dtype: str, device_name: str, max_rows: int,
              with_format: bool = True, lean: bool = True, kv_cache_mb: int = 0) -> TorchPRM:
    """The PRM engine; `with_format=False` for a server sub-model that receives token ids."""
    path = check_folder(path, "models.prm.path")
    device = resolve_device(device_name)
    decoder, config = load_backbone(path, dtype, str(device))
    head = make_head(prm_format, path, device, "models.prm")
    fmt = make_prm_format(prm_format, load_tokenizer(path, "models.prm.path"), "models.prm") if with_format else None
    return prm_engine(decoder, head, device, max_rows, max_positions(config), fmt, lean, kv_cache_mb)


def prm_engine(decoder: torch.nn.Module, head: PrmHead, device: torch.device, max_rows: int, max_len: int,
               fmt: PrmFormat | None, lean: bool = True, kv_cache_mb: int = 0) -> TorchPRM:
    """A PRM on a loaded backbone and reward head."""
    runner = BatchRunner(decoder, device, max_rows=max_rows, max_len=max_len, lean=lean, name="prm",
                         kv_budget_bytes=kv_cache_mb << 20)
    return TorchPRM(ForwardScheduler(runner, name="prm"), head, matmul_params(decoder, None) + head.params, fmt)


def set_threads(threads: int) -> None:
    """torch's intra-op threads (0 keeps torch's default)."""
    if threads:
        torch.set_num_threads(threads)


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
