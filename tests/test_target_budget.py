"""RSD's `target_budget`: the target writes at most that share of the steps, the lowest-scored first.

The rule is runtime.core.methods.rsd.within_budget; the expectations here are worked by hand or
checked against the definition (share after every step <= budget), never computed by the rule.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.core.errors import RequestValidationError
from runtime.core.methods.rsd import within_budget
from runtime.core.params import RequestParams


def rewrites(budget: float, rewards: list[float], rejected: list[bool]) -> list[bool]:
    """Which steps the target writes, RSD's way: omega rejected the step and the budget allows it."""
    wrote: list[bool] = []
    for i, (reward, no) in enumerate(zip(rewards, rejected)):
        wrote.append(no and within_budget(budget, sum(wrote), reward, rewards[:i]))
    return wrote


def test_a_hand_worked_request_rewrites_its_two_lowest_steps() -> None:
    # budget 1/2, every step below the threshold (omega rejects all):
    # n=1: floor(0.5) = 0 steps allowed -> kept; n=2: 1 allowed, 0.1 is the lowest of {0.2, 0.1} -> target;
    # n=3: floor(1.5) = 1 already spent -> kept; n=4: 2 allowed, 0.05 <= second lowest (0.1) -> target
    assert rewrites(0.5, [0.2, 0.1, 0.9, 0.05], [True] * 4) == [False, True, False, True]


def test_a_step_above_the_budget_quantile_is_kept_even_with_budget_left() -> None:
    # n=4, budget 1/2: 2 allowed and none spent, but 0.3 is not among the 2 lowest of {0.1, 0.2, 0.25, 0.3}
    assert rewrites(0.5, [0.1, 0.2, 0.25, 0.3], [False, False, False, True]) == [False, False, False, False]
    # the same step scored 0.15 is among them
    assert rewrites(0.5, [0.1, 0.2, 0.25, 0.15], [False, False, False, True]) == [False, False, False, True]


def test_float_rounding_does_not_lose_a_step() -> None:
    # 0.29 * 100 is 28.999999999999996 in floats: the 29th rewrite of 100 steps is still allowed
    assert within_budget(0.29, 28, 0.0, [0.5] * 99)
    assert not within_budget(0.29, 29, 0.0, [0.5] * 99)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1.0),
       st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=60))
def test_the_share_never_exceeds_the_budget_after_any_step(budget: float, steps: list[tuple[float, bool]]) -> None:
    wrote = rewrites(budget, [r for r, _ in steps], [no for _, no in steps])
    for n in range(1, len(wrote) + 1):  # the answer may end after any step
        assert sum(wrote[:n]) <= budget * n + 1e-9
    assert all(no for w, (_, no) in zip(wrote, steps) if w)  # only steps omega rejected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=60))
def test_a_budget_of_one_rewrites_exactly_what_omega_rejects(steps: list[tuple[float, bool]]) -> None:
    assert rewrites(1.0, [r for r, _ in steps], [no for _, no in steps]) == [no for _, no in steps]


def test_the_budget_is_a_validated_rsd_field() -> None:
    with pytest.raises(RequestValidationError, match="target_budget"):
        RequestParams(target_budget=1.5)
    with pytest.raises(RequestValidationError, match="target_budget"):
        RequestParams(target_budget=-0.1)
    with pytest.raises(RequestValidationError, match="target_budget.*method gsi"):
        RequestParams(method="gsi", target_budget=0.5)
    assert RequestParams.from_mapping({"target_budget": "0.25"}).target_budget == 0.25


SHORT_STEPS = {"method": "rsd", "max_tokens": 48, "max_step_tokens": 3, "temperature": 0.0}


