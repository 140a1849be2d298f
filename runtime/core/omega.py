"""RSD acceptance weights omega(r): the probability of keeping a draft step with PRM reward r.

RSD's mixture is P_RSD(y|z) = omega(r(y|z)) P_draft(y|z) + nu(z) P_target(y|z) (Liao et al. 2025).
Under a budget on target calls the reward-maximising omega is the binary step 1[r >= delta];
the paper's ablation also studies soft variants, offered here for experiments:
  step:    1[r >= delta]                       (default; deterministic, ">=" as in the reference)
  linear:  min(1, r / delta)                   (delta = 0 accepts everything)
  sigmoid: 1 / (1 + exp(-k (r - delta)))       (k = omega_sharpness)
Soft weights are sampled with the request's seeded RNG.
"""
from __future__ import annotations

import math

import numpy as np


def weight(kind: str, reward: float, threshold: float, sharpness: float) -> float:
    if kind == "step":
        return 1.0 if reward >= threshold else 0.0
    if kind == "linear":
        return 1.0 if threshold <= 0.0 else min(1.0, max(0.0, reward / threshold))
    if kind == "sigmoid":
        x = sharpness * (reward - threshold)
        return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0
    raise ValueError(f"unknown omega {kind!r}")


def accept(kind: str, reward: float, threshold: float, sharpness: float, rng: np.random.Generator) -> bool:
    """Draw the accept decision; a weight of exactly 0 or 1 consumes no randomness."""
    w = weight(kind, reward, threshold, sharpness)
    if w >= 1.0:
        return True
    if w <= 0.0:
        return False
    return bool(rng.random() < w)
