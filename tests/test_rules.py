"""Unit tests of each rule on hand-made numbers: sampling, speculative verification, CoS combination,
omega, step segmentation, boxed-answer detection, stats."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.core import omega
from runtime.core.boxed import has_boxed
from runtime.core.sampling import (
    combine,
    logprob_of,
    process,
    residual,
    sample,
    softmax,
    speculative_verify,
    top_p_filter,
)
from runtime.core.segment import StepSegmenter, delimiter_token_ids, prm_step_text
from runtime.core.stats import RequestStats
from runtime.core.types import Finish, StepOutcome, Usage


class ScriptedRng:
    """Stands in for numpy's Generator: random() returns scripted uniforms."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_top_p_keeps_smallest_set_reaching_mass() -> None:
    probs = np.array([0.1, 0.5, 0.15, 0.25])
    out = top_p_filter(probs, 0.7)  # 0.5 + 0.25 = 0.75 >= 0.7: keep tokens 1 and 3
    assert np.allclose(out, [0, 0.5 / 0.75, 0, 0.25 / 0.75])
    assert np.allclose(top_p_filter(probs, 0.5), [0, 1, 0, 0])  # 0.5 alone reaches 0.5
    assert top_p_filter(probs, 1.0) is probs


def test_process_greedy_is_one_hot_and_tempered_is_softmax() -> None:
    logits = np.array([1.0, 3.0, 2.0])
    assert np.array_equal(process(logits, 0.0, 1.0), [0, 1, 0])
    assert np.allclose(process(logits, 2.0, 1.0), softmax(logits / 2.0))


def test_sample_inverse_cdf() -> None:
    probs = np.array([0.2, 0.3, 0.5])
    assert sample(probs, ScriptedRng([0.1])) == 0  # type: ignore[arg-type]
    assert sample(probs, ScriptedRng([0.45])) == 1  # type: ignore[arg-type]
    assert sample(probs, ScriptedRng([0.999999])) == 2  # type: ignore[arg-type]


def test_residual_and_its_fallback() -> None:
    assert np.allclose(residual(np.array([0.25, 0.75]), np.array([0.5, 0.5])), [0, 1])
    same = np.array([0.5, 0.5])
    assert np.allclose(residual(same, same), same)  # p == q: nothing to correct, fall back to p


