"""The `trtllm` model repository without a server: rendered configs parsed with Triton's own
model-config protobuf, checked against TensorRT-LLM's real `tensorrt_llm` contract and against
every tensor the BLS actually sends; serving-YAML strictness; the orchestrator launch."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from trtllm_helpers import TRTLLM_YAML, fake_serve_config, in_process

from runtime.core.errors import ConfigError
from runtime.core.types import VerifyRequest
from runtime.deploy.config import load_serve_config, parse_serve_config
from runtime.deploy.repo import render_repository
from runtime.deploy.trtllm_launch import launch_for, mounted_paths
from support.trtllm_contract import NUMPY_TYPES, REAL_INPUTS, REAL_OUTPUTS

ENGINE_MODELS = ("draft", "target", "prm_engine")


@pytest.fixture(scope="module")
def fake_cfg(tmp_path_factory, tiny_config):
    return fake_serve_config(tmp_path_factory.mktemp("trtllm"), tiny_config)


@pytest.fixture(scope="module")
def rendered(fake_cfg, tmp_path_factory):
    repo = render_repository(fake_cfg, tmp_path_factory.mktemp("repo") / "trtllm")
    return {d.name: parse(d / "config.pbtxt") for d in repo.iterdir()}


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def params(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def dtype_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def test_layout_and_required_parameters(rendered, fake_cfg):
    assert sorted(rendered) == ["draft", "prm", "prm_engine", "rsd", "target"]
    trt = fake_cfg.trtllm
    for name in ENGINE_MODELS:
        config, p = rendered[name], params(rendered[name])
        role = "prm" if name == "prm_engine" else name
        assert config.name == name and config.backend == "tensorrtllm"
        assert config.model_transaction_policy.decoupled and config.instance_group[0].count == 1
        assert p["gpt_model_type"] == "inflight_fused_batching" and p["gpt_model_path"] == str(trt.engine_dir(role))
        assert p["exclude_input_in_output"] == "true" and p["max_beam_width"] == "1"
        assert p["enable_kv_cache_reuse"] == ("false" if role == "prm" else "true")
        engine = trt.engine(role)
        assert p["gpu_device_ids"] == ",".join(map(str, engine.gpu_device_ids))
        assert p["max_tokens_in_paged_kv_cache"] == str(engine.max_tokens_in_paged_kv_cache)
        assert float(p["kv_cache_free_gpu_mem_fraction"]) == engine.kv_cache_free_gpu_mem_fraction
        assert p["batch_scheduler_policy"] == trt.batch_scheduler_policy
        assert p["executor_worker_path"].endswith("trtllmExecutorWorker")
        outputs = {o.name: o for o in config.output}
        assert {dtype_name(outputs[n].data_type) for n in ("context_logits", "generation_logits")} == {"TYPE_FP32"}
        assert config.dynamic_batching.default_queue_policy.max_queue_size == trt.max_queue_size
    prm = params(rendered["prm"])
    assert rendered["prm"].backend == "python" and prm["engine_model"] == "prm_engine"
    assert prm["engine_manifest"].endswith("prm/engine/rsd_engine_manifest.json")
    rsd = params(rendered["rsd"])
    assert rsd["submodel_backend"] == "trtllm" and rsd["max_draft_len"] == "8"


def test_template_is_a_subset_of_the_real_tensorrt_llm_contract(rendered):
    """Every input and output our template declares exists in TensorRT-LLM's model, same dtype and dims."""
    for name in ENGINE_MODELS:
        for tensors, real in ((rendered[name].input, REAL_INPUTS), (rendered[name].output, REAL_OUTPUTS)):
            for t in tensors:
                assert t.name in real, t.name
                assert dtype_name(t.data_type) == real[t.name].dtype, t.name
                assert tuple(t.dims) == real[t.name].dims, t.name
                if hasattr(t, "reshape") and t.HasField("reshape"):
                    assert real[t.name].scalar and list(t.reshape.shape) == []
        required = {t.name for t in rendered[name].input if not t.optional}
        assert required == {"input_ids", "input_lengths", "request_output_len"}


