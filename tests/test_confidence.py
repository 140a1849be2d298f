"""The confidence verifier (PRM format `confidence`): the draft's own token log-probs judge its step,
with no model and no extra forward, in process, over the BLS contract and through a real server.

Expected rewards are worked from the definition (exp of the mean / min / last token log-prob) with
math, never by runtime.core.confidence itself.
"""
from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from runtime.core.confidence import ConfidenceVerifier, confidence
from runtime.core.errors import ConfigError, EngineError
from runtime.core.types import RewardRequest


def test_each_reduction_by_hand() -> None:
    lps = (math.log(0.5), math.log(0.25), math.log(0.8))
    assert confidence(lps, "mean") == pytest.approx((0.5 * 0.25 * 0.8) ** (1 / 3))
    assert confidence(lps, "min") == pytest.approx(0.25)
    assert confidence(lps, "last") == pytest.approx(0.8)
    assert confidence((), "mean") == 0.0  # the model ended at once: nothing to be sure of


def test_a_step_without_log_probs_is_an_engine_error_not_a_zero() -> None:
    session = ConfidenceVerifier().open("k")
    with pytest.raises(EngineError, match="log-probs for 0 of 1 steps"):
        asyncio.run(session.reward(RewardRequest("q", (), ("a step",))))


def confidence_config(tmp: Path, base: Path, reduction: str = "mean") -> Path:
    from runtime.config import load_config

    cfg = load_config(base)
    file = tmp / f"confidence-{reduction}.yaml"
    file.write_text(f"models:\n  draft: {{path: {cfg.draft.path}}}\n  target: {{path: {cfg.target.path}}}\n"
                    f"  prm: {{format: confidence, reduction: {reduction}}}\n"
                    "prompt_template: \"Q: {question}\\n\"\n"
                    "defaults: {max_tokens: 32, max_step_tokens: 6}\n")
    return file


@pytest.mark.parametrize(("prm", "field"), [
    ("{format: confidence, path: /somewhere}", "models.prm.path"),
    ("{format: value_head, path: /somewhere, reduction: mean}", "models.prm.reduction"),
    ("{format: confidence, reduction: median}", "models.prm.reduction"),
    ("{path: /somewhere}", "models.prm.format"),
])
def test_config_errors_name_the_field(tmp_path: Path, prm: str, field: str) -> None:
    from runtime.config import load_config

    file = tmp_path / "bad.yaml"
    file.write_text(f"models:\n  draft: {{path: /d}}\n  prm: {prm}\n")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(file)


