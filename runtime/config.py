"""Pipeline configuration: YAML -> frozen dataclasses, strict (unknown keys and bad values name
the key). Relative model paths resolve against the config file's folder."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runtime.core.errors import ConfigError, RequestValidationError
from runtime.core.params import RequestParams
from runtime.core.segment import DEFAULT_DELIMITER

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("cpu", "cuda", "auto")
PRM_FORMATS = ("value_head", "two_class", "likelihood")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    path: Path
    dtype: str = "float32"
    device: str = "cpu"
    format: str | None = None  # PRM only: value_head | two_class | likelihood

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError("dtype", f"unknown dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError("device", f"unknown device {self.device!r}; expected cpu, cuda, cuda:N or auto")
        if self.format is not None and self.format not in PRM_FORMATS:
            raise ConfigError("format", f"unknown PRM format {self.format!r}; expected {' or '.join(PRM_FORMATS)}")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_batch_rows: int = 64  # rows per batched forward (concurrent sequences x candidates)
    torch_threads: int = 0  # 0 keeps torch's default

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch_rows, int) or self.max_batch_rows < 1:
            raise ConfigError("engine.max_batch_rows", f"must be an integer >= 1, got {self.max_batch_rows!r}")
        if not isinstance(self.torch_threads, int) or self.torch_threads < 0:
            raise ConfigError("engine.torch_threads", f"must be an integer >= 0, got {self.torch_threads!r}")


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
    if not file.is_file():
        raise ConfigError("config", f"config file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{file} is not valid YAML: {exc}") from exc
    return parse_config(data, file.resolve().parent, source=file.resolve())


def parse_config(data: Mapping[str, Any], base: Path, source: Path | None = None) -> PipelineConfig:
    _known("", data, {"models", "prompt_template", "step_delimiter", "defaults", "engine"})
    models = data.get("models") or {}
    _known("models.", models, {"draft", "target", "prm"})
    built = {role: _model(f"models.{role}", spec, base) for role, spec in models.items() if spec is not None}
    try:
        defaults = RequestParams.from_mapping(data.get("defaults") or {})
    except RequestValidationError as exc:
        raise ConfigError(f"defaults.{exc.field}", str(exc)) from exc
    engine = data.get("engine") or {}
    _known("engine.", engine, {f.name for f in dataclasses.fields(EngineConfig)})
    return PipelineConfig(
        **built,
        prompt_template=str(data.get("prompt_template", "{question}")),
        step_delimiter=str(data.get("step_delimiter", DEFAULT_DELIMITER)),
        defaults=defaults,
        engine=EngineConfig(**engine),
        source=source,
    )


def _model(key: str, spec: Any, base: Path) -> ModelConfig:
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, Mapping) or "path" not in spec:
        raise ConfigError(key, "expected a mapping with at least a `path`")
    _known(f"{key}.", spec, {f.name for f in dataclasses.fields(ModelConfig)})
    path = Path(spec["path"]).expanduser()
    try:
        return ModelConfig(**{**spec, "path": path if path.is_absolute() else (base / path).resolve()})
    except ConfigError as exc:
        raise ConfigError(f"{key}.{exc.key}", str(exc).split(": ", 1)[-1]) from exc


def _known(prefix: str, mapping: Any, allowed: set[str]) -> None:
    if not isinstance(mapping, Mapping):
        raise ConfigError(prefix.rstrip(".") or "config", f"expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}", f"unknown key; expected one of {', '.join(sorted(allowed))}")
