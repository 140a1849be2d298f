"""Configuration of one engine set (draft, target, PRM): frozen dataclasses validated on creation.

Values are checked here; YAML parsing (unknown keys, types) lives in `yaml_config.py`. Which
quantization is legal on which GPU is decided by `quant.py`, because it needs the GPU arch.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from build_engines.errors import ConfigError
from runtime.core import validate
from runtime.core.types import PrmKind


class GpuArch(str, Enum):
    SM80 = "sm80"  # A100, A30
    SM86 = "sm86"  # A10, A40, RTX 30xx/A6000
    SM89 = "sm89"  # L4, L40S, RTX 40xx/6000 Ada
    SM90 = "sm90"  # H100, H200, GH200


class Quantization(str, Enum):
    AUTO = "auto"  # the per-GPU default of quant.py
    NONE = "none"  # plain `dtype` (fp16/bf16) weights and activations
    FP8 = "fp8"  # FP8 W8A8 per-tensor (ModelOpt), Ada/Hopper only
    INT8_SQ = "int8_sq"  # INT8 SmoothQuant W8A8 (ModelOpt)
    INT8_WO = "int8_wo"  # INT8 weight-only W8A16 (convert_checkpoint.py)
    INT4_AWQ = "int4_awq"  # INT4 AWQ W4A16, block 128 (ModelOpt)


class KvCacheDtype(str, Enum):
    AUTO = "auto"  # follows the quantization: fp8 -> fp8, int8_*/int4_awq -> int8, none -> none
    NONE = "none"  # KV cache in `dtype`
    FP8 = "fp8"
    INT8 = "int8"


class Dtype(str, Enum):
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class ModelFamily(str, Enum):
    QWEN = "qwen"  # Qwen2 / Qwen2.5: examples/models/core/qwen/convert_checkpoint.py
    LLAMA = "llama"  # examples/models/core/llama/convert_checkpoint.py


class Role(str, Enum):
    DRAFT = "draft"
    TARGET = "target"
    PRM = "prm"


# The PRM formats are the core's one type; an engine build takes the ones with a head (value_head:
# Skywork v_head.summary Linear(h, 1) + bias; two_class: Qwen2.5-Math-PRM score.0 -> ReLU -> score.2).


class HeadLayout(str, Enum):
    SCORE_HEAD = "score_head"  # Qwen2ForSequenceClassification, lm_head width num_labels (stock TRT-LLM)
    VOCAB_ROW = "vocab_row"  # ordinary CausalLM whose lm_head row 0 is v, other rows 0 (small vocabs)
    TWO_CLASS_CUSTOM = "two_class_custom"  # custom model class with the 2-layer head


GEMM_PLUGIN_CHOICES = ("auto", "float16", "bfloat16", "float32", "disable")
MAX_VOCAB_ROW_VOCAB = 32768  # a full-vocab context-logit row per token is only cheap for small vocabs


@dataclass(frozen=True, slots=True)
class Limits:
    """Engine shape limits passed to trtllm-build."""

    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    where: str = "limits"

    def __post_init__(self) -> None:
        validate.integer(f"{self.where}.max_batch_size", self.max_batch_size, lo=1, hi=4096)
        validate.integer(f"{self.where}.max_seq_len", self.max_seq_len, lo=2, hi=262144)
        validate.integer(f"{self.where}.max_input_len", self.max_input_len, lo=1, hi=self.max_seq_len - 1)
        validate.integer(f"{self.where}.max_num_tokens", self.max_num_tokens, lo=1, hi=1 << 20)


@dataclass(frozen=True, slots=True)
class PrmSpec:
    """How the PRM head is mapped into a TRT-LLM engine and how the BLS reads rewards."""

    format: PrmKind
    head_layout: HeadLayout
    num_labels: int
    separator: str
    separator_token_id: int | None = None
    model_cls_name: str | None = None
    where: str = "prm"

    def __post_init__(self) -> None:
        w = self.where
        if not self.format.has_head:
            raise ConfigError(f"{w}.format", f"a {self.format.value} PRM has no head to build: "
                                             + ("build it as an LM engine" if self.format.has_model
                                                else "it reads the draft's own log-probs"))
        if self.format is PrmKind.TWO_CLASS:
            if self.head_layout is not HeadLayout.TWO_CLASS_CUSTOM:
                raise ConfigError(f"{w}.head_layout", "format two_class needs head_layout two_class_custom")
            if self.num_labels != 2:
                raise ConfigError(f"{w}.num_labels", "format two_class has exactly 2 labels")
            if self.model_cls_name not in (None, "QWenTwoClassPRM"):
                raise ConfigError(f"{w}.model_cls_name", "format two_class uses QWenTwoClassPRM")
        else:
            if self.head_layout is HeadLayout.TWO_CLASS_CUSTOM:
                raise ConfigError(f"{w}.head_layout", "value_head takes score_head or vocab_row")
            validate.integer(f"{w}.num_labels", self.num_labels, lo=1, hi=2)
            if self.model_cls_name not in (None, "QWenValueHeadPRM"):
                raise ConfigError(f"{w}.model_cls_name", "value_head takes QWenValueHeadPRM or nothing")
            if self.model_cls_name and self.head_layout is not HeadLayout.SCORE_HEAD:
                raise ConfigError(f"{w}.model_cls_name", "QWenValueHeadPRM only applies to score_head")
            if self.head_layout is HeadLayout.SCORE_HEAD and self.model_cls_name is None:
                # the stock class keeps vocab_size at the full vocabulary while lm_head is 1-2 wide: the
                # runtime sizes its logits buffers by vocab_size (gptJsonConfig.cpp), the engine's output not
                raise ConfigError(f"{w}.model_cls_name", "score_head needs QWenValueHeadPRM (the engine's vocab_size "
                                                         "must be the head's width)")
        if not self.separator:
            raise ConfigError(f"{w}.separator", "must not be empty")
        if self.separator_token_id is not None:
            validate.integer(f"{w}.separator_token_id", self.separator_token_id, lo=0, hi=10_000_000)

    @property
    def custom_class(self) -> str | None:
        """The class passed to trtllm-build --model_cls_name, if any."""
        if self.format is PrmKind.TWO_CLASS:
            return "QWenTwoClassPRM"
        return self.model_cls_name


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One engine to build: source model, precision, parallelism and shape limits."""

    role: Role
    model: Path  # absolute after loading (models_root applied)
    family: ModelFamily
    dtype: Dtype
    quantization: tuple[tuple[GpuArch, Quantization], ...]  # one entry per GpuArch
    kv_cache_dtype: KvCacheDtype
    tp_size: int
    limits: Limits
    gemm_plugin: str = "auto"
    tokens_per_block: int = 32
    max_draft_len: int = 0
    multiple_profiles: bool = False
    prm: PrmSpec | None = None

    def __post_init__(self) -> None:
        w = f"engines.{self.role.value}"
        if {a for a, _ in self.quantization} != set(GpuArch) or len(self.quantization) != len(GpuArch):
            raise ConfigError(f"{w}.quantization", "needs exactly one entry per GPU arch")
        validate.integer(f"{w}.tp_size", self.tp_size, lo=1, hi=64)
        if self.gemm_plugin not in GEMM_PLUGIN_CHOICES:
            raise ConfigError(f"{w}.gemm_plugin", f"must be one of {GEMM_PLUGIN_CHOICES}")
        tpb = self.tokens_per_block
        if tpb < 8 or tpb > 512 or tpb & (tpb - 1):
            raise ConfigError(f"{w}.tokens_per_block", f"must be a power of two in [8, 512], got {tpb}")
        validate.integer(f"{w}.max_draft_len", self.max_draft_len, lo=0, hi=64)
        if self.max_draft_len and self.role is not Role.TARGET:
            raise ConfigError(f"{w}.max_draft_len", "only the target engine verifies draft tokens")
        self._check_prm(w)

    def _check_prm(self, w: str) -> None:
        if (self.role is Role.PRM) != (self.prm is not None):
            raise ConfigError(f"{w}.prm", "the prm engine needs a prm section; other engines must not have one")
        if self.prm is None:
            return
        if self.tp_size != 1:
            raise ConfigError(f"{w}.tp_size", "the PRM head (1-2 outputs) cannot be split: use tp_size 1")
        if self.prm.head_layout is not HeadLayout.VOCAB_ROW and self.family is not ModelFamily.QWEN:
            raise ConfigError(f"{w}.prm.head_layout", f"{self.prm.head_layout.value} needs a qwen backbone")

    def quantization_for(self, arch: GpuArch) -> Quantization:
        return dict(self.quantization)[arch]


