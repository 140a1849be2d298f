"""CPU tests of build_engines: plans against the real TRT-LLM 1.2 CLIs, quantization rules, YAML
strictness, GPU detection, the dry run and import hygiene. PRM remapping is tested in
test_build_engines_prm.py, execution and manifests in test_build_engines_exec.py."""
from __future__ import annotations

import itertools
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from engine_build_helpers import (
    CONFIGS,
    REPO,
    check_argv,
    command_of,
    engine_set_yaml,
    load_flag_spec,
    program_args,
)

from build_engines.cli import main as cli_main
from build_engines.config import GpuArch, KvCacheDtype, Quantization, Role
from runtime.core.errors import ConfigError
from build_engines.errors import ConfigError, GpuDetectionError, UnsupportedQuantizationError
from build_engines.gpu import detect_gpu_arch
from build_engines.plan import StepKind, Toolchain, make_plan
from build_engines.yaml_config import Overrides, load_config, parse_config

SPEC = load_flag_spec()
SKYWORK = REPO / "configs" / "engines" / "qwen25-math-1.5b-7b-skywork.yaml"
TC = Toolchain(python="python3")
LM_QUANTS = [q for q in Quantization if q is not Quantization.AUTO]


def _plan_problems(plan) -> list[str]:
    return [p for step in plan.steps if step.tool != "prm_remap"
            for p in check_argv(command_of(step), program_args(step), SPEC)]


def _flag(step, name: str) -> str | None:
    return step.argv[step.argv.index(name) + 1] if name in step.argv else None


def test_flag_checker_catches_unknown_flags_and_bad_values():
    assert check_argv("trtllm-build", ["--kv_cache_type", "paged", "--gather_context_logits"], SPEC) == []
    assert check_argv("trtllm-build", ["--paged_context_fmha", "enable"], SPEC) == [
        "trtllm-build: unknown flag --paged_context_fmha", "trtllm-build: unknown flag enable"]
    assert check_argv("trtllm-build", ["--gemm_plugin", "int8"], SPEC) != []
    assert check_argv("trtllm-build", ["--max_batch_size", "many"], SPEC) != []
    assert check_argv("trtllm-build", ["--gather_context_logits", "--max_draft_len", "4"], SPEC) != []
    assert check_argv("quantize.py", ["--qformat", "w4a16_awq"], SPEC) != []
    assert check_argv("convert_checkpoint.py(qwen)", ["--dtype", "float16"], SPEC) == [
        "convert_checkpoint.py(qwen): missing required --model_dir"]


# ---- plans vs the real CLIs, for every (arch, quantization, kv) combination -----------------------

@pytest.mark.parametrize("arch,quant,dtype", list(itertools.product(GpuArch, LM_QUANTS, ["float16", "bfloat16"])))
def test_every_arch_quantization_pair_emits_only_real_flags(arch, quant, dtype, tmp_path):
    config = load_config(SKYWORK, Overrides(models_root=tmp_path, output_root=tmp_path / "out", quantization=quant))
    config = replace(config, draft=replace(config.draft, dtype=type(config.draft.dtype)(dtype)))
    if quant is Quantization.FP8 and arch in (GpuArch.SM80, GpuArch.SM86):
        with pytest.raises(UnsupportedQuantizationError, match=f"'fp8' is not supported on {arch.value}"):
            make_plan(config, arch, TC)
        return
    plan = make_plan(config, arch, TC)
    assert _plan_problems(plan) == []
    draft_ckpt = plan.engines[0].steps[0]
    assert _flag(draft_ckpt, "--dtype") == dtype
    expected_tool = "convert_checkpoint.py" if quant in (Quantization.NONE, Quantization.INT8_WO) else "quantize.py"
    assert draft_ckpt.tool == expected_tool
    if expected_tool == "quantize.py":
        assert _flag(draft_ckpt, "--qformat") == quant.value
    build = plan.engines[0].steps[-1]
    for name, value in [("--kv_cache_type", "paged"), ("--use_paged_context_fmha", "enable"),
                        ("--logits_dtype", "float32"), ("--gemm_plugin", "auto"), ("--max_seq_len", "4096"),
                        ("--max_input_len", "4095"), ("--max_num_tokens", "8192"), ("--max_batch_size", "64")]:
        assert _flag(build, name) == value, name


@pytest.mark.parametrize("arch,kv", list(itertools.product(GpuArch, [KvCacheDtype.NONE, KvCacheDtype.INT8,
                                                               KvCacheDtype.FP8])))
