"""Distribution tests: `sd` and `cos` sample exactly their target distribution and `rsd` exactly
its omega-mixture, and the same tests reject deliberately wrong rules (mutants).

Models: Markov chains over five tokens (EOS, "\\n\\n", a, b, c) written below as probability tables,
so every expectation is an exact enumeration in this file with closed forms for tempering, top-p,
the CoS combinations and omega; no function under test computes an expectation. A step is capped
at STEP_TOKENS = 4 tokens (161 possible steps), and `gamma` = 3, so a round drafts up to three
tokens and chains of accepted tokens are tested. Draft and target overlap: per-token acceptance
min(p, q) summed is 0.83-0.85 at T = 1 (0.67-0.73 at T = 0.7, top-p 0.9).

The test: Pearson chi-square over whole steps, bins with < 5 expected samples pooled, p-value by the
Wilson-Hilferty approximation. A rule passes if p > ALPHA = 1e-4 with SAMPLES requests (seeds
0..SAMPLES-1, so each verdict is deterministic; over random seeds a correct rule would fail one
run in 10^4). Each fit also rejects the samples against a wrong distribution (the power check), and
each mutant must reach p < ALPHA with the same seeds and sample count.
"""
from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import runtime.core.methods.cos as cos_module
import runtime.core.sampling as sampling
import runtime.core.verify as verify_module
from runtime.core.methods import Engines
from runtime.core.params import RequestParams
from runtime.core.segment import StepSegmenter
from runtime.pipeline import Pipeline
from support.fakes import FakeLM, FakePRM, FakeTokenizer, ProposingLM

TOK = FakeTokenizer(pieces=("<eos>", "\n\n", "a", "b", "c"))
EOS, DELIM, LAST = 0, 1, 3  # the prompt "a" + "b" ends with token "b"
STEP_TOKENS = 4
GAMMA = 3
SAMPLES = 3000
ALPHA = 1e-4

Outcome = tuple[Any, ...]  # a step's token ids, then "EOS" if it ended with EOS
Row = Sequence[float]
NextDist = Callable[[int], Row]  # last token -> next-token distribution

UNUSED = (0.2,) * 5  # rows for EOS and "\n\n": they never precede a token inside a step
TARGET = (UNUSED, UNUSED, (0.08, 0.12, 0.40, 0.25, 0.15), (0.05, 0.10, 0.20, 0.30, 0.35),
          (0.10, 0.15, 0.30, 0.35, 0.10))
DRAFT = (UNUSED, UNUSED, (0.10, 0.10, 0.25, 0.35, 0.20), (0.05, 0.15, 0.30, 0.20, 0.30),
         (0.08, 0.12, 0.40, 0.25, 0.15))


# ---- the reference side: closed forms and exact enumeration ----

def normalised(row: Row) -> list[float]:
    total = sum(row)
    return [x / total for x in row]


def tempered(row: Row, temperature: float, top_p: float) -> list[float]:
    """softmax(log(row) / T) = row^(1/T) normalised, then the most likely tokens while the mass
    before them is below top_p."""
    w = normalised([x ** (1.0 / temperature) for x in row])
    if top_p >= 1.0:
        return w
    kept, before = [0.0] * len(w), 0.0
    for i in sorted(range(len(w)), key=lambda k: (-w[k], k)):
        assert abs(before - top_p) > 1e-4, "too close to the top-p cut for float32 logits to agree"
        kept[i] = w[i] if before < top_p else 0.0
        before += w[i]
    return normalised(kept)


def chain(table: Sequence[Row], temperature: float = 1.0, top_p: float = 1.0) -> NextDist:
    return lambda last: tempered(table[last], temperature, top_p)


