"""Tiny random models shaped for TensorRT-LLM engines, for scripts/gpu_first_run.sh when the embedded
models (models/embedded) are absent.

The tokenizer and the Skywork-style value-head PRM are those of runtime.tiny_models; the
shapes differ: head size 64 (TensorRT-LLM's attention kernels do not cover the tiny models' 8 and
16) and 1024 positions (max_seq_len of configs/engines/embedded.yaml). Also writes the pipeline
YAML the BLS needs (tokenizers, prompt template, PRM format).

    python -m runtime.smoke_models OUT_DIR      # prints the pipeline YAML's path
"""
from __future__ import annotations

import sys
from pathlib import Path

from runtime.tiny_models import make_lm, make_value_head_prm

SHAPE = {"heads": 4, "max_positions": 1024}  # hidden 256 / 4 heads = head size 64


def make_smoke_models(root: Path, seed: int = 0) -> dict[str, Path]:
    """draft/target/prm folders under `root` (idempotent)."""
    paths = {role: root / role for role in ("draft", "target", "prm")}
    if not all((p / "config.json").is_file() for p in paths.values()):
        make_lm(paths["draft"], hidden=256, layers=1, seed=seed + 1, **SHAPE)
        make_lm(paths["target"], hidden=256, layers=2, seed=seed + 2, **SHAPE)
        make_value_head_prm(paths["prm"], hidden=256, layers=1, seed=seed + 3, **SHAPE)
    return paths


def write_pipeline(root: Path, models: dict[str, Path]) -> Path:
    file = root / "pipeline.yaml"
    file.write_text(
        "models:\n"
        f"  draft: {{path: {models['draft']}}}\n"
        f"  target: {{path: {models['target']}}}\n"
        f"  prm: {{path: {models['prm']}, format: value_head}}\n"
        "prompt_template: \"Q: {question}\\n\"\n"
        "defaults: {max_tokens: 48, max_step_tokens: 12}\n"
    )
    return file


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    print(write_pipeline(root, make_smoke_models(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
