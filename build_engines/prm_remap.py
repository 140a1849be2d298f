"""Remap a PRM's reward head into a folder that stock TensorRT-LLM converters can load.

Runs on CPU on raw safetensors bytes (no torch). The prepared folder `dst` holds symlinks to the
source backbone shards, a rewritten config.json, a new `model.safetensors.index.json`, and one
extra shard `rsd_prm_head.safetensors`. TRT-LLM's ModelWeightsLoader globs `*.safetensors` in
sorted order and later files win, so the extra shard's name must sort after `model*.safetensors`.

Layouts (value head = Skywork `v_head.summary`: weight [1, h], bias [1]; reward = sigmoid(v.h + b)):
- score_head: architectures=[Qwen2ForSequenceClassification], num_labels=N, `score.weight` = [v; 0...]
  (QWenForCausalLM maps lm_head <- score, width N, no bias). Bias goes to the manifest.
- vocab_row: the original CausalLM architecture, `lm_head.weight` = [v; 0 ...] of width vocab_size.
- two_class (Qwen2.5-Math-PRM: score.0 Linear(h,h) -> ReLU -> score.2 Linear(h,2)): as score_head
  with `score.weight` = score.2.weight, plus trtllm_head/rsd_two_class_head.safetensors holding
  score.2.bias, score.0.weight, score.0.bias under the custom class's names (see prm_heads.py).

`python -m build_engines.prm_remap prepare|attach ...` is what the build plan runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from build_engines.errors import ModelFolderError
from build_engines.models import read_config
from build_engines.safetensors_io import (
    INDEX_FILE,
    RawTensor,
    TensorInfo,
    decode_floats,
    read_tensor,
    stack_rows,
    tensor_map,
    write_file,
    zeros_like_rows,
)

log = logging.getLogger(__name__)

HEAD_SHARD = "rsd_prm_head.safetensors"
HEAD_INFO = "rsd_prm_head.json"
TWO_CLASS_HEAD = Path("trtllm_head") / "rsd_two_class_head.safetensors"
VALUE_HEAD_KEYS = ("v_head.summary.weight", "v_head.summary.bias")
TWO_CLASS_KEYS = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")
# Names of the custom class's parameters (build_engines/trtllm_models/prm_heads.py::TwoLayerHead)
TWO_CLASS_TRTLLM_NAMES = {"score.2.bias": "lm_head.bias", "score.0.weight": "lm_head.fc1.weight",
                          "score.0.bias": "lm_head.fc1.bias"}


@dataclass(frozen=True, slots=True)
class HeadInfo:
    """What the prepare step learned about the head; the engine manifest copies it."""

    prm_format: str
    head_layout: str
    num_labels: int  # width of the engine's logits row
    reward_index: int  # column of the context-logit row that carries the reward logit
    bias: float  # added to the logit by the BLS (value_head); 0.0 for two_class
    hidden_size: int
    source_dtype: str
    source: str


def _find(tensors: dict[str, TensorInfo], suffix: str, src: Path) -> TensorInfo:
    hits = [k for k in tensors if k == suffix or k.endswith("." + suffix)]
    if len(hits) != 1:
        raise ModelFolderError(f"{src}: expected exactly one tensor named '{suffix}', found {hits or 'none'}")
    return tensors[hits[0]]


def _link_folder(src: Path, dst: Path) -> None:
    """Fresh dst with symlinks to every source file except config.json and the weight index."""
    if dst.resolve() == src.resolve() or dst.resolve() in src.resolve().parents:
        raise ModelFolderError(f"refusing to prepare {dst}: it is or contains the source folder {src}")
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for item in sorted(src.iterdir()):
        if item.name in ("config.json", INDEX_FILE) or item.name.startswith("rsd_"):
            continue
        (dst / item.name).symlink_to(item.resolve())


def _write_index(src: Path, dst: Path, tensors: dict[str, TensorInfo], head_keys: Sequence[str]) -> None:
    shards = sorted(p.name for p in dst.glob("*.safetensors"))
    if shards[-1] != HEAD_SHARD:
        raise ModelFolderError(f"{src}: weight file {shards[-1]} sorts after {HEAD_SHARD}; TRT-LLM's loader would "
                               "let it override the remapped head (rename the source shards model-*.safetensors)")
    weight_map = {name: info.file.name for name, info in tensors.items() if name not in head_keys}
    weight_map.update({k: HEAD_SHARD for k in head_keys})
    total = sum(info.end - info.begin for info in tensors.values())
    index = {"metadata": {"total_size": total, "rsd_source": str(src)}, "weight_map": dict(sorted(weight_map.items()))}
    (dst / INDEX_FILE).write_text(json.dumps(index, indent=2))


def _write_config(dst: Path, cfg: dict[str, Any], updates: dict[str, Any]) -> None:
    cfg = {k: v for k, v in cfg.items() if k != "auto_map"}  # custom HF code is not copied
    cfg.update(updates)
    cfg["tie_word_embeddings"] = False  # else Qwen's converter maps lm_head to embed_tokens
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))


def _padded_rows(v: RawTensor, rows: int) -> RawTensor:
    return v if rows == 1 else stack_rows([v, zeros_like_rows(v, rows - 1)])


def prepare_value_head(src: Path, dst: Path, layout: str, num_labels: int) -> HeadInfo:
    """Map Skywork's v_head onto score_head (width num_labels) or a vocab_row lm_head."""
    cfg = read_config(src)
    tensors = tensor_map(src)
    weight = read_tensor(_find(tensors, VALUE_HEAD_KEYS[0], src))
    bias = decode_floats(read_tensor(_find(tensors, VALUE_HEAD_KEYS[1], src)))
    hidden = int(cfg["hidden_size"])
    if weight.shape != (1, hidden) or len(bias) != 1:
        raise ModelFolderError(f"{src}: value head has shape {list(weight.shape)} / bias {len(bias)}, "
                               f"expected [1, {hidden}] / 1")
    _link_folder(src, dst)
    if layout == "score_head":
        key, rows = "score.weight", num_labels
        updates = {"architectures": ["Qwen2ForSequenceClassification"], "num_labels": num_labels}
    elif layout == "vocab_row":
        key, rows = "lm_head.weight", int(cfg["vocab_size"])
        arch = [a for a in cfg.get("architectures") or [] if a.endswith("ForCausalLM")]
        updates = {"architectures": arch or [f"{_family_prefix(cfg)}ForCausalLM"]}
    else:
        raise ValueError(f"unknown value-head layout {layout}")
    write_file(dst / HEAD_SHARD, {key: _padded_rows(weight, rows)}, {"format": "pt"})
    _write_index(src, dst, tensors, [key])
    _write_config(dst, cfg, updates)
    info = HeadInfo("value_head", layout, rows, 0, float(bias[0]), hidden, weight.dtype, str(src))
    (dst / HEAD_INFO).write_text(json.dumps(asdict(info), indent=2))
    return info


