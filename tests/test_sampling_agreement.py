"""The torch engine samples and scores exactly as the core's reference rules (runtime.core.sampling):
the same tempered top-k / top-p distribution (mask, ties, renormalisation), the same log-probs, the
same greedy choice, the same logit rules (penalties, bias, bad words, the min-tokens ban). GSI's importance weight log pi_target - log pi_draft takes the draft's log-prob from
the engine's sampler (under the top-p distribution actually sampled) and the target's from its
scorer (tempered, no top-p), so a disagreement with the core's definitions biases the weights.
"""
from __future__ import annotations

import asyncio
import math
from collections import Counter
from contextlib import closing

import numpy as np
import pytest

from runtime.core.sampling import adjust, logprob_of, process
from runtime.core.types import LogitRules, LogitsRequest, ScoreRequest, StepRequest

torch = pytest.importorskip("torch")
from runtime.engines.torch.sampling import RuleState, greedy_tokens, logprob_rows, sample_token  # noqa: E402

SETTINGS = [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5), (0.5, 0.3)]  # (temperature, top_p)
DRAWS = 1000


def logit_rows(seed: int = 0, n: int = 3, vocab: int = 12) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, vocab)) * 2.0).astype(np.float32)  # [n, vocab]


def cut_margin(row: np.ndarray, temperature: float, top_p: float) -> float:
    """Distance of the top-p cut from the nearest cumulative mass (float32 and float64 agree if > 1e-4)."""
    probs = np.sort(process(row, temperature, 1.0))[::-1]
    return float(np.abs(np.cumsum(probs) - top_p).min()) if top_p < 1.0 else 1.0


def draw(row: np.ndarray, temperature: float, top_p: float, n: int, seed: int = 0) -> list[tuple[int, float]]:
    gen = torch.Generator().manual_seed(seed)
    t = torch.from_numpy(row)
    return [sample_token(t, temperature, top_p, gen) for _ in range(n)]


@pytest.mark.parametrize(("temperature", "top_p"), SETTINGS)
def test_sampling_follows_the_core_distribution_and_reports_its_logprob(temperature: float, top_p: float) -> None:
    for row in logit_rows():
        assert cut_margin(row, temperature, top_p) > 1e-4
        ref = process(row, temperature, top_p)
        drawn = draw(row, temperature, top_p, DRAWS)
        counts = Counter(token for token, _ in drawn)
        assert all(ref[token] > 0.0 for token in counts), "sampled outside the core's top-p mask"
        assert {t for t in range(len(ref)) if ref[t] > 0.01} <= set(counts)
        for token, logprob in drawn:
            assert math.isclose(logprob, math.log(ref[token]), abs_tol=2e-5)  # the sampled distribution
        # frequencies: Pearson chi-square against the core's probabilities, tokens < 5 expected pooled
        big = [t for t in range(len(ref)) if DRAWS * ref[t] >= 5]
        small_obs, small_exp = sum(counts[t] for t in range(len(ref)) if t not in big), DRAWS * (1 - ref[big].sum())
        stat = sum((counts[t] - DRAWS * ref[t]) ** 2 / (DRAWS * ref[t]) for t in big)
        stat += (small_obs - small_exp) ** 2 / small_exp if small_exp >= 1.0 else 0.0
        df = len(big) - (0 if small_exp >= 1.0 else 1)
        assert df == 0 or stat < df + 4.0 * math.sqrt(2 * df) + 10, (stat, df)  # far beyond 1e-4


@pytest.mark.parametrize(("logits", "top_p", "support"), [
    ([1.0, 1.0, 1.0, 1.0], 0.5, {0, 1}),  # equal masses: the lowest ids come first, in both
    ([0.0, 2.0, 2.0, 0.0, 2.0], 0.6, {1, 2}),
    ([3.0, 1.0, 1.0, 1.0, -1.0], 0.95, {0, 1, 2, 3}),
])
def test_top_p_mask_breaks_ties_like_the_core(logits: list[float], top_p: float, support: set[int]) -> None:
    row = np.array(logits, dtype=np.float32)
    ref = process(row, 1.0, top_p)
    assert {t for t in range(len(ref)) if ref[t] > 0} == support
    drawn = draw(row, 1.0, top_p, 400)
    assert {token for token, _ in drawn} == support
    assert all(math.isclose(lp, math.log(ref[t]), abs_tol=2e-5) for t, lp in drawn)


