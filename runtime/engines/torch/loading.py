"""Loading Hugging Face folders: tokenizers, causal LMs (headless + output head) and PRM heads."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.core.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True, slots=True)
class HFTokenizer:
    """Adapts a transformers tokenizer to the core's Tokenizer protocol (no special-token magic:
    encode adds nothing, decode drops nothing, so ids and text round-trip step by step)."""

    tok: Any
    eos_ids: frozenset[int]

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    @property
    def bos_id(self) -> int | None:
        return self.tok.bos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Any) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def piece(self, token_id: int) -> str:
        return self.decode([token_id])

    def token_id(self, text: str) -> int | None:
        value = self.tok.convert_tokens_to_ids(text)
        return None if value is None or value == self.tok.unk_token_id else int(value)


def quiet_transformers() -> None:
    """Library logs and progress bars go to our logger's level, not the user's terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def check_folder(path: Path, key: str) -> Path:
    if not path.is_dir():
        raise ConfigError(key, f"model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise ConfigError(key, f"{path} has no config.json (expected a Hugging Face model folder)")
    return path


def load_tokenizer(path: Path, key: str) -> HFTokenizer:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(key, f"cannot load a tokenizer from {path}: {exc}") from exc
    eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen_config = path / "generation_config.json"
    if gen_config.is_file():
        value = json.loads(gen_config.read_text()).get("eos_token_id")
        eos |= set(value) if isinstance(value, list) else ({value} if value is not None else set())
    if not eos:
        raise ConfigError(key, f"{path}: the tokenizer defines no EOS token")
    return HFTokenizer(tok, frozenset(int(e) for e in eos))


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


def max_positions(config: Any, tokenizer: Any | None = None) -> int:
    value = getattr(config, "max_position_embeddings", None) or 4096
    limit = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
    return int(min(value, limit)) if isinstance(limit, int) and 0 < limit < 10**9 else int(value)
