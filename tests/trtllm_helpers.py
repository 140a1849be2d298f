"""Shared setup of the trtllm tests: the shipped configs/triton/trtllm.yaml pointed at fake engines
(tests/support/fake_trtllm_repo.py) for the tiny models, and the same fakes in process."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from runtime.assembly.bls import SubModels, build_bls_pipeline, parse_engines
from runtime.config import REPO_ROOT, load_config
from runtime.deploy.config import ServeConfig, load_serve_config
from runtime.deploy.trtllm_repo import engine_facts, max_draft_len
from runtime.in_server.engine_prm import ENGINE_MANIFEST, build_engine_prm
from runtime.in_server.torch_submodels import build_prm_submodel
from runtime.pipeline import Pipeline
from support.fake_trtllm_repo import FakeTransport, load_fake_engine, write_fake_engines

TRTLLM_YAML = REPO_ROOT / "configs" / "triton" / "trtllm.yaml"


def fake_serve_config(tmp: Path, pipeline: Path, native_verify: bool = True, prm_reuse: bool = False,
                      prm: str = "engine", **overrides: object) -> ServeConfig:
    """The shipped trtllm serving YAML on fake engines built for `pipeline`'s models; `prm`: the
    reward model on the PRM engine (opt-in, what most of these tests exercise) or on torch (the default)."""
    models = load_config(pipeline)
    root = write_fake_engines(tmp / "engines", {"draft": models.draft.path, "target": models.target.path,
                                                "prm": models.prm.path})
    base = load_serve_config(TRTLLM_YAML)
    assert base.trtllm is not None
    engines = tuple(dataclasses.replace(e, enable_kv_cache_reuse=prm_reuse) if e.role == "prm" else e
                    for e in base.trtllm.engines)
    trtllm = dataclasses.replace(base.trtllm, engine_root=root, native_verify=native_verify, engines=engines, prm=prm)
    return dataclasses.replace(base, pipeline=pipeline, trtllm=trtllm, **overrides)


def in_process(cfg: ServeConfig) -> tuple[Pipeline, FakeTransport]:
    """The BLS pipeline of `cfg` on the same fakes, without Triton."""
    assert cfg.trtllm is not None
    trt = cfg.trtllm
    transport = FakeTransport({model: load_fake_engine(trt.engine_dir(role), reuse=trt.engine(role).enable_kv_cache_reuse)
                               for model, role in (("draft", "draft"), ("target", "target"), ("prm_engine", "prm"))})
    if trt.prm == "engine":
        transport.handlers["prm"] = build_engine_prm(transport, "prm_engine", trt.engine_dir("prm") / ENGINE_MANIFEST)
    else:
        transport.handlers["prm"] = build_prm_submodel(load_config(cfg.pipeline), cfg.cache_requests)
    names = SubModels(backend="trtllm", max_draft_len=max_draft_len(cfg),
                      engines=parse_engines(engine_facts(cfg, ["draft", "target"])))
    return build_bls_pipeline(load_config(cfg.pipeline), transport, names), transport
