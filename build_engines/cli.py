"""`python -m build_engines --config configs/engines/<set>.yaml [--gpu-arch sm90] [--dry-run] [--force]`

Builds the draft, target and PRM engines of an engine set inside the TensorRT-LLM container, or
prints the full plan (--dry-run) anywhere, without a GPU and without writing files.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from build_engines.config import GpuArch, Quantization, Role
from build_engines.errors import ConfigError, RsdError
from build_engines.executor import execute
from build_engines.gpu import detect_gpu_arch
from build_engines.plan import Toolchain, make_plan
from build_engines.preflight import preflight_problems
from build_engines.render import format_plan
from build_engines.yaml_config import Overrides, load_config

log = logging.getLogger("build_engines")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m build_engines", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, required=True, help="configs/engines/<set>.yaml")
    p.add_argument("--gpu-arch", choices=[a.value for a in GpuArch],
                   help="target GPU arch; detected with nvidia-smi when absent")
    p.add_argument("--dry-run", action="store_true", help="print every command of the plan; write nothing")
    p.add_argument("--force", action="store_true", help="re-run steps even when their outputs are up to date")
    p.add_argument("--models-root", type=Path, help="folder that holds the HF model folders (overrides the config)")
    p.add_argument("--output-root", type=Path, help="where checkpoints, engines and logs go (overrides the config)")
    p.add_argument("--examples-dir", type=Path, help="TensorRT-LLM examples folder (default /app/examples)")
    p.add_argument("--quantization", choices=[q.value for q in Quantization],
                   help="override the draft and target quantization for this run")
    p.add_argument("--only", action="append", choices=[r.value for r in Role],
                   help="build only this engine (repeatable)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the TRT-LLM example scripts")
    p.add_argument("--trtllm-build", default="trtllm-build", help="trtllm-build executable")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _arch(args: argparse.Namespace) -> tuple[GpuArch, str]:
    if args.gpu_arch:
        return GpuArch(args.gpu_arch), "given by --gpu-arch"
    return detect_gpu_arch(), "detected with nvidia-smi"


def run(args: argparse.Namespace) -> int:
    overrides = Overrides(models_root=args.models_root, output_root=args.output_root,
                          examples_dir=args.examples_dir,
                          quantization=Quantization(args.quantization) if args.quantization else None)
    config = load_config(args.config, overrides)
    arch, arch_source = _arch(args)
    roles = tuple(Role(r) for r in args.only) if args.only else tuple(Role)
    plan = make_plan(config, arch, Toolchain(python=args.python, trtllm_build=args.trtllm_build), roles)
    if args.dry_run:
        pre, problems = preflight_problems(plan)
        print(format_plan(plan, pre, problems, arch_source))
        return 0
    results = execute(plan, force=args.force)
    for role, outcomes in results.items():
        ran = sum(not o.skipped for o in outcomes)
        log.info("%s: %d step(s) run, %d skipped", role.value, ran, len(outcomes) - ran)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return run(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except RsdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
