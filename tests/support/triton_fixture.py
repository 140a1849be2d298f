"""Pytest fixtures: one real tritonserver per test session, on free ports.

The pipeline config is a parameter: RSD_TEST_PIPELINE=/path/to/pipeline.yaml serves those
models (e.g. the embedded trained ones); by default the tiny random models are built.
RSD_TEST_SERVE_CONFIG picks the serving YAML (default configs/triton/torch_cpu.yaml).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.config import REPO_ROOT
from runtime.deploy.server import free_ports


@dataclass(frozen=True, slots=True)
class ServerHandle:
    grpc_url: str
    http_url: str  # host:port
    metrics_url: str  # full URL of /metrics
    pipeline: Path
    repo: Path
    log_file: Path
    admin_key: str  # opens the restricted APIs (header runtime.deploy.server.ADMIN_HEADER)


@pytest.fixture(scope="session")
def pipeline_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("RSD_TEST_PIPELINE")
    if chosen:
        return Path(chosen).resolve()
    from runtime.tiny_models import tiny_config_yaml

    return tiny_config_yaml(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def triton_server(pipeline_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    from runtime.deploy.config import load_serve_config
    from runtime.deploy.repo import render_repository
    from runtime.deploy.server import TritonServer

    serve_file = os.environ.get("RSD_TEST_SERVE_CONFIG", str(REPO_ROOT / "configs" / "triton" / "torch_cpu.yaml"))
    http, grpc, metrics = free_ports(3)
    cfg = load_serve_config(serve_file).with_overrides(
        pipeline=pipeline_config, http_port=http, grpc_port=grpc, metrics_port=metrics, sub_request_timeout_s=60.0)
    root = tmp_path_factory.mktemp("triton")
    repo = render_repository(cfg, root / "repo")
    log_file = root / "tritonserver.log"
    server = TritonServer(repo, http, grpc, metrics, cfg.address, exit_timeout_s=10, log_file=log_file,
                          admin_key="session-admin-key")
    server.start(ready_timeout_s=300)
    try:
        yield ServerHandle(f"127.0.0.1:{grpc}", f"127.0.0.1:{http}", f"http://127.0.0.1:{metrics}/metrics",
                           pipeline_config, repo, log_file, server.admin_key)
    finally:
        server.stop()
