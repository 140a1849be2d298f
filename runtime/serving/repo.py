"""Render the Triton model repository from `triton_repo/` templates (like TensorRT-LLM's
`fill_template.py`, but strict): every `${key}` of a template must get a value, and every value
given for a template must be used by it; either mistake fails the render, naming the key.

A backend is a layout: which template serves each role. Both backends share the `rsd` BLS;
`torch` serves draft/target/prm with Python models wrapping the PyTorch engine; `trtllm` would
serve draft/target with TensorRT-LLM's `tensorrt_llm` model (templates not shipped yet).
Only `config.pbtxt` files are templates; other files (model.py) are copied as they are.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from runtime.config import REPO_ROOT, PipelineConfig, load_config
from runtime.core.errors import ConfigError
from runtime.engines.triton.factory import shared_verifier
from runtime.serving import bls_io
from runtime.serving.config import ServeConfig

log = logging.getLogger(__name__)

TEMPLATES = REPO_ROOT / "triton_repo"
BUILD_ROOT = REPO_ROOT / ".build" / "triton_repo"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# role -> template folder, per backend. `trtllm` needs a `tensorrt_llm` template for draft/target
# (TensorRT-LLM's inflight_batcher_llm/tensorrt_llm) speaking the same tensor contract.
LAYOUTS: Mapping[str, Mapping[str, str]] = {
    "torch": {"rsd": "rsd", "draft": "torch_lm", "target": "torch_lm", "prm": "torch_prm"},
    "trtllm": {"rsd": "rsd", "draft": "tensorrt_llm", "target": "tensorrt_llm", "prm": "torch_prm"},
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
    values = {"name": role, "instance_count": str(cfg.instance_count(role)),
              "pipeline_config": str(pipeline.source or cfg.pipeline)}
    if template == "rsd":
        values.update(inputs=bls_io.config_entries(bls_io.INPUTS, with_optional=True),
                      outputs=bls_io.config_entries(bls_io.OUTPUTS, with_optional=False),
                      draft_model="draft", target_model="target", prm_model="prm",
                      sub_request_timeout_s=f"{cfg.sub_request_timeout_s:g}", bls_threads=str(cfg.bls_threads))
    elif template in ("torch_lm", "tensorrt_llm"):
        values.update(role=role, max_batch_size=str(cfg.max_batch_size), max_queue_delay_us=str(cfg.max_queue_delay_us),
                      cache_requests=str(cfg.cache_requests), torch_threads=str(cfg.torch_threads))
    else:
        values.update(cache_requests=str(cfg.cache_requests), torch_threads=str(cfg.torch_threads))
    return values


def roles_served(pipeline: PipelineConfig) -> list[str]:
    """The models to serve: a likelihood PRM sharing a generator's weights needs no model of its own."""
    roles = [role for role in ("draft", "target", "prm") if getattr(pipeline, role) is not None]
    return ["rsd"] + [r for r in roles if not (r == "prm" and shared_verifier(pipeline) is not None)]


def template_of(role: str, backend: str, pipeline: PipelineConfig) -> str:
    """A likelihood PRM is a language model: it is served like draft and target."""
    if role == "prm" and pipeline.prm is not None and pipeline.prm.format == "likelihood":
        return LAYOUTS[backend]["target"]
    return LAYOUTS[backend][role]


def render_repository(cfg: ServeConfig, out: Path | None = None, templates: Path = TEMPLATES) -> Path:
    """Render the model repository for `cfg` into `out` (default .build/triton_repo/<config name>)."""
    pipeline = load_config(cfg.pipeline)
    out = out or BUILD_ROOT / (cfg.source.stem if cfg.source else "default")
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=_parent(out)))
    try:
        for role in roles_served(pipeline):
            template = template_of(role, cfg.backend, pipeline)
            src = templates / template
            if not (src / "config.pbtxt").is_file():
                raise ConfigError("backend", f"{cfg.backend}: no template {src.name!r} for the {role} model "
                                             f"(see triton_repo/README.md)")
            _render_model(src, staging / role, model_values(role, template, cfg, pipeline))
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
