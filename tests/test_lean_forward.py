"""The lean decoder forward (runtime.engines.torch.lean) against Hugging Face's own forward on the
same weights: the embedded Llama models, a Qwen2 with q/k/v biases and grouped-query attention
(the GPU benchmark's architecture), bf16; prefill and decode rows of different lengths in one
batch. A deliberately wrong rotary embedding is rejected by the same comparison, and models the
lean forward does not cover keep HF's."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from runtime.engines.torch.lean import LeanDecoder, decoder_forward, unsupported
from runtime.engines.torch.loading import load_causal_lm
from runtime.engines.torch.runner import BatchRunner, Row

pytestmark = pytest.mark.slow  # real models

EMBEDDED = Path(__file__).resolve().parents[1] / "models" / "embedded"
SEQS = [list(range(4, 4 + n)) for n in (17, 5, 30, 9)]
SPLIT = [10, 0, 29, 8]  # cached before the batched call: a prefill on a cache, a fresh prefill, two decodes


def hidden_states(model: torch.nn.Module, lean: bool, seqs: list[list[int]] = SEQS) -> list[torch.Tensor]:
    """Every new position's final hidden state, rows of different widths in one call."""
    runner = BatchRunner(model, torch.device("cpu"), max_len=256, lean=lean)
    caches = [runner.new_cache() for _ in seqs]
    runner.run([Row(c, s[:n], 0) for c, s, n in zip(caches, seqs, SPLIT) if n])
    out = runner.run([Row(c, s[n:], len(s) - n) for c, s, n in zip(caches, seqs, SPLIT)])
    return [h.float() for h in out]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("role", ["draft", "target"])
def test_lean_equals_hf_on_the_embedded_models(role: str) -> None:
    decoder, _, _ = load_causal_lm(EMBEDDED / role, "float32", "cpu")
    assert unsupported(decoder) is None
    assert max_diff(hidden_states(decoder, True), hidden_states(decoder, False)) < 1e-4


def test_lean_equals_hf_on_the_embedded_prm() -> None:
    from runtime.engines.torch.loading import load_backbone

    backbone, _ = load_backbone(EMBEDDED / "prm", "float32", "cpu")
    assert max_diff(hidden_states(backbone, True), hidden_states(backbone, False)) < 1e-4


def qwen2(dtype: torch.dtype) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
                         rope_theta=1e6, attn_implementation="sdpa")
    model = Qwen2ForCausalLM(config).to(dtype).eval()
    with torch.no_grad():  # HF initialises biases to zero: make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return model.model


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 0.1)])
def test_lean_equals_hf_on_qwen2_with_biases_and_gqa(dtype: torch.dtype, tol: float) -> None:
    model = qwen2(dtype)
    assert model.layers[0].self_attn.q_proj.bias is not None
    lean, hf = hidden_states(model, True), hidden_states(model, False)
    scale = max(h.abs().max().item() for h in hf)
    assert max_diff(lean, hf) < tol * max(scale, 1.0)


def test_a_wrong_rotary_embedding_is_caught() -> None:
    """The comparison above can fail: rotary frequencies off by 1% are far outside its tolerance."""
    decoder, _, _ = load_causal_lm(EMBEDDED / "target", "float32", "cpu")
    hf = hidden_states(decoder, False)
    runner = BatchRunner(decoder, torch.device("cpu"), max_len=256, lean=True)
    lean = runner._decoder
    assert isinstance(lean, LeanDecoder)
    lean.inv_freq = lean.inv_freq * 1.01
    caches = [runner.new_cache() for _ in SEQS]
    runner.run([Row(c, s[:n], 0) for c, s, n in zip(caches, SEQS, SPLIT) if n])
    wrong = [h.float() for h in runner.run([Row(c, s[n:], len(s) - n) for c, s, n in zip(caches, SEQS, SPLIT)])]
    assert max_diff(wrong, hf) > 1e-2


def test_models_the_lean_forward_does_not_cover_keep_hf() -> None:
    from transformers import LlamaConfig, LlamaModel

    dynamic = LlamaModel(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4, rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    assert "dynamic" in (unsupported(dynamic) or "")
    gelu = LlamaModel(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=4, hidden_act="gelu"))
    assert "gelu" in (unsupported(gelu) or "")
    assert not isinstance(decoder_forward(gelu), LeanDecoder)
    with pytest.raises(ValueError, match="gelu"):
        LeanDecoder(gelu)
    # and what it falls back to computes HF's forward
    assert max_diff(hidden_states(gelu, True), hidden_states(gelu, False)) == 0.0