def test_greedy_is_the_argmax_with_the_untempered_logprob() -> None:
    for row in logit_rows(seed=1):
        token, logprob = sample_token(torch.from_numpy(row), 0.0, 0.9, torch.Generator())
        assert token == int(np.argmax(process(row, 0.0, 0.9)))
        assert math.isclose(logprob, logprob_of(row, token, 0.0), abs_tol=2e-5)


@pytest.mark.parametrize("scored", [(True,), (False,), (True, True, True), (True, False, True), (False, False, False)])
def test_the_batched_greedy_pick_is_the_core_argmax_and_logprob(scored: tuple[bool, ...]) -> None:
    """One row or a batch, every row is the core's greedy pick: its argmax and the untempered
    log-prob, only where asked for (the runner draws a batch, the generator one row)."""
    rows = logit_rows(seed=len(scored) + sum(scored), n=len(scored))
    got = greedy_tokens(torch.from_numpy(rows) if len(scored) > 1 else torch.from_numpy(rows[0]), scored)
    for row, want, (token, logprob) in zip(rows, scored, got):
        assert token == int(np.argmax(row))
        assert math.isclose(logprob, logprob_of(row, token, 0.0), abs_tol=1e-5) if want else logprob == 0.0



@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0, 1.5])
def test_scoring_is_the_core_logprob(temperature: float) -> None:
    rows = logit_rows(seed=2, n=5)
    tokens = [3, 0, 11, 7, 7]
    expected = sum(logprob_of(row, t, temperature) for row, t in zip(rows, tokens))
    assert math.isclose(logprob_rows(torch.from_numpy(rows), tokens, temperature), expected, abs_tol=1e-4)


@pytest.mark.slow  # builds the tiny real models
def test_the_engine_reports_the_logprobs_gsi_expects(tiny_pipeline) -> None:  # type: ignore[no-untyped-def]
    """End to end on a tiny real model: a generated step's log-prob is the sum of log process(row)[token]
    over the model's own logits rows (top-p renormalised), and its score is the sum of log softmax(row / T)."""
    lm = tiny_pipeline.engines.draft
    prefix = tuple(tiny_pipeline.tokenizer.encode_prompt("12+7"))
    temperature, top_p = 0.8, 0.9

    async def run() -> tuple[object, np.ndarray, float]:
        with closing(lm.open("a")) as a, closing(lm.open("b")) as b, closing(lm.open("c")) as c:
            gen = await a.generate(StepRequest(prefix, 2, temperature, top_p, 12, 5, True))
            (first,) = [g for g in gen.generations[:1]]
            tokens = first.token_ids
            rows = (await b.logits(LogitsRequest(prefix + tokens, len(tokens) + 1))).logits
            score = (await c.score(ScoreRequest(prefix, (tokens,), temperature))).logprobs[0]
        return first, rows, score

    first, rows, score = asyncio.run(run())
    tokens = first.token_ids  # type: ignore[attr-defined]
    assert len(tokens) >= 2
    sampled = sum(math.log(process(rows[i], temperature, top_p)[t]) for i, t in enumerate(tokens))
    scored = sum(logprob_of(rows[i], t, temperature) for i, t in enumerate(tokens))
    assert math.isclose(first.logprob, sampled, abs_tol=1e-3)  # type: ignore[attr-defined]
    assert math.isclose(score, scored, abs_tol=1e-3)


def test_the_fake_lm_reports_logprobs_like_the_engine() -> None:
    from support.fakes import FakeLM

    lm = FakeLM(8, seed=3)
    req = StepRequest((2, 3), 1, 1.0, 0.5, 3, 0, True)
    (gen,) = asyncio.run(lm.generate(req)).generations
    ids = [2, 3, *gen.token_ids]
    expected = sum(math.log(process(lm.table[ids[i - 1]], 1.0, 0.5)[ids[i]]) for i in range(2, len(ids)))
    assert math.isclose(gen.logprob, expected, abs_tol=1e-9)