def step_distribution(next_dist: NextDist) -> dict[Outcome, float]:
    """Exact distribution of one step: tokens until "\\n\\n" (kept), EOS (dropped, marked) or the cap."""
    out: dict[Outcome, float] = {}

    def extend(prefix: tuple[int, ...], prob: float) -> None:
        for token, p in enumerate(next_dist(prefix[-1] if prefix else LAST)):
            if p == 0.0:
                continue
            if token == EOS:
                out[prefix + ("EOS",)] = prob * p
            elif token == DELIM or len(prefix) + 1 == STEP_TOKENS:
                out[prefix + (token,)] = prob * p
            else:
                extend(prefix + (token,), prob * p)

    extend((), 1.0)
    return out


@dataclass(frozen=True)
class Fit:
    statistic: float
    df: int
    p_value: float


def chi_square(counts: Counter[Outcome], expected: dict[Outcome, float]) -> Fit:
    """Pearson's statistic with bins of < 5 expected samples pooled; an impossible outcome gives p = 0."""
    n = sum(counts.values())
    if any(expected.get(k, 0.0) <= 0.0 for k in counts):
        return Fit(math.inf, 0, 0.0)
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
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return Fit(stat, df, 0.5 * math.erfc(z / math.sqrt(2)))


# ---- the system under test, driven through the pipeline ----

def table_lm(table: Sequence[Row], proposes: bool = False) -> FakeLM:
    lm = (ProposingLM if proposes else FakeLM)(len(table), seed=0)
    lm.table = np.log(np.array(table, dtype=np.float64))  # next-token logits given the last token
    return lm


def make_pipeline(prm: FakePRM | None = None, proposes: bool = False) -> Pipeline:
    """`proposes`: the draft draws token-level proposals itself (a DraftProposer, as the torch engine)."""
    seg = StepSegmenter(TOK.piece, TOK.eos_ids)
    return Pipeline(Engines(table_lm(DRAFT, proposes), table_lm(TARGET), prm), TOK, seg, "a{question}",
                    RequestParams(), 1000)


def sample_steps(pipeline: Pipeline, params: dict[str, Any], n: int = SAMPLES) -> Counter[Outcome]:
    async def run() -> Counter[Outcome]:
        counts: Counter[Outcome] = Counter()
        for seed in range(n):
            p = RequestParams.from_mapping({**params, "seed": seed, "max_tokens": STEP_TOKENS, "max_steps": 1})
            result = await pipeline.generate("b", p)
            key = result.steps[0].token_ids + (("EOS",) if result.finish_reason == "eos" else ())
            counts[key] += 1
        return counts

    return asyncio.run(run())


def assert_fits(counts: Counter[Outcome], right: dict[Outcome, float], wrong: dict[Outcome, float]) -> None:
    fit = chi_square(counts, right)
    assert fit.p_value > ALPHA, f"chi2 {fit.statistic:.1f} on {fit.df} df, p = {fit.p_value:.2g}: not the right distribution"
    against_wrong = chi_square(Counter({k: v for k, v in counts.items() if wrong.get(k, 0) > 0}), wrong)
    assert against_wrong.p_value < ALPHA, f"p = {against_wrong.p_value:.2g}: the test cannot tell the wrong distribution"


def assert_rejected(counts: Counter[Outcome], right: dict[Outcome, float], calls: Counter[str]) -> None:
    assert calls["mutant"] > 0, "the mutant was never called: the patch point moved"
    fit = chi_square(counts, right)
    assert fit.p_value < ALPHA, f"chi2 {fit.statistic:.1f} on {fit.df} df, p = {fit.p_value:.2g}: mutant not caught"


# ---- sd ----

SLOW = pytest.mark.slow  # the fast tier keeps one setting per method and the swapped-ratio mutant
SD_SETTINGS = [(1.0, 1.0), pytest.param(0.7, 0.9, marks=SLOW)]


