"""The decoder forward as plain torch calls on a Hugging Face model's own weights.

On the embedded models a forward is mostly Python: HF's per-layer modules (hooks, kwargs,
rotary and mask helpers, output records) cost more than the matmuls of a few rows. `LeanDecoder`
runs the same computation for Llama-family decoders (llama, mistral, qwen2: pre-norm RMSNorm,
rotary embeddings, SiLU-gated MLP, grouped-query attention through SDPA) with the weights
gathered once, and writes K/V through the same `update(keys, values, layer)` cache interface
the runner hands HF. Anything else (other architectures, sliding windows, per-position rope
scaling, QK norms) keeps HF's forward: `decoder_forward` says which one a model gets and why.
tests/test_lean_forward.py checks it against HF's forward.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

LEAN_TYPES = ("llama", "mistral", "qwen2")
_SDPA_GQA = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)  # SDPA's enable_gqa
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # inv_freq fixed at load time


class KVWriter(Protocol):
    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]: ...


# (input_ids [B, W], position_ids [B, W], attention mask [B, 1, W, K] or None, cache) -> hidden [B, W, H]
DecoderForward = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", KVWriter], torch.Tensor]


def unsupported(model: torch.nn.Module) -> str | None:
    """Why `model` needs HF's own forward, or None when LeanDecoder computes the same."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in LEAN_TYPES:
        return f"model_type {kind!r} (lean: {', '.join(LEAN_TYPES)})"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r}"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", kind == "mistral"):
        return "a sliding attention window"
    if getattr(config, "mlp_bias", False):
        return "MLP biases"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in STATIC_ROPE:
        return f"rope_type {rope.get('rope_type', rope.get('type'))!r}"
    rotary = getattr(model, "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq") or not hasattr(model, "layers"):
        return "no rotary_emb.inv_freq / layers"
    attn = model.layers[0].self_attn
    if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
        return "QK norms"
    return None


@dataclass(frozen=True, slots=True)
class _Layer:
    norm1: torch.Tensor
    qkv: torch.Tensor  # [hidden, q + k + v + rot(q) + rot(k)]: one matmul (see _gather)
    qkv_bias: torch.Tensor | None
    o: torch.Tensor  # projections transposed once: activations [rows, in] @ weight [in, out]
    norm2: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