@pytest.mark.parametrize("budget", [0.0, 0.25, 0.5])
def test_rsd_on_the_engines_keeps_the_share_under_the_budget(tiny_pipeline, budget: float) -> None:  # type: ignore[no-untyped-def]
    # threshold 1.01: omega rejects every step, so without a budget the target writes them all
    result = tiny_pipeline.generate_sync("12+7", {**SHORT_STEPS, "threshold": 1.01, "target_budget": budget})
    sources = [s.source for s in result.steps]
    assert len(sources) >= 8
    for n in range(1, len(sources) + 1):
        assert sources[:n].count("target") <= budget * n + 1e-9, sources
    rewards = [s.reward for s in result.steps]
    for n, step in enumerate(result.steps, 1):  # each rewrite went to one of the lowest floor(b n) steps so far
        if step.source == "target":
            assert sorted(rewards[:n]).index(step.reward) < int(budget * n + 1e-9), (n, rewards[:n])
    assert (sources.count("target") > 0) == (budget > 0)
    assert result.stats["steps_by_source"].get("target", 0) == sources.count("target")


def test_rsd_with_budget_one_is_plain_rsd(tiny_pipeline) -> None:  # type: ignore[no-untyped-def]
    for threshold in (0.3, 0.6, 1.01):
        plain = tiny_pipeline.generate_sync("12+7", {**SHORT_STEPS, "threshold": threshold})
        capped = tiny_pipeline.generate_sync("12+7", {**SHORT_STEPS, "threshold": threshold, "target_budget": 1.0})
        assert [(s.text, s.source, s.reward) for s in capped.steps] == [(s.text, s.source, s.reward)
                                                                          for s in plain.steps]
        assert all(s.source == "target" for s in plain.steps) or threshold < 1


# --- target_budget_scope: server (the same rule over the server's recent budgeted steps) ---


def test_the_window_keeps_the_last_steps_and_counts_the_targets() -> None:
    from runtime.core.methods.rsd import BudgetWindow

    window = BudgetWindow(size=3)
    for reward, by_target in ((0.1, True), (0.2, False), (0.3, True), (0.4, False)):
        window.record(reward, by_target)
    assert list(window.steps) == [(0.2, False), (0.3, True), (0.4, False)]  # (0.1, target) fell out
    # the next step will share the window with the last two: the cap is checked over that window
    assert window.history() == (1, (0.3, 0.4))


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(1, 50),
       st.lists(st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=12), max_size=12))
def test_the_share_over_the_server_window_never_exceeds_the_budget(budget: float, size: int,
                                                                   requests: list[list[tuple[float, bool]]]) -> None:
    from runtime.core.methods.rsd import BudgetWindow

    window = BudgetWindow(size=size)
    for steps in requests:  # one request after another, as one server sees them
        for reward, rejected in steps:
            target_steps, earlier = window.history()
            window.record(reward, rejected and within_budget(budget, target_steps, reward, earlier))
            in_window = [by_target for _, by_target in window.steps]
            assert sum(in_window) <= budget * len(in_window) + 1e-9


def test_an_unknown_scope_names_the_field() -> None:
    with pytest.raises(RequestValidationError, match="target_budget_scope"):
        RequestParams(target_budget_scope="cluster")


def test_server_scope_rewrites_early_steps_the_request_scope_never_may(tiny_config) -> None:  # type: ignore[no-untyped-def]
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config

    pipeline = build_pipeline(load_config(tiny_config))  # its own window
    params = {**SHORT_STEPS, "threshold": 1.01, "target_budget": 0.5}
    questions = [f"{a}+{b}" for a in range(1, 5) for b in range(1, 4)]
    per_request = [pipeline.generate_sync(q, params) for q in questions]
    assert not any(r.steps[0].source == "target" for r in per_request)  # floor(0.5 * 1) = 0, always
    served = [pipeline.generate_sync(q, {**params, "target_budget_scope": "server"}) for q in questions]
    sources = [s.source for r in served for s in r.steps]
    assert any(r.steps[0].source == "target" for r in served)
    for n in range(1, len(sources) + 1):  # the window (1000) holds every step here: its share after each
        assert sources[:n].count("target") <= 0.5 * n + 1e-9