def test_speculative_verify_accepts_rejects_and_bonus() -> None:
    q = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    p = np.array([[0.25, 0.75, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    # token 0: accept prob min(1, .25/.5) = .5; u = .4 accepts. token 1: accept prob .5; u = .3 accepts;
    # bonus from p[2] is token 0 (u = .1).
    out, n = speculative_verify((0, 1), q, p, ScriptedRng([0.4, 0.3, 0.1]))  # type: ignore[arg-type]
    assert (out, n) == ((0, 1, 0), 2)
    # u = .6 rejects token 0; residual max(0, p - q) = [0, .25, 0] -> token 1 whatever u is.
    out, n = speculative_verify((0, 1), q, p, ScriptedRng([0.6, 0.99]))  # type: ignore[arg-type]
    assert (out, n) == ((1,), 0)
    # second token rejected: residual p - q = [0, 0, .5] -> token 2.
    out, n = speculative_verify((0, 1), q, p, ScriptedRng([0.1, 0.9, 0.5]))  # type: ignore[arg-type]
    assert (out, n) == ((0, 2), 1)


def test_speculative_verify_greedy_is_target_argmax() -> None:
    q = np.array([process(np.array([0.0, 1.0, 0.0]), 0.0, 1.0)])
    p = np.stack([process(np.array([2.0, 1.0, 0.0]), 0.0, 1.0), process(np.array([0.0, 0.0, 1.0]), 0.0, 1.0)])
    out, n = speculative_verify((1,), q, p, np.random.default_rng(0))
    assert (out, n) == ((0,), 0)  # the draft's 1 is not the target's argmax 0


def test_combine_weighted_ensemble_and_contrastive() -> None:
    a, b = np.log(np.array([0.6, 0.3, 0.1])), np.log(np.array([0.2, 0.2, 0.6]))
    we = combine([a, b], "we", (0.25, 0.75), 0.0, 1.0, 1.0)
    assert np.allclose(we, 0.25 * np.array([0.6, 0.3, 0.1]) + 0.75 * np.array([0.2, 0.2, 0.6]))
    cd = combine([a, b], "cd", (0.5, 0.5), 0.5, 1.0, 1.0)
    assert np.allclose(cd, softmax(b - 0.5 * a))
    # greedy: argmax of the untempered combination, not of model 0
    greedy = combine([a, b], "we", (0.5, 0.5), 0.0, 0.0, 1.0)
    assert np.array_equal(greedy, [1, 0, 0])  # .5*.6+.5*.2 = .4 > .35 (token 2) > .25
    with pytest.raises(ValueError):
        combine([a, b, a], "cd", (1, 1, 1), 0.1, 1.0, 1.0)


def test_logprob_of_tempered_and_greedy() -> None:
    logits = np.array([1.0, 2.0])
    assert math.isclose(logprob_of(logits, 1, 1.0), math.log(softmax(logits)[1]))
    assert math.isclose(logprob_of(logits, 1, 0.0), logprob_of(logits, 1, 1.0))
    assert math.isclose(logprob_of(logits, 0, 0.5), math.log(softmax(logits / 0.5)[0]))


def test_omega_variants() -> None:
    assert omega.weight("step", 0.7, 0.7, 20) == 1.0  # ">=": inclusive, as the reference
    assert omega.weight("step", 0.69, 0.7, 20) == 0.0
    assert omega.weight("linear", 0.35, 0.7, 20) == pytest.approx(0.5)
    assert omega.weight("linear", 0.9, 0.7, 20) == 1.0
    assert omega.weight("linear", 0.0, 0.0, 20) == 1.0
    assert omega.weight("sigmoid", 0.7, 0.7, 20) == pytest.approx(0.5)
    assert omega.weight("sigmoid", 0.0, 0.7, 5000) == 0.0
    assert omega.accept("linear", 0.35, 0.7, 20, ScriptedRng([0.49])) is True  # type: ignore[arg-type]
    assert omega.accept("linear", 0.35, 0.7, 20, ScriptedRng([0.51])) is False  # type: ignore[arg-type]
    assert omega.accept("step", 0.9, 0.7, 20, ScriptedRng([])) is True  # type: ignore[arg-type]


PIECES = ["<eos>", "\n\n", "a", "\n", ".\n\n", "b", "\nc"]


def segmenter() -> StepSegmenter:
    return StepSegmenter(lambda i: PIECES[i], frozenset({0}))


def test_segmenter_cuts_single_and_split_delimiters() -> None:
    seg = segmenter()
    assert seg.cut([2, 1, 5]) == ((2, 1), "step")  # "\n\n" token
    assert seg.cut([2, 4, 5]) == ((2, 4), "step")  # ".\n\n" glued to punctuation
    assert seg.cut([2, 3, 3, 5]) == ((2, 3, 3), "step")  # "\n" + "\n" across two tokens
    assert seg.cut([2, 3, 6, 5]) == ((2, 3, 6), "step")  # "\n" + "\nc"
    assert seg.cut([2, 5, 0, 2]) == ((2, 5), "eos")  # EOS dropped
    assert seg.cut([2, 3, 5]) == ((2, 3, 5), None)
    assert delimiter_token_ids(enumerate(PIECES)) == [1, 4]


def test_prm_step_text_drops_the_delimiter_only() -> None:
    assert prm_step_text("x = 1.\n\n") == "x = 1."
    assert prm_step_text("final answer") == "final answer"
    assert prm_step_text("\n\n") == ""


def test_has_boxed_needs_balanced_braces() -> None:
    assert has_boxed(r"so \boxed{\frac{1}{2}}.")
    assert not has_boxed(r"so \boxed{\frac{1}{2}")
    assert not has_boxed("no answer yet")


def test_stats_definitions() -> None:
    s = RequestStats()
    s.observe_call("draft", Usage(prefill_tokens=10, decode_tokens=5, generated_tokens=5), num_params=100)
    assert s.models["draft"].flops == 2 * 100 * 15
    s.observe_step(StepOutcome((1, 2, 3), Finish.STEP, "draft", 0.9, accepted=True))
    s.observe_step(StepOutcome((4,), Finish.STEP, "target", 0.1, accepted=False, draft_token_ids=(5, 6, 7, 8, 9)))
    assert (s.steps, s.tokens, s.step_acceptance_rate) == (2, 4, 0.5)
    assert s.token_acceptance_rate == pytest.approx(3 / 8)
    assert (s.target_step_share, s.target_token_share) == (0.5, 0.25)
    total = RequestStats.total([s, RequestStats.from_dict(s.to_dict())])
    assert (total.requests, total.steps, total.step_acceptance_rate) == (2, 4, 0.5)
    assert total.to_dict()["models"]["draft"]["flops"] == 2 * 2 * 100 * 15


def test_common_prefix() -> None:
    from runtime.core.tokens import common_prefix

    assert common_prefix((1, 2, 3), (1, 2, 4)) == 2
    assert common_prefix((1, 2), (1, 2, 3)) == 2
    assert common_prefix((5,), (1,)) == 0
    assert common_prefix((1, 2, 3), (1, 2, 3), (1, 9, 3)) == 1
    assert common_prefix((1, 2, 3), (1, 2, 3), limit=1) == 1
    assert common_prefix((1, 2, 3), (1, 2, 3), limit=-2) == 0
