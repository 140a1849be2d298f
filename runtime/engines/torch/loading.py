"""Loading Hugging Face folders: tokenizers, causal LMs (headless + output head) and PRM heads."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

# Torch-free helpers live in runtime.engines.hf (the Triton BLS uses them); re-exported here.
from runtime.engines.hf import HFTokenizer, check_folder, load_tokenizer, max_positions

__all__ = ["HFTokenizer", "check_folder", "load_tokenizer", "max_positions", "load_causal_lm", "load_backbone",
           "load_tensors", "matmul_params", "quiet_transformers"]

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def quiet_transformers() -> None:
    """Library logs and progress bars go to our logger's level, not the user's terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_causal_lm(path: Path, dtype: str, device: str) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """(headless decoder, output head, config). sdpa attention: the batcher's 4D bool masks need it."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype], attn_implementation="sdpa")
    model.to(device).eval()
    return model.base_model, model.get_output_embeddings(), model.config


def load_backbone(path: Path, dtype: str, device: str) -> tuple[torch.nn.Module, Any]:
    """The headless decoder of a reward model folder (its head is loaded separately)."""
    from transformers import AutoModel

    quiet_transformers()
    model = AutoModel.from_pretrained(str(path), dtype=DTYPES[dtype], attn_implementation="sdpa")
    model.to(device).eval()
    return model, model.config


def load_tensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor whose name starts with `prefix` from the folder's safetensors files."""
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                if name.startswith(prefix):
                    found[name] = handle.get_tensor(name)
    return found


def matmul_params(decoder: torch.nn.Module, head: torch.nn.Module | None) -> int:
    """Parameters used in matmuls per token: all but the input embedding table (a lookup), plus
    the output head even when tied to the embedding (its matmul is real work)."""
    embed = decoder.get_input_embeddings()
    total = sum(p.numel() for p in decoder.parameters()) - (embed.weight.numel() if embed is not None else 0)
    return total + (sum(p.numel() for p in head.parameters()) if head is not None else 0)
