"""The PyTorch engine on CUDA (marked gpu: skipped cleanly without a GPU; run on a lent GPU machine,
e.g. by scripts/gpu_bench.sh, which runs them without the conftest, hence the skipif here too).

Checks the CUDA path of the reference engine: degenerate equalities, agreement with the CPU
logits, concurrent requests, and batched forwards on the KV arena (views and gathers) equal
single ones.
"""
from __future__ import annotations

import asyncio

import pytest


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU (none found)")]


@pytest.fixture(scope="module")
def gpu_pipeline(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config
    from runtime.tiny_models import tiny_config_yaml

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
        session = p.engines.target.open("x")
        try:
            return (await session.logits(LogitsRequest(ids, 4))).logits
        finally:
            session.close()

    assert abs(asyncio.run(rows(gpu)) - asyncio.run(rows(cpu))).max() < 1e-3


def test_concurrent_requests_on_cuda(gpu_pipeline) -> None:  # type: ignore[no-untyped-def]
    gpu, _ = gpu_pipeline
    params = {"method": "rsd", "threshold": 0.5, "max_tokens": 24, "max_step_tokens": 8}
    questions = [f"{i}*{i}" for i in range(8)]
    sequential = [gpu.generate_sync(q, params).text for q in questions]

    async def together() -> list[str]:
        return [r.text for r in await asyncio.gather(*(gpu.generate(q, params) for q in questions))]

    assert asyncio.run(together()) == sequential


def test_batched_forwards_on_the_arena_equal_single_ones(gpu_pipeline) -> None:  # type: ignore[no-untyped-def]
    import torch

    from runtime.engines.torch.runner import Row

    runner = gpu_pipeline[0].engines.target.scheduler.runner
    seqs = [list(range(3, 3 + n)) for n in (9, 5, 12, 7)]
    caches = [runner.new_cache() for _ in seqs]
    runner.run([Row(c, s[:-2], 0) for c, s in zip(caches, seqs)])  # consecutive slots: a view
    together = runner.run([Row(c, s[-2:], 2) for c, s in zip(caches, seqs)])
    gathered = runner.run([Row(caches[i], [5], 1) for i in (0, 2)])  # slots 0 and 2: a gather
    fresh = [runner.new_cache() for _ in range(6)]
    for cache, seq, got in zip(fresh, seqs, together):
        (alone,) = runner.run([Row(cache, seq, 2)])
        assert torch.allclose(got, alone, atol=1e-4)
    for cache, i, got in zip(fresh[4:], (0, 2), gathered):
        (alone,) = runner.run([Row(cache, seqs[i] + [5], 1)])
        assert torch.allclose(got, alone, atol=1e-4)
    for cache in caches + fresh:
        cache.free()
