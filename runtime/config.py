"""Pipeline configuration: YAML -> frozen dataclasses, strict (unknown keys and bad values name
the key). Relative model paths resolve against the config file's folder."""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.core import validate
from runtime.core.confidence import REDUCTIONS
from runtime.core.errors import ConfigError, RequestValidationError
from runtime.core.params import RequestParams
from runtime.core.segment import DEFAULT_DELIMITER
from runtime.core.types import PrmKind

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("cpu", "cuda", "auto")
PRM_FORMATS = tuple(k.value for k in PrmKind)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    path: Path | None  # None only for a confidence PRM (no model)
    dtype: str = "float32"
    device: str = "cpu"
    format: str | None = None  # PRM only: value_head | two_class | likelihood | confidence
    reduction: str | None = None  # confidence PRM only: mean | min | last (runtime.core.confidence)

    @property
    def folder(self) -> Path:
        """The model's folder (every model but a confidence PRM has one)."""
        assert self.path is not None, "only a confidence PRM has no folder"
        return self.path

    def __post_init__(self) -> None:
        validate.choice("dtype", self.dtype, DTYPES)
        if self.device not in DEVICES and not (isinstance(self.device, str) and re.fullmatch(r"cuda:\d+", self.device)):
            validate.fail("device", f"unknown value {self.device!r}; expected one of {', '.join(DEVICES)} or cuda:N")
        if self.format is not None:
            validate.choice("format", self.format, PRM_FORMATS)
        confidence = self.format == PrmKind.CONFIDENCE.value
        if self.reduction is not None:
            if not confidence:
                validate.fail("reduction", "only a confidence PRM (format: confidence) reduces log-probs")
            validate.choice("reduction", self.reduction, REDUCTIONS)
        if confidence and self.path is not None:
            validate.fail("path", "a confidence PRM has no model: it reads the draft's own log-probs")
        if not confidence and self.path is None:
            validate.fail("path", "required")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_batch_rows: int = 64  # rows per batched forward (concurrent sequences x candidates)
    torch_threads: int = 0  # 0 keeps torch's default
    lean_forward: bool = True  # llama/mistral/qwen2 decoders as plain torch calls (runtime.engines.torch.lean)
    kv_cache_mb: int = 4096  # each model's KV arena never grows past this (0: no budget)

    def __post_init__(self) -> None:
        validate.integer("engine.max_batch_rows", self.max_batch_rows, lo=1)
        validate.integer("engine.torch_threads", self.torch_threads, lo=0)
        validate.boolean("engine.lean_forward", self.lean_forward)
        validate.integer("engine.kv_cache_mb", self.kv_cache_mb, lo=0, hi=2**24)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    draft: ModelConfig | None = None
    target: ModelConfig | None = None
    prm: ModelConfig | None = None
    prompt_template: str = "{question}"
    step_delimiter: str = DEFAULT_DELIMITER
    defaults: RequestParams = field(default_factory=RequestParams)
    engine: EngineConfig = field(default_factory=EngineConfig)
    source: Path | None = None

    def __post_init__(self) -> None:
        if "{question}" not in self.prompt_template:
            raise ConfigError("prompt_template", "must contain the {question} placeholder")
        if not self.step_delimiter:
            raise ConfigError("step_delimiter", "must not be empty")
        if self.draft is None and self.target is None:
            raise ConfigError("models", "configure at least a draft or a target model")
        if self.prm is not None and self.prm.format is None:
            raise ConfigError("models.prm.format", f"required for a PRM: {' or '.join(PRM_FORMATS)}")


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Load a pipeline YAML (the embedded default when `path` is None)."""
    file = Path(path) if path is not None else DEFAULT_CONFIG
    return parse_config(validate.load_yaml(file), file.resolve().parent, source=file.resolve())


def parse_config(data: Mapping[str, Any], base: Path, source: Path | None = None) -> PipelineConfig:
    validate.known_keys("", data, {"models", "prompt_template", "step_delimiter", "defaults", "engine"})
    models = validate.known_keys("models", data.get("models") or {}, {"draft", "target", "prm"})
    built = {role: _model(f"models.{role}", spec, base) for role, spec in models.items() if spec is not None}
    try:
        defaults = RequestParams.from_mapping(validate.mapping("defaults", data.get("defaults") or {}))
    except RequestValidationError as exc:
        raise ConfigError(f"defaults.{exc.field}", str(exc).split(": ", 1)[-1]) from exc
    engine = validate.known_keys("engine", data.get("engine") or {}, {f.name for f in dataclasses.fields(EngineConfig)})
    return PipelineConfig(
        **built,
        prompt_template=validate.text("prompt_template", data.get("prompt_template", "{question}")),
        step_delimiter=validate.text("step_delimiter", data.get("step_delimiter", DEFAULT_DELIMITER)),
        defaults=defaults,
        engine=EngineConfig(**engine),
        source=source,
    )


def _model(key: str, spec: Any, base: Path) -> ModelConfig:
    if isinstance(spec, str):
        spec = {"path": spec}
    spec = validate.known_keys(key, spec, {f.name for f in dataclasses.fields(ModelConfig)})
    confidence = key == "models.prm" and spec.get("format") == PrmKind.CONFIDENCE.value
    path = None if confidence and spec.get("path") is None else validate.resolve_path(
        validate.required(key, spec, "path"), base)
    try:
        return ModelConfig(**{**spec, "path": path})
    except ConfigError as exc:
        raise ConfigError(f"{key}.{exc.key}", str(exc).split(": ", 1)[-1]) from exc
