"""Serving configuration (`configs/triton/*.yaml`): YAML -> a frozen dataclass, strict.

    backend: torch                 # torch | trtllm (trtllm: the `trtllm` section, runtime/deploy/trtllm_config.py)
    pipeline: ../default.yaml      # the pipeline config (models, prompt template, defaults)
    address: 127.0.0.1
    ports: {http: 8000, grpc: 8001, metrics: 8002, openai: 9000, health: 8003}
                                   # openai 0: no OpenAI front; health: /ready and /live of the whole
                                   # server (runtime/deploy/health.py), 0: none
    model_names: [rsd]             # the names the rsd BLS is served under (TensorRT-LLM's: ensemble,
                                   # tensorrt_llm_bls); `rsd serve --model-name` overrides
    instances: {rsd: 1, draft: 1, target: 1, prm: 1}
    max_batch_size: 8              # Triton-side batch limit of the draft/target models
    max_queue_delay_us: 0          # Triton's dynamic batching delay of the draft/target models (trtllm
                                   # only; torch sub-models batch in flight, so it must be 0 there)
    sub_request_timeout_s: 120     # a BLS sub-request gets an error after this, never hangs
    bls_threads: 64                # concurrent sub-requests of the BLS
    cache_requests: 64             # per-request KV caches each torch sub-model keeps
    admission: {max_running_rows: 0, max_queue_size: 256, queue_timeout_s: 30}
                                   # rows the BLS runs at once (0: cache_requests, the sessions each
                                   # sub-model keeps), requests waiting in Triton's queue, and how long;
                                   # past either: UNAVAILABLE / HTTP 503 (runtime/in_server/admission.py)
    torch_threads: 1               # intra-op threads per torch sub-model (0: the pipeline's engine.torch_threads)
    exit_timeout_s: 30             # tritonserver --exit-timeout-secs
    max_prompt_bytes: 65536        # a longer text_input is refused before it is tokenised
    shutdown_grace_s: 30           # SIGTERM: in-flight requests get this long to finish
    restarts: {max: 5, window_s: 600, backoff_s: 1}   # rsd serve restarts a failed server this often
    trtllm: {...}                  # backend trtllm only: engines, GPUs, KV budgets (trtllm_config.py)
Relative paths resolve against the YAML file's folder.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.core import validate
from runtime.core.errors import ConfigError
from runtime.deploy.trtllm_config import TrtllmConfig, parse_trtllm

BACKENDS = ("torch", "trtllm")
ROLES = ("rsd", "draft", "target", "prm")


@dataclass(frozen=True, slots=True)
class ServeConfig:
    pipeline: Path
    backend: str = "torch"
    address: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    openai_port: int = 9000  # the OpenAI-compatible front (runtime.frontends.openai_api); 0: none
    health_port: int = 8003  # /ready and /live of rsd serve (runtime.deploy.health); 0: none
    instances: tuple[tuple[str, int], ...] = (("rsd", 1), ("draft", 1), ("target", 1), ("prm", 1))
    model_names: tuple[str, ...] = ("rsd",)
    max_batch_size: int = 8
    max_queue_delay_us: int = 0
    sub_request_timeout_s: float = 120.0
    bls_threads: int = 64
    cache_requests: int = 64
    max_running_rows: int = 0  # 0: cache_requests (torch), 64 (trtllm)
    max_queue_size: int = 256
    queue_timeout_s: float = 30.0
    # Several torch processes share the CPU: one intra-op thread each avoids OpenMP threads
    # spinning against each other (measured on 2 cores: 12x lower latency than torch's default).
    torch_threads: int = 1
    exit_timeout_s: int = 30
    max_prompt_bytes: int = 65536
    shutdown_grace_s: float = 30.0
    max_restarts: int = 5  # within restart_window_s; then `rsd serve` exits non-zero
    restart_window_s: float = 600.0
    restart_backoff_s: float = 1.0  # doubles after each restart, up to 30 s
    trtllm: TrtllmConfig | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError("backend", f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        for name in ("http_port", "grpc_port", "metrics_port", "openai_port", "health_port"):
            validate.integer(name, getattr(self, name), lo=0, hi=65535)
        for role, count in self.instances:
            validate.integer(f"instances.{role}", count, lo=1, hi=64)
        if not self.model_names or len(set(self.model_names)) != len(self.model_names):
            raise ConfigError("model_names", f"one or more distinct names, got {list(self.model_names)}")
        for name in self.model_names:
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", name):
                raise ConfigError("model_names", f"{name!r} is not a model name (letters, digits, _ . -)")
            if name in ("draft", "target", "prm", "prm_engine"):
                raise ConfigError("model_names", f"{name!r} is a sub-model's name")
        validate.integer("max_batch_size", self.max_batch_size, lo=1, hi=4096)
        validate.integer("max_queue_delay_us", self.max_queue_delay_us, lo=0, hi=10**7)
        if self.backend == "torch" and self.max_queue_delay_us:
            raise ConfigError("max_queue_delay_us", "only 0 with backend torch: its sub-models batch every request "
                                                    "in flight in the engine, so Triton's batching delay would only "
                                                    "hold each request back (it applies to backend trtllm)")
        validate.integer("bls_threads", self.bls_threads, lo=1, hi=4096)
        validate.integer("cache_requests", self.cache_requests, lo=1, hi=10**6)
        validate.integer("admission.max_running_rows", self.max_running_rows, lo=0, hi=10**6)
        validate.integer("admission.max_queue_size", self.max_queue_size, lo=1, hi=10**6)
        validate.number("admission.queue_timeout_s", self.queue_timeout_s, lo=0, hi=86400, lo_open=True)
        if self.backend == "torch" and self.max_running_rows > self.cache_requests:
            raise ConfigError("admission.max_running_rows", f"{self.max_running_rows} rows would need more sessions "
                                                            f"than the {self.cache_requests} each sub-model keeps "
                                                            f"(cache_requests)")
        validate.integer("torch_threads", self.torch_threads, lo=0, hi=1024)
        validate.integer("exit_timeout_s", self.exit_timeout_s, lo=1, hi=3600)
        validate.integer("max_prompt_bytes", self.max_prompt_bytes, lo=1, hi=2**30)
        validate.integer("max_restarts", self.max_restarts, lo=0, hi=1000)
        for name in ("shutdown_grace_s", "restart_window_s", "restart_backoff_s"):
            validate.number(name, getattr(self, name), lo=0, hi=86400)
        validate.number("sub_request_timeout_s", self.sub_request_timeout_s, lo=0, lo_open=True)
        if (self.backend == "trtllm") != (self.trtllm is not None):
            raise ConfigError("trtllm", "required for backend trtllm, and only allowed with it")
        for role in ("draft", "target", "prm") if self.backend == "torch" else ("draft", "target"):
            if self.instance_count(role) != 1:
                raise ConfigError(f"instances.{role}", (
                    "a tensorrt_llm model runs exactly one instance (its executor batches in flight)"
                    if self.backend == "trtllm" else "one torch sub-model batches every request in flight, and "
                    "keeps each request's KV cache in its own process: instances would split a request's cache"))

    def instance_count(self, role: str) -> int:
        return dict(self.instances)[role]

    @property
    def running_rows(self) -> int:
        """One BLS instance's admission capacity: together the instances run at most the sessions each
        torch sub-model keeps (cache_requests), or max_running_rows; several served names share it."""
        total = self.max_running_rows or (self.cache_requests if self.backend == "torch" else 64)
        return max(1, total // (self.instance_count("rsd") * len(self.model_names)))

    def with_overrides(self, **values: Any) -> ServeConfig:
        """CLI overrides (None = keep)."""
        updates: dict[str, Any] = {k: (Path(v).resolve() if k == "pipeline" else v)
                                   for k, v in values.items() if v is not None}
        return dataclasses.replace(self, **updates)


def load_serve_config(path: str | Path) -> ServeConfig:
    file = Path(path)
    return parse_serve_config(validate.load_yaml(file, what="serving config"), file.resolve().parent, file.resolve())


def parse_serve_config(data: Mapping[str, Any], base: Path, source: Path | None = None) -> ServeConfig:
    validate.known_keys("", data, {"backend", "pipeline", "address", "ports", "instances", "model_names", "max_batch_size",
                      "max_queue_delay_us", "sub_request_timeout_s", "bls_threads", "cache_requests",
                      "admission", "torch_threads", "exit_timeout_s", "max_prompt_bytes", "shutdown_grace_s",
                      "restarts", "trtllm"})
    pipeline = validate.resolve_path(validate.required("", data, "pipeline"), base)
    ports = validate.known_keys("ports", data.get("ports") or {}, {"http", "grpc", "metrics", "openai", "health"})
    instances = validate.known_keys("instances", data.get("instances") or {}, ROLES)
    restarts = validate.known_keys("restarts", data.get("restarts") or {}, {"max", "window_s", "backoff_s"})
    admission = validate.known_keys("admission", data.get("admission") or {},
                                    {"max_running_rows", "max_queue_size", "queue_timeout_s"})
    scalars = {k: v for k, v in data.items()
               if k not in ("pipeline", "ports", "instances", "restarts", "admission", "trtllm", "model_names")}
    if "model_names" in data:
        names = data["model_names"]
        scalars["model_names"] = tuple(names) if isinstance(names, list) else (names,)
    scalars.update(admission)
    scalars.update({f"restart_{k}" if k != "max" else "max_restarts": v for k, v in restarts.items()})
    trtllm = parse_trtllm(data["trtllm"], base) if data.get("trtllm") is not None else None
    return ServeConfig(
        pipeline=pipeline,
        **{f"{k}_port": v for k, v in ports.items()},
        instances=tuple((role, instances.get(role, 1)) for role in ROLES),
        **scalars,
        trtllm=trtllm,
        source=source,
    )
