"""Hugging Face folders without torch: tokenizers, context length and parameter counts.

The Triton BLS tokenises and formats PRM inputs without loading any weights, so this module
must not import torch (the PyTorch engine re-exports these names from `torch/loading.py`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class HFTokenizer:
    """Adapts a transformers tokenizer to the core's Tokenizer protocol (no special-token magic:
    encode adds nothing, decode drops nothing, so ids and text round-trip step by step).

    `fast` is the `tokenizers.Tokenizer` behind a fast transformers tokenizer, used directly once
    `load_tokenizer` saw it give the transformers tokenizer's answers on probe texts and ids:
    the same ids and text for 5-7x less Python per call (the BLS encodes every step for the PRM
    and decodes every step it streams)."""

    tok: Any
    eos_ids: frozenset[int]
    fast: Any = None

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    @property
    def bos_id(self) -> int | None:
        return self.tok.bos_token_id

    def encode(self, text: str) -> list[int]:
        if self.fast is not None:
            return list(self.fast.encode(text, add_special_tokens=False).ids)
        return list(self.tok.encode(text, add_special_tokens=False))

    def encode_prompt(self, text: str) -> list[int]:
        """The tokenizer's own special tokens (e.g. Llama's BOS; none for Qwen), then the text."""
        if self.fast is not None:
            return list(self.fast.encode(text, add_special_tokens=True).ids)
        return list(self.tok.encode(text, add_special_tokens=True))

    def decode(self, ids: Any) -> str:
        if self.fast is not None:
            return str(self.fast.decode(list(ids), skip_special_tokens=False))
        return self.tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def piece(self, token_id: int) -> str:
        return self.decode([token_id])

    def token_id(self, text: str) -> int | None:
        value = self.tok.convert_tokens_to_ids(text)
        return None if value is None or value == self.tok.unk_token_id else int(value)


PROBE_TEXTS = ("What is 47+8-3+9?\n", "47+8=55\n\n55-3=52\n\n\\boxed{61}", "  two  spaces, tabs\tand\r\nCRLF ",
               "Ünïcödé: é, ß, 中文, emoji \U0001F600", "$\\frac{1}{2} \\cdot x^2$", "", " ", "\n\n", "a" * 40)
PROBE_IDS = 4096  # ids decoded one by one in the check (all of a smaller vocabulary)


def backend_if_same(tok: Any) -> Any:
    """The `tokenizers.Tokenizer` behind `tok` if it encodes and decodes the probes exactly as
    `tok` does (special tokens' texts included), else None (the transformers path is kept)."""
    fast = getattr(tok, "backend_tokenizer", None)  # fast tokenizers only (transformers' public name)
    if fast is None:
        return None
    specials = [t for t in getattr(tok, "all_special_tokens", []) if isinstance(t, str)]
    texts = list(PROBE_TEXTS) + [f"x{t}y {t}" for t in specials]
    try:
        for text in texts:
            for special in (False, True):
                ids = list(tok.encode(text, add_special_tokens=special))
                if list(fast.encode(text, add_special_tokens=special).ids) != ids:
                    return None
                if fast.decode(ids, skip_special_tokens=False) != tok.decode(
                        ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
                    return None
        size = len(tok)
        for i in range(0, size, max(1, size // PROBE_IDS)):
            if fast.decode([i], skip_special_tokens=False) != tok.decode(
                    [i], skip_special_tokens=False, clean_up_tokenization_spaces=False):
                return None
    except Exception:  # a tokenizer the probes trip up keeps its own path
        return None
    return fast


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
    return HFTokenizer(tok, frozenset(int(e) for e in eos), backend_if_same(tok))


def max_positions(config: Any, tokenizer: Any | None = None) -> int:
    value = getattr(config, "max_position_embeddings", None) or 4096
    limit = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
    return int(min(value, limit)) if isinstance(limit, int) and 0 < limit < 10**9 else int(value)


def folder_max_positions(path: Path, tok: HFTokenizer) -> int:
    """`max_positions` from a folder's config.json, without building the model."""
    from types import SimpleNamespace

    config = json.loads((path / "config.json").read_text())
    return max_positions(SimpleNamespace(**config), tok.tok)


def estimate_matmul_params(path: Path, with_lm_head: bool = True) -> int:
    """Parameters used in matmuls per token, read from the safetensors headers (no weights loaded):
    all tensors but the input embedding table, plus the output head (counted once even when tied
    to the embedding). `with_lm_head=False` for reward models, whose LM head is unused.
    Matches `torch.loading.matmul_params` on the same folder."""
    from safetensors import safe_open

    shapes: dict[str, int] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as handle:
            for name in handle.keys():
                numel = 1
                for dim in handle.get_slice(name).get_shape():
                    numel *= int(dim)
                shapes[name] = numel
    if not shapes:
        raise ConfigError("models", f"{path}: no *.safetensors weights found")
    embed = sum(n for name, n in shapes.items() if name.endswith("embed_tokens.weight"))
    head = sum(n for name, n in shapes.items() if name.startswith("lm_head."))
    total = sum(shapes.values()) - embed - head
    return total + ((head or embed) if with_lm_head else 0)
