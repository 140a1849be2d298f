"""The one validation toolkit: YAML files, known keys, types, ranges, choices and paths, with one
message format, `<key>: <why>`.

Every config loader (pipeline, serving, TensorRT-LLM serving, engine build) and `RequestParams`
use these functions; `error` picks the typed error (ConfigError for files and flags,
RequestValidationError for request parameters), so the same mistake reads the same everywhere.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from runtime.core.errors import ConfigError, RsdError

ErrorType = Callable[[str, str], RsdError]
E = TypeVar("E", bound=Enum)


def fail(key: str, why: str, error: ErrorType = ConfigError) -> NoReturn:
    raise error(key, why)


def join(where: str, key: str) -> str:
    """`engines.draft` + `dtype` -> `engines.draft.dtype` (`where` '' is the top level)."""
    return f"{where}.{key}" if where else key


def load_yaml(path: str | Path, key: str = "config", what: str = "config file") -> Mapping[str, Any]:
    """A YAML file's top-level mapping (an empty file is an empty mapping)."""
    import yaml  # a light dependency, but the core stays importable without it

    file = Path(path)
    if not file.is_file():
        fail(key, f"{what} {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        fail(key, f"{file} is not valid YAML: {exc}")
    return mapping(key, {} if data is None else data)


def mapping(key: str, value: Any, error: ErrorType = ConfigError) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        fail(key or "config", f"expected a mapping, got {type(value).__name__}", error)
    return value


def known_keys(where: str, value: Any, allowed: Collection[str], error: ErrorType = ConfigError) -> Mapping[str, Any]:
    """`value` as a mapping whose keys are all in `allowed`; the first unknown key is named."""
    section = mapping(where, value, error)
    for key in section:
        if key not in allowed:
            fail(join(where, str(key)), f"unknown key; expected one of {', '.join(sorted(allowed))}", error)
    return section


def required(where: str, section: Mapping[str, Any], key: str, error: ErrorType = ConfigError) -> Any:
    if section.get(key) is None:
        fail(join(where, key), "required", error)
    return section[key]


_REQUIRED: Any = object()


def get(where: str, section: Mapping[str, Any], key: str, check: Callable[..., Any], default: Any = _REQUIRED,
        **limits: Any) -> Any:
    """`section[key]` (or `default`; required without one) through `check(key, value, **limits)`,
    e.g. `get("engines.draft", section, "tp_size", integer, 1, lo=1)`."""
    value = section.get(key, default)
    if value is _REQUIRED or value is None:
        fail(join(where, key), "required")
    return check(join(where, key), value, **limits)


def choice(key: str, value: Any, allowed: Collection[str], error: ErrorType = ConfigError) -> str:
    if value not in allowed:
        fail(key, f"unknown value {value!r}; expected one of {', '.join(allowed)}", error)
    return str(value)


def enum_value(key: str, value: Any, kind: type[E], error: ErrorType = ConfigError) -> E:
    try:
        return kind(value)
    except ValueError:
        fail(key, f"unknown value {value!r}; expected one of {', '.join(str(m.value) for m in kind)}", error)


def boolean(key: str, value: Any, error: ErrorType = ConfigError) -> bool:
    if not isinstance(value, bool):
        fail(key, f"must be true or false, got {value!r}", error)
    return value


def text(key: str, value: Any, error: ErrorType = ConfigError, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        fail(key, f"must be a string, got {value!r}", error)
    if non_empty and not value:
        fail(key, "must not be empty", error)
    return value


def integer(key: str, value: Any, lo: int | None = None, hi: int | None = None,
            error: ErrorType = ConfigError) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(key, f"must be an integer, got {value!r}", error)
    _in_range(key, value, lo, hi, False, error)
    return value


def number(key: str, value: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           allow_inf: bool = False, error: ErrorType = ConfigError) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(key, f"must be a number, got {value!r}", error)
    if math.isnan(value):
        fail(key, "must not be NaN", error)
    if math.isinf(value) and not allow_inf:
        fail(key, f"must be finite, got {value}", error)
    _in_range(key, value, lo, hi, lo_open, error)
    return value


def _in_range(key: str, value: float, lo: float | None, hi: float | None, lo_open: bool, error: ErrorType) -> None:
    if lo is not None and (value < lo or (lo_open and value == lo)):
        fail(key, f"must be {'>' if lo_open else '>='} {lo}, got {value}", error)
    if hi is not None and value > hi:
        fail(key, f"must be <= {hi}, got {value}", error)


def resolve_path(value: Any, base: Path) -> Path:
    """A path from a config file: `~` expanded, relative paths against the file's folder."""
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def coerce(key: str, value: Any, kind: type, error: ErrorType = ConfigError) -> Any:
    """Turn a loosely typed value (JSON, CLI text, numpy scalar, bytes) into `kind` (bool, int,
    float or str) without silently changing its meaning: 1.5 is no integer, "yes" no boolean."""
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if kind is bool:
        return _to_bool(key, value, error)
    if kind is int:
        return _to_int(key, value, error)
    if kind is float:
        if isinstance(value, bool):
            fail(key, f"must be a number, got {value!r}", error)
        try:
            return float(value)
        except (TypeError, ValueError):
            fail(key, f"must be a number, got {value!r}", error)
    return text(key, value, error)


def _to_bool(key: str, value: Any, error: ErrorType) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    fail(key, f"must be true or false, got {value!r}", error)


def _to_int(key: str, value: Any, error: ErrorType) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    fail(key, f"must be an integer, got {value!r}", error)
