"""Helpers for tests/test_build_engines.py: the real-CLI flag checker, tiny fake HF model folders
(written with numpy + safetensors), and a fake step runner that produces each step's outputs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml
from safetensors.numpy import save_file

from build_engines import prm_remap
from build_engines.plan import Step

FLAGS_FILE = Path(__file__).parent / "data" / "trtllm_1_2_cli_flags.yaml"
REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "engines").glob("*.yaml"))


def load_flag_spec() -> dict[str, Any]:
    return yaml.safe_load(FLAGS_FILE.read_text())


def command_of(step: Step) -> str:
    """Which real CLI a planned step invokes."""
    if step.tool == "trtllm-build":
        return "trtllm-build"
    if step.tool == "quantize.py":
        assert step.argv[1].endswith("/examples/quantization/quantize.py"), step.argv[1]
        return "quantize.py"
    if step.tool == "convert_checkpoint.py":
        family = Path(step.argv[1]).parent.name
        assert step.argv[1].endswith(f"/examples/models/core/{family}/convert_checkpoint.py"), step.argv[1]
        return f"convert_checkpoint.py({family})"
    return step.tool


def _value_ok(kind: Any, value: str) -> bool:
    if isinstance(kind, list):
        return value in [str(v) for v in kind]
    if kind == "int":
        return value.lstrip("-").isdigit()
    if kind == "float":
        try:
            float(value)
        except ValueError:
            return False
        return True
    return kind == "str" and value != ""


def check_argv(command: str, args: Sequence[str], spec: dict[str, Any]) -> list[str]:
    """Problems with `args` (the tokens after the program) against one CLI's real argument list."""
    table = spec[command]
    flags, aliases = table["flags"], table.get("aliases", {})
    problems: list[str] = []
    seen: list[str] = []
    i = 0
    while i < len(args):
        token = aliases.get(args[i], args[i])
        if token not in flags:
            problems.append(f"{command}: unknown flag {args[i]}")
            i += 1
            continue
        seen.append(token)
        kind = flags[token]
        if kind == "flag":
            i += 1
            continue
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
            problems.append(f"{command}: {token} needs a value")
            i += 1
            continue
        if not _value_ok(kind, args[i + 1]):
            problems.append(f"{command}: {token} {args[i + 1]!r} is not {kind}")
        i += 2
    problems += [f"{command}: {f} given twice" for f in set(seen) if seen.count(f) > 1]
    problems += [f"{command}: missing required {f}" for f in table.get("required", []) if f not in seen]
    for a, b in table.get("incompatible", []):
        if a in seen and b in seen:
            problems.append(f"{command}: {a} and {b} together are rejected by the CLI")
    return problems


def program_args(step: Step) -> Sequence[str]:
    """argv without the interpreter/script (python script.py ...) or the executable."""
    return step.argv[2:] if step.tool in ("quantize.py", "convert_checkpoint.py") else step.argv[1:]


def write_tokenizer(path: Path, vocab: dict[str, int], added: Sequence[tuple[int, str]] = ()) -> None:
    tok = {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []},
           "added_tokens": [{"id": i, "content": c, "special": True} for i, c in added]}
    (path / "tokenizer.json").write_text(json.dumps(tok))


QWEN_VOCAB = {"a": 0, "b": 1, "Ċ": 2, "ĊĊ": 3, ".": 4, ".ĊĊ": 5}


def make_hf_model(path: Path, *, family: str = "qwen", vocab_size: int = 8, hidden: int = 4,
                  head: str | None = None, dtype: str = "float32", seed: int = 0,
                  tokenizer: dict[str, int] | None = None, shards: int = 1) -> dict[str, np.ndarray]:
    """A tiny HF folder: config.json, tokenizer.json and random safetensors weights (+ optional PRM head)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    model_type = "qwen2" if family == "qwen" else "llama"
    arch = {None: f"{'Qwen2' if family == 'qwen' else 'Llama'}ForCausalLM", "value_head": "Qwen2ForPrmModel",
            "two_class": "Qwen2ForProcessRewardModel"}[head]
    cfg = {"model_type": model_type, "architectures": [arch], "vocab_size": vocab_size, "hidden_size": hidden,
           "num_attention_heads": 2, "num_hidden_layers": 1, "tie_word_embeddings": True,
           "auto_map": {"AutoModel": "modeling_prm.Qwen2ForPrmModel"}}
    (path / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(path, tokenizer or QWEN_VOCAB, [(vocab_size - 1, "<extra_0>")])
    np_dtype = np.dtype(dtype)
    w = {"model.embed_tokens.weight": rng.standard_normal((vocab_size, hidden)).astype(np_dtype),
         "model.norm.weight": np.ones(hidden, np_dtype)}
    if head == "value_head":
        w["v_head.summary.weight"] = rng.standard_normal((1, hidden)).astype(np_dtype)
        w["v_head.summary.bias"] = np.array([0.25], np_dtype)
    if head == "two_class":
        w["score.0.weight"] = rng.standard_normal((hidden, hidden)).astype(np_dtype)
        w["score.0.bias"] = rng.standard_normal(hidden).astype(np_dtype)
        w["score.2.weight"] = rng.standard_normal((2, hidden)).astype(np_dtype)
        w["score.2.bias"] = rng.standard_normal(2).astype(np_dtype)
    _save_shards(path, w, shards)
    return w


def _save_shards(path: Path, weights: dict[str, np.ndarray], shards: int) -> None:
    if shards == 1:
        save_file(weights, str(path / "model.safetensors"))
        return
    names = sorted(weights)
    weight_map = {}
    for k in range(shards):
        part = {n: weights[n] for n in names[k::shards]}
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(path / file))
        weight_map.update({n: file for n in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


class FakeRunner:
    """Stands in for subprocess: runs prm_remap for real, fakes TRT-LLM outputs."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str], log_path: Path) -> int:
        self.calls.append(tuple(argv))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("fake run\n")
        if self.fail_on and self.fail_on in " ".join(argv):
            return 3
        if argv[1:3] == ("-m", "build_engines.prm_remap"):
            return prm_remap.main(list(argv[3:]))
        out = Path(argv[argv.index("--output_dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        name = "rank0.engine" if argv[0].endswith("trtllm-build") else "rank0.safetensors"
        (out / name).write_bytes(b"fake")
        return 0


def engine_set_yaml(models_root: Path, output_root: Path, prm: dict[str, Any], prm_model: str = "prm",
                    family: str = "qwen", **engine: Any) -> dict[str, Any]:
    if prm.get("format") == "value_head" and prm.get("head_layout", "score_head") == "score_head":
        prm = {"model_cls_name": "QWenValueHeadPRM", **prm}  # a score_head engine needs the class (config.py)
    limits = {"max_batch_size": 4, "max_input_len": 63, "max_seq_len": 64, "max_num_tokens": 256}
    base = {"family": family, "dtype": "float16", **limits, **engine}
    return {"name": "tiny", "models_root": str(models_root), "output_root": str(output_root),
            "engines": {"draft": {"model": "draft", **base}, "target": {"model": "target", **base},
                        "prm": {"model": prm_model, **base, "quantization": "none", "prm": prm}}}
