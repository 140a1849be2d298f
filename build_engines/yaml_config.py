"""Strict YAML loading of configs/engines/<set>.yaml into `EngineSetConfig`.

Unknown keys, wrong types and out-of-range values are errors that name the key (dotted path).
Relative `models_root` / `output_root` are resolved against the current directory; every model path
is resolved against `models_root`, which the CLI can override (--models-root).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    PrmSpec,
    Quantization,
    Role,
)
from runtime.core import validate
from runtime.core.types import PrmKind

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


def _quantization(value: Any, key: str) -> tuple[tuple[GpuArch, Quantization], ...]:
    if isinstance(value, str):
        q = validate.enum_value(key, value, Quantization)
        return tuple((arch, q) for arch in GpuArch)
    table = validate.mapping(key, value)
    validate.known_keys(key, table, {a.value for a in GpuArch})
    return tuple((arch, validate.enum_value(f"{key}.{arch.value}", table.get(arch.value, "auto"), Quantization))
                 for arch in GpuArch)


def _prm(section: dict[str, Any], where: str) -> PrmSpec:
    validate.known_keys(where, section, PRM_KEYS)
    fmt = validate.enum_value(f"{where}.format", section.get("format"), PrmKind)
    default_layout = "two_class_custom" if fmt is PrmKind.TWO_CLASS else "score_head"
    default_sep = "<extra_0>" if fmt is PrmKind.TWO_CLASS else "\n\n"
    token_id = section.get("separator_token_id")
    if token_id is not None:
        token_id = validate.get(where, section, "separator_token_id", validate.integer)
    cls_name = section.get("model_cls_name")
    if cls_name is not None:
        cls_name = validate.get(where, section, "model_cls_name", validate.text)
    return PrmSpec(
        format=fmt,
        head_layout=validate.enum_value(f"{where}.head_layout", section.get("head_layout", default_layout), HeadLayout),
        num_labels=validate.get(where, section, "num_labels", validate.integer, 2 if fmt is PrmKind.TWO_CLASS else 1),
        separator=validate.get(where, section, "separator", validate.text, default_sep),
        separator_token_id=token_id,
        model_cls_name=cls_name,
        where=where,
    )


def _engine(role: Role, section: dict[str, Any], models_root: Path, qoverride: Quantization | None) -> EngineSpec:
    w = f"engines.{role.value}"
    validate.known_keys(w, section, ENGINE_KEYS)
    model = Path(validate.get(w, section, "model", validate.text)).expanduser()
    prm_section = section.get("prm")
    prm = _prm(validate.mapping(f"{w}.prm", prm_section), f"{w}.prm") if prm_section is not None else None
    quant = _quantization(section.get("quantization", "auto"), f"{w}.quantization")
    if qoverride is not None and role is not Role.PRM:
        quant = tuple((arch, qoverride) for arch in GpuArch)
    limits = Limits(*(validate.get(w, section, key, validate.integer)
                      for key in ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens")), where=w)
    return EngineSpec(
        role=role,
        model=model if model.is_absolute() else models_root / model,
        family=validate.enum_value(f"{w}.family", section.get("family"), ModelFamily),
        dtype=validate.enum_value(f"{w}.dtype", section.get("dtype", "bfloat16"), Dtype),
        quantization=quant,
        kv_cache_dtype=validate.enum_value(f"{w}.kv_cache_dtype", section.get("kv_cache_dtype", "auto"), KvCacheDtype),
        tp_size=validate.get(w, section, "tp_size", validate.integer, 1),
        limits=limits,
        gemm_plugin=validate.get(w, section, "gemm_plugin", validate.text, "auto"),
        tokens_per_block=validate.get(w, section, "tokens_per_block", validate.integer, 32),
        max_draft_len=validate.get(w, section, "max_draft_len", validate.integer, 0),
        multiple_profiles=validate.get(w, section, "multiple_profiles", validate.boolean, False),
        prm=prm,
    )


def _calibration(section: dict[str, Any]) -> Calibration:
    validate.known_keys("calibration", section, CALIB_KEYS)
    d = Calibration()
    return Calibration(
        dataset=validate.get("calibration", section, "dataset", validate.text, d.dataset),
        size=validate.get("calibration", section, "size", validate.integer, d.size),
        max_seq_length=validate.get("calibration", section, "max_seq_length", validate.integer, d.max_seq_length),
        batch_size=validate.get("calibration", section, "batch_size", validate.integer, d.batch_size),
    )


def _root(raw: dict[str, Any], key: str, override: Path | None, default: str | None = None) -> Path:
    if override is not None:
        return override.expanduser().resolve()
    return Path(validate.get("config", raw, key, validate.text, default)).expanduser().resolve()


def parse_config(raw: Any, overrides: Overrides = Overrides()) -> EngineSetConfig:
    """Build an EngineSetConfig from parsed YAML (a dict)."""
    raw = validate.mapping("config", raw)
    validate.known_keys("", raw, TOP_KEYS)
    engines = validate.mapping("engines", raw.get("engines"))
    validate.known_keys("engines", engines, {r.value for r in Role})
    defaults = validate.mapping("defaults", raw.get("defaults", {}))
    validate.known_keys("defaults", defaults, ENGINE_KEYS - {"model", "prm"})
    models_root = _root(raw, "models_root", overrides.models_root, ".")
    specs = {}
    for role in Role:
        section = validate.mapping(f"engines.{role.value}", engines.get(role.value))
        specs[role] = _engine(role, {**defaults, **section}, models_root, overrides.quantization)
    examples = overrides.examples_dir or Path(validate.get("config", raw, "examples_dir", validate.text, str(DEFAULT_EXAMPLES_DIR)))
    return EngineSetConfig(
        name=validate.get("config", raw, "name", validate.text),
        output_root=_root(raw, "output_root", overrides.output_root),
        examples_dir=examples,
        calibration=_calibration(validate.mapping("calibration", raw.get("calibration", {}))),
        draft=specs[Role.DRAFT],
        target=specs[Role.TARGET],
        prm=specs[Role.PRM],
        check_tokenizers=validate.get("config", raw, "check_tokenizers", validate.boolean, True),
    )


def load_config(path: Path, overrides: Overrides = Overrides()) -> EngineSetConfig:
    """Read and validate a YAML engine-set config."""
    return parse_config(validate.load_yaml(path), overrides)
