"""Shared fixtures: tiny real HF models built once per session, and GPU skipping."""
from __future__ import annotations

from pathlib import Path

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from runtime.tiny_models import tiny_config_yaml

    return tiny_config_yaml(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_config: Path):  # type: ignore[no-untyped-def]
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config

    return build_pipeline(load_config(tiny_config))


# The Triton server fixtures (one tritonserver per session; the pipeline config is a parameter,
# RSD_TEST_PIPELINE) live in tests/support/triton_fixture.py so the demo can reuse them.
from support.triton_fixture import pipeline_config, triton_server  # noqa: E402, F401
