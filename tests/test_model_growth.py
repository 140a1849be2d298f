"""The training script's function-preserving growth (scripts/lm_train.py), on tiny random Llamas.

The embedded target is the small LM grown 2x wide and 8x deep, so the growth must leave what the
model computes unchanged; a widening that forgets RMSNorm's correction must be caught.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from lm_train import grow_interleaved, grow_wider  # noqa: E402
from tinylm import llama_config  # noqa: E402


def _small(seed: int = 0):  # type: ignore[no-untyped-def]
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(16, 2, 2, 32)).eval()
    with torch.no_grad():  # trained-looking weights: norms away from 1, embeddings not tiny
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
            elif "embed_tokens" in name:
                param.normal_(0, 0.01)  # small, so RMSNorm's eps matters
    return model


def _logits(model, ids):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_wider_and_deeper_compute_the_same_function() -> None:
    small, ids = _small(), torch.randint(4, 30, (3, 20))
    wide = grow_wider(small, 32, 4, 64, seed=1)
    assert (wide.config.hidden_size, wide.config.num_attention_heads, wide.config.intermediate_size) == (32, 4, 64)
    deep = grow_interleaved(grow_interleaved(wide))
    assert deep.config.num_hidden_layers == 8
    base = _logits(small, ids)
    assert torch.allclose(_logits(wide, ids), base, atol=1e-4)
    assert torch.allclose(_logits(deep, ids), base, atol=1e-4)
    # the new parts are real parameters, not zeros everywhere: reading weights keep random values
    assert wide.model.layers[0].self_attn.q_proj.weight[16:].abs().sum() > 0


def test_a_widening_without_the_norm_correction_is_caught() -> None:
    small, ids = _small(), torch.randint(4, 30, (3, 20))
    wrong = grow_wider(small, 32, 4, 64, seed=1)
    wrong.config.rms_norm_eps = small.config.rms_norm_eps  # the deliberate mistake: eps not scaled
    for layer in wrong.model.layers:
        layer.input_layernorm.variance_epsilon = small.config.rms_norm_eps
        layer.post_attention_layernorm.variance_epsilon = small.config.rms_norm_eps
    wrong.model.norm.variance_epsilon = small.config.rms_norm_eps
    assert not torch.allclose(_logits(wrong, ids), _logits(small, ids), atol=1e-4)


def test_widening_keeps_the_head_size_and_never_shrinks() -> None:
    small = _small()
    with pytest.raises(AssertionError, match="head size"):
        grow_wider(small, 32, 2, 64, seed=1)  # head size 16 instead of 8: rotary frequencies would change
    with pytest.raises(AssertionError, match="head size"):
        grow_wider(small, 8, 1, 64, seed=1)