RULES = [
    LogitRules(repetition_penalty=1.7),
    LogitRules(presence_penalty=0.6, frequency_penalty=0.4),
    LogitRules(bias=((3, 2.0), (5, -1.5), (3, 0.5)), bad_words=((7,), (2, 9))),
    LogitRules(repetition_penalty=0.8, presence_penalty=-0.3, frequency_penalty=0.2, bad_words=((1, 4, 6),),
               end_ids=frozenset({0, 11})),
]


@pytest.mark.parametrize("rules", RULES)
def test_the_engine_adjusts_logits_like_the_core(rules: LogitRules) -> None:
    """RuleState (counts of the context, its last ids, the min-new-tokens ban) is core.sampling.adjust."""
    row = logit_rows(seed=4, n=1)[0]
    context = (2, 9, 3, 3, 1, 4, 8, 2)
    state = RuleState.start(rules, context, min_new=2)
    assert state is not None
    ids = list(context)
    for step, token in enumerate((1, 4, 5)):
        expected = adjust(row, rules, ids, ban_ends=step < 2)
        got = state.apply(torch.from_numpy(row)).double().numpy()
        assert np.array_equal(np.isinf(got), np.isinf(expected))
        finite = np.isfinite(expected)
        assert np.allclose(got[finite], expected[finite], atol=1e-5)
        state.push(token)
        ids.append(token)


@pytest.mark.parametrize(("temperature", "top_p", "top_k"), [(1.0, 1.0, 3), (0.7, 0.9, 5), (1.3, 0.5, 8)])
def test_top_k_sampling_follows_the_core_distribution(temperature: float, top_p: float, top_k: int) -> None:
    for row in logit_rows(seed=6):
        ref = process(row, temperature, top_p, top_k)
        gen = torch.Generator().manual_seed(0)
        drawn = [sample_token(torch.from_numpy(row), temperature, top_p, gen, top_k) for _ in range(400)]
        assert {t for t, _ in drawn} <= {t for t in range(len(ref)) if ref[t] > 0}
        assert {t for t in range(len(ref)) if ref[t] > 0.02} <= {t for t, _ in drawn}
        assert all(math.isclose(lp, math.log(ref[t]), abs_tol=2e-5) for t, lp in drawn)
    token, _ = sample_token(torch.from_numpy(logit_rows()[0]), 1.5, 1.0, torch.Generator(), top_k=1)
    assert token == int(np.argmax(logit_rows()[0]))  # top_k 1 is greedy


@pytest.mark.slow  # builds the tiny real models
def test_the_engine_generates_under_the_rules_the_core_defines(tiny_pipeline) -> None:  # type: ignore[no-untyped-def]
    """A generated step with penalties, bias, bad words, top-k and min tokens: each token's
    log-prob is log process(adjust(row)) of the model's own logits at that point."""
    lm = tiny_pipeline.engines.draft
    tok = tiny_pipeline.tokenizer
    prefix = tuple(tok.encode_prompt("12+7"))
    rules = LogitRules(1.4, 0.3, 0.2, ((tok.encode("x")[0], 1.5),), ((tok.encode("1")[0],),), frozenset(tok.eos_ids))
    temperature, top_p, top_k = 0.9, 0.95, 6

    async def run() -> tuple[object, np.ndarray]:
        with closing(lm.open("rules")) as a, closing(lm.open("rules-rows")) as b:
            gen = await a.generate(StepRequest(prefix, 1, temperature, top_p, 12, 3, True, top_k, rules, 4))
            (first,) = gen.generations
            rows = (await b.logits(LogitsRequest(prefix + first.token_ids, len(first.token_ids) + 1))).logits
        return first, rows

    first, rows = asyncio.run(run())
    tokens = first.token_ids  # type: ignore[attr-defined]
    assert len(tokens) >= 4 and tok.encode("1")[0] not in tokens
    for i, token in enumerate(tokens):
        z = adjust(rows[i], rules, prefix + tokens[:i], ban_ends=i < 4)
        expected = math.log(process(z, temperature, top_p, top_k)[token])
        assert math.isclose(first.token_logprobs[i], expected, abs_tol=1e-3)  # type: ignore[attr-defined]