@pytest.mark.parametrize("quant", LM_QUANTS)
def test_kv_cache_dtype_choices(arch, kv, quant, tmp_path):
    config = load_config(SKYWORK, Overrides(models_root=tmp_path, output_root=tmp_path / "o", quantization=quant))
    config = replace(config, draft=replace(config.draft, kv_cache_dtype=kv))
    fp8_needed = kv is KvCacheDtype.FP8 or quant is Quantization.FP8
    if fp8_needed and arch in (GpuArch.SM80, GpuArch.SM86):
        with pytest.raises(UnsupportedQuantizationError, match=arch.value):
            make_plan(config, arch, TC, roles=(Role.DRAFT,))
        return
    plan = make_plan(config, arch, TC, roles=(Role.DRAFT,))
    assert _plan_problems(plan) == []
    ckpt, build = plan.steps
    if ckpt.tool == "quantize.py":
        assert _flag(ckpt, "--kv_cache_dtype") == (None if kv is KvCacheDtype.NONE else kv.value)
    else:
        assert ("--int8_kv_cache" in ckpt.argv) == (kv is KvCacheDtype.INT8)
    assert ("--use_fp8_context_fmha" in build.argv) == (kv is KvCacheDtype.FP8)


def test_auto_quantization_per_gpu(tmp_path):
    config = load_config(SKYWORK, Overrides(models_root=tmp_path, output_root=tmp_path))
    config = replace(config, target=replace(config.target, quantization=tuple((a, Quantization.AUTO) for a in GpuArch)))
    labels = {arch: make_plan(config, arch, TC).engines[1].quant.label for arch in GpuArch}
    # Ampere: no INT8 KV cache by default, it would turn KV-cache reuse off (build_engines/quant.py)
    assert labels == {GpuArch.SM90: "fp8 + fp8 KV", GpuArch.SM89: "fp8 + fp8 KV",
                      GpuArch.SM80: "int8_sq", GpuArch.SM86: "int8_sq"}


@pytest.mark.parametrize(("weights", "kv", "ok"), [
    ("fp8", "fp8", True), ("none", "none", True), ("int8_sq", "none", True),
    ("int8_sq", "int8", False), ("none", "fp8", False), ("int4_awq", "fp8", False)])
def test_a_draft_verifying_target_keeps_kv_reuse(tmp_path, weights, kv, ok):
    """trtllm-build turns paged context FMHA off for an INT8 KV cache and for FP8 KV under non-FP8
    weights; the executor then turns block reuse off, and a draft_tokens_external target refuses to load
    without it (trtGptModelInflightBatching.cpp, 1.2.0rc2): the plan refuses such a target."""
    config = load_config(SKYWORK, Overrides(models_root=tmp_path, output_root=tmp_path))
    target = replace(config.target, max_draft_len=4, kv_cache_dtype=KvCacheDtype(kv),
                     quantization=tuple((a, Quantization(weights)) for a in GpuArch))
    config = replace(config, target=target)
    if ok:
        make_plan(config, GpuArch.SM90, TC)
    else:
        with pytest.raises(ConfigError, match="needs KV-cache block reuse"):
            make_plan(config, GpuArch.SM90, TC)


def test_the_draft_engine_answers_generation_logits(tmp_path):
    """sd/cos proposals read the draft's generation_logits through Triton: only the engine flag enables
    them (the backend never sets the executor's), so the draft is built with it, and only the draft."""
    plan = make_plan(load_config(SKYWORK, Overrides(models_root=tmp_path)), GpuArch.SM90, TC)
    draft, target, prm = (e.steps[-1].argv for e in plan.engines)
    assert "--gather_generation_logits" in draft
    assert "--gather_generation_logits" not in target and "--gather_generation_logits" not in prm


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("arch", list(GpuArch))
def test_shipped_configs_plan_on_every_arch(config_file, arch, tmp_path):
    plan = make_plan(load_config(config_file, Overrides(models_root=tmp_path)), arch, TC)
    assert _plan_problems(plan) == []
    prm_build = plan.engines[2].steps[-1]
    assert "--gather_context_logits" in prm_build.argv
    assert all("--gather_context_logits" not in e.steps[-1].argv for e in plan.engines[:2])


def test_72b_target_uses_tensor_parallel_4(tmp_path):
    config = load_config(REPO / "configs/engines/qwen25-math-7b-72b-skywork.yaml", Overrides(models_root=tmp_path))
    target = make_plan(config, GpuArch.SM90, TC).engines[1]
    assert _flag(target.steps[0], "--tp_size") == "4"
    assert _flag(target.steps[-1], "--workers") == "4"


def test_two_class_prm_uses_the_custom_model_class(tmp_path):
    config = load_config(REPO / "configs/engines/qwen25-math-1.5b-7b-qwenprm.yaml", Overrides(models_root=tmp_path))
    prm = make_plan(config, GpuArch.SM89, TC).engines[2]
    assert [s.kind for s in prm.steps] == [StepKind.PREPARE_PRM, StepKind.CHECKPOINT, StepKind.ATTACH_HEAD,
                                            StepKind.BUILD]
    build = prm.steps[-1]
    assert _flag(build, "--model_cls_name") == "QWenTwoClassPRM"
    assert Path(_flag(build, "--model_cls_file")).is_file()
    assert _flag(prm.steps[1], "--model_dir") == str(prm.paths.prm_hf)


