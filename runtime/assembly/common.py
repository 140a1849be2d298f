"""What every pipeline assembly does the same way: one tokenizer for both generators (their
vocabularies must match), the step segmenter on it, and which model verifies a likelihood PRM."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.config import ModelConfig, PipelineConfig
from runtime.core.confidence import DEFAULT_REDUCTION, ConfidenceVerifier
from runtime.core.errors import ConfigError
from runtime.core.segment import StepSegmenter
from runtime.core.types import PrmKind
from runtime.engines.hf import HFTokenizer, check_folder, load_tokenizer

GENERATORS = ("draft", "target")


@dataclass(frozen=True, slots=True)
class Generators:
    """The configured generator roles, their folders, and the tokenizer and segmenter they share."""

    models: dict[str, ModelConfig]  # role -> config, draft before target
    paths: dict[str, Path]  # role -> checked folder
    tok: HFTokenizer
    segmenter: StepSegmenter


def generators(cfg: PipelineConfig) -> Generators:
    models = {role: m for role in GENERATORS if (m := getattr(cfg, role)) is not None}
    paths = {role: check_folder(m.folder, f"models.{role}.path") for role, m in models.items()}
    toks = {role: load_tokenizer(path, f"models.{role}.path") for role, path in paths.items()}
    tok = next(iter(toks.values()))
    if len(toks) == 2 and toks["draft"].tok.get_vocab() != toks["target"].tok.get_vocab():
        raise ConfigError("models", "draft and target must share one tokenizer (their vocabularies differ)")
    return Generators(models, paths, tok, StepSegmenter(tok.piece, tok.eos_ids, cfg.step_delimiter))


def shared_verifier(cfg: PipelineConfig) -> str | None:
    """For a likelihood PRM: the generator role loaded from the same weights (no model of its own
    is then needed), else None (the PRM's LM is loaded, or served, on its own)."""
    if cfg.prm is None or cfg.prm.format != "likelihood":
        return None
    key = (cfg.prm.path, cfg.prm.dtype, cfg.prm.device)
    for role in ("target", "draft"):
        model: ModelConfig | None = getattr(cfg, role)
        if model is not None and (model.path, model.dtype, model.device) == key:
            return role
    return None


def confidence_verifier(cfg: PipelineConfig) -> ConfidenceVerifier | None:
    """The PRM when its format is confidence (no model: the draft's own log-probs), else None."""
    if cfg.prm is None or cfg.prm.format != PrmKind.CONFIDENCE.value:
        return None
    return ConfidenceVerifier(cfg.prm.reduction or DEFAULT_REDUCTION)


def prm_tokenizer(cfg: PipelineConfig, tok: HFTokenizer) -> HFTokenizer:
    """The PRM folder's own tokenizer; a likelihood PRM must share the generators' vocabulary
    (it scores their token ids' text)."""
    assert cfg.prm is not None
    own = load_tokenizer(check_folder(cfg.prm.folder, "models.prm.path"), "models.prm.path")
    if cfg.prm.format == "likelihood" and own.tok.get_vocab() != tok.tok.get_vocab():
        raise ConfigError("models.prm", "a likelihood PRM must share the generators' tokenizer")
    return own