@pytest.mark.parametrize("proposes", [False, pytest.param(True, marks=SLOW)])
@pytest.mark.parametrize(("temperature", "top_p"), SD_SETTINGS)
def test_speculative_decoding_samples_the_target(temperature: float, top_p: float, proposes: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rounds: Counter[tuple[int, int]] = Counter()  # (drafted, accepted) per verification round
    real = verify_module.speculative_verify

    def spy(tokens, q, p, rng):  # type: ignore[no-untyped-def]
        emitted, accepted = real(tokens, q, p, rng)
        rounds[(len(tokens), accepted)] += 1
        return emitted, accepted

    monkeypatch.setattr(verify_module, "speculative_verify", spy)
    pipeline = make_pipeline(proposes=proposes)
    counts = sample_steps(pipeline, {"method": "sd", "gamma": GAMMA, "temperature": temperature, "top_p": top_p})
    assert (pipeline.engines.draft.calls["propose"] > 0) == proposes
    assert_fits(counts, step_distribution(chain(TARGET, temperature, top_p)),
                step_distribution(chain(DRAFT, temperature, top_p)))
    total = sum(rounds.values())
    chains = sum(c for (_, a), c in rounds.items() if a >= 2) / total
    residual_share = sum(c for (d, a), c in rounds.items() if a < d) / total
    assert rounds[(GAMMA, GAMMA)] > 0 and chains > 0.25, rounds  # chains of accepted tokens occur often
    assert 0.1 < residual_share < 0.6, rounds  # both branches matter (0.28 at T = 1, 0.48 at T = 0.7)


@SLOW
def test_speculative_decoding_test_rejects_a_proposer_drawing_off_the_core_rule() -> None:
    """A draft engine whose draws do not follow the distribution the core computes from its rows
    (it samples at T = 1, the request asks 0.7) breaks losslessness: the fit catches it."""
    pipeline = make_pipeline(proposes=True)
    pipeline.engines.draft.draw_temperature = 1.0
    counts = sample_steps(pipeline, {"method": "sd", "gamma": GAMMA, "temperature": 0.7, "top_p": 1.0})
    assert chi_square(counts, step_distribution(chain(TARGET, 0.7, 1.0))).p_value < ALPHA


def swapped_ratio_verify(draft_tokens: tuple[int, ...], draft_probs: np.ndarray, target_probs: np.ndarray,
                         rng: np.random.Generator, calls: Counter[str]) -> tuple[tuple[int, ...], int]:
    """speculative_verify with the acceptance ratio upside down: min(1, q/p) instead of min(1, p/q)."""
    calls["mutant"] += 1
    out: list[int] = []
    for i, token in enumerate(draft_tokens):
        p, q = target_probs[i][token], draft_probs[i][token]
        if p > 0.0 and rng.random() < min(1.0, q / p):
            out.append(token)
            continue
        out.append(sampling.sample(sampling.residual(target_probs[i], draft_probs[i]), rng))
        return tuple(out), i
    out.append(sampling.sample(target_probs[len(draft_tokens)], rng))
    return tuple(out), len(draft_tokens)


def wrong_residual(kind: str, calls: Counter[str]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """residual(p, q) mutants: "q-p" draws from norm(max(0, q - p)) (also what max(0, q - p)
    unnormalised gives: `sample` is inverse-CDF on the unnormalised cumulative sum); "p" redraws
    from the target p itself instead of norm(max(0, p - q))."""
    real = sampling.residual

    def mutant(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        calls["mutant"] += 1
        return real(q, p) if kind == "q-p" else p

    return mutant


@pytest.mark.parametrize("mutant", ["ratio q/p", pytest.param("residual p", marks=SLOW),
                                    pytest.param("residual q-p", marks=SLOW)])
def test_speculative_decoding_test_rejects_a_wrong_rule(mutant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: Counter[str] = Counter()
    if mutant == "ratio q/p":
        monkeypatch.setattr(verify_module, "speculative_verify",
                            lambda t, q, p, rng: swapped_ratio_verify(t, q, p, rng, calls))
    else:
        monkeypatch.setattr(sampling, "residual", wrong_residual(mutant.split()[1], calls))
    counts = sample_steps(make_pipeline(), {"method": "sd", "gamma": GAMMA, "temperature": 1.0})
    assert_rejected(counts, step_distribution(chain(TARGET)), calls)


# ---- cos ----

LAMBDA, MU = 0.5, 0.5


def combined(kind: str) -> NextDist:
    """CoS at T = 1: we r = lambda q + (1 - lambda) p; cd r = softmax(log p - mu log q) = p q^-mu / Z."""
    if kind == "we":
        return lambda last: [LAMBDA * q + (1 - LAMBDA) * p for p, q in zip(TARGET[last], DRAFT[last])]
    return lambda last: normalised([p * q ** -MU for p, q in zip(TARGET[last], DRAFT[last])])


def cos_params(kind: str, gamma: int) -> dict[str, Any]:
    return {"method": "cos", "cos_combine": kind, "gamma": gamma, "cos_lambda": LAMBDA, "cos_mu": MU,
            "temperature": 1.0}


@pytest.mark.parametrize(("kind", "gamma", "proposes"), [("cd", GAMMA, False), pytest.param("we", GAMMA, False, marks=SLOW),
                                                         pytest.param("we", 1, False, marks=SLOW),
                                                         pytest.param("cd", GAMMA, True, marks=SLOW)])
def test_cos_samples_the_combined_distribution(kind: str, gamma: int, proposes: bool) -> None:
    pipeline = make_pipeline(proposes=proposes)
    counts = sample_steps(pipeline, cos_params(kind, gamma))
    assert (pipeline.engines.draft.calls["propose"] > 0) == proposes
    assert_fits(counts, step_distribution(combined(kind)), step_distribution(chain(TARGET)))


@pytest.mark.parametrize("mutant", [pytest.param("residual q-p", marks=SLOW), pytest.param("residual p", marks=SLOW)])
def test_cos_test_rejects_a_wrong_residual(mutant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Here p is the combined r and q the proposer's distribution."""
    calls: Counter[str] = Counter()
    monkeypatch.setattr(cos_module, "residual", wrong_residual(mutant.split()[1], calls))
    counts = sample_steps(make_pipeline(), cos_params("cd", GAMMA))
    assert_rejected(counts, step_distribution(combined("cd")), calls)


# ---- rsd ----

THRESHOLD = 0.7


def reward_of(text: str) -> float:
    return 0.9 if "a" in text else 0.2


def omega_closed_form(kind: str, reward: float) -> float:
    return float(reward >= THRESHOLD) if kind == "step" else min(1.0, reward / THRESHOLD)


@pytest.mark.parametrize("omega_kind", ["step", pytest.param("linear", marks=SLOW)])
def test_rsd_samples_its_omega_mixture(omega_kind: str) -> None:
    """P_RSD(y) = w(r(y)) P_draft(y) + nu P_target(y), nu = 1 - sum_y' w(r(y')) P_draft(y')."""
    pipeline = make_pipeline(FakePRM(fn=lambda q, steps, cand: reward_of(cand)))
    counts = sample_steps(pipeline, {"method": "rsd", "omega": omega_kind, "threshold": THRESHOLD, "temperature": 1.0})
    p_draft, p_target = step_distribution(chain(DRAFT)), step_distribution(chain(TARGET))

    def w(y: Outcome) -> float:
        text = TOK.decode([t for t in y if t not in ("EOS", DELIM)])
        return omega_closed_form(omega_kind, reward_of(text))

    nu = 1.0 - sum(w(y) * p for y, p in p_draft.items())
    assert 0.2 < nu < 0.8, nu  # both branches matter in this setting
    right = {y: w(y) * p_draft.get(y, 0.0) + nu * p_target.get(y, 0.0) for y in set(p_draft) | set(p_target)}
    assert_fits(counts, right, p_draft)