class LeanDecoder:
    """`forward(ids, positions, mask, cache)` -> last hidden states, as the HF model computes them.

    Activations stay [rows x width, hidden]; a layer is 4 matmuls, 2 fused RMSNorms, the rotary
    update and one SDPA call. The rotary embedding's rotate_half(x) is a signed permutation of
    x's coordinates, so its rows are folded into the q/k projection: one matmul yields q, k, v,
    rotate_half(q) and rotate_half(k) (the same dot products, rows permuted and negated)."""

    def __init__(self, model: torch.nn.Module) -> None:
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"LeanDecoder cannot run this model: {reason}")
        config: Any = model.config
        attn0 = model.layers[0].self_attn
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.hidden = config.hidden_size
        self.eps = float(config.rms_norm_eps)
        self.scaling = float(getattr(attn0, "scaling", self.head_dim ** -0.5))
        self.embed = model.embed_tokens.weight
        self.final_norm = model.norm.weight
        self.inv_freq = model.rotary_emb.inv_freq.float()
        self.rope_scale = float(getattr(model.rotary_emb, "attention_scaling", 1.0))
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.split = (q + kv, kv, q + kv)  # (q|k, v, rot(q)|rot(k))
        self.layers = [self._gather(layer) for layer in model.layers]

    def _rotated(self, weight: torch.Tensor, heads: int) -> torch.Tensor:
        """Rows of `weight` [heads * head_dim, in] so that x @ result.T = rotate_half(x @ weight.T)."""
        half = self.head_dim // 2
        w = weight.view(heads, self.head_dim, -1)
        return torch.cat((-w[:, half:], w[:, :half]), 1).reshape(heads * self.head_dim, -1)

    def _gather(self, layer: torch.nn.Module) -> _Layer:
        a, m = layer.self_attn, layer.mlp
        projections = (a.q_proj, a.k_proj, a.v_proj)
        if any(p.bias is not None for p in projections) and not all(p.bias is not None for p in projections):
            raise ValueError("LeanDecoder: some but not all of q/k/v have biases")
        if a.o_proj.bias is not None:
            raise ValueError("LeanDecoder: o_proj has a bias")
        wq, wk, wv = (p.weight.detach() for p in projections)
        qkv = torch.cat([wq, wk, wv, self._rotated(wq, self.heads), self._rotated(wk, self.kv_heads)])
        bias = None
        if a.q_proj.bias is not None:
            bq, bk, bv = (p.bias.detach()[:, None] for p in projections)
            bias = torch.cat([bq, bk, bv, self._rotated(bq, self.heads), self._rotated(bk, self.kv_heads)])[:, 0]
        gate_up = torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach()
        return _Layer(layer.input_layernorm.weight.detach(), qkv.t().contiguous(), bias,
                      a.o_proj.weight.detach().t().contiguous(), layer.post_attention_layernorm.weight.detach(),
                      gate_up.t().contiguous(), m.down_proj.weight.detach().t().contiguous())

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """HF's RMSNorm: float32 statistics, the weight applied in the input's dtype."""
        if x.dtype == torch.float32:  # the same formula in fewer CPU ops: mean(x^2) = |x|^2 / hidden
            scale = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(self.hidden).add_(self.eps)
            return x * scale.rsqrt_() * weight
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
                 cache: KVWriter) -> torch.Tensor:
        batch, width = ids.shape
        rows = batch * width
        x = F.embedding(ids.reshape(rows), self.embed)  # [rows, hidden]
        if batch == 1 and width == 1:
            mask = None  # one decode row sees every cached key
        elif mask is not None and mask.dtype == torch.bool:  # additive: SDPA's CPU kernel is faster on it
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        freqs = positions.reshape(rows, 1).float() * self.inv_freq  # [rows, D/2]
        angles = torch.cat((freqs, freqs), -1)[:, None]  # [rows, 1, D]
        cos = (angles.cos() * self.rope_scale).to(x.dtype)
        sin = (angles.sin() * self.rope_scale).to(x.dtype)
        qk_heads, d = self.heads + self.kv_heads, self.head_dim
        gqa = self.heads != self.kv_heads
        for index, layer in enumerate(self.layers):
            h = self._norm(x, layer.norm1)
            proj = torch.mm(h, layer.qkv) if layer.qkv_bias is None else torch.addmm(layer.qkv_bias, h, layer.qkv)
            qk, v, qk_rot = proj.split(self.split, -1)
            qk = torch.addcmul(qk.view(rows, qk_heads, d) * cos, qk_rot.view(rows, qk_heads, d), sin)
            qk = qk.view(batch, width, qk_heads, d).transpose(1, 2)  # [B, heads, W, D]
            keys, values = cache.update(qk[:, self.heads:], v.view(batch, width, self.kv_heads, d).transpose(1, 2), index)
            if gqa and not _SDPA_GQA:  # HF's repeat_kv
                keys = keys.repeat_interleave(self.heads // self.kv_heads, 1)
                values = values.repeat_interleave(self.heads // self.kv_heads, 1)
            o = F.scaled_dot_product_attention(qk[:, :self.heads], keys, values, attn_mask=mask, scale=self.scaling,
                                               **({"enable_gqa": True} if gqa and _SDPA_GQA else {}))
            x = torch.addmm(x, o.transpose(1, 2).reshape(rows, -1), layer.o)
            gate, up = torch.mm(self._norm(x, layer.norm2), layer.gate_up).chunk(2, -1)
            x = torch.addmm(x, F.silu(gate) * up, layer.down)
        return self._norm(x, self.final_norm).view(batch, width, self.hidden)


def hf_forward(model: torch.nn.Module) -> DecoderForward:
    """HF's own forward behind the same signature (the cache argument's name is per version)."""
    # transformers >= 5.x names the argument `cache` (`past_key_values` is deprecated)
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def forward(ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, cache: KVWriter) -> torch.Tensor:
        out = model(input_ids=ids, position_ids=positions, attention_mask=mask, use_cache=True, **{cache_arg: cache})
        hidden: torch.Tensor = out.last_hidden_state
        return hidden

    return forward


def decoder_forward(model: torch.nn.Module, lean: bool = True, name: str = "model") -> DecoderForward:
    """LeanDecoder where it computes what HF does, else HF's forward (logged)."""
    reason = unsupported(model) if lean else "lean forward off"
    if reason is None:
        return LeanDecoder(model)
    if lean:
        log.info("%s: HF forward (%s)", name, reason)
    return hf_forward(model)
