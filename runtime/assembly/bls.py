"""The BLS pipeline: the same `runtime.pipeline.Pipeline`, on engines that call sub-models.

Only tokenizers and config files are read here (no weights, no torch): the BLS tokenises,
segments steps and formats PRM inputs; the sub-models run the networks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from runtime.assembly.common import confidence_verifier, generators, prm_tokenizer, shared_verifier
from runtime.config import PipelineConfig
from runtime.core.errors import ConfigError
from runtime.core.methods import Engines
from runtime.core.segment import StepSegmenter, delimiter_token_ids
from runtime.engines.hf import HFTokenizer, check_folder, estimate_matmul_params, folder_max_positions
from runtime.engines.likelihood_prm import LikelihoodPRM
from runtime.engines.prm_format import make_prm_format
from runtime.engines.triton.contract import FINISH_REASON, LM_OUTPUTS, REUSED_BLOCKS, USAGE_OUTPUTS
from runtime.engines.triton.lm import TritonLM, TrtllmEngine
from runtime.engines.triton.prm import TritonPRM
from runtime.engines.triton.transport import SubModelTransport
from runtime.engines.triton.verify import NativeVerifyLM
from runtime.pipeline import Pipeline


@dataclass(frozen=True, slots=True)
class SubModels:
    """Names of the sub-models in the Triton model repository, by role, and what serves them."""

    draft: str = "draft"
    target: str = "target"
    prm: str = "prm"
    backend: str = "torch"  # trtllm: TensorRT-LLM engines (n sequences may come as n responses)
    max_draft_len: int = 0  # trtllm: > 0, the target verifies up to this many draft tokens natively
    engines: tuple[tuple[str, TrtllmEngine], ...] = ()  # trtllm: what each LM engine's manifest says

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "trtllm"):
            raise ConfigError("submodel_backend", f"must be torch or trtllm, got {self.backend!r}")
        if self.max_draft_len < 0 or (self.max_draft_len and self.backend != "trtllm"):
            raise ConfigError("max_draft_len", "a draft cap is a trtllm target's (>= 0); the torch target verifies any")
        if self.engines and self.backend != "trtllm":
            raise ConfigError("trtllm_engines", "engine facts are for trtllm engines")

    def engine(self, role: str) -> TrtllmEngine | None:
        """What serves the role's LM: None for our torch sub-models (they report usage and cut steps
        themselves); a TensorRT-LLM engine's usage is derived and its steps are re-cut."""
        return dict(self.engines).get(role, TrtllmEngine()) if self.backend == "trtllm" else None