@pytest.fixture(scope="module")
def confident(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config

    return build_pipeline(load_config(confidence_config(tmp_path_factory.mktemp("conf"), tiny_config)))


def test_rsd_rewards_are_the_drafts_own_confidence(confident) -> None:  # type: ignore[no-untyped-def]
    # threshold 0 keeps every draft step, so each event carries the draft's own token log-probs
    result = confident.generate_sync("12+7", {"method": "rsd", "threshold": 0.0, "return_log_probs": True})
    assert len(result.steps) >= 2
    for step in result.steps:
        lps = step.token_logprobs
        assert step.source == "draft" and lps
        assert step.reward == pytest.approx(math.exp(sum(lps) / len(lps)), rel=1e-6)


def test_the_verifier_costs_no_forward(confident) -> None:  # type: ignore[no-untyped-def]
    rsd = confident.generate_sync("12+7", {"method": "rsd", "threshold": 0.0})
    draft = confident.generate_sync("12+7", {"method": "draft"})
    assert rsd.text == draft.text
    assert rsd.stats["models"]["draft"] == draft.stats["models"]["draft"]  # the same draft work, no more
    prm = rsd.stats["models"]["prm"]
    assert prm["calls"] == len(rsd.steps) and prm["forwards"] == 0 and prm["flops"] == 0


def test_a_low_threshold_keeps_and_a_high_one_rewrites(confident) -> None:  # type: ignore[no-untyped-def]
    kept = confident.generate_sync("12+7", {"method": "rsd", "threshold": 0.0})
    rewritten = confident.generate_sync("12+7", {"method": "rsd", "threshold": 1.01})
    assert {s.source for s in kept.steps} == {"draft"}
    assert {s.source for s in rewritten.steps} == {"target"}


@pytest.mark.parametrize("method", ["bon", "gsi"])
def test_the_other_judged_methods_read_the_candidates_own_confidence(confident, method) -> None:  # type: ignore[no-untyped-def]
    params = {"method": method, "n": 3, "temperature": 0.9, "seed": 3, "return_log_probs": True}
    result = confident.generate_sync("12+7", params)
    assert result.steps
    for step in result.steps:  # the chosen candidate's reward is its own confidence (its producer's log-probs)
        lps = step.token_logprobs
        assert step.reward == pytest.approx(math.exp(sum(lps) / len(lps)) if lps else 0.0, rel=1e-6)


@pytest.mark.slow
def test_the_bls_needs_no_prm_sub_model(tmp_path: Path, pipeline_config: Path) -> None:
    from runtime.assembly.bls import build_bls_pipeline
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config
    from runtime.deploy.repo import roles_served
    from runtime.in_server.torch_submodels import build_lm_submodel
    from support.inprocess_triton import InProcessTransport

    cfg = load_config(confidence_config(tmp_path, pipeline_config))
    assert roles_served(cfg) == ["rsd", "draft", "target"]
    transport = InProcessTransport({role: build_lm_submodel(cfg, role, 8) for role in ("draft", "target")})
    bls, local = build_bls_pipeline(cfg, transport), build_pipeline(cfg)
    for threshold in (0.3, 0.8):
        params = {"method": "rsd", "threshold": threshold}
        expected, got = local.generate_sync("1+1=", params), bls.generate_sync("1+1=", params)
        assert got.text == expected.text
        assert [s.source for s in got.steps] == [s.source for s in expected.steps]
        assert [s.reward for s in got.steps] == pytest.approx([s.reward for s in expected.steps], rel=1e-4)
    assert "prm" not in transport.calls


@pytest.mark.server
@pytest.mark.slow
def test_a_real_server_serves_rsd_with_the_confidence_verifier(tmp_path: Path, pipeline_config: Path) -> None:
    from server_support import supervised_server

    from runtime.clients.client import RsdClient

    with supervised_server(confidence_config(tmp_path, pipeline_config), tmp_path) as server:
        assert not (tmp_path / "repo" / "prm").exists()  # no PRM model is served
        client = RsdClient(server.grpc_url)
        steps = list(client.stream("12+7", {"method": "rsd", "threshold": 0.0, "return_log_probs": True}))
        assert steps[-1].final and steps[-1].stats is not None
        for step in steps:
            assert step.sources == ("draft",) and step.log_probs
            lps = step.log_probs
            assert step.rewards[0] == pytest.approx(math.exp(sum(lps) / len(lps)), rel=1e-4)
        assert steps[-1].stats["models"]["prm"]["flops"] == 0


def test_on_tensorrt_llm_the_verifier_reads_the_engines_own_output_log_probs(tmp_path: Path, tiny_config: Path) -> None:
    """The trtllm layout on the strict TensorRT-LLM stand-in (tests/support/fake_trtllm*): no `prm` model is
    rendered, each draft step asks the engine for `return_log_probs`, and its reward is read from them."""
    import dataclasses

    from trtllm_helpers import fake_serve_config

    from runtime.assembly.bls import SubModels, build_bls_pipeline, parse_engines
    from runtime.config import load_config
    from runtime.deploy.repo import render_repository
    from runtime.deploy.trtllm_launch import mounted_paths
    from runtime.deploy.trtllm_repo import engine_facts, max_draft_len
    from support.fake_trtllm_repo import FakeTransport, load_fake_engine

    pipeline = confidence_config(tmp_path, tiny_config)
    cfg = dataclasses.replace(fake_serve_config(tmp_path, tiny_config, prm="torch"), pipeline=pipeline)
    assert cfg.trtllm is not None
    repo = render_repository(cfg, tmp_path / "repo")
    assert sorted(p.name for p in repo.iterdir()) == ["draft", "rsd", "target"]
    assert cfg.trtllm.engine_dir("prm") not in mounted_paths(cfg, load_config(pipeline))
    transport = FakeTransport({role: load_fake_engine(cfg.trtllm.engine_dir(role)) for role in ("draft", "target")})
    names = SubModels(backend="trtllm", max_draft_len=max_draft_len(cfg),
                      engines=parse_engines(engine_facts(cfg, ["draft", "target"])))
    bls = build_bls_pipeline(load_config(pipeline), transport, names)
    result = bls.generate_sync("1+1=", {"method": "rsd", "threshold": 0.0, "return_log_probs": True})
    assert result.steps
    assert any(step.token_ids for step in result.steps)
    for step in result.steps:  # an empty step (the engine ended at once) scores 0
        lps = step.token_logprobs
        assert step.source == "draft" and len(lps) == len(step.token_ids)
        assert step.reward == pytest.approx(math.exp(sum(lps) / len(lps)) if lps else 0.0, rel=1e-4)
    assert "prm" not in transport.handlers
