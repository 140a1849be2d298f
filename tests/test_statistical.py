"""Distribution tests: speculative decoding and CoS sample exactly their target distribution, and
RSD samples exactly its omega-mixture. Chi-square goodness of fit over whole (2-token) steps.

Each test also checks that the same samples are rejected against a wrong distribution (the
draft's), so the test has the power to fail.
"""
from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from runtime.core import omega
from runtime.core.methods import Engines
from runtime.core.params import RequestParams
from runtime.core.sampling import combine, process
from runtime.core.segment import StepSegmenter
from runtime.pipeline import Pipeline
from runtime.testing.fakes import FakeLM, FakePRM, FakeTokenizer

Outcome = tuple
Dist = Callable[[int], np.ndarray]  # last token -> next-token distribution
TOK = FakeTokenizer()
EOS, DELIM, LAST = 0, 1, 3  # the prompt "a" + "b" ends with token "b" (3)
SAMPLES = 6000


def step_distribution(dist: Dist) -> dict[Outcome, float]:
    """Exact distribution of one step capped at two tokens, for a Markov next-token rule."""
    out: dict[Outcome, float] = {}
    for t1, p1 in enumerate(dist(LAST)):
        if t1 == EOS:
            out[("EOS",)] = out.get(("EOS",), 0.0) + p1
        elif t1 == DELIM:
            out[(t1,)] = p1
        else:
            for t2, p2 in enumerate(dist(t1)):
                key = (t1, "EOS") if t2 == EOS else (t1, t2)
                out[key] = out.get(key, 0.0) + p1 * p2
    return out


def sample_steps(pipeline: Pipeline, params: dict, n: int = SAMPLES) -> Counter[Outcome]:
    async def run() -> Counter[Outcome]:
        counts: Counter[Outcome] = Counter()
        for seed in range(n):
            p = RequestParams.from_mapping({**params, "seed": seed, "max_tokens": 2, "max_steps": 1})
            result = await pipeline.generate("b", p)
            step = result.steps[0]
            key = step.token_ids + (("EOS",) if result.finish_reason == "eos" else ())
            counts[key] += 1
        return counts

    return asyncio.run(run())


def chi_square(counts: Counter[Outcome], expected: dict[Outcome, float]) -> tuple[float, float]:
    """(statistic, critical value at alpha = 1e-4); bins with < 5 expected samples are pooled."""
    n = sum(counts.values())
    assert set(counts) <= {k for k, v in expected.items() if v > 0}, set(counts) - set(expected)
    stat, pooled_obs, pooled_exp, bins = 0.0, 0, 0.0, 0
    for key, prob in expected.items():
        if n * prob < 5:
            pooled_obs += counts.get(key, 0)
            pooled_exp += n * prob
            continue
        stat += (counts.get(key, 0) - n * prob) ** 2 / (n * prob)
        bins += 1
    if pooled_exp > 0:
        stat += (pooled_obs - pooled_exp) ** 2 / pooled_exp
        bins += 1
    df = bins - 1
    z = 3.719  # one-sided normal quantile for 1e-4 (Wilson-Hilferty approximation below)
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat, critical


def make_pipeline(prm: FakePRM | None = None) -> tuple[Pipeline, FakeLM, FakeLM]:
    draft, target = FakeLM(TOK.vocab_size, seed=1, sharpness=1.5), FakeLM(TOK.vocab_size, seed=2, sharpness=1.5)
    seg = StepSegmenter(TOK.piece, TOK.eos_ids)
    return Pipeline(Engines(draft, target, prm), TOK, seg, "a{question}", RequestParams(), 1000), draft, target


def assert_fits(counts: Counter[Outcome], right: dict[Outcome, float], wrong: dict[Outcome, float]) -> None:
    stat, critical = chi_square(counts, right)
    assert stat < critical, f"chi2 {stat:.1f} >= {critical:.1f}: samples do not follow the target distribution"
    wrong_stat, wrong_critical = chi_square(Counter({k: v for k, v in counts.items() if wrong.get(k, 0) > 0}), wrong)
    assert wrong_stat > wrong_critical, "the test cannot tell the target from the draft distribution"


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_speculative_decoding_samples_the_target(temperature: float, top_p: float) -> None:
    pipeline, draft, target = make_pipeline()
    counts = sample_steps(pipeline, {"method": "sd", "gamma": 2, "temperature": temperature, "top_p": top_p})
    right = step_distribution(lambda t: process(target.table[t], temperature, top_p))
    wrong = step_distribution(lambda t: process(draft.table[t], temperature, top_p))
    assert_fits(counts, right, wrong)


@pytest.mark.parametrize(("combine_kind", "gamma"), [("we", 2), ("we", 1), ("cd", 2)])
def test_cos_samples_the_combined_distribution(combine_kind: str, gamma: int) -> None:
    pipeline, draft, target = make_pipeline()
    params = {"method": "cos", "cos_combine": combine_kind, "gamma": gamma, "cos_lambda": 0.3, "cos_mu": 0.5,
              "temperature": 1.0}
    counts = sample_steps(pipeline, params)
    right = step_distribution(lambda t: combine([draft.table[t], target.table[t]], combine_kind, (0.3, 0.7),
                                                0.5, 1.0, 1.0))
    wrong = step_distribution(lambda t: process(target.table[t], 1.0, 1.0))
    assert_fits(counts, right, wrong)


def reward_of(text: str) -> float:
    return 0.9 if "a" in text or "c" in text else 0.4


@pytest.mark.parametrize("omega_kind", ["step", "linear"])
def test_rsd_samples_its_omega_mixture(omega_kind: str) -> None:
    """P_RSD(y) = w(r(y)) P_draft(y) + nu P_target(y), nu = 1 - sum_y' w(r(y')) P_draft(y')."""
    pipeline, draft, target = make_pipeline(FakePRM(fn=lambda q, steps, cand: reward_of(cand)))
    counts = sample_steps(pipeline, {"method": "rsd", "omega": omega_kind, "threshold": 0.7, "temperature": 1.0})
    p_draft = step_distribution(lambda t: process(draft.table[t], 1.0, 1.0))
    p_target = step_distribution(lambda t: process(target.table[t], 1.0, 1.0))

    def w(y: Outcome) -> float:
        text = TOK.decode([t for t in y if t != "EOS"]).split("\n\n")[0]
        return omega.weight(omega_kind, reward_of(text), 0.7, 20.0)

    nu = 1.0 - sum(w(y) * p for y, p in p_draft.items())
    assert 0.05 < nu < 0.95  # both branches matter in this setting
    keys = set(p_draft) | set(p_target)
    right = {y: w(y) * p_draft.get(y, 0.0) + nu * p_target.get(y, 0.0) for y in keys}
    assert_fits(counts, right, p_draft)