def parse_engines(text: str) -> tuple[tuple[str, TrtllmEngine], ...]:
    """`draft:32:4096,target:32:4096` (the rendered `trtllm_engines` parameter: role, KV block size,
    max_seq_len of each LM engine, from its manifest) as (role, TrtllmEngine) pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) != 3 or not all(f.strip().isdigit() for f in fields[1:]):
            raise ConfigError("trtllm_engines", f"expected role:tokens_per_block:max_seq_len, got {item!r}")
        pairs.append((fields[0].strip(), TrtllmEngine(int(fields[1]), int(fields[2]))))
    return tuple(pairs)


def stop_words(tok: HFTokenizer, delimiter: str, end_id: int) -> tuple[tuple[int, ...], ...]:
    """Single-token stop words: every token containing the delimiter, and the other EOS ids.
    (Delimiters split over two tokens are caught by re-cutting the output with the segmenter.)"""
    pieces = ((i, tok.piece(i)) for i in range(tok.vocab_size))
    ids = set(delimiter_token_ids(pieces, delimiter)) | (set(tok.eos_ids) - {end_id})
    return tuple((i,) for i in sorted(ids))


def build_bls_pipeline(cfg: PipelineConfig, transport: SubModelTransport, names: SubModels = SubModels()) -> Pipeline:
    gen = generators(cfg)
    tok, segmenter, paths = gen.tok, gen.segmenter, gen.paths
    end_id = tok.tok.eos_token_id if tok.tok.eos_token_id is not None else min(tok.eos_ids)
    pad_id = tok.tok.pad_token_id if tok.tok.pad_token_id is not None else end_id
    words = stop_words(tok, cfg.step_delimiter, end_id)
    lms = {role: _lm(role, path, names, transport, segmenter, tok, end_id, pad_id, words) for role, path in paths.items()}
    prm = confidence_verifier(cfg)
    if prm is None and cfg.prm is not None:
        prm = _prm(cfg, transport, names, lms, tok)
    engines = Engines(draft=lms.get("draft"), target=lms.get("target"), prm=prm)
    max_len = min(lm.max_len for lm in lms.values())
    return Pipeline(engines, tok, segmenter, cfg.prompt_template, cfg.defaults, max_len)


def _lm(role: str, path: Path, names: SubModels, transport: SubModelTransport, segmenter: StepSegmenter,
        tok: HFTokenizer, end_id: int, pad_id: int, words: tuple[tuple[int, ...], ...]) -> TritonLM:
    """The torch sub-model verifies, proposes, scores and reads rows on the request's cache (`on_cache`);
    a TensorRT-LLM target verifies natively when it was built for draft tokens (max_draft_len)."""
    engine = names.engine(role)
    max_len = folder_max_positions(path, tok)
    if engine is not None and engine.max_seq_len:  # the engine was built for fewer positions
        max_len = min(max_len, engine.max_seq_len)
    args = (role, getattr(names, role), transport, segmenter, end_id, pad_id, words, estimate_matmul_params(path),
            max_len, tok.vocab_size, _outputs(engine), engine, _model_vocab(path, tok))
    if role == "target" and engine is None:
        return NativeVerifyLM(*args, max_draft_len=1 << 30)
    if role == "target" and names.max_draft_len > 0:
        return NativeVerifyLM(*args, max_draft_len=names.max_draft_len)
    return TritonLM(*args)


def _outputs(engine: TrtllmEngine | None) -> tuple[str, ...]:
    """Ours report usage and where they cut each step; TensorRT-LLM tags n sequences (sequence_index)
    and tells its KV reuse."""
    if engine is None:
        return LM_OUTPUTS + USAGE_OUTPUTS + (FINISH_REASON,)
    return LM_OUTPUTS + ("sequence_index", REUSED_BLOCKS)


def _model_vocab(path: Path, tok: HFTokenizer) -> int:
    """The model's vocabulary (its embedding rows, often padded past the tokenizer's)."""
    config = json.loads((path / "config.json").read_text())
    return max(int(config.get("vocab_size") or 0), tok.vocab_size)


def _prm(cfg: PipelineConfig, transport: SubModelTransport, names: SubModels, lms: dict[str, TritonLM],
         tok: HFTokenizer) -> TritonPRM | LikelihoodPRM:
    assert cfg.prm is not None and cfg.prm.format is not None, "PipelineConfig requires a PRM format"
    path = check_folder(cfg.prm.folder, "models.prm.path")
    own_tok = prm_tokenizer(cfg, tok)
    if cfg.prm.format != "likelihood":
        fmt = make_prm_format(cfg.prm.format, own_tok, "models.prm")
        return TritonPRM(names.prm, transport, fmt, estimate_matmul_params(path, with_lm_head=False))
    role = shared_verifier(cfg)
    if role is not None:
        verifier = lms[role]
    else:
        some, engine = next(iter(lms.values())), names.engine("prm")
        verifier = TritonLM("prm", names.prm, transport, some.segmenter, some.end_id, some.pad_id, some.stop_words,
                            estimate_matmul_params(path), folder_max_positions(path, tok), tok.vocab_size,
                            _outputs(engine), engine, _model_vocab(path, tok))
    return LikelihoodPRM(verifier, tok, cfg.prompt_template, cfg.step_delimiter)
