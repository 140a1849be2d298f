"""Tiny random-weight Hugging Face models (draft, target, value-head PRM) for fast plumbing tests.

They share a character-level tokenizer in which "\\n\\n" is one token; the "\\n\\n" and EOS rows of
the output heads are scaled up so steps end often. Outputs are gibberish but deterministic.
"""
from __future__ import annotations

from pathlib import Path

CHARS = list("0123456789+-*/=()., abcdefghijklmnopqrstuvwxyzQA:\\{}\n")


def make_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    vocab["\n\n"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("\n", "\n")], unk_token=None))
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(str(out))


def make_lm(out: Path, hidden: int, layers: int, seed: int, step_bias: float = 3.0, heads: int = 4,
            max_positions: int = 512) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    make_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(str(out))
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                         max_position_embeddings=max_positions, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight[tok.convert_tokens_to_ids("\n\n")] *= step_bias
        model.lm_head.weight[tok.eos_token_id] *= step_bias / 2
    # like real models (Qwen2.5: 151,665 tokens, 151,936 rows), embedding and output rows are padded past
    # the tokenizer, to a multiple of 16; the tokenizer's rows keep their weights
    model.resize_token_embeddings(-(-len(tok) // 16) * 16)
    model.save_pretrained(str(out))
    GenerationConfig(eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id).save_pretrained(str(out))


def make_value_head_prm(out: Path, hidden: int, layers: int, seed: int, **shape: int) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    make_lm(out, hidden, layers, seed, **shape)
    weights = load_file(str(out / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    weights["v_head.summary.weight"] = torch.randn(1, hidden, generator=gen) * 0.5
    weights["v_head.summary.bias"] = torch.zeros(1)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})


def make_tiny_models(root: Path, seed: int = 0) -> dict[str, Path]:
    """Create draft/target/prm folders under `root` (idempotent) and return their paths."""
    paths = {role: root / role for role in ("draft", "target", "prm")}
    if not all((p / "config.json").is_file() for p in paths.values()):
        make_lm(paths["draft"], hidden=32, layers=2, seed=seed + 1)
        make_lm(paths["target"], hidden=64, layers=2, seed=seed + 2)
        make_value_head_prm(paths["prm"], hidden=32, layers=2, seed=seed + 3)
    return paths


def tiny_config_yaml(root: Path, device: str = "cpu") -> Path:
    """A pipeline config for the tiny models (written next to them)."""
    paths = make_tiny_models(root)
    file = root / f"tiny-{device.replace(':', '')}.yaml"
    file.write_text(
        "models:\n"
        f"  draft: {{path: {paths['draft']}, device: {device}}}\n"
        f"  target: {{path: {paths['target']}, device: {device}}}\n"
        f"  prm: {{path: {paths['prm']}, format: value_head, device: {device}}}\n"
        "prompt_template: \"Q: {question}\\n\"\n"
        "defaults: {max_tokens: 48, max_step_tokens: 12}\n"
        "engine: {torch_threads: 1}\n"
    )
    return file
