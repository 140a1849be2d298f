"""Build the BLS Pipeline: the same `runtime.pipeline.Pipeline`, on engines that call sub-models.

Only tokenizers and config files are read here (no weights, no torch): the BLS tokenises,
segments steps and formats PRM inputs; the sub-models run the networks.
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.config import PipelineConfig
from runtime.core.errors import ConfigError
from runtime.core.methods import Engines
from runtime.core.segment import StepSegmenter, delimiter_token_ids
from runtime.engines.hf import HFTokenizer, check_folder, estimate_matmul_params, folder_max_positions, load_tokenizer
from runtime.engines.prm_format import make_prm_format
from runtime.engines.triton.lm import TritonLM
from runtime.engines.triton.prm import TritonPRM
from runtime.engines.triton.transport import SubModelTransport
from runtime.pipeline import Pipeline


@dataclass(frozen=True, slots=True)
class SubModels:
    """Names of the sub-models in the Triton model repository, by role."""

    draft: str = "draft"
    target: str = "target"
    prm: str = "prm"


def stop_words(tok: HFTokenizer, delimiter: str, end_id: int) -> tuple[tuple[int, ...], ...]:
    """Single-token stop words: every token containing the delimiter, and the other EOS ids.
    (Delimiters split over two tokens are caught by re-cutting the output with the segmenter.)"""
    pieces = ((i, tok.piece(i)) for i in range(tok.vocab_size))
    ids = set(delimiter_token_ids(pieces, delimiter)) | (set(tok.eos_ids) - {end_id})
    return tuple((i,) for i in sorted(ids))


def build_bls_pipeline(cfg: PipelineConfig, transport: SubModelTransport, names: SubModels = SubModels()) -> Pipeline:
    roles = {role: getattr(cfg, role) for role in ("draft", "target") if getattr(cfg, role) is not None}
    paths = {role: check_folder(m.path, f"models.{role}.path") for role, m in roles.items()}
    toks = {role: load_tokenizer(path, f"models.{role}.path") for role, path in paths.items()}
    tok = next(iter(toks.values()))
    if len(toks) == 2 and toks["draft"].tok.get_vocab() != toks["target"].tok.get_vocab():
        raise ConfigError("models", "draft and target must share one tokenizer (their vocabularies differ)")
    segmenter = StepSegmenter(tok.piece, tok.eos_ids, cfg.step_delimiter)
    end_id = tok.tok.eos_token_id if tok.tok.eos_token_id is not None else min(tok.eos_ids)
    pad_id = tok.tok.pad_token_id if tok.tok.pad_token_id is not None else end_id
    words = stop_words(tok, cfg.step_delimiter, end_id)
    lms = {role: TritonLM(role, getattr(names, role), transport, segmenter, end_id, pad_id, words,
                          estimate_matmul_params(path), folder_max_positions(path, tok), tok.vocab_size)
           for role, path in paths.items()}
    prm = None
    if cfg.prm is not None:
        prm_path = check_folder(cfg.prm.path, "models.prm.path")
        assert cfg.prm.format is not None, "PipelineConfig requires a PRM format"
        fmt = make_prm_format(cfg.prm.format, load_tokenizer(prm_path, "models.prm.path"), "models.prm")
        prm = TritonPRM(names.prm, transport, fmt, estimate_matmul_params(prm_path, with_lm_head=False))
    engines = Engines(draft=lms.get("draft"), target=lms.get("target"), prm=prm)
    max_len = min(lm.max_len for lm in lms.values())
    return Pipeline(engines, tok, segmenter, cfg.prompt_template, cfg.defaults, max_len)
