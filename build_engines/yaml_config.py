"""Strict YAML loading of configs/engines/<set>.yaml into `EngineSetConfig`.

Unknown keys, wrong types and out-of-range values are errors that name the key (dotted path).
Relative `models_root` / `output_root` are resolved against the current directory; every model path
is resolved against `models_root`, which the CLI can override (--models-root).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from build_engines.config import (
    Calibration,
    Dtype,
    EngineSetConfig,
    EngineSpec,
    GpuArch,
    HeadLayout,
    KvCacheDtype,
    Limits,
    ModelFamily,
    PrmFormat,
    PrmSpec,
    Quantization,
    Role,
)
from build_engines.errors import ConfigError

E = TypeVar("E", bound=Enum)

TOP_KEYS = {"name", "models_root", "output_root", "examples_dir", "check_tokenizers", "calibration",
            "defaults", "engines"}
ENGINE_KEYS = {"model", "family", "dtype", "quantization", "kv_cache_dtype", "tp_size", "max_batch_size",
               "max_input_len", "max_seq_len", "max_num_tokens", "gemm_plugin", "tokens_per_block",
               "max_draft_len", "multiple_profiles", "prm"}
PRM_KEYS = {"format", "head_layout", "num_labels", "separator", "separator_token_id", "model_cls_name"}
CALIB_KEYS = {"dataset", "size", "max_seq_length", "batch_size"}
DEFAULT_EXAMPLES_DIR = Path("/app/examples")


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line overrides applied while loading."""

    models_root: Path | None = None
    output_root: Path | None = None
    examples_dir: Path | None = None
    quantization: Quantization | None = None  # draft and target only


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
    return value


def _check_keys(section: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _int(section: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = section.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key}", "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key}", f"must be an integer, got {value!r}")
    return value


def _str(section: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = section.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key}", "is required")
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}", f"must be a string, got {value!r}")
    return value


def _bool(section: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}", f"must be true or false, got {value!r}")
    return value


def _enum(cls: type[E], value: Any, key: str) -> E:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise ConfigError(key, f"must be one of {allowed}, got {value!r}") from None


def _quantization(value: Any, key: str) -> tuple[tuple[GpuArch, Quantization], ...]:
    if isinstance(value, str):
        q = _enum(Quantization, value, key)
        return tuple((arch, q) for arch in GpuArch)
    table = _mapping(value, key)
    _check_keys(table, {a.value for a in GpuArch}, key)
    return tuple((arch, _enum(Quantization, table.get(arch.value, "auto"), f"{key}.{arch.value}"))
                 for arch in GpuArch)


def _prm(section: dict[str, Any], where: str) -> PrmSpec:
    _check_keys(section, PRM_KEYS, where)
    fmt = _enum(PrmFormat, section.get("format"), f"{where}.format")
    default_layout = "two_class_custom" if fmt is PrmFormat.TWO_CLASS else "score_head"
    default_sep = "<extra_0>" if fmt is PrmFormat.TWO_CLASS else "\n\n"
    token_id = section.get("separator_token_id")
    if token_id is not None:
        token_id = _int(section, "separator_token_id", where)
    cls_name = section.get("model_cls_name")
    if cls_name is not None:
        cls_name = _str(section, "model_cls_name", where)
    return PrmSpec(
        format=fmt,
        head_layout=_enum(HeadLayout, section.get("head_layout", default_layout), f"{where}.head_layout"),
        num_labels=_int(section, "num_labels", where, 2 if fmt is PrmFormat.TWO_CLASS else 1),
        separator=_str(section, "separator", where, default_sep),
        separator_token_id=token_id,
        model_cls_name=cls_name,
        where=where,
    )


def _engine(role: Role, section: dict[str, Any], models_root: Path, qoverride: Quantization | None) -> EngineSpec:
    w = f"engines.{role.value}"
    _check_keys(section, ENGINE_KEYS, w)
    model = Path(_str(section, "model", w)).expanduser()
    prm_section = section.get("prm")
    prm = _prm(_mapping(prm_section, f"{w}.prm"), f"{w}.prm") if prm_section is not None else None
    quant = _quantization(section.get("quantization", "auto"), f"{w}.quantization")
    if qoverride is not None and role is not Role.PRM:
        quant = tuple((arch, qoverride) for arch in GpuArch)
    limits = Limits(_int(section, "max_batch_size", w), _int(section, "max_input_len", w),
                    _int(section, "max_seq_len", w), _int(section, "max_num_tokens", w), where=w)
    return EngineSpec(
        role=role,
        model=model if model.is_absolute() else models_root / model,
        family=_enum(ModelFamily, section.get("family"), f"{w}.family"),
        dtype=_enum(Dtype, section.get("dtype", "bfloat16"), f"{w}.dtype"),
        quantization=quant,
        kv_cache_dtype=_enum(KvCacheDtype, section.get("kv_cache_dtype", "auto"), f"{w}.kv_cache_dtype"),
        tp_size=_int(section, "tp_size", w, 1),
        limits=limits,
        gemm_plugin=_str(section, "gemm_plugin", w, "auto"),
        tokens_per_block=_int(section, "tokens_per_block", w, 32),
        max_draft_len=_int(section, "max_draft_len", w, 0),
        multiple_profiles=_bool(section, "multiple_profiles", w, False),
        prm=prm,
    )


def _calibration(section: dict[str, Any]) -> Calibration:
    _check_keys(section, CALIB_KEYS, "calibration")
    d = Calibration()
    return Calibration(
        dataset=_str(section, "dataset", "calibration", d.dataset),
        size=_int(section, "size", "calibration", d.size),
        max_seq_length=_int(section, "max_seq_length", "calibration", d.max_seq_length),
        batch_size=_int(section, "batch_size", "calibration", d.batch_size),
    )


def _root(raw: dict[str, Any], key: str, override: Path | None, default: str | None = None) -> Path:
    if override is not None:
        return override.expanduser().resolve()
    return Path(_str(raw, key, "config", default)).expanduser().resolve()


def parse_config(raw: Any, overrides: Overrides = Overrides()) -> EngineSetConfig:
    """Build an EngineSetConfig from parsed YAML (a dict)."""
    raw = _mapping(raw, "config")
    _check_keys(raw, TOP_KEYS, "")
    engines = _mapping(raw.get("engines"), "engines")
    _check_keys(engines, {r.value for r in Role}, "engines")
    defaults = _mapping(raw.get("defaults", {}), "defaults")
    _check_keys(defaults, ENGINE_KEYS - {"model", "prm"}, "defaults")
    models_root = _root(raw, "models_root", overrides.models_root, ".")
    specs = {}
    for role in Role:
        section = _mapping(engines.get(role.value), f"engines.{role.value}")
        specs[role] = _engine(role, {**defaults, **section}, models_root, overrides.quantization)
    examples = overrides.examples_dir or Path(_str(raw, "examples_dir", "config", str(DEFAULT_EXAMPLES_DIR)))
    return EngineSetConfig(
        name=_str(raw, "name", "config"),
        output_root=_root(raw, "output_root", overrides.output_root),
        examples_dir=examples,
        calibration=_calibration(_mapping(raw.get("calibration", {}), "calibration")),
        draft=specs[Role.DRAFT],
        target=specs[Role.TARGET],
        prm=specs[Role.PRM],
        check_tokenizers=_bool(raw, "check_tokenizers", "config", True),
    )


def load_config(path: Path, overrides: Overrides = Overrides()) -> EngineSetConfig:
    """Read and validate a YAML engine-set config."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{path} is not valid YAML: {exc}") from None
    return parse_config(raw, overrides)
