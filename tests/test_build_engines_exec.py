"""Execution with a fake runner: preflight errors, manifests, idempotent skips and --force."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_build_helpers import FakeRunner, engine_set_yaml, make_hf_model

from build_engines.config import GpuArch, Quantization, Role
from build_engines.errors import (
    ConfigError,
    ModelFolderError,
    StepFailedError,
    TokenizerError,
    TokenizerMismatchError,
)
from build_engines.executor import execute
from build_engines.manifest import ENGINE_MANIFEST
from build_engines.plan import Toolchain, make_plan
from build_engines.yaml_config import Overrides, parse_config

TC = Toolchain(python="python3")
VALUE_PRM = {"format": "value_head", "head_layout": "score_head", "separator_token_id": 3,
             "model_cls_name": "QWenValueHeadPRM"}


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    make_hf_model(root / "draft", seed=1)
    make_hf_model(root / "target", seed=2)
    make_hf_model(root / "prm", head="value_head", seed=3)
    make_hf_model(root / "qwen_prm", head="two_class", seed=4)
    return root


def _plan(models: Path, tmp_path: Path, prm=VALUE_PRM, prm_model="prm", quant: Quantization | None = None, **kw):
    raw = engine_set_yaml(models, tmp_path / "engines", prm, prm_model=prm_model, **kw)
    return make_plan(parse_config(raw, Overrides(quantization=quant)), GpuArch.SM90, TC)


def _manifest(plan, role: Role) -> dict:
    engine = next(e for e in plan.engines if e.spec.role is role)
    return json.loads((engine.paths.engine / ENGINE_MANIFEST).read_text())


def test_build_writes_manifests_and_second_run_skips(models, tmp_path):
    plan = _plan(models, tmp_path, quantization="fp8")
    runner = FakeRunner()
    execute(plan, runner=runner, trtllm_version="1.2.1")
    assert len(runner.calls) == len(plan.steps) == 7
    draft = _manifest(plan, Role.DRAFT)
    assert (draft["quantization"], draft["kv_cache_dtype"], draft["gpu_arch"]) == ("fp8", "fp8", "sm90")
    assert draft["tensorrt_llm_version"] == "1.2.1" and draft["checkpoint_tool"] == "quantize.py"
    assert draft["source_model"] == str(models / "draft") and draft["hf_model_type"] == "qwen2"
    assert [c["argv"] for c in draft["commands"]] == [list(s.argv) for s in plan.engines[0].steps]
    assert draft["prm"] is None and draft["engine_dir"] == str(plan.engines[0].paths.engine)
    prm = _manifest(plan, Role.PRM)["prm"]
    assert prm["prm_format"] == "value_head" and prm["bias"] == pytest.approx(0.25)
    # QWenValueHeadPRM narrows the engine's vocabulary to the head's width
    assert (prm["op"], prm["index"], prm["separator_token_id"], prm["engine_vocab_size"]) == ("sigmoid", 0, 3, 1)
    assert "sigmoid(context_logits[t, 0] + 0.25)" in prm["formula"]
    assert (tmp_path / "engines" / "logs" / "draft.checkpoint.log").is_file()

    again = FakeRunner()
    results = execute(plan, runner=again, trtllm_version="1.2.1")
    assert again.calls == [] and all(o.skipped for outs in results.values() for o in outs)

    forced = FakeRunner()
    execute(plan, runner=forced, trtllm_version="1.2.1", force=True)
    assert len(forced.calls) == 7


def test_changed_flags_or_version_rerun_only_what_changed(models, tmp_path):
    execute(_plan(models, tmp_path), runner=FakeRunner(), trtllm_version="1.2.1")
    runner = FakeRunner()
    execute(_plan(models, tmp_path, quant=Quantization.INT8_WO), runner=runner, trtllm_version="1.2.1")
    ran = {(c[1] if c[0] != "trtllm-build" else c[0]) for c in runner.calls}
    assert len(runner.calls) == 4 and not any("prm" in " ".join(c) for c in runner.calls), ran
    runner = FakeRunner()
    execute(_plan(models, tmp_path, quant=Quantization.INT8_WO), runner=runner, trtllm_version="1.2.2")
    assert len(runner.calls) == 7


def test_two_class_prm_pipeline(models, tmp_path):
    prm = {"format": "two_class", "separator": "<extra_0>"}
    plan = _plan(models, tmp_path, prm=prm, prm_model="qwen_prm")
    execute(plan, runner=FakeRunner(), trtllm_version="1.2.1")
    engine = plan.engines[2]
    assert (engine.paths.checkpoint / "rsd_two_class_head.safetensors").is_file()
    readout = _manifest(plan, Role.PRM)["prm"]
    assert (readout["op"], readout["index"], readout["separator_token_id"]) == ("softmax", 1, 7)
    assert readout["engine_vocab_size"] == 2 and readout["bias"] == 0.0


def test_missing_model_folder(models, tmp_path):
    raw = engine_set_yaml(models, tmp_path / "e", VALUE_PRM)
    raw["engines"]["target"]["model"] = "Qwen2.5-Math-7B-Instruct"
    plan = make_plan(parse_config(raw), GpuArch.SM90, TC)
    with pytest.raises(ModelFolderError, match="engines.target: model folder not found"):
        execute(plan, runner=FakeRunner(), trtllm_version="1.2.1")
    assert not (tmp_path / "e").exists()


def test_tokenizer_mismatch_and_missing_tokenizer(models, tmp_path):
    make_hf_model(models / "other", tokenizer={"x": 0, "y": 1})
    raw = engine_set_yaml(models, tmp_path / "e", VALUE_PRM)
    raw["engines"]["target"]["model"] = "other"
    with pytest.raises(TokenizerMismatchError, match="draft and target tokenizers differ"):
        execute(make_plan(parse_config(raw), GpuArch.SM90, TC), runner=FakeRunner(), trtllm_version="x")
    raw["check_tokenizers"] = False
    execute(make_plan(parse_config(raw), GpuArch.SM90, TC), runner=FakeRunner(), trtllm_version="x")
    (models / "draft" / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match="engines.draft: no tokenizer"):
        execute(_plan(models, tmp_path), runner=FakeRunner(), trtllm_version="x")


def test_family_and_separator_mismatches_are_config_errors(models, tmp_path):
    with pytest.raises(ConfigError, match="model_type='qwen2'"):
        execute(_plan(models, tmp_path, family="llama", prm={"format": "value_head", "head_layout": "vocab_row"}),
                runner=FakeRunner(), trtllm_version="x")
    with pytest.raises(ConfigError, match="encodes"):
        execute(_plan(models, tmp_path, prm={**VALUE_PRM, "separator_token_id": 271}), runner=FakeRunner(),
                trtllm_version="x")


def test_failed_step_names_its_log(models, tmp_path):
    plan = _plan(models, tmp_path)
    with pytest.raises(StepFailedError, match="target.checkpoint.log"):
        execute(plan, runner=FakeRunner(fail_on="target/checkpoint"), trtllm_version="1.2.1")


def test_value_head_custom_class_narrows_engine_vocab(models, tmp_path):
    plan = _plan(models, tmp_path, prm={**VALUE_PRM, "model_cls_name": "QWenValueHeadPRM"})
    build = plan.engines[2].steps[-1]
    assert build.argv[build.argv.index("--model_cls_name") + 1] == "QWenValueHeadPRM"
    execute(plan, runner=FakeRunner(), trtllm_version="1.2.1")
    readout = _manifest(plan, Role.PRM)["prm"]
    assert readout["engine_vocab_size"] == 1 and readout["request"]["end_id"] == 0


def test_vocab_row_refuses_large_vocabularies(models, tmp_path):
    make_hf_model(models / "big_prm", family="llama", head="value_head", vocab_size=40000, hidden=2,
                  tokenizer={"\n": 0})
    for name in ("draft", "target"):
        make_hf_model(models / f"llama_{name}", family="llama", tokenizer={"\n": 0})
    raw = engine_set_yaml(models, tmp_path / "e", {"format": "value_head", "head_layout": "vocab_row"},
                          prm_model="big_prm", family="llama")
    raw["engines"]["draft"]["model"], raw["engines"]["target"]["model"] = "llama_draft", "llama_target"
    with pytest.raises(ConfigError, match="use score_head"):
        execute(make_plan(parse_config(raw), GpuArch.SM90, TC), runner=FakeRunner(), trtllm_version="x")


def test_only_builds_the_requested_engine(models, tmp_path):
    raw = engine_set_yaml(models, tmp_path / "e", VALUE_PRM)
    plan = make_plan(parse_config(raw), GpuArch.SM89, TC, roles=(Role.PRM,))
    runner = FakeRunner()
    execute(plan, runner=runner, trtllm_version="1.2.1")
    assert [e.spec.role for e in plan.engines] == [Role.PRM] and len(runner.calls) == 3
