"""Reference sampling rules on numpy arrays (no torch): the maths every engine must agree with.

Distributions are float64 numpy vectors over the vocabulary. `temperature == 0` (or top_k == 1)
means greedy and is represented by a one-hot distribution, so the same rejection rule covers
greedy and sampling. The order, for every generator call of every method:

    z = adjust(logits)        bias, repetition / presence / frequency penalties, bad words, end ids
    p = process(z)            greedy one-hot, else softmax(z / T) -> top-k -> top-p (renormalised)

Log-probs reported to clients (`sampled_logprob`): log p(token) when sampling; when greedy, the
log-softmax of z (untempered, untruncated), which stays finite and informative.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.core.types import LogitRules

Array = npt.NDArray[np.float64]


def adjust(logits: npt.NDArray[np.floating[Any]], rules: LogitRules, context: Sequence[int],
           ban_ends: bool = False) -> Array:
    """The logits after a request's rules (runtime.core.types.LogitRules), in float64.

    `context`: the ids the model continues (prompt, accepted steps, this step so far);
    `ban_ends`: the call is still short of its min_new_tokens (the rules' end ids get -inf)."""
    z = np.array(logits, dtype=np.float64)
    for token, weight in rules.bias:
        z[token] += weight
    if rules.penalizes and len(context):
        ids, counts = np.unique(np.asarray(context, dtype=np.int64), return_counts=True)
        seen = z[ids]
        if rules.repetition_penalty != 1.0:
            seen = np.where(seen > 0.0, seen / rules.repetition_penalty, seen * rules.repetition_penalty)
        z[ids] = seen - rules.presence_penalty - rules.frequency_penalty * counts
    for word in rules.bad_words:
        if ends_with(context, word[:-1]):
            z[word[-1]] = -np.inf
    if ban_ends:
        z[list(rules.end_ids)] = -np.inf
    return z


def ends_with(context: Sequence[int], head: Sequence[int]) -> bool:
    """The context's last ids are `head` (always true for an empty head)."""
    n = len(head)
    return n == 0 or (len(context) >= n and tuple(context[len(context) - n:]) == tuple(head))


def softmax(logits: npt.NDArray[np.floating[Any]], temperature: float = 1.0) -> Array:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: Array = e / e.sum(axis=-1, keepdims=True)
    return out


def top_p_filter(probs: Array, top_p: float) -> Array:
    """Keep the smallest set of most likely tokens whose mass reaches `top_p`, renormalised."""
    if top_p >= 1.0:
        return probs
    order = np.argsort(-probs, kind="stable")
    sorted_probs = probs[order]
    cum = np.cumsum(sorted_probs)
    keep = cum - sorted_probs < top_p  # a token is kept if the mass before it is below top_p
    out = np.zeros_like(probs)
    out[order[keep]] = sorted_probs[keep]
    normed: Array = out / out.sum()
    return normed


def top_k_filter(probs: Array, top_k: int) -> Array:
    """Keep the `top_k` most likely tokens (ties: lower ids first, as top-p), renormalised; 0 = off."""
    if top_k <= 0 or top_k >= probs.shape[-1]:
        return probs
    order = np.argsort(-probs, kind="stable")
    out = np.zeros_like(probs)
    out[order[:top_k]] = probs[order[:top_k]]
    normed: Array = out / out.sum()
    return normed


def is_greedy(temperature: float, top_k: int) -> bool:
    return temperature == 0.0 or top_k == 1


def one_hot(index: int, size: int) -> Array:
    out = np.zeros(size, dtype=np.float64)
    out[index] = 1.0
    return out


def process(logits: npt.NDArray[np.floating[Any]], temperature: float, top_p: float, top_k: int = 0) -> Array:
    """The distribution a model samples from: greedy one-hot at T=0 (or top_k 1), else tempered,
    top-k then top-p truncated. `logits` are already adjusted (see `adjust`)."""
    if is_greedy(temperature, top_k):
        return one_hot(int(np.argmax(logits)), logits.shape[-1])
    return top_p_filter(top_k_filter(softmax(logits, temperature), top_k), top_p)


def sampled_logprob(logits: npt.NDArray[np.floating[Any]], probs: Array, token: int, greedy: bool) -> float:
    """The log-prob reported for `token` drawn from `probs` = process(logits): log probs[token]
    when sampling, the untempered log-softmax of the (adjusted) logits when greedy."""
    if greedy:
        return logprob_of(logits, token, 0.0)
    return float(np.log(probs[token]))


def sample(probs: Array, rng: np.random.Generator) -> int:
    """Inverse-CDF sampling; robust to rounding in the last bucket."""
    cdf = np.cumsum(probs)
    index = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(index, probs.shape[-1] - 1)


def residual(target: Array, draft: Array) -> Array:
    """norm(max(0, p - q)): where to resample after a rejection. Falls back to p if p == q."""
    diff = np.maximum(target - draft, 0.0)
    total = diff.sum()
    out: Array = target if total <= 0.0 else diff / total
    return out


def speculative_verify(
    draft_tokens: tuple[int, ...],
    draft_probs: Array,
    target_probs: Array,
    rng: np.random.Generator,
) -> tuple[tuple[int, ...], int]:
    """Speculative sampling (Leviathan et al. 2023; Chen et al. 2023). Lossless.

    draft_probs: [gamma, V], the distributions q_i the draft tokens were sampled from.
    target_probs: [gamma + 1, V], the target distributions p_i at the same positions plus one.
    Accept x_i with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection emit a token
    from norm(max(0, p_i - q_i)) and stop; if all are accepted emit a bonus token from p_gamma.
    The emitted tokens are then distributed exactly as the target's own samples.
    Returns (emitted tokens, number of accepted draft tokens).
    """
    out: list[int] = []
    for i, token in enumerate(draft_tokens):
        p, q = target_probs[i][token], draft_probs[i][token]
        if q > 0.0 and rng.random() < min(1.0, p / q):
            out.append(token)
            continue
        out.append(sample(residual(target_probs[i], draft_probs[i]), rng))
        return tuple(out), i
    out.append(sample(target_probs[len(draft_tokens)], rng))
    return tuple(out), len(draft_tokens)


def combine(
    logits: list[npt.NDArray[np.floating[Any]]],
    kind: str,
    weights: tuple[float, ...],
    mu: float,
    temperature: float,
    top_p: float,
    top_k: int = 0,
    rule: Callable[[npt.NDArray[np.floating[Any]]], Array] | None = None,
    soft: bool = False,
) -> Array:
    """CoS combined distribution r over models [draft, ..., target] (Fu et al. 2025, Eq. 4-5).

    we: r = sum_i w_i * process(rule(l_i))       (weighted ensemble of processed distributions)
    cd: r = process(rule(l_target - mu * l_draft)) (contrastive decoding on raw logits, 2 models)
    `rule` is the request's `adjust` (applied to the contrast for cd: -inf - mu * -inf is NaN).
    At temperature 0 (or top_k 1) the combination uses untempered (T=1) distributions and then
    takes the argmax of r, so greedy CoS is greedy on the combined distribution (not on model 0
    alone); `soft` returns that untempered r instead (its log is the reported log-prob).
    """
    rule = rule or (lambda z: np.asarray(z, dtype=np.float64))
    greedy = is_greedy(temperature, top_k)
    t_eff, k_eff = (1.0, 0) if greedy else (temperature, top_k)
    if kind == "we":
        r = sum(w * process(rule(lg), t_eff, top_p, k_eff) for w, lg in zip(weights, logits))
    elif kind == "cd":
        if len(logits) != 2:
            raise ValueError("contrastive decoding combines exactly two models")
        contrast = np.asarray(logits[1], np.float64) - mu * np.asarray(logits[0], np.float64)
        r = process(rule(contrast), t_eff, top_p, k_eff)
    else:
        raise ValueError(f"unknown combination {kind!r}")
    r = np.asarray(r, dtype=np.float64)
    if greedy and not soft:
        return one_hot(int(np.argmax(r)), r.shape[-1])
    normed: Array = r / r.sum()
    return normed


def log_softmax(logits: npt.NDArray[np.floating[Any]], temperature: float = 1.0) -> npt.NDArray[np.float64]:
    """log softmax(logits / T) over the last axis, in float64; T == 0 is scored untempered (T = 1),
    as every engine scores greedy tokens."""
    t = temperature if temperature > 0.0 else 1.0
    z = np.asarray(logits, dtype=np.float64) / t
    z = z - z.max(axis=-1, keepdims=True)
    out: npt.NDArray[np.float64] = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return out


def logprob_of(logits: npt.NDArray[np.floating[Any]], token: int, temperature: float) -> float:
    """log softmax(logits / T)[token]; T == 0 is scored untempered (T = 1): `sequence_logprob` of
    one row, indexed directly (it runs once per verified token)."""
    return float(log_softmax(logits, temperature)[token])


def sequence_logprob(rows: npt.NDArray[np.floating[Any]], tokens: Sequence[int], temperature: float) -> float:
    """The log-prob scoring rule, the one numpy place it is written: the sum over rows of
    log softmax(row / T)[token] (row i is the distribution of tokens[i]); T == 0 scores untempered.
    The torch engine's twin (runtime.engines.torch.sampling.logprob_rows) keeps rows on the device
    (a GPU's rows are V = 150k wide) and is checked against this one (tests/test_sampling_agreement.py)."""
    logp = log_softmax(rows, temperature)
    return float(logp[np.arange(len(tokens)), list(tokens)].sum())