def _family_prefix(cfg: dict[str, Any]) -> str:
    return {"qwen2": "Qwen2", "llama": "Llama", "mistral": "Mistral"}.get(str(cfg.get("model_type")), "Llama")


def prepare_two_class(src: Path, dst: Path) -> HeadInfo:
    """Qwen2.5-Math-PRM: score.2 -> score.weight (stock loader); the rest -> trtllm_head/ shard."""
    cfg = read_config(src)
    tensors = tensor_map(src)
    raw = {k: read_tensor(_find(tensors, k, src)) for k in TWO_CLASS_KEYS}
    hidden = int(cfg["hidden_size"])
    expected = {"score.0.weight": (hidden, hidden), "score.0.bias": (hidden,),
                "score.2.weight": (2, hidden), "score.2.bias": (2,)}
    for k, shape in expected.items():
        if raw[k].shape != shape:
            raise ModelFolderError(f"{src}: {k} has shape {list(raw[k].shape)}, expected {list(shape)}")
    _link_folder(src, dst)
    write_file(dst / HEAD_SHARD, {"score.weight": raw["score.2.weight"]}, {"format": "pt"})
    (dst / TWO_CLASS_HEAD).parent.mkdir(parents=True)
    write_file(dst / TWO_CLASS_HEAD, {TWO_CLASS_TRTLLM_NAMES[k]: raw[k] for k in TWO_CLASS_TRTLLM_NAMES},
               {"format": "pt"})
    _write_index(src, dst, tensors, ["score.weight"])
    _write_config(dst, cfg, {"architectures": ["Qwen2ForSequenceClassification"], "num_labels": 2})
    info = HeadInfo("two_class", "two_class_custom", 2, 1, 0.0, hidden, raw["score.2.weight"].dtype, str(src))
    (dst / HEAD_INFO).write_text(json.dumps(asdict(info), indent=2))
    return info


def attach_head(head: Path, checkpoint: Path) -> Path:
    """Copy the two-class head shard next to a converted TRT-LLM checkpoint (read by QWenTwoClassPRM)."""
    if not head.is_file():
        raise ModelFolderError(f"two-class head shard not found: {head} (run the prepare step first)")
    if not (checkpoint / "config.json").is_file():
        raise ModelFolderError(f"{checkpoint} is not a TRT-LLM checkpoint (no config.json)")
    out = checkpoint / head.name
    shutil.copyfile(head, out)
    return out


def read_head_info(prepared: Path) -> HeadInfo:
    return HeadInfo(**json.loads((prepared / HEAD_INFO).read_text()))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m build_engines.prm_remap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write a loadable HF folder with the PRM head remapped")
    prep.add_argument("--format", required=True, choices=["value_head", "two_class"])
    prep.add_argument("--layout", required=True, choices=["score_head", "vocab_row", "two_class_custom"])
    prep.add_argument("--num-labels", type=int, default=1, choices=[1, 2])
    prep.add_argument("--src", type=Path, required=True)
    prep.add_argument("--dst", type=Path, required=True)
    att = sub.add_parser("attach", help="copy the two-class head shard into a TRT-LLM checkpoint")
    att.add_argument("--head", type=Path, required=True)
    att.add_argument("--checkpoint", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    if args.command == "attach":
        log.info("attached %s", attach_head(args.head, args.checkpoint))
        return 0
    if args.format == "two_class":
        info = prepare_two_class(args.src, args.dst)
    else:
        info = prepare_value_head(args.src, args.dst, args.layout, args.num_labels)
    log.info("prepared %s: %s", args.dst, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
