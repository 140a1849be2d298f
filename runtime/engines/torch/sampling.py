"""Token sampling on torch tensors, matching `runtime.core.sampling` (the reference rules)."""
from __future__ import annotations

import torch


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> tuple[int, float]:
    """Sample one token from a [vocab] float32 row; returns (token, log-prob under the sampled
    distribution). Greedy at T == 0, reporting the untempered log-prob."""
    if temperature == 0.0:
        token = int(torch.argmax(logits))
        return token, float(torch.log_softmax(logits, -1)[token])
    probs = torch.softmax(logits / temperature, -1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True, stable=True)
        before = torch.cumsum(sorted_probs, -1) - sorted_probs
        sorted_probs = torch.where(before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum()
    token = int(torch.multinomial(probs, 1, generator=generator))
    return token, float(torch.log(probs[token]))


def logprob_rows(logits: torch.Tensor, tokens: list[int], temperature: float) -> float:
    """Sum over rows of log softmax(row / T)[token]; T == 0 scores untempered."""
    t = temperature if temperature > 0.0 else 1.0
    logp = torch.log_softmax(logits.float() / t, -1)
    return float(logp[torch.arange(len(tokens)), torch.tensor(tokens)].sum())
