"""Inspection of local HF model folders: config, weights, tokenizer identity, special token ids.

Reads JSON and file listings only (no torch, no transformers). The `tokenizers` library is used
when installed to encode a separator exactly; otherwise token ids come from the vocabulary.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from build_engines.config import ModelFamily
from build_engines.errors import ConfigError, ModelFolderError, TokenizerError, TokenizerMismatchError

log = logging.getLogger(__name__)

HF_MODEL_TYPES: dict[ModelFamily, frozenset[str]] = {
    ModelFamily.QWEN: frozenset({"qwen2"}),
    ModelFamily.LLAMA: frozenset({"llama", "mistral"}),
}
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the build needs to know about a HF model folder."""

    path: Path
    model_type: str
    architectures: tuple[str, ...]
    vocab_size: int
    hidden_size: int
    tie_word_embeddings: bool


@dataclass(frozen=True, slots=True)
class TokenizerFingerprint:
    """Identity of a tokenizer: which files were compared and a digest of their token tables."""

    kind: str  # tokenizer.json | vocab.json+merges.txt | tokenizer.model
    digest: str
    num_tokens: int


def read_config(path: Path) -> dict[str, Any]:
    config = path / "config.json"
    if not config.is_file():
        raise ModelFolderError(f"{path}: no config.json (is this a Hugging Face model folder?)")
    data: dict[str, Any] = json.loads(config.read_text())
    return data


def inspect_model(path: Path, family: ModelFamily, key: str) -> ModelInfo:
    """Check that `path` is a usable HF folder of the declared family."""
    if not path.is_dir():
        raise ModelFolderError(f"{key}: model folder not found: {path} (download it or pass --models-root)")
    cfg = read_config(path)
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise ModelFolderError(f"{key}: {path} has no *.safetensors or *.bin weights")
    model_type = str(cfg.get("model_type", ""))
    if model_type not in HF_MODEL_TYPES[family]:
        raise ConfigError(f"{key}.family", f"is {family.value} but {path}/config.json says model_type={model_type!r}")
    return ModelInfo(path, model_type, tuple(cfg.get("architectures") or ()), int(cfg.get("vocab_size", 0)),
                     int(cfg.get("hidden_size", 0)), bool(cfg.get("tie_word_embeddings", False)))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _fingerprint_tokenizer_json(file: Path) -> TokenizerFingerprint:
    tok = json.loads(file.read_text())
    model = tok.get("model") or {}
    added = sorted((t.get("id"), t.get("content"), bool(t.get("special"))) for t in tok.get("added_tokens") or [])
    vocab = model.get("vocab")
    table = {"type": model.get("type"), "vocab": vocab, "merges": model.get("merges"), "added": added}
    count = len(vocab) if vocab is not None else 0
    return TokenizerFingerprint("tokenizer.json", _digest(table), count + len(added))


def tokenizer_fingerprint(path: Path, key: str) -> TokenizerFingerprint:
    """Digest of the token table (vocab, merges, added tokens), ignoring cosmetic settings."""
    if (path / "tokenizer.json").is_file():
        return _fingerprint_tokenizer_json(path / "tokenizer.json")
    if (path / "vocab.json").is_file():
        vocab = json.loads((path / "vocab.json").read_text())
        merges_file = path / "merges.txt"
        merges = merges_file.read_text().splitlines() if merges_file.is_file() else []
        return TokenizerFingerprint("vocab.json+merges.txt", _digest({"vocab": vocab, "merges": merges}), len(vocab))
    if (path / "tokenizer.model").is_file():
        data = (path / "tokenizer.model").read_bytes()
        return TokenizerFingerprint("tokenizer.model", hashlib.sha256(data).hexdigest(), 0)
    raise TokenizerError(f"{key}: no tokenizer in {path} (expected tokenizer.json, vocab.json or tokenizer.model)")


def check_same_tokenizer(draft: Path, target: Path) -> TokenizerFingerprint:
    """Raise TokenizerMismatchError unless draft and target share the token table."""
    a = tokenizer_fingerprint(draft, "draft")
    b = tokenizer_fingerprint(target, "target")
    if a.digest != b.digest:
        raise TokenizerMismatchError(
            f"draft and target tokenizers differ ({a.kind}, {a.num_tokens} tokens in {draft} vs "
            f"{b.kind}, {b.num_tokens} tokens in {target}); RSD passes token ids between them, so they "
            "must share the vocabulary (set check_tokenizers: false only if you re-tokenize text)")
    return a


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """The GPT-2 byte-level BPE alphabet: printable bytes map to themselves, others to U+0100 onwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _encode_with_tokenizers(file: Path, text: str) -> int | None:
    try:
        from tokenizers import Tokenizer  # optional; exact encoding when available
    except ImportError:
        return None
    try:
        ids = Tokenizer.from_file(str(file)).encode(text, add_special_tokens=False).ids
    except Exception as exc:  # tokenizers raises plain Exception for files it cannot parse
        log.debug("tokenizers cannot load %s (%s); using the vocabulary table", file, exc)
        return None
    return ids[-1] if ids else None


def _lookup_vocab(tok: dict[str, Any], text: str) -> int | None:
    for added in tok.get("added_tokens") or []:
        if added.get("content") == text:
            return int(added["id"])
    vocab = (tok.get("model") or {}).get("vocab")
    if not isinstance(vocab, dict):
        return None
    byte_level = "".join(byte_to_unicode()[b] for b in text.encode())
    for candidate in (byte_level, text, byte_level[-1:], text[-1:]):
        if candidate in vocab:
            return int(vocab[candidate])
    return None


def separator_token_id(path: Path, text: str) -> int | None:
    """Id of the token that ends `text` when encoded alone (Skywork's `encode(step_token)[-1]`)."""
    file = path / "tokenizer.json"
    if file.is_file():
        tok = json.loads(file.read_text())
        for added in tok.get("added_tokens") or []:
            if added.get("content") == text:
                return int(added["id"])
        exact = _encode_with_tokenizers(file, text)
        return exact if exact is not None else _lookup_vocab(tok, text)
    vocab_file = path / "vocab.json"
    if vocab_file.is_file():
        return _lookup_vocab({"model": {"vocab": json.loads(vocab_file.read_text())}}, text)
    return None
