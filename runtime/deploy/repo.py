"""Render the Triton model repository from `triton_repo/` templates (like TensorRT-LLM's
`fill_template.py`, but strict): every `${key}` of a template must get a value, and every value
given for a template must be used by it; either mistake fails the render, naming the key.

A backend is a layout: which template serves each role. Both backends share the `rsd` BLS;
`torch` serves draft/target/prm with Python models wrapping the PyTorch engine; `trtllm` serves
draft/target with TensorRT-LLM's C++ `tensorrtllm` backend, and the PRM with `trtllm_prm` (the
same PRM contract) over a `prm_engine` model (values: runtime/deploy/trtllm_repo.py).
Only `config.pbtxt` files are templates; other files (model.py) are copied as they are.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from runtime.assembly.common import shared_verifier
from runtime.config import REPO_ROOT, PipelineConfig, load_config
from runtime.core.errors import ConfigError
from runtime.deploy.config import ServeConfig
from runtime.deploy.trtllm_repo import (
    PRM_ENGINE_MODEL,
    engine_facts,
    check_engines,
    max_draft_len,
    tensorrt_llm_values,
    trtllm_prm_values,
)
from runtime.wire import bls_io, bls_outputs

log = logging.getLogger(__name__)

TEMPLATES = REPO_ROOT / "triton_repo"
BUILD_ROOT = REPO_ROOT / ".build" / "triton_repo"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# role -> template folder, per backend; both speak the tensor contract of runtime/engines/triton/contract.py.
# On trtllm a reward-head PRM is the torch PRM by default (trtllm.prm: torch), or trtllm_prm over a
# PRM engine (trtllm.prm: engine); both speak the PRM contract.
LAYOUTS: Mapping[str, Mapping[str, str]] = {
    "torch": {"rsd": "rsd", "draft": "torch_lm", "target": "torch_lm", "prm": "torch_prm"},
    "trtllm": {"rsd": "rsd", "draft": "tensorrt_llm", "target": "tensorrt_llm", "prm": "torch_prm"},
    "trtllm+prm_engine": {"rsd": "rsd", "draft": "tensorrt_llm", "target": "tensorrt_llm", "prm": "trtllm_prm",
                          PRM_ENGINE_MODEL: "tensorrt_llm"},
}


def fill(template: str, values: Mapping[str, str], where: str) -> str:
    """Substitute `${key}`; fail on a placeholder without a value or a value without a placeholder."""
    used = set(PLACEHOLDER.findall(template))
    missing = sorted(used - set(values))
    if missing:
        raise ConfigError(f"{where}: ${{{missing[0]}}}", f"no value for placeholder(s) {', '.join(missing)}")
    unknown = sorted(set(values) - used)
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}", f"unknown key(s) {', '.join(unknown)} (not in the template)")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def model_values(role: str, template: str, cfg: ServeConfig, pipeline: PipelineConfig) -> dict[str, str]:
    """The placeholder values of one role's template."""
    if template == "tensorrt_llm":
        return tensorrt_llm_values(role, cfg)
    if template == "trtllm_prm":
        return trtllm_prm_values(cfg)
    values = {"name": role, "instance_count": str(cfg.instance_count(role)),
              "pipeline_config": str(pipeline.source or cfg.pipeline)}
    if template == "rsd":
        values.update(inputs=bls_io.config_entries(bls_io.INPUTS, with_optional=True),
                      outputs=bls_io.config_entries(bls_outputs.OUTPUTS, with_optional=False),
                      max_batch_size=str(bls_io.MAX_BATCH_SIZE),
                      draft_model="draft", target_model="target", prm_model="prm",
                      sub_request_timeout_s=f"{cfg.sub_request_timeout_s:g}", bls_threads=str(cfg.bls_threads),
                      max_prompt_bytes=str(cfg.max_prompt_bytes), max_running_rows=str(cfg.running_rows),
                      max_queue_size=str(cfg.max_queue_size), queue_timeout_s=f"{cfg.queue_timeout_s:g}",
                      queue_timeout_us=str(int(cfg.queue_timeout_s * 1e6)),
                      submodel_backend=cfg.backend, max_draft_len=str(max_draft_len(cfg)),
                      trtllm_engines=_engine_facts(cfg, pipeline))
    elif template == "torch_lm":
        values.update(role=role, max_batch_size=str(cfg.max_batch_size), max_queue_delay_us=str(cfg.max_queue_delay_us),
                      cache_requests=str(cfg.cache_requests), torch_threads=str(cfg.torch_threads))
    else:
        values.update(cache_requests=str(cfg.cache_requests), torch_threads=str(cfg.torch_threads))
    return values


