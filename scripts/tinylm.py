"""Shared pieces of the embedded tiny models: tokenizer, Llama configs, sequence encodings, folders.

The encodings here are the contract the serving engine must follow (see models/README.md):
generator input = [bos] + encode(prompt + accepted steps); PRM input = Skywork value-head format.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3: pad, bos, eos, unk
SEP = "\n\n"
# Character vocabulary: newline, the step separator as ONE token, then printable ASCII.
VOCAB = [*SPECIAL_TOKENS, "\n", SEP, *(chr(c) for c in range(32, 127))]
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SEP_ID = VOCAB.index(SEP)


def build_tokenizer() -> PreTrainedTokenizerBase:
    """A character-level fast tokenizer whose only merge is "\\n" + "\\n" -> the step separator.

    A BPE model with a single merge keeps "\\n\\n" one token wherever it occurs, and the Fuse
    decoder concatenates token texts, so decoding consecutive chunks reproduces the text exactly.
    """
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(VOCAB)}
    model = models.BPE(vocab=vocab, merges=[("\n", "\n")], unk_token="<unk>")
    backend = Tokenizer(model)
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.decoder = decoders.Fuse()
    # Like Llama's tokenizers: add_special_tokens=True puts BOS first (how the engine encodes a
    # prompt); the training code encodes with add_special_tokens=False and adds BOS itself.
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", BOS_ID)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", clean_up_tokenization_spaces=False, model_max_length=512,
    )


def llama_config(hidden: int, layers: int, heads: int, ffn: int) -> Any:
    """A tiny LlamaConfig over VOCAB with the project's special-token ids."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=ffn,
        max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
    )


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (the tokenizer never adds bos by itself)."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def generator_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, steps: list[str], final: bool) -> list[int]:
    """[bos] + prompt + steps joined by the separator (+ eos when ``final``): the LM training text."""
    ids = [BOS_ID, *encode(tokenizer, prompt)]
    for index, step in enumerate(steps):
        ids += encode(tokenizer, step)
        if index < len(steps) - 1:
            ids.append(SEP_ID)
    return ids + [EOS_ID] if final else ids


def prm_ids(tokenizer: PreTrainedTokenizerBase, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
    """Skywork PRM input: [bos] + question + "\\n", then each step + sep; returns (ids, sep positions)."""
    ids = [BOS_ID, *encode(tokenizer, question + "\n")]
    positions = []
    for step in steps:
        ids += encode(tokenizer, step) + [SEP_ID]
        positions.append(len(ids) - 1)
    return ids, positions


def pad_batch(rows: list[list[int]], pad: int = PAD_ID) -> torch.Tensor:
    """Right-padded LongTensor [batch, max_len]."""
    import torch

    width = max(len(row) for row in rows)
    return torch.tensor([row + [pad] * (width - len(row)) for row in rows], dtype=torch.long)


def save_generator(model: Any, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """save_pretrained (safetensors) + tokenizer + generation config that stops at eos."""
    from transformers import GenerationConfig

    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False)
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Save, then name the portable class so transformers 4.x loads it as well as 5.x."""
    tokenizer.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def param_count(model: Any) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
