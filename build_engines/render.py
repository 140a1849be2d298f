"""Human-readable rendering of a BuildPlan (the --dry-run output)."""
from __future__ import annotations

import shlex
from collections.abc import Sequence

from build_engines.manifest import ENGINE_MANIFEST, make_readout
from build_engines.plan import BuildPlan, EnginePlan
from build_engines.preflight import Preflight

CONTAINER = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"


def format_command(argv: Sequence[str], indent: str = "    ") -> str:
    """One flag (with its values) per continuation line, shell-quoted, ready to paste."""
    head: list[str] = []
    groups: list[list[str]] = []
    for token in argv:
        if token.startswith("--"):
            groups.append([token])
        elif groups:
            groups[-1].append(token)
        else:
            head.append(token)
    lines = [indent + shlex.join(head)] + [indent + "  " + shlex.join(g) for g in groups]
    return " \\\n".join(lines)


def _engine_lines(engine: EnginePlan, pre: Preflight, first_index: int, total: int) -> list[str]:
    spec, quant = engine.spec, engine.quant
    precision = quant.label if quant.quantization.value != "none" else f"{spec.dtype.value}{quant.label[4:]}"
    lines = [f"== {spec.role.value}: {spec.model} ({spec.family.value}) -> {precision}, tp {spec.tp_size}",
             f"   engine: {engine.paths.engine}  (manifest: {ENGINE_MANIFEST})"]
    if spec.prm is not None:
        separator = pre.separator_token_id if pre.separator_token_id is not None else spec.prm.separator_token_id
        readout = make_readout(engine, None, pre.models.get(spec.role), separator)
        lines.append(f"   PRM {spec.prm.format.value} / {spec.prm.head_layout.value}: {readout.formula}")
        if readout.bias is None:
            lines.append("   (b = v_head.summary.bias, read by the prepare step and recorded in the manifest)")
    for i, step in enumerate(engine.steps, start=first_index):
        lines.append(f"  [{i}/{total}] {step.name} ({step.tool})")
        lines.append(format_command(step.argv))
    return lines


def format_plan(plan: BuildPlan, pre: Preflight, problems: list[str], arch_source: str) -> str:
    cfg = plan.config
    lines = [f"RSD engine build plan: {cfg.name}",
             f"  GPU arch:      {plan.arch.value} ({arch_source})",
             f"  TensorRT-LLM:  planned (1.2.1 in {CONTAINER})",
             f"  examples dir:  {cfg.examples_dir}",
             f"  output root:   {cfg.output_root}",
             f"  logs:          {plan.log_dir}", ""]
    index, total = 1, len(plan.steps)
    for engine in plan.engines:
        lines += _engine_lines(engine, pre, index, total) + [""]
        index += len(engine.steps)
    if problems:
        lines.append("Preflight: a real build would stop here:")
        lines += [f"  - {p}" for p in problems]
    else:
        lines.append("Preflight: model folders, tokenizers and the PRM separator token are OK.")
    return "\n".join(lines)