@dataclass(frozen=True, slots=True)
class Calibration:
    """Calibration data for ModelOpt (quantize.py) and for INT8 KV in convert_checkpoint.py."""

    dataset: str = "cnn_dailymail"  # HF dataset name or a local directory (offline GPU boxes)
    size: int = 512
    max_seq_length: int = 512
    batch_size: int = 1

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("calibration.dataset", "must not be empty")
        validate.integer("calibration.size", self.size, lo=1, hi=100_000)
        validate.integer("calibration.max_seq_length", self.max_seq_length, lo=16, hi=131072)
        validate.integer("calibration.batch_size", self.batch_size, lo=1, hi=1024)


@dataclass(frozen=True, slots=True)
class EngineSetConfig:
    """A draft + target + PRM engine set, as read from configs/engines/<set>.yaml."""

    name: str
    output_root: Path
    examples_dir: Path  # TRT-LLM examples; /app/examples in the NGC trtllm container
    calibration: Calibration
    draft: EngineSpec
    target: EngineSpec
    prm: EngineSpec
    check_tokenizers: bool = True

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError("name", "must be a non-empty name without '/'")
        for key, spec, role in (("draft", self.draft, Role.DRAFT), ("target", self.target, Role.TARGET),
                                ("prm", self.prm, Role.PRM)):
            if spec.role is not role:
                raise ConfigError(f"engines.{key}", f"has role {spec.role.value}, expected {role.value}")

    @property
    def engines(self) -> tuple[EngineSpec, EngineSpec, EngineSpec]:
        return (self.draft, self.target, self.prm)