def roles_served(pipeline: PipelineConfig, backend: str = "torch") -> list[str]:
    """The models to serve: a likelihood PRM sharing a generator's weights needs no model of its own,
    nor does a confidence PRM;
    on trtllm a reward-head PRM is `prm` (the PRM contract) calling `prm_engine` (the engine)."""
    roles = [role for role in ("draft", "target", "prm") if getattr(pipeline, role) is not None
             and not (role == "prm" and pipeline.prm is not None and pipeline.prm.path is None)]  # confidence: no model
    served = ["rsd"] + [r for r in roles if not (r == "prm" and shared_verifier(pipeline) is not None)]
    if "prm" in served and template_of("prm", backend, pipeline) == "trtllm_prm":
        served.append(PRM_ENGINE_MODEL)
    return served


def layout(cfg: ServeConfig) -> str:
    """The LAYOUTS key of a serving config."""
    if cfg.trtllm is not None and cfg.trtllm.prm == "engine":
        return "trtllm+prm_engine"
    return cfg.backend


def _engine_facts(cfg: ServeConfig, pipeline: PipelineConfig) -> str:
    """The rsd BLS's `trtllm_engines` parameter for each LM served by a TensorRT-LLM engine."""
    if cfg.backend != "trtllm":
        return ""
    lms = [r for r in roles_served(pipeline, layout(cfg)) if template_of(r, layout(cfg), pipeline) == "tensorrt_llm"
           and r != PRM_ENGINE_MODEL]
    return engine_facts(cfg, lms)


def template_of(role: str, backend: str, pipeline: PipelineConfig) -> str:
    """`backend`: a LAYOUTS key. A likelihood PRM is a language model: it is served like draft and target."""
    if role == "prm" and pipeline.prm is not None and pipeline.prm.format == "likelihood":
        return LAYOUTS[backend]["target"]
    return LAYOUTS[backend][role]


def instance_dir(cfg: ServeConfig) -> Path:
    """The default repository folder of one server instance: .build/triton_repo/<config name>-<gRPC
    port>. Two instances on one host cannot share a gRPC port, so they never share a repository
    (re-rendering one would pull it from under the other) nor, next to it, a log (<folder>.log)."""
    return BUILD_ROOT / f"{cfg.source.stem if cfg.source else 'default'}-{cfg.grpc_port}"


def render_repository(cfg: ServeConfig, out: Path | None = None, templates: Path = TEMPLATES) -> Path:
    """Render the model repository for `cfg` into `out` (default: `instance_dir(cfg)`)."""
    pipeline = load_config(cfg.pipeline)
    out = out or instance_dir(cfg)
    models = roles_served(pipeline, layout(cfg))
    if cfg.backend == "trtllm":
        check_engines(cfg, pipeline, [m for m in models if template_of(m, layout(cfg), pipeline) == "tensorrt_llm"])
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=_parent(out)))
    try:
        for role in models:
            template = template_of(role, layout(cfg), pipeline)
            src = templates / template
            if not (src / "config.pbtxt").is_file():
                raise ConfigError("backend", f"{cfg.backend}: no template {src.name!r} for the {role} model "
                                             f"(see triton_repo/README.md)")
            values = model_values(role, template, cfg, pipeline)
            for name in cfg.model_names if role == "rsd" else (role,):  # the BLS under each served name
                _render_model(src, staging / name, {**values, "name": name})
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log.info("rendered the %s model repository at %s", cfg.backend, out)
    return out


def _render_model(src: Path, dst: Path, values: Mapping[str, str]) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    config = dst / "config.pbtxt"
    config.write_text(fill(config.read_text(), values, f"{src.name}/config.pbtxt"))


def _parent(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent
