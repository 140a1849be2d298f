"""Pure planning: an engine-set config and a GPU arch -> typed steps with exact argv lists.

Nothing here touches the filesystem or runs anything; `executor.py` does. Flags follow the
TensorRT-LLM 1.2 CLIs (trtllm-build, examples/quantization/quantize.py,
examples/models/core/{qwen,llama}/convert_checkpoint.py); tests/data/trtllm_1_2_cli_flags.yaml
records the real argument lists and the tests check every emitted flag against it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from build_engines.config import (
    EngineSetConfig,
    EngineSpec,
    GpuArch,
    KvCacheDtype,
    Quantization,
    Role,
)
from build_engines.quant import CheckpointTool, QuantPlan, resolve_quant
from runtime.core.types import PrmKind

MODEL_CLS_FILE = Path(__file__).resolve().parent / "trtllm_models" / "prm_heads.py"
TWO_CLASS_HEAD_FILE = "trtllm_head/rsd_two_class_head.safetensors"  # inside the prepared PRM folder
AWQ_BLOCK_SIZE = 128


class StepKind(str, Enum):
    PREPARE_PRM = "prepare_prm"  # remap the PRM head into a loadable HF folder (CPU, safetensors)
    CHECKPOINT = "checkpoint"  # HF -> TRT-LLM checkpoint (quantize.py or convert_checkpoint.py)
    ATTACH_HEAD = "attach_head"  # copy the two-class head tensors next to the TRT-LLM checkpoint
    BUILD = "build"  # trtllm-build


@dataclass(frozen=True, slots=True)
class Toolchain:
    """Executables used by the plan (defaults match the NGC trtllm container)."""

    python: str = sys.executable
    trtllm_build: str = "trtllm-build"


@dataclass(frozen=True, slots=True)
class Step:
    """One command of the build, with the directory it produces."""

    role: Role
    kind: StepKind
    tool: str
    argv: tuple[str, ...]
    output_dir: Path
    clean_output: bool = True  # wipe output_dir before running (stale rank files, old engines)

    @property
    def name(self) -> str:
        return f"{self.role.value}.{self.kind.value}"


@dataclass(frozen=True, slots=True)
class EnginePaths:
    """Where one engine's intermediate and final artifacts go."""

    root: Path

    @property
    def prm_hf(self) -> Path:
        return self.root / "prm_hf"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    @property
    def engine(self) -> Path:
        return self.root / "engine"