def _declared_ok(config: model_config_pb2.ModelConfig, name: str, value: np.ndarray) -> bool:
    spec = {t.name: t for t in config.input}.get(name)
    if spec is None or NUMPY_TYPES[dtype_name(spec.data_type)] != value.dtype:
        return False
    dims = list(spec.dims)
    return value.shape[0] == 1 and all(d == -1 or d == s for d, s in zip(dims, value.shape[1:])) \
        and len(value.shape) == len(dims) + 1


def test_every_tensor_the_bls_sends_is_declared(rendered, fake_cfg):
    """Run rsd, sd (native verification), target and n-candidate requests in process and check each
    tensor every engine request carried against the rendered config of the model it went to."""
    pipeline, transport = in_process(fake_cfg)
    for params_ in ({"method": "rsd"}, {"method": "sd"}, {"method": "target"},
                    {"method": "rsd", "n": 3, "temperature": 0.7, "seed": 5}):
        asyncio.run(pipeline.generate("1+1=", {"max_tokens": 24, **params_}))
    target = pipeline.engines.target
    probs = np.full((2, 57), 1 / 57)
    asyncio.run(target.open("k").verify(VerifyRequest((3, 4, 5), (6, 7), probs, 0.7, 1.0, 1)))  # draft_logits
    sent = {(model, name) for model, tensors in transport.requests for name in tensors}
    assert ("target", "draft_input_ids") in sent and ("target", "draft_logits") in sent
    assert ("draft", "stop_words_list") in sent and ("prm_engine", "return_context_logits") in sent
    for model, tensors in transport.requests:
        for name, value in tensors.items():
            assert _declared_ok(rendered[model], name, value), (model, name, value.dtype, value.shape)
    outputs = {o.name for o in rendered["target"].output}
    assert set(pipeline.engines.draft.outputs) <= outputs and "sequence_index" in pipeline.engines.draft.outputs


def test_serve_command_renders_the_shipped_yaml(fake_cfg, tmp_path):
    from runtime.cli.main import main

    out = tmp_path / "repo"
    code = main(["serve", "--config", str(TRTLLM_YAML), "--pipeline", str(fake_cfg.pipeline),
                 "--engines", str(fake_cfg.trtllm.engine_root), "--repo", str(out), "--render-only"])
    # the shipped YAML's PRM is the torch PRM (trtllm.prm: torch): no prm_engine model
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["draft", "prm", "rsd", "target"]
    assert 'backend: "python"' in (out / "prm" / "config.pbtxt").read_text()
    assert "${" not in "".join(p.read_text() for p in out.glob("*/config.pbtxt"))


def _yaml(tmp_path: Path, trtllm: dict, **top) -> object:
    return parse_serve_config({"pipeline": "p.yaml", "backend": "trtllm", "trtllm": trtllm, **top}, tmp_path)


ENGINE = {"max_tokens_in_paged_kv_cache": 1024}


