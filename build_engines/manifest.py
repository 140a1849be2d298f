"""Step records (for idempotent re-runs) and the per-engine manifest written next to each engine.

A step is skipped when its expected outputs exist and its record's fingerprint matches. The
fingerprint chains: sha256(upstream fingerprint, argv, TensorRT-LLM version), where the first
upstream is a digest of the source model folder (config, tokenizer and weight file sizes). So a
changed flag, model or container version re-runs that step and everything after it.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from build_engines.config import HeadLayout, Role
from build_engines.models import ModelInfo
from build_engines.plan import TWO_CLASS_HEAD_FILE, EnginePlan, Step, StepKind
from build_engines.prm_remap import HEAD_INFO, HeadInfo
from runtime.core.types import PrmKind
from runtime.engines.prm_readout import TWO_CLASS_INPUT, VALUE_HEAD_INPUT, RewardReadout

SCHEMA = "rsd.engine_manifest/1"
ENGINE_MANIFEST = "rsd_engine_manifest.json"
_FINGERPRINT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                      "model.safetensors.index.json")


@dataclass(frozen=True, slots=True)
class StepRecord:
    """Written to <output_dir>/.rsd_step.<kind>.json when a step succeeds."""

    step: str
    fingerprint: str
    argv: tuple[str, ...]
    trtllm_version: str
    finished_at: str
    seconds: float


@dataclass(frozen=True, slots=True)
class StepOutcome:
    step: Step
    fingerprint: str
    skipped: bool
    seconds: float


def record_path(step: Step) -> Path:
    return step.output_dir / f".rsd_step.{step.kind.value}.json"


def source_fingerprint(model_dir: Path) -> str:
    """Digest of a model folder's small files and of its weight file names and sizes."""
    h = hashlib.sha256(str(model_dir.resolve()).encode())
    for name in _FINGERPRINT_FILES:
        file = model_dir / name
        if file.is_file():
            h.update(name.encode() + file.read_bytes())
    for file in sorted(model_dir.iterdir()):
        if file.suffix in (".safetensors", ".bin"):
            h.update(f"{file.name}:{file.stat().st_size}".encode())
    return h.hexdigest()


def step_fingerprint(step: Step, upstream: str, trtllm_version: str) -> str:
    payload = json.dumps({"upstream": upstream, "argv": list(step.argv), "trtllm": trtllm_version})
    return hashlib.sha256(payload.encode()).hexdigest()


def expected_outputs(step: Step) -> list[Path]:
    """Files whose presence means the step's output exists."""
    out = step.output_dir
    if step.kind is StepKind.PREPARE_PRM:
        return [out / "config.json", out / HEAD_INFO]
    if step.kind is StepKind.CHECKPOINT:
        return [out / "config.json", out / "rank0.safetensors"]
    if step.kind is StepKind.ATTACH_HEAD:
        return [out / Path(TWO_CLASS_HEAD_FILE).name]
    return [out / "config.json", out / "rank0.engine"]


def read_record(step: Step) -> StepRecord | None:
    path = record_path(step)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    data["argv"] = tuple(data["argv"])
    return StepRecord(**data)


def is_up_to_date(step: Step, fingerprint: str) -> bool:
    record = read_record(step)
    return (record is not None and record.fingerprint == fingerprint
            and all(p.exists() for p in expected_outputs(step)))


def write_record(step: Step, fingerprint: str, trtllm_version: str, seconds: float) -> None:
    record = StepRecord(step.name, fingerprint, step.argv, trtllm_version, _now(), round(seconds, 3))
    record_path(step).write_text(json.dumps(asdict(record), indent=2))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def make_readout(engine: EnginePlan, head: HeadInfo | None, info: ModelInfo | None,
                 separator_id: int | None) -> RewardReadout:
    """The reward rule of a PRM engine; `head`/`info` are None in a dry run (values 'planned')."""
    prm = engine.spec.prm
    assert prm is not None
    two_class = prm.format is PrmKind.TWO_CLASS
    if prm.custom_class is not None:
        vocab = prm.num_labels  # the custom classes set the engine vocab to the head width
    else:
        vocab = info.vocab_size if info is not None else 0
    return RewardReadout(
        prm_format=prm.format.value,
        head_layout=prm.head_layout.value,
        op="softmax" if two_class else "sigmoid",
        index=1 if two_class else 0,
        bias=head.bias if head is not None else (0.0 if two_class else None),
        num_labels=prm.num_labels if prm.head_layout is not HeadLayout.VOCAB_ROW else 1,
        separator=prm.separator,
        separator_token_id=separator_id,
        engine_vocab_size=vocab,
        input_format=TWO_CLASS_INPUT if two_class else VALUE_HEAD_INPUT,
    )


def engine_manifest(engine: EnginePlan, arch: str, trtllm_version: str, outcomes: list[StepOutcome],
                    info: ModelInfo | None, readout: RewardReadout | None) -> dict[str, Any]:
    spec, quant = engine.spec, engine.quant
    return {
        "schema": SCHEMA,
        "role": spec.role.value,
        "engine_dir": str(engine.paths.engine),
        "source_model": str(spec.model),
        "tokenizer_dir": str(spec.model),
        "model_family": spec.family.value,
        "hf_model_type": info.model_type if info is not None else "planned",
        "hf_vocab_size": info.vocab_size if info is not None else None,
        "dtype": spec.dtype.value,
        "quantization": quant.quantization.value,
        "kv_cache_dtype": quant.kv_cache_dtype.value,
        "checkpoint_tool": quant.tool.value,
        "gpu_arch": arch,
        "tensorrt_llm_version": trtllm_version,
        "tp_size": spec.tp_size,
        "limits": {k: v for k, v in asdict(spec.limits).items() if k != "where"},
        "tokens_per_block": spec.tokens_per_block,
        "max_draft_len": spec.max_draft_len,
        "gather_generation_logits": spec.role is Role.DRAFT,  # build_engines/plan.py _build_step
        "logits_dtype": "float32",
        "commands": [{"step": o.step.name, "argv": list(o.step.argv), "fingerprint": o.fingerprint,
                      "skipped": o.skipped, "seconds": round(o.seconds, 3)} for o in outcomes],
        "built_at": _now(),
        "build_seconds": round(sum(o.seconds for o in outcomes), 3),
        "prm": readout.to_manifest() if readout is not None else None,
    }


def write_engine_manifest(engine: EnginePlan, manifest: dict[str, Any]) -> Path:
    path = engine.paths.engine / ENGINE_MANIFEST
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return path
