"""The `trtllm` section of a serving YAML: where the TensorRT-LLM engines are and how each is served.

    trtllm:
      engine_root: /engines/embedded   # `python -m build_engines` output root: <root>/<role>/engine
      engines:                         # one section per engine the pipeline uses (draft, target, prm)
        draft:  {gpu_device_ids: [0], max_tokens_in_paged_kv_cache: 65536, kv_cache_free_gpu_mem_fraction: 0.2}
        target: {gpu_device_ids: [0], max_tokens_in_paged_kv_cache: 131072, kv_cache_free_gpu_mem_fraction: 0.4}
        prm:    {gpu_device_ids: [0], max_tokens_in_paged_kv_cache: 65536, enable_kv_cache_reuse: false}
      prm: torch                       # the reward model: torch (our PyTorch PRM on the pipeline's
                                       # device, e.g. cuda, in the same server) or engine (a PRM engine, opt-in)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.core import validate
from runtime.core.errors import ConfigError

ENGINE_ROLES = ("draft", "target", "prm")
POLICIES = ("guaranteed_no_evict", "max_utilization")
PRM_PATHS = ("torch", "engine")
TRTLLM_IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
_ENGINE_KEYS = {"engine_dir", "gpu_device_ids", "max_tokens_in_paged_kv_cache", "kv_cache_free_gpu_mem_fraction",
                "enable_kv_cache_reuse"}
_TOP_KEYS = {"engine_root", "engines", "batch_scheduler_policy", "max_queue_size", "native_verify", "image", "prm"}


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
        validate.integer(f"{where}.max_tokens_in_paged_kv_cache", self.max_tokens_in_paged_kv_cache, lo=1, hi=2**31 - 1)
        ids = self.gpu_device_ids
        if not ids or len(set(ids)) != len(ids):
            raise ConfigError(f"{where}.gpu_device_ids", f"must be a non-empty list of distinct GPU ids, got {list(ids)}")
        for gpu in ids:
            validate.integer(f"{where}.gpu_device_ids", gpu, lo=0, hi=1023)
        validate.number(f"{where}.kv_cache_free_gpu_mem_fraction", self.kv_cache_free_gpu_mem_fraction,
                        lo=0.0, hi=1.0, lo_open=True)
        validate.boolean(f"{where}.enable_kv_cache_reuse", self.enable_kv_cache_reuse)


@dataclass(frozen=True, slots=True)
class TrtllmConfig:
    engines: tuple[EngineServing, ...]
    engine_root: Path | None = None
    batch_scheduler_policy: str = "guaranteed_no_evict"
    max_queue_size: int = 0
    native_verify: bool = False
    image: str = TRTLLM_IMAGE
    # A reward-head PRM on the PyTorch engine (the torch_prm model, on the pipeline's models.prm.device),
    # or on a TensorRT-LLM engine (opt-in: the narrowed-vocabulary engine, docs/production_gpu.md §4).
    prm: str = "torch"

    def __post_init__(self) -> None:
        validate.choice("trtllm.prm", self.prm, PRM_PATHS)
        if self.batch_scheduler_policy not in POLICIES:
            raise ConfigError("trtllm.batch_scheduler_policy",
                              f"must be one of {', '.join(POLICIES)}, got {self.batch_scheduler_policy!r}")
        validate.integer("trtllm.max_queue_size", self.max_queue_size, lo=0, hi=10**6)
        validate.boolean("trtllm.native_verify", self.native_verify)
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
    data = validate.known_keys("trtllm", data, _TOP_KEYS)
    sections = validate.known_keys("trtllm.engines", data.get("engines") or {}, ENGINE_ROLES)
    engines = []
    for role, section in sections.items():
        values = dict(validate.known_keys(f"trtllm.engines.{role}", section, _ENGINE_KEYS))
        validate.required(f"trtllm.engines.{role}", values, "max_tokens_in_paged_kv_cache")
        if "engine_dir" in values:
            values["engine_dir"] = validate.resolve_path(values["engine_dir"], base)
        if "gpu_device_ids" in values:
            values["gpu_device_ids"] = _int_list(f"trtllm.engines.{role}.gpu_device_ids", values["gpu_device_ids"])
        engines.append(EngineServing(role=role, **values))
    scalars = {k: v for k, v in data.items() if k not in ("engines", "engine_root")}
    root = validate.resolve_path(data["engine_root"], base) if data.get("engine_root") is not None else None
    return TrtllmConfig(engines=tuple(engines), engine_root=root, **scalars)


def _int_list(key: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of GPU ids, got {value!r}")
    return tuple(value)