def test_draft_tokens_external_target_and_prm_logits_never_combine(tmp_path):
    config = load_config(SKYWORK, Overrides(models_root=tmp_path))
    config = replace(config, target=replace(config.target, max_draft_len=8))
    plan = make_plan(config, GpuArch.SM90, TC)
    assert _flag(plan.engines[1].steps[-1], "--speculative_decoding_mode") == "draft_tokens_external"
    assert _plan_problems(plan) == []
    with pytest.raises(ConfigError, match="engines.prm.max_draft_len"):
        replace(config.prm, max_draft_len=4)


@pytest.mark.parametrize("layout,quant,ok", [
    ("score_head", "none", True), ("score_head", "int8_wo", True), ("score_head", "fp8", False),
    ("score_head", "int8_sq", False), ("vocab_row", "int8_sq", True), ("vocab_row", "int4_awq", True)])
def test_prm_quantization_depends_on_head_layout(layout, quant, ok, tmp_path):
    raw = engine_set_yaml(tmp_path, tmp_path / "o", {"format": "value_head", "head_layout": layout},
                          family="qwen" if layout == "score_head" else "llama")
    raw["engines"]["prm"]["quantization"] = quant
    config = parse_config(raw)
    if ok:
        assert _plan_problems(make_plan(config, GpuArch.SM90, TC)) == []
    else:
        with pytest.raises(UnsupportedQuantizationError, match="engines.prm.quantization"):
            make_plan(config, GpuArch.SM90, TC)


# ---- YAML strictness --------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate,key", [
    (lambda r: r.update(bogus=1), "bogus"),
    (lambda r: r["engines"]["draft"].update(max_batch_szie=8), "engines.draft.max_batch_szie"),
    (lambda r: r["engines"]["draft"].update(max_batch_size=0), "engines.draft.max_batch_size"),
    (lambda r: r["engines"]["target"].update(max_input_len=64), "engines.target.max_input_len"),
    (lambda r: r["engines"]["draft"].update(tp_size="2"), "engines.draft.tp_size"),
    (lambda r: r["engines"]["draft"].update(quantization={"sm70": "fp8"}), "engines.draft.quantization.sm70"),
    (lambda r: r["engines"]["draft"].update(quantization="fp4"), "engines.draft.quantization"),
    (lambda r: r["engines"]["draft"].update(tokens_per_block=48), "engines.draft.tokens_per_block"),
    (lambda r: r["engines"]["prm"]["prm"].update(num_labels=3), "engines.prm.prm.num_labels"),
    (lambda r: r["engines"]["prm"]["prm"].update(colour="red"), "engines.prm.prm.colour"),
    (lambda r: r["engines"]["prm"].update(tp_size=2), "engines.prm.tp_size"),
    (lambda r: r["engines"].pop("prm"), "engines.prm"),
])
def test_yaml_rejects_bad_keys_and_values_naming_the_key(mutate, key, tmp_path):
    raw = engine_set_yaml(tmp_path, tmp_path / "o", {"format": "value_head"})
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.key == key


# ---- GPU detection --------------------------------------------------------------------------------

def test_gpu_detection():
    assert detect_gpu_arch(lambda: "9.0\n9.0\n") is GpuArch.SM90
    assert detect_gpu_arch(lambda: "8.6\n") is GpuArch.SM86
    for bad in ["", "10.0\n", "8.0\n9.0\n", "garbage\n"]:
        with pytest.raises(GpuDetectionError):
            detect_gpu_arch(lambda bad=bad: bad)


def test_cli_without_gpu_and_without_gpu_arch_fails_clearly(monkeypatch, capsys):
    monkeypatch.setattr("build_engines.gpu.shutil.which", lambda name: None)
    assert cli_main(["--config", str(SKYWORK), "--dry-run"]) == 1
    assert "pass --gpu-arch" in capsys.readouterr().err


def test_cli_refuses_fp8_on_ampere(capsys, tmp_path):
    rc = cli_main(["--config", str(SKYWORK), "--gpu-arch", "sm80", "--quantization", "fp8", "--dry-run",
                   "--output-root", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "fp8" in err and "sm80" in err


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = cli_main(["--config", str(SKYWORK), "--gpu-arch", "sm90", "--dry-run", "--models-root", str(tmp_path / "m"),
                   "--output-root", str(tmp_path / "out"), "--python", "python3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    for needle in ["quantize.py", "--qformat fp8", "--kv_cache_dtype fp8", "trtllm-build", "--gather_context_logits",
                   "build_engines.prm_remap prepare", "convert_checkpoint.py", "model folder not found"]:
        assert needle in out, needle


def test_import_needs_no_torch_or_tensorrt_llm():
    code = ("import sys\nfor m in ('torch','tensorrt_llm','tensorrt','triton_python_backend_utils','transformers'):\n"
            "    sys.modules[m] = None\n"
            "import build_engines.cli, build_engines.executor, build_engines.prm_remap, build_engines.trtllm_models\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
