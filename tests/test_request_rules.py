"""TensorRT-LLM's request fields in the core: validation, the logit rules on hand-made numbers,
stop strings across steps, min_tokens, per-token log-probs, and what they do in every method
(scripted and Markov fake engines; no torch, no server)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.core.errors import RequestValidationError
from runtime.core.methods import Engines
from runtime.core.params import RequestParams
from runtime.core.sampling import adjust, process, top_k_filter
from runtime.core.segment import StepSegmenter
from runtime.core.stopping import StopScanner, logit_rules
from runtime.core.types import LogitRules
from runtime.pipeline import Pipeline
from support.fakes import FakeLM, FakePRM, FakeTokenizer, ScriptedLM

TOK = FakeTokenizer()  # pieces: <eos>, \n\n, a, b, c, 1, 2, " "
METHODS = ("rsd", "target", "draft", "gsi", "sd", "cos", "bon")


@pytest.mark.parametrize(("values", "field"), [
    ({"top_k": -1}, "top_k"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"presence_penalty": float("nan")}, "presence_penalty"),
    ({"frequency_penalty": float("inf")}, "frequency_penalty"),
    ({"min_tokens": -2}, "min_tokens"),
    ({"stop_words": [3]}, "stop_words"),
    ({"embedding_bias_words": ["a", "b"], "embedding_bias_weights": [1.0]}, "embedding_bias_weights"),
    ({"embedding_bias_words": ["a"], "embedding_bias_weights": ["x"]}, "embedding_bias_weights"),
    ({"return_log_probs": "maybe"}, "return_log_probs"),
])
def test_new_fields_are_validated_naming_the_field(values: dict, field: str) -> None:
    with pytest.raises(RequestValidationError, match=f"^{field}: "):
        RequestParams.from_mapping(values)


def test_word_lists_come_from_lists_arrays_or_one_value_and_drop_empty_strings() -> None:
    p = RequestParams.from_mapping({"stop_words": ["ab", ""], "bad_words": "c",
                                    "embedding_bias_words": np.array([b"a"], dtype=object),
                                    "embedding_bias_weights": np.array([2.5], dtype=np.float32)})
    assert p.stop_words == ("ab",) and p.bad_words == ("c",)
    assert p.embedding_bias_words == ("a",) and p.embedding_bias_weights == (2.5,)
    assert RequestParams.from_mapping({"stop_words": ""}).stop_words == ()  # what the curl examples send


def test_adjust_on_hand_made_numbers() -> None:
    logits = np.array([2.0, -1.0, 0.5, 3.0])
    rules = LogitRules(repetition_penalty=2.0, presence_penalty=0.25, frequency_penalty=0.5, bias=((2, 1.0),),
                       bad_words=((3,), (0, 1)), end_ids=frozenset({2}))
    z = adjust(logits, rules, context=[0, 0, 1])
    # id 0 seen twice: 2 / 2 - 0.25 - 2 * 0.5; id 1 once, negative: -1 * 2 - 0.25 - 0.5; id 2: + 1 bias;
    # id 3 is a one-token bad word; the context ends with 1, so "0 1" is not being completed
    assert z[0] == pytest.approx(2.0 / 2 - 0.25 - 1.0)
    assert z[1] == pytest.approx(-2.0 - 0.25 - 0.5)
    assert z[2] == pytest.approx(1.5) and z[3] == -math.inf
    assert adjust(logits, rules, [1, 0])[1] == -math.inf  # the context ends with 0: "0 1" may not be completed
    assert adjust(logits, rules, [0, 1], ban_ends=True)[2] == -math.inf  # min_tokens holds end ids back
    assert np.array_equal(adjust(logits, LogitRules(), [0, 1, 2]), logits)  # neutral rules change nothing


def test_top_k_keeps_the_k_most_likely_with_ties_to_lower_ids() -> None:
    probs = np.array([0.1, 0.3, 0.3, 0.2, 0.1])
    assert np.flatnonzero(top_k_filter(probs, 2)).tolist() == [1, 2]
    assert np.flatnonzero(top_k_filter(probs, 3)).tolist() == [1, 2, 3]
    assert top_k_filter(probs, 0) is probs
    row = np.log(probs)
    assert process(row, 1.3, 1.0, 1)[np.argmax(row)] == 1.0  # top_k 1 is greedy whatever the temperature
    mixed = process(row, 1.0, 0.6, 3)  # top-k first, then top-p over the renormalised rest
    assert np.flatnonzero(mixed).tolist() == [1, 2]


def test_stop_scanner_finds_a_stop_string_across_steps_and_respects_min_tokens() -> None:
    def decode(ids):  # one character per id, for the test
        return "".join(chr(96 + i) for i in ids)

    scanner = StopScanner(("cd",))
    assert scanner.scan("abc", (1, 2, 3), decode, 0, 0) is None
    assert scanner.scan("dab", (4, 1, 2), decode, 3, 0) == ("d", 1)  # "c" + "d": the stop ended one token in
    late = StopScanner(("ab",))
    assert late.scan("abxab", (1, 2, 24, 1, 2), decode, 0, min_tokens=3) == ("abxab", 5)  # the first "ab" is too early


def test_logit_rules_tokenise_words_alone() -> None:
    params = RequestParams.from_mapping({"bad_words": ["ab", "c"], "embedding_bias_words": ["1"],
                                         "embedding_bias_weights": [-3.0], "min_tokens": 4})
    rules = logit_rules(params, TOK)
    assert rules.bad_words == ((2, 3), (4,)) and rules.bias == ((5, -3.0),) and rules.end_ids == {0}
    assert logit_rules(RequestParams(), TOK).neutral and not logit_rules(RequestParams(), TOK).end_ids


def pipeline(draft, target, prm=None) -> Pipeline:  # type: ignore[no-untyped-def]
    seg = StepSegmenter(TOK.piece, TOK.eos_ids)
    return Pipeline(Engines(draft, target, prm or FakePRM((0.9, 0.2))), TOK, seg, "a{question}", RequestParams(), 1000)


def markov() -> Pipeline:
    return pipeline(FakeLM(TOK.vocab_size, 1), FakeLM(TOK.vocab_size, 2))


@pytest.mark.parametrize("method", METHODS)
def test_bad_words_never_appear_and_log_probs_add_up_in_every_method(method: str) -> None:
    params = {"method": method, "n": 3, "temperature": 0.9, "seed": 3, "max_tokens": 40, "threshold": 0.5}
    plain = markov().generate_sync("b", params)
    banned = next(ch for ch in "abc12" if ch in plain.text)
    ruled = markov().generate_sync("b", {**params, "bad_words": [banned], "return_log_probs": True})
    assert banned not in ruled.text
    for step in ruled.steps:
        assert len(step.token_logprobs) == len(step.token_ids)
        assert all(math.isfinite(lp) and lp <= 0.0 for lp in step.token_logprobs)


@pytest.mark.parametrize("method", METHODS)
def test_min_tokens_holds_the_end_back_in_every_method(method: str) -> None:
    params = {"method": method, "n": 2, "temperature": 0.8, "max_tokens": 60, "threshold": 0.5}
    seed = next(s for s in range(50) if (r := markov().generate_sync("b", {**params, "seed": s})).finish_reason == "eos"
                and r.stats["tokens"] < 20)
    forced = markov().generate_sync("b", {**params, "seed": seed, "min_tokens": 30})
    assert forced.stats["tokens"] >= 30


def test_a_stop_string_ends_the_output_right_after_it() -> None:
    draft = ScriptedLM(TOK, ["ab\n\n", "ca\n\n", "cc\n\n"])
    target = ScriptedLM(TOK, ["11\n\n"])
    p = pipeline(draft, target, FakePRM((0.9,)))
    result = p.generate_sync("b", {"method": "rsd", "stop_words": ["\nc"], "max_steps": 5})
    assert result.text == "ab\n\nc" and result.finish_reason == "stop"  # across the step boundary
    assert result.steps[-1].token_ids == (4,) and result.stats["tokens"] == 4
    # too early for min_tokens: the next occurrence ends it
    later = pipeline(ScriptedLM(TOK, ["ab\n\n", "ca\n\n", "cc\n\n"]), target, FakePRM((0.9,))).generate_sync(
        "b", {"method": "rsd", "stop_words": ["\nc"], "min_tokens": 5, "max_steps": 5})
    assert later.text == "ab\n\nca\n\nc" and later.finish_reason == "stop"


def test_top_k_one_is_greedy_in_every_method() -> None:
    for method in METHODS:
        params = {"method": method, "n": 2, "max_tokens": 24, "threshold": 0.5}
        greedy = markov().generate_sync("b", params).text
        assert markov().generate_sync("b", {**params, "temperature": 1.4, "top_k": 1, "seed": 9}).text == greedy
