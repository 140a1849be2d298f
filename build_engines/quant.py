"""Quantization plan per GPU architecture.

Support table (TRT-LLM precision support matrix; ModelOpt support matrix):

| quantization | sm80 / sm86 (Ampere) | sm89 (Ada) / sm90 (Hopper) | checkpoint tool |
|---|---|---|---|
| none (fp16/bf16) | yes | yes | convert_checkpoint.py |
| fp8 (W8A8 FP8)   | **no** (no FP8 GEMM) | yes | quantize.py --qformat fp8 |
| int8_sq (W8A8)   | yes | yes | quantize.py --qformat int8_sq |
| int8_wo (W8A16)  | yes | yes | convert_checkpoint.py --use_weight_only |
| int4_awq (W4A16) | yes | yes | quantize.py --qformat int4_awq |
| KV fp8           | **no** | yes | quantize.py --kv_cache_dtype fp8 |
| KV int8          | yes | yes | quantize.py --kv_cache_dtype int8 / convert --int8_kv_cache |

`auto` picks fp8 + FP8 KV on Ada/Hopper and int8_sq with a plain (fp16/bf16) KV cache on Ampere
for the draft and target, and plain dtype for the PRM. The KV cache dtype decides whether RSD's
steps reuse the cache: trtllm-build turns paged context FMHA off for an INT8 KV cache, and for an
FP8 KV cache under non-FP8 weights (builder.py build: "Paged Context FMHA is disabled ..."), and the
executor then turns KV-cache block reuse off ("KV cache reuse disabled because model was not built
with paged context FMHA support", trtGptModelInflightBatching.cpp fixExecutorConfig, 1.2.0rc2
b35ac1b6): every step would re-run the whole prefix. Such a KV cache is therefore only taken when
asked for, and never on a target that verifies draft tokens, which fails to load without reuse
("KV cache block reuse must be enabled for speculative decoding target model", same file). PRM heads that are not a plain CausalLM (score_head, two_class_custom)
only take what convert_checkpoint.py can produce without ModelOpt, because ModelOpt's quantize.py
loads the model with AutoModelForCausalLM and would drop the reward head.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from build_engines.config import EngineSpec, GpuArch, HeadLayout, KvCacheDtype, Quantization, Role
from build_engines.errors import UnsupportedQuantizationError

FP8_ARCHS = frozenset({GpuArch.SM89, GpuArch.SM90})
ALL_ARCHS = frozenset(GpuArch)
WEIGHT_SUPPORT: dict[Quantization, frozenset[GpuArch]] = {
    Quantization.NONE: ALL_ARCHS,
    Quantization.FP8: FP8_ARCHS,
    Quantization.INT8_SQ: ALL_ARCHS,
    Quantization.INT8_WO: ALL_ARCHS,
    Quantization.INT4_AWQ: ALL_ARCHS,
}
KV_SUPPORT: dict[KvCacheDtype, frozenset[GpuArch]] = {
    KvCacheDtype.NONE: ALL_ARCHS,
    KvCacheDtype.FP8: FP8_ARCHS,
    KvCacheDtype.INT8: ALL_ARCHS,
}
AUTO_LM: dict[GpuArch, Quantization] = {
    GpuArch.SM90: Quantization.FP8,
    GpuArch.SM89: Quantization.FP8,
    GpuArch.SM80: Quantization.INT8_SQ,
    GpuArch.SM86: Quantization.INT8_SQ,
}
AUTO_KV: dict[Quantization, KvCacheDtype] = {
    Quantization.NONE: KvCacheDtype.NONE,
    Quantization.FP8: KvCacheDtype.FP8,
    Quantization.INT8_SQ: KvCacheDtype.NONE,  # an INT8 KV cache would turn KV reuse off (module docstring)
    Quantization.INT8_WO: KvCacheDtype.NONE,
    Quantization.INT4_AWQ: KvCacheDtype.NONE,
}
QFORMAT: dict[Quantization, str] = {
    Quantization.NONE: "full_prec",
    Quantization.FP8: "fp8",
    Quantization.INT8_SQ: "int8_sq",
    Quantization.INT8_WO: "int8_wo",
    Quantization.INT4_AWQ: "int4_awq",
}
PRM_SUPPORT: dict[HeadLayout, tuple[frozenset[Quantization], frozenset[KvCacheDtype]]] = {
    HeadLayout.SCORE_HEAD: (frozenset({Quantization.NONE, Quantization.INT8_WO}), frozenset({KvCacheDtype.NONE})),
    HeadLayout.TWO_CLASS_CUSTOM: (frozenset({Quantization.NONE}), frozenset({KvCacheDtype.NONE})),
    HeadLayout.VOCAB_ROW: (frozenset(WEIGHT_SUPPORT), frozenset(KV_SUPPORT)),
}
_WHY_FP8 = "FP8 GEMMs and FP8 KV cache need Ada (sm89) or Hopper (sm90)"


class CheckpointTool(str, Enum):
    QUANTIZE = "quantize.py"  # examples/quantization/quantize.py (ModelOpt PTQ + export)
    CONVERT = "convert_checkpoint.py"  # examples/models/core/<family>/convert_checkpoint.py


@dataclass(frozen=True, slots=True)
class QuantPlan:
    """The resolved precision of one engine on one GPU arch."""

    arch: GpuArch
    quantization: Quantization
    kv_cache_dtype: KvCacheDtype
    tool: CheckpointTool
    qformat: str | None  # quantize.py --qformat, when tool is QUANTIZE

    def __post_init__(self) -> None:
        assert self.quantization is not Quantization.AUTO and self.kv_cache_dtype is not KvCacheDtype.AUTO

    @property
    def label(self) -> str:
        kv = "" if self.kv_cache_dtype is KvCacheDtype.NONE else f" + {self.kv_cache_dtype.value} KV"
        return f"{self.quantization.value}{kv}"


def resolve_quant(spec: EngineSpec, arch: GpuArch) -> QuantPlan:
    """Resolve `auto`, check the (arch, quantization) pair, and pick the checkpoint tool."""
    q = spec.quantization_for(arch)
    if q is Quantization.AUTO:
        q = Quantization.NONE if spec.role is Role.PRM else AUTO_LM[arch]
    kv = AUTO_KV[q] if spec.kv_cache_dtype is KvCacheDtype.AUTO else spec.kv_cache_dtype
    if spec.role is Role.PRM and spec.kv_cache_dtype is KvCacheDtype.AUTO and spec.prm is not None \
            and spec.prm.head_layout is not HeadLayout.VOCAB_ROW:
        kv = KvCacheDtype.NONE
    _check_arch(spec, arch, q, kv)
    _check_prm(spec, arch, q, kv)
    _check_reuse(spec, arch, q, kv)
    tool, qformat = _tool(q, kv)
    return QuantPlan(arch, q, kv, tool, qformat)


def _check_arch(spec: EngineSpec, arch: GpuArch, q: Quantization, kv: KvCacheDtype) -> None:
    w = f"engines.{spec.role.value}"
    if arch not in WEIGHT_SUPPORT[q]:
        raise UnsupportedQuantizationError(f"{w}.quantization", arch.value, q.value, _WHY_FP8)
    if arch not in KV_SUPPORT[kv]:
        raise UnsupportedQuantizationError(f"{w}.kv_cache_dtype", arch.value, f"{kv.value} KV cache", _WHY_FP8)


def keeps_kv_reuse(q: Quantization, kv: KvCacheDtype) -> bool:
    """Whether the engine keeps paged context FMHA, and so KV-cache block reuse (module docstring)."""
    return kv is KvCacheDtype.NONE or (kv is KvCacheDtype.FP8 and q is Quantization.FP8)


def _check_reuse(spec: EngineSpec, arch: GpuArch, q: Quantization, kv: KvCacheDtype) -> None:
    if spec.max_draft_len and not keeps_kv_reuse(q, kv):
        raise UnsupportedQuantizationError(
            "engines.target.kv_cache_dtype", arch.value, f"{q.value} weights with a {kv.value} KV cache",
            "a target that verifies draft tokens (max_draft_len) needs KV-cache block reuse, which this KV cache "
            "turns off; use kv_cache_dtype none (or fp8 with fp8 weights)")


def _check_prm(spec: EngineSpec, arch: GpuArch, q: Quantization, kv: KvCacheDtype) -> None:
    if spec.prm is None:
        return
    layout = spec.prm.head_layout
    quants, kvs = PRM_SUPPORT[layout]
    why = (f"the {layout.value} PRM head is built with convert_checkpoint.py only "
           f"(allowed: {', '.join(sorted(x.value for x in quants))}, KV none)")
    if q not in quants:
        raise UnsupportedQuantizationError("engines.prm.quantization", arch.value, q.value, why)
    if kv not in kvs:
        raise UnsupportedQuantizationError("engines.prm.kv_cache_dtype", arch.value, f"{kv.value} KV cache", why)


def _tool(q: Quantization, kv: KvCacheDtype) -> tuple[CheckpointTool, str | None]:
    if q in (Quantization.NONE, Quantization.INT8_WO) and kv is not KvCacheDtype.FP8:
        return CheckpointTool.CONVERT, None
    return CheckpointTool.QUANTIZE, QFORMAT[q]