@dataclass(frozen=True, slots=True)
class EnginePlan:
    spec: EngineSpec
    quant: QuantPlan
    paths: EnginePaths
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class BuildPlan:
    config: EngineSetConfig
    arch: GpuArch
    toolchain: Toolchain
    engines: tuple[EnginePlan, ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(step for engine in self.engines for step in engine.steps)

    @property
    def log_dir(self) -> Path:
        return self.config.output_root / "logs"


def make_plan(config: EngineSetConfig, arch: GpuArch, toolchain: Toolchain = Toolchain(),
              roles: tuple[Role, ...] = tuple(Role)) -> BuildPlan:
    """Plan every engine of the set (or only `roles`) for one GPU arch."""
    engines = tuple(_plan_engine(config, spec, arch, toolchain) for spec in config.engines if spec.role in roles)
    return BuildPlan(config, arch, toolchain, engines)


def _plan_engine(config: EngineSetConfig, spec: EngineSpec, arch: GpuArch, tc: Toolchain) -> EnginePlan:
    quant = resolve_quant(spec, arch)
    paths = EnginePaths(config.output_root / spec.role.value)
    steps: list[Step] = []
    source = spec.model
    if spec.prm is not None:
        steps.append(_prepare_step(spec, paths, tc))
        source = paths.prm_hf
    steps.append(_checkpoint_step(config, spec, quant, source, paths, tc))
    if spec.prm is not None and spec.prm.format is PrmKind.TWO_CLASS:
        steps.append(_attach_step(spec, paths, tc))
    steps.append(_build_step(spec, quant, paths, tc))
    return EnginePlan(spec, quant, paths, tuple(steps))


def _prepare_step(spec: EngineSpec, paths: EnginePaths, tc: Toolchain) -> Step:
    assert spec.prm is not None
    argv = (tc.python, "-m", "build_engines.prm_remap", "prepare",
            "--format", spec.prm.format.value, "--layout", spec.prm.head_layout.value,
            "--num-labels", str(spec.prm.num_labels), "--src", str(spec.model), "--dst", str(paths.prm_hf))
    return Step(spec.role, StepKind.PREPARE_PRM, "prm_remap", argv, paths.prm_hf)


def _attach_step(spec: EngineSpec, paths: EnginePaths, tc: Toolchain) -> Step:
    argv = (tc.python, "-m", "build_engines.prm_remap", "attach",
            "--head", str(paths.prm_hf / TWO_CLASS_HEAD_FILE), "--checkpoint", str(paths.checkpoint))
    return Step(spec.role, StepKind.ATTACH_HEAD, "prm_remap", argv, paths.checkpoint, clean_output=False)


def _checkpoint_step(config: EngineSetConfig, spec: EngineSpec, quant: QuantPlan, source: Path,
                     paths: EnginePaths, tc: Toolchain) -> Step:
    common = ["--model_dir", str(source), "--output_dir", str(paths.checkpoint),
              "--dtype", spec.dtype.value, "--tp_size", str(spec.tp_size)]
    if quant.tool is CheckpointTool.QUANTIZE:
        script = config.examples_dir / "quantization" / "quantize.py"
        args = common + _quantize_args(config, quant)
    else:
        script = config.examples_dir / "models" / "core" / spec.family.value / "convert_checkpoint.py"
        args = common + _convert_args(config, quant)
    argv = (tc.python, str(script), *args)
    return Step(spec.role, StepKind.CHECKPOINT, quant.tool.value, argv, paths.checkpoint)


def _quantize_args(config: EngineSetConfig, quant: QuantPlan) -> list[str]:
    assert quant.qformat is not None
    cal = config.calibration
    args = ["--qformat", quant.qformat]
    if quant.kv_cache_dtype is not KvCacheDtype.NONE:
        args += ["--kv_cache_dtype", quant.kv_cache_dtype.value]
    if quant.quantization is Quantization.INT4_AWQ:
        args += ["--awq_block_size", str(AWQ_BLOCK_SIZE)]
    args += ["--calib_dataset", cal.dataset, "--calib_size", str(cal.size),
             "--calib_max_seq_length", str(cal.max_seq_length), "--batch_size", str(cal.batch_size)]
    return args


def _convert_args(config: EngineSetConfig, quant: QuantPlan) -> list[str]:
    args: list[str] = []
    if quant.quantization is Quantization.INT8_WO:
        args += ["--use_weight_only", "--weight_only_precision", "int8"]
    if quant.kv_cache_dtype is KvCacheDtype.INT8:
        # convert_checkpoint.py names the HF dataset by its full id (its default is ccdv/cnn_dailymail)
        dataset = config.calibration.dataset
        args += ["--int8_kv_cache", "--calib_dataset", "ccdv/cnn_dailymail" if dataset == "cnn_dailymail" else dataset]
    return args


def _build_step(spec: EngineSpec, quant: QuantPlan, paths: EnginePaths, tc: Toolchain) -> Step:
    lim = spec.limits
    argv = [tc.trtllm_build,
            "--checkpoint_dir", str(paths.checkpoint), "--output_dir", str(paths.engine),
            "--kv_cache_type", "paged", "--use_paged_context_fmha", "enable",
            "--max_batch_size", str(lim.max_batch_size), "--max_input_len", str(lim.max_input_len),
            "--max_seq_len", str(lim.max_seq_len), "--max_num_tokens", str(lim.max_num_tokens),
            "--logits_dtype", "float32", "--gemm_plugin", spec.gemm_plugin,
            "--tokens_per_block", str(spec.tokens_per_block)]
    if quant.kv_cache_dtype is KvCacheDtype.FP8:
        argv += ["--use_fp8_context_fmha", "enable"]
    if spec.tp_size > 1:
        argv += ["--workers", str(spec.tp_size)]
    if spec.multiple_profiles:
        argv += ["--multiple_profiles", "enable"]
    if spec.max_draft_len:
        argv += ["--speculative_decoding_mode", "draft_tokens_external", "--max_draft_len", str(spec.max_draft_len)]
    if spec.role is Role.DRAFT:
        # sd/cos proposals read the draft's generation logits; through Triton the engine must carry this
        # flag: the backend never sets the executor's own (model_instance_state.cc getExecutorConfigFromParams)
        # and the executor refuses without one of them (executorImpl.cpp fetchNewRequests). The "deprecated"
        # warning trtllm-build prints is printed on every build; the flag still lands in the engine's
        # config.json (build_config.gather_generation_logits, read by gptJsonConfig.cpp).
        argv += ["--gather_generation_logits"]
    if spec.prm is not None:
        argv += ["--gather_context_logits"]
        if spec.prm.custom_class is not None:
            argv += ["--model_cls_file", str(MODEL_CLS_FILE), "--model_cls_name", spec.prm.custom_class]
    return Step(spec.role, StepKind.BUILD, "trtllm-build", tuple(argv), paths.engine)

