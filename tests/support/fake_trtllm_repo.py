"""The `trtllm` layout without TensorRT-LLM, for CPU tests: fake engine folders (with manifests
like `python -m build_engines` writes), the rendered repository with the fake engine model in
place of the C++ backend, and an in-process transport to the same fakes.

The fake draft and target share their tables (the draft adds noise), so greedy drafts are often
accepted; the step delimiter and EOS get a logit boost so steps and answers end. The PRM engine
is a narrowed value head (row width 1, `score_head` layout) with the Skywork readout sigmoid(r + b).
"""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.config import REPO_ROOT
from runtime.core.errors import EngineError
from runtime.core.segment import delimiter_token_ids
from runtime.engines.hf import load_tokenizer
from runtime.engines.prm_readout import VALUE_HEAD_INPUT, RewardReadout
from runtime.in_server.engine_prm import ENGINE_MANIFEST

from . import trtllm_rules
from .fake_trtllm import FAKE_SPEC, FakeEngine, FakeNet, FakeSpec

FAKE_MODEL = REPO_ROOT / "tests" / "fake_trtllm" / "model.py"
TEMPLATE = REPO_ROOT / "triton_repo" / "tensorrt_llm" / "config.pbtxt"


def declared_outputs(config: Path = TEMPLATE) -> frozenset[str]:
    """The output names a tensorrt_llm config declares (the shipped template by default)."""
    text = config.read_text()
    block = text[text.index("\noutput ["):]
    block = block[:block.index("\n]")]
    return frozenset(re.findall(r'name:\s*"([^"]+)"', block))
ENGINE_MODELS = {"draft": "draft", "target": "target", "prm_engine": "prm"}  # model name -> engine role


def write_fake_engines(root: Path, models: Mapping[str, Path], max_draft_len: int = 8,
                       prm_bias: float = -0.5) -> Path:
    """Fake draft/target/prm engine folders under `root` (<root>/<role>/engine), for the tokenizer of
    the pipeline's models (`models`: role -> HF folder)."""
    tok = load_tokenizer(models["target"], "models.target.path")
    delimiter = min(delimiter_token_ids(((i, tok.piece(i)) for i in range(tok.vocab_size)), "\n\n"))
    specials = {tok.tok.pad_token_id, tok.tok.bos_token_id} - {None} - set(tok.eos_ids)
    boosts = ((delimiter, 1.2), (min(tok.eos_ids), 0.3), *((s, -10.0) for s in sorted(specials)))
    # an engine's vocabulary is its model's config vocab_size (embedding rows, often padded past the
    # tokenizer's), as convert_checkpoint writes it into the engine's config.json
    vocab = {role: int(json.loads((Path(path) / "config.json").read_text())["vocab_size"]) for role, path in models.items()}
    n = tok.vocab_size
    specs = {
        "draft": FakeSpec("lm", vocab["draft"], seed=7, noise=0.6, boosts=boosts, gather_generation_logits=True,
                          tokens=n),
        "target": FakeSpec("lm", vocab["target"], seed=7, boosts=boosts, max_draft_len=max_draft_len,
                           gather_generation_logits=True, tokens=n),
        "prm": FakeSpec("prm", vocab["prm"], seed=11, width=1, gather_context_logits=True, tokens=n),
    }
    readout = RewardReadout("value_head", "score_head", "sigmoid", 0, prm_bias, 1, "\n\n", delimiter, 1, VALUE_HEAD_INPUT)
    for role, spec in specs.items():
        folder = root / role / "engine"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FAKE_SPEC).write_text(json.dumps(asdict(spec)))
        manifest = {"schema": "rsd.engine_manifest/1", "role": role, "engine_dir": str(folder),
                    "source_model": str(models[role]), "tokenizer_dir": str(models[role]), "tp_size": 1,
                    "max_draft_len": spec.max_draft_len, "tokens_per_block": spec.tokens_per_block,
                    "gather_generation_logits": spec.gather_generation_logits, "limits": {"max_seq_len": 512},
                    "logits_dtype": "float32", "tensorrt_llm_version": "fake",
                    "prm": readout.to_manifest() if role == "prm" else None}
        (folder / ENGINE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return root


def substitute_fakes(repo: Path, fake_model: Path = FAKE_MODEL) -> list[str]:
    """Serve every `tensorrtllm` model of a rendered repository with the fake engine model,
    keeping its config (inputs, outputs, parameters) as rendered."""
    replaced = []
    for config in sorted(repo.glob("*/config.pbtxt")):
        text = config.read_text()
        if 'backend: "tensorrtllm"' not in text:
            continue
        config.write_text(text.replace('backend: "tensorrtllm"', 'backend: "python"'))
        shutil.copy(fake_model, config.parent / "1" / "model.py")
        replaced.append(config.parent.name)
    return replaced


def load_fake_engine(engine_dir: Path, reuse: bool = False) -> FakeEngine:
    return FakeEngine(FakeNet.build(FakeSpec.load(engine_dir)), exclude_default=True, reuse=reuse)


@dataclass(slots=True)
class FakeTransport:
    """SubModelTransport to fake engines (by model name) and to other handlers (`handle(tensors, key)`),
    in process: the same tensors as through Triton, all responses of a request returned."""

    engines: Mapping[str, FakeEngine]
    handlers: dict[str, Any] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[tuple[str, dict[str, np.ndarray]]] = field(default_factory=list)  # every engine request
    declared: frozenset[str] = field(default_factory=declared_outputs)  # what Triton core lets a response carry

    def release(self, model: str, key: str) -> None:
        if model in self.handlers:
            self.handlers[model].release([key])

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                    key: str, kind: str = "") -> list[dict[str, np.ndarray]]:
        self.calls[model] += 1
        tensors = {k: np.array(v) for k, v in inputs.items()}
        if model in self.engines:
            self.requests.append((model, tensors))
            responses = self.engines[model].respond(tensors, frozenset(outputs))
            for response in responses:
                trtllm_rules.check_outputs(response, outputs, self.declared, model)
            return [{k: v for k, v in r.items() if k in outputs} for r in responses]
        if model in self.handlers:
            reply = await self.handlers[model].handle(tensors, key, kind or "generate")
            return [{k: v for k, v in reply.items() if k in outputs}]
        raise EngineError(f"{model}: model is not loaded")
