"""The `trtllm` section of a serving YAML: where the TensorRT-LLM engines are and how each is served.

    trtllm:
      engine_root: /engines/embedded   # `python -m build_engines` output root: <root>/<role>/engine
      engines:                         # one section per engine the pipeline uses (draft, target, prm)
        draft:  {gpu_device_ids: [0], max_tokens_in_paged_kv_cache: 65536, kv_cache_free_gpu_mem_fraction: 0.2}
        target: {gpu_device_ids: [0], max_tokens_in_paged_kv_cache: 131072, kv_cache_free_gpu_mem_fraction: 0.4}
        prm:    {gpu_device_ids: [0], max_tokens_in_paged_kv_cache: 65536, enable_kv_cache_reuse: false}
      batch_scheduler_policy: guaranteed_no_evict   # or max_utilization
      max_queue_size: 0                # Triton queue bound of each tensorrt_llm model (0: unbounded)
      native_verify: false             # sd verifies draft tokens in the target (needs max_draft_len > 0)
      image: nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3

Per engine: `engine_dir` (overrides engine_root), `gpu_device_ids`, `max_tokens_in_paged_kv_cache`
(required: a fixed KV budget, so engines sharing a GPU split it deterministically),
`kv_cache_free_gpu_mem_fraction` (a cap; TensorRT-LLM uses the smaller of the two budgets) and
`enable_kv_cache_reuse`. Relative paths resolve against the YAML file's folder. Several
`tensorrtllm` models in one server always run in orchestrator mode (runtime/deploy/trtllm_launch.py).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.core.errors import ConfigError

ENGINE_ROLES = ("draft", "target", "prm")
POLICIES = ("guaranteed_no_evict", "max_utilization")
TRTLLM_IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
_ENGINE_KEYS = {"engine_dir", "gpu_device_ids", "max_tokens_in_paged_kv_cache", "kv_cache_free_gpu_mem_fraction",
                "enable_kv_cache_reuse"}
_TOP_KEYS = {"engine_root", "engines", "batch_scheduler_policy", "max_queue_size", "native_verify", "image"}


@dataclass(frozen=True, slots=True)
class EngineServing:
    """How one engine (draft, target or prm) is served by its `tensorrt_llm` model."""

    role: str
    max_tokens_in_paged_kv_cache: int
    engine_dir: Path | None = None  # None: <engine_root>/<role>/engine
    gpu_device_ids: tuple[int, ...] = (0,)
    kv_cache_free_gpu_mem_fraction: float = 0.9
    enable_kv_cache_reuse: bool = True

    def __post_init__(self) -> None:
        where = f"trtllm.engines.{self.role}"
        _int_in(f"{where}.max_tokens_in_paged_kv_cache", self.max_tokens_in_paged_kv_cache, 1, 2**31 - 1)
        ids = self.gpu_device_ids
        if not ids or len(set(ids)) != len(ids):
            raise ConfigError(f"{where}.gpu_device_ids", f"must be a non-empty list of distinct GPU ids, got {list(ids)}")
        for gpu in ids:
            _int_in(f"{where}.gpu_device_ids", gpu, 0, 1023)
        fraction = self.kv_cache_free_gpu_mem_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise ConfigError(f"{where}.kv_cache_free_gpu_mem_fraction", f"must be a number in (0, 1], got {fraction!r}")
        _bool(f"{where}.enable_kv_cache_reuse", self.enable_kv_cache_reuse)


@dataclass(frozen=True, slots=True)
class TrtllmConfig:
    engines: tuple[EngineServing, ...]
    engine_root: Path | None = None
    batch_scheduler_policy: str = "guaranteed_no_evict"
    max_queue_size: int = 0
    native_verify: bool = False
    image: str = TRTLLM_IMAGE

    def __post_init__(self) -> None:
        if self.batch_scheduler_policy not in POLICIES:
            raise ConfigError("trtllm.batch_scheduler_policy",
                              f"must be one of {', '.join(POLICIES)}, got {self.batch_scheduler_policy!r}")
        _int_in("trtllm.max_queue_size", self.max_queue_size, 0, 10**6)
        _bool("trtllm.native_verify", self.native_verify)
        if not isinstance(self.image, str) or not self.image:
            raise ConfigError("trtllm.image", "must be a container image name")

    def engine(self, role: str) -> EngineServing:
        for engine in self.engines:
            if engine.role == role:
                return engine
        raise ConfigError(f"trtllm.engines.{role}", "missing: the pipeline uses this model")

    def engine_dir(self, role: str) -> Path:
        engine = self.engine(role)
        if engine.engine_dir is not None:
            return engine.engine_dir
        if self.engine_root is None:
            raise ConfigError(f"trtllm.engines.{role}.engine_dir", "needs engine_dir or trtllm.engine_root")
        return self.engine_root / role / "engine"

    def gpu_ids(self) -> tuple[int, ...]:
        return tuple(sorted({gpu for engine in self.engines for gpu in engine.gpu_device_ids}))

    def with_engine_root(self, root: Path) -> TrtllmConfig:
        return dataclasses.replace(self, engine_root=root.resolve())


def parse_trtllm(data: Any, base: Path) -> TrtllmConfig:
    """The `trtllm` mapping of a serving YAML; unknown keys fail, naming the key."""
    _known("trtllm", data, _TOP_KEYS)
    sections = data.get("engines") or {}
    _known("trtllm.engines", sections, set(ENGINE_ROLES))
    engines = []
    for role, section in sections.items():
        _known(f"trtllm.engines.{role}", section, _ENGINE_KEYS)
        if "max_tokens_in_paged_kv_cache" not in section:
            raise ConfigError(f"trtllm.engines.{role}.max_tokens_in_paged_kv_cache", "required: the engine's KV budget")
        values = dict(section)
        if "engine_dir" in values:
            values["engine_dir"] = _path(values["engine_dir"], base)
        if "gpu_device_ids" in values:
            values["gpu_device_ids"] = _int_list(f"trtllm.engines.{role}.gpu_device_ids", values["gpu_device_ids"])
        engines.append(EngineServing(role=role, **values))
    scalars = {k: v for k, v in data.items() if k not in ("engines", "engine_root")}
    root = _path(data["engine_root"], base) if data.get("engine_root") is not None else None
    return TrtllmConfig(engines=tuple(engines), engine_root=root, **scalars)


def _path(value: Any, base: Path) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _int_list(key: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of GPU ids, got {value!r}")
    return tuple(value)


def _int_in(key: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(key, f"must be an integer in {lo}..{hi}, got {value!r}")


def _bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")


def _known(where: str, mapping: Any, allowed: set[str]) -> None:
    if not isinstance(mapping, Mapping):
        raise ConfigError(where, f"expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}", f"unknown key; expected one of {', '.join(sorted(allowed))}")
