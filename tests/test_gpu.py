"""The PyTorch engine on CUDA (marked gpu: skipped cleanly without a GPU; run on a lent GPU machine).

Checks the CUDA path of the reference engine: batched forwards, degenerate equalities, agreement
with the CPU logits, and concurrent requests.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_pipeline(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from runtime.config import load_config
    from runtime.engines.torch.factory import build_pipeline
    from runtime.testing.tiny_models import tiny_config_yaml

    root = tmp_path_factory.mktemp("tiny_gpu")
    return build_pipeline(load_config(tiny_config_yaml(root, "cuda"))), build_pipeline(
        load_config(tiny_config_yaml(root, "cpu")))


def test_engine_runs_on_cuda(gpu_pipeline) -> None:  # type: ignore[no-untyped-def]
    gpu, _ = gpu_pipeline
    assert gpu.engines.target.device.type == "cuda"
    result = gpu.generate_sync("1+2", {"method": "rsd", "threshold": 0.5, "max_tokens": 24})
    assert result.stats["tokens"] > 0


def test_degenerate_equalities_on_cuda(gpu_pipeline) -> None:  # type: ignore[no-untyped-def]
    gpu, _ = gpu_pipeline
    params = {"max_tokens": 32, "max_step_tokens": 8}
    target = gpu.generate_sync("12*3", {**params, "method": "target"}).text
    assert gpu.generate_sync("12*3", {**params, "method": "rsd", "threshold": 1.5}).text == target
    assert gpu.generate_sync("12*3", {**params, "method": "sd", "gamma": 4}).text == target
    draft = gpu.generate_sync("12*3", {**params, "method": "draft"}).text
    assert gpu.generate_sync("12*3", {**params, "method": "rsd", "threshold": 0.0}).text == draft


def test_cuda_logits_match_cpu(gpu_pipeline) -> None:  # type: ignore[no-untyped-def]
    from runtime.core.types import LogitsRequest

    gpu, cpu = gpu_pipeline
    ids = tuple(range(3, 40))

    async def rows(p) -> object:  # type: ignore[no-untyped-def]
        return (await p.engines.target.logits(LogitsRequest("x", ids, 4))).logits

    assert abs(asyncio.run(rows(gpu)) - asyncio.run(rows(cpu))).max() < 1e-3


def test_concurrent_requests_on_cuda(gpu_pipeline) -> None:  # type: ignore[no-untyped-def]
    gpu, _ = gpu_pipeline
    params = {"method": "rsd", "threshold": 0.5, "max_tokens": 24, "max_step_tokens": 8}
    questions = [f"{i}*{i}" for i in range(8)]
    sequential = [gpu.generate_sync(q, params).text for q in questions]

    async def together() -> list[str]:
        return [r.text for r in await asyncio.gather(*(gpu.generate(q, params) for q in questions))]

    assert asyncio.run(together()) == sequential
