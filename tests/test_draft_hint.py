"""Draft-hinted greedy steps (StepRequest.draft_tokens) on the embedded target: a hint that
diverges at the first, a middle or the last token, stops short, runs past the delimiter, the cap
or an end token gives exactly the step greedy decoding gives, in fewer forwards, and leaves the
session's cache ready for the next step. Greedy RSD with the hint writes the same text as without
it on held-out problems where the target rewrites steps, with fewer target forwards."""
from __future__ import annotations

import asyncio
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from runtime.core.types import Finish, Generation, LogitRules, StepRequest
from runtime.task import heldout_problems
from support.hints import without_hints

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # the embedded models
DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
CAP = 24


@pytest.fixture(scope="module")
def pipeline():  # type: ignore[no-untyped-def]
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config

    return build_pipeline(load_config(DEFAULT))


def _steps(lm, prefix: tuple[int, ...], reqs: list[StepRequest]) -> tuple[list[Generation], list[int]]:  # type: ignore[no-untyped-def]
    """Each request continues the last step on one session: (generations, forwards of each)."""
    gens, forwards = [], []
    with closing(lm.open("hint")) as session:
        for req in reqs:
            before = lm.scheduler.forwards
            prefix += gens[-1].token_ids if gens else ()
            (gen,) = asyncio.run(session.generate(replace(req, prefix=prefix))).generations
            gens.append(gen)
            forwards.append(lm.scheduler.forwards - before)
    return gens, forwards


def _req(hint: tuple[int, ...] = (), cap: int = CAP, rules: LogitRules = LogitRules(), min_new: int = 0) -> StepRequest:
    return StepRequest((), 1, 0.0, 1.0, cap, 0, True, rules=rules, min_new_tokens=min_new, draft_tokens=hint)


def _same(got: Generation, want: Generation) -> None:
    assert (got.token_ids, got.finish) == (want.token_ids, want.finish)
    assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-4)


def _other(token: int) -> int:
    return 5 if token != 5 else 6


def test_a_hint_gives_the_greedy_step_in_fewer_forwards(pipeline) -> None:  # type: ignore[no-untyped-def]
    lm = pipeline.engines.target
    prefix = pipeline.request(heldout_problems(1)[0].question).prompt_ids
    (ref, after), plain = _steps(lm, prefix, [_req(), _req()])
    n = len(ref.token_ids)
    assert ref.finish == Finish.STEP and n >= 5 and plain == [n, len(after.token_ids)]
    r = ref.token_ids
    cases = {  # hint -> forwards the step takes (the first forward also yields the agreed tokens + one)
        r: 1,  # all agreed, ending at the delimiter
        r + (7, 8, 9): 1,  # tokens past the delimiter are never used
        (_other(r[0]),) + r[1:]: n,  # diverges at the first token: nothing saved
        r[:2] + (_other(r[2]),) + r[3:]: n - 2,  # ... at a middle token
        r[:-1] + (_other(r[-1]),): 1,  # ... at the last: the correction is the delimiter
        r[:3]: n - 3,  # shorter than the step: the bonus token comes from the same forward
    }
    for hint, forwards in cases.items():
        (got, nxt), used = _steps(lm, prefix, [_req(hint), _req()])
        _same(got, ref)
        _same(nxt, after)  # the cache holds exactly prefix + step for the next step
        assert used == [forwards, len(after.token_ids)], hint
    (capped,), used = _steps(lm, prefix, [_req(r, cap=3)])
    assert capped.token_ids == r[:3] and capped.finish == Finish.LENGTH and used == [1]


def test_a_hint_ending_on_an_end_token_or_with_rules(pipeline) -> None:  # type: ignore[no-untyped-def]
    """The last step ends on EOS (the hint's bonus row draws it); with a repetition penalty and
    end ids banned for min_new_tokens, the rules follow the agreed tokens as decoding would."""
    lm = pipeline.engines.target
    eos = min(pipeline.tokenizer.eos_ids)
    result = pipeline.generate_sync(heldout_problems(1)[0].question, {"method": "target"})
    *head, last = result.steps
    prefix = pipeline.request(heldout_problems(1)[0].question).prompt_ids + tuple(t for s in head for t in s.token_ids)
    (ref,), _ = _steps(lm, prefix, [_req()])
    assert ref.finish == Finish.EOS and ref.token_ids == last.token_ids
    for hint in (ref.token_ids, ref.token_ids + (eos, 9, 9), ref.token_ids[:-2] + (eos,)):
        (got,), used = _steps(lm, prefix, [_req(hint)])
        _same(got, ref)
        assert used == [1 if hint[:len(ref.token_ids)] == ref.token_ids else 3], hint
    rules = LogitRules(repetition_penalty=1.3, end_ids=frozenset({eos}))
    banned = len(ref.token_ids) + 2
    (want, want_next), plain = _steps(lm, prefix, [_req(rules=rules, min_new=banned), _req(rules=rules)])
    assert want.finish != Finish.EOS or len(want.token_ids) >= banned
    (got, got_next), used = _steps(lm, prefix, [_req(ref.token_ids + (eos,) + want.token_ids, rules=rules,
                                                      min_new=banned), _req(rules=rules)])
    _same(got, want)
    _same(got_next, want_next)
    (got,), _ = _steps(lm, prefix, [_req(want.token_ids, rules=rules, min_new=banned)])
    _same(got, want)


def test_sampled_steps_ignore_the_hint(pipeline) -> None:  # type: ignore[no-untyped-def]
    lm = pipeline.engines.target
    prefix = pipeline.request(heldout_problems(1)[0].question).prompt_ids
    sampled = replace(_req(), temperature=0.8, seed=3)
    (want,), plain = _steps(lm, prefix, [sampled])
    (got,), used = _steps(lm, prefix, [replace(sampled, draft_tokens=(5, 6, 7, 8))])
    _same(got, want)
    assert used == plain


def test_greedy_rsd_writes_the_same_text_with_the_hint_in_fewer_target_forwards(pipeline) -> None:  # type: ignore[no-untyped-def]
    problems = heldout_problems(40)
    params = {"method": "rsd", "threshold": 0.95}
    forwards = []
    runs = []
    for pipe in (pipeline, without_hints(pipeline)):
        before = pipeline.engines.target.scheduler.forwards
        results = [pipe.generate_sync(p.question, params) for p in problems]
        forwards.append(pipeline.engines.target.scheduler.forwards - before)
        runs.append(results)
    hinted, plain = runs
    assert [r.text for r in hinted] == [r.text for r in plain]
    rewrites = sum(s.source == "target" for r in plain for s in r.steps)
    assert rewrites >= 15  # the threshold makes the target rewrite steps
    decode = [sum(r.stats["models"]["target"]["decode_tokens"] for r in rs if "target" in r.stats["models"])
              for rs in runs]
    assert forwards[0] < 0.6 * forwards[1] and decode[0] < 0.6 * decode[1], (forwards, decode)