@pytest.mark.parametrize(("trtllm", "top", "key"), [
    ({"engines": {"draft": ENGINE}, "engine_rot": "x"}, {}, "trtllm.engine_rot"),
    ({"engines": {"drafts": ENGINE}}, {}, "trtllm.engines.drafts"),
    ({"engines": {"draft": {**ENGINE, "gpu_ids": [0]}}}, {}, "trtllm.engines.draft.gpu_ids"),
    ({"engines": {"draft": {}}}, {}, "trtllm.engines.draft.max_tokens_in_paged_kv_cache"),
    ({"engines": {"draft": {**ENGINE, "gpu_device_ids": [0, 0]}}}, {}, "gpu_device_ids"),
    ({"engines": {"draft": {**ENGINE, "kv_cache_free_gpu_mem_fraction": 1.5}}}, {}, "kv_cache_free_gpu_mem_fraction"),
    ({"engines": {"draft": ENGINE}, "batch_scheduler_policy": "fifo"}, {}, "batch_scheduler_policy"),
    ({"engines": {"draft": ENGINE}, "native_verify": "yes"}, {}, "native_verify"),
    ({"engines": {"draft": ENGINE}}, {"instances": {"target": 2}}, "instances.target"),
    ({"engines": {"draft": ENGINE}, "prm": "tensorrt"}, {}, "trtllm.prm"),
])
def test_trtllm_section_is_strict(tmp_path, trtllm, top, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _yaml(tmp_path, trtllm, **top)


def test_trtllm_section_only_with_its_backend(tmp_path):
    with pytest.raises(ConfigError, match="trtllm"):
        parse_serve_config({"pipeline": "p.yaml", "trtllm": {"engines": {}}}, tmp_path)
    with pytest.raises(ConfigError, match="trtllm"):
        parse_serve_config({"pipeline": "p.yaml", "backend": "trtllm"}, tmp_path)


def test_shipped_yaml_loads():
    cfg = load_serve_config(TRTLLM_YAML)
    assert cfg.backend == "trtllm" and cfg.trtllm.engine_dir("target").parts[-3:] == ("embedded", "target", "engine")
    assert not cfg.trtllm.engine("prm").enable_kv_cache_reuse and cfg.trtllm.engine("target").enable_kv_cache_reuse


def _edit_manifest(cfg, engine: str, changes: dict) -> None:
    file = cfg.trtllm.engine_dir(engine) / "rsd_engine_manifest.json"
    data = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    file.write_text(json.dumps(data))


@pytest.mark.parametrize(("role", "changes", "key"), [
    ("draft", {"role": "target"}, "trtllm.engines.draft.engine_dir"),
    ("target", {"logits_dtype": "float16"}, "trtllm.engines.target.engine_dir"),
    ("target", {"tp_size": 2}, "trtllm.engines.target.gpu_device_ids"),
    ("target", {"max_draft_len": 0}, "trtllm.native_verify"),
    ("prm", {"prm": None}, "trtllm.engines.prm.engine_dir"),
])
def test_engine_manifests_are_checked_at_render_time(tmp_path, tiny_config, role, changes, key):
    cfg = fake_serve_config(tmp_path, tiny_config)
    _edit_manifest(cfg, role, changes)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        render_repository(cfg, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_missing_engine_and_format_mismatch(tmp_path, tiny_config):
    cfg = fake_serve_config(tmp_path, tiny_config)
    missing = dataclasses.replace(cfg, trtllm=cfg.trtllm.with_engine_root(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"trtllm\.engines\.draft\.engine_dir.*does not exist"):
        render_repository(missing, tmp_path / "repo")
    file = cfg.trtllm.engine_dir("prm") / "rsd_engine_manifest.json"
    data = json.loads(file.read_text())
    data["prm"]["prm_format"], data["prm"]["op"], data["prm"]["index"] = "two_class", "softmax", 1
    data["prm"]["num_labels"] = 2
    file.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="two_class"):
        render_repository(cfg, tmp_path / "repo")


def test_orchestrator_launch(fake_cfg, monkeypatch, tmp_path):
    from runtime.config import load_config
    from runtime.deploy import server

    launch = launch_for(fake_cfg)
    assert launch.launcher == ("mpirun", "--allow-run-as-root", "-n", "1")
    assert dict(launch.env) == {"TRTLLM_ORCHESTRATOR": "1", "TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES": "1"}
    assert {"--disable-auto-complete-config", "--enable-peer-access=false", "--cuda-memory-pool-byte-size=0:0",
            "--pinned-memory-pool-byte-size=0"} <= set(launch.args)
    paths = mounted_paths(fake_cfg, load_config(fake_cfg.pipeline))
    cmd = server.container_command(tmp_path, paths, fake_cfg.trtllm.image, env=launch.env, launcher=launch.launcher,
                                   extra_args=launch.args, docker_args=launch.docker_args)
    image = cmd.index(fake_cfg.trtllm.image)
    assert cmd[image + 1:image + 6] == ["mpirun", "--allow-run-as-root", "-n", "1", "tritonserver"]
    assert "TRTLLM_ORCHESTRATOR=1" in cmd and "memlock=-1" in cmd
    assert f"{fake_cfg.trtllm.engine_dir('target')}:{fake_cfg.trtllm.engine_dir('target')}:ro" in cmd
    # inside the NGC container the system tritonserver is used, under the launcher
    root = tmp_path / "opt" / "tritonserver"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tritonserver").write_text("")
    monkeypatch.setattr(server, "SYSTEM_TRITON", root)
    install = server.TritonInstall.find()
    local = server.TritonServer(tmp_path, launcher=launch.launcher, extra_env=launch.env, extra_args=launch.args)
    command = local.command(install)
    assert command[:5] == [*launch.launcher, str(root / "bin" / "tritonserver")]
    assert local.environment()["TRTLLM_ORCHESTRATOR"] == "1"


@pytest.mark.parametrize(("prm_role", "models"), [("target", ["draft", "rsd", "target"]),
                                                  ("prm", ["draft", "prm", "rsd", "target"])])
def test_likelihood_prm_is_served_as_an_lm_engine(tmp_path, tiny_config, prm_role, models):
    """A likelihood PRM sharing the target's weights needs no model; one of its own is a
    `tensorrt_llm` model on the prm engine (no trtllm_prm wrapper, no prm_engine)."""
    from runtime.config import load_config

    base = load_config(tiny_config)
    paths = {"target": base.target.path, "prm": base.prm.path}
    pipeline = tmp_path / "likelihood.yaml"
    pipeline.write_text(f"models:\n  draft: {{path: {base.draft.path}}}\n  target: {{path: {base.target.path}}}\n"
                        f"  prm: {{path: {paths[prm_role]}, format: likelihood}}\nprompt_template: \"Q: {{question}}\\n\"\n")
    cfg = fake_serve_config(tmp_path, tiny_config)
    repo = render_repository(dataclasses.replace(cfg, pipeline=pipeline), tmp_path / "repo")
    assert sorted(p.name for p in repo.iterdir()) == models
    if prm_role == "prm":
        prm = parse(repo / "prm" / "config.pbtxt")
        assert prm.backend == "tensorrtllm" and params(prm)["gpt_model_path"] == str(cfg.trtllm.engine_dir("prm"))


def test_a_verifying_target_needs_kv_reuse_and_sd_needs_the_drafts_generation_logits(fake_cfg, tmp_path, caplog):
    """Render-time checks from TensorRT-LLM's sources: a draft_tokens_external target without KV-cache
    reuse fails to load (trtGptModelInflightBatching.cpp), and a draft built without
    --gather_generation_logits cannot answer sd's and cos's proposals through Triton."""
    import dataclasses
    import json

    from runtime.deploy.repo import render_repository

    trt = fake_cfg.trtllm
    engines = tuple(dataclasses.replace(e, enable_kv_cache_reuse=False) if e.role == "target" else e
                    for e in trt.engines)
    no_reuse = dataclasses.replace(fake_cfg, trtllm=dataclasses.replace(trt, engines=engines))
    with pytest.raises(ConfigError, match=r"trtllm\.engines\.target\.enable_kv_cache_reuse"):
        render_repository(no_reuse, tmp_path / "a")
    manifest = trt.engine_dir("draft") / "rsd_engine_manifest.json"
    data = json.loads(manifest.read_text())
    try:
        manifest.write_text(json.dumps({**data, "gather_generation_logits": False}))
        render_repository(fake_cfg, tmp_path / "b")
        assert "without --gather_generation_logits: sd and cos" in caplog.text
    finally:
        manifest.write_text(json.dumps(data))
