"""Linear in length: a request of 50+ steps runs up to the context limit with O(new tokens) work.

Fixture: tiny random models (runtime.tiny_models) whose EOS row is zeroed, so greedy
decoding never stops early; steps end at "\\n\\n" or at 6 tokens, so a 384-position context
gives 60+ steps. RSD at threshold 0 runs draft and PRM; at threshold > 1 all three models on
every step (draft writes, PRM scores, target rewrites). Asserted, by counting operations (robust
on a busy machine):
- every generator processes each token of the sequence about once (prefill + decode <= prompt +
  generated + one re-fed token per step, plus, for the draft, the tokens of its rewritten steps);
- the PRM processes <= 1.6 tokens per generated token (plus its question prefix) when it scores
  each step once, and <= 1.6 per drafted + accepted token when every step is rewritten;
- nothing cached is copied per forward: the KV arenas copy at most 2 tokens per sequence
  position in all (capacity doublings), where a per-forward copy would be O(length^2);
and, by time, with a generous bound: the median time per generated token of the last 10 steps is
at most 3x that of steps 2-11 (the context is ~8x longer by then; per-token work that grew with
position, such as copying the cache every forward, would show up here first).
"""
from __future__ import annotations

import asyncio
import statistics
import time

import pytest

pytestmark = pytest.mark.slow  # real (tiny) models, 60+ steps

CONTEXT = 384
QUESTION = "12+7*3"


@pytest.fixture(scope="module")
def long_pipeline(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import load_file, save_file

    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config
    from runtime.tiny_models import make_lm, make_value_head_prm

    root = tmp_path_factory.mktemp("long_models")
    make_lm(root / "draft", hidden=32, layers=2, seed=11, step_bias=1.0, max_positions=CONTEXT)
    make_lm(root / "target", hidden=64, layers=2, seed=12, step_bias=1.0, max_positions=CONTEXT)
    make_value_head_prm(root / "prm", hidden=32, layers=2, seed=13, max_positions=CONTEXT)
    for role in ("draft", "target"):
        file = root / role / "model.safetensors"
        weights = load_file(str(file))
        weights["lm_head.weight"][2] = torch.zeros_like(weights["lm_head.weight"][2])  # </s>: logit 0, never the max
        save_file(weights, str(file), metadata={"format": "pt"})
    config = root / "long.yaml"
    config.write_text(
        "models:\n"
        + "".join(f"  {r}: {{path: {root / r}, device: cpu}}\n" for r in ("draft", "target"))
        + f"  prm: {{path: {root / 'prm'}, format: value_head, device: cpu}}\n"
        "prompt_template: \"Q: {question}\\n\"\n"
        "defaults: {max_tokens: 4096, max_step_tokens: 6, max_steps: 1000, temperature: 0.0}\n"
        "engine: {torch_threads: 1}\n")
    return build_pipeline(load_config(config))


def _arenas(pipeline) -> dict:  # type: ignore[no-untyped-def]
    engines = pipeline.engines
    return {role: getattr(engines, role).scheduler.runner.arena for role in ("draft", "target", "prm")}


def _long_request(p, threshold: float) -> tuple[list, list[float]]:  # type: ignore[no-untyped-def]
    stamps: list[float] = []
    steps: list = []

    async def run() -> None:
        stamps.append(time.perf_counter())
        async for event in p.stream(QUESTION, {"method": "rsd", "threshold": threshold}):
            stamps.append(time.perf_counter())
            steps.append(event)

    asyncio.run(run())
    assert steps[-1].finish_reason == "context" and len(steps) >= 50, (steps[-1].finish_reason, len(steps))
    return steps, stamps


def test_accepted_steps_cost_linear_work(long_pipeline) -> None:  # type: ignore[no-untyped-def]
    """RSD at threshold 0: the draft writes every step and the PRM scores it once."""
    p = long_pipeline
    steps, _ = _long_request(p, 0.0)
    prompt = len(p.request(QUESTION).prompt_ids)
    generated = sum(len(s.token_ids) for s in steps)
    assert prompt + generated >= CONTEXT - 1
    models = steps[-1].stats["models"]
    draft = models["draft"]["prefill_tokens"] + models["draft"]["decode_tokens"]
    assert draft <= prompt + generated + len(steps), (draft, prompt, generated)
    prm = models["prm"]["prefill_tokens"] + models["prm"]["decode_tokens"]
    assert prm - len(p.engines.prm.fmt.prefix_ids(QUESTION)) <= 1.6 * generated, (prm, generated)


def test_rewritten_steps_cost_linear_work(long_pipeline) -> None:  # type: ignore[no-untyped-def]
    """RSD at threshold > 1: every step is drafted, scored and rewritten by the target."""
    p = long_pipeline
    before = {role: a.copied_tokens for role, a in _arenas(p).items()}
    steps, stamps = _long_request(p, 1.01)
    prompt = len(p.request(QUESTION).prompt_ids)
    generated = sum(len(s.token_ids) for s in steps)
    models = steps[-1].stats["models"]
    drafted = models["draft"]["generated_tokens"]
    for role, discarded in (("target", drafted), ("draft", drafted)):
        # the draft also ran its own (rewritten) steps, once each; the target checked each as a hint once
        m = models[role]
        processed = m["prefill_tokens"] + m["decode_tokens"]
        assert processed <= prompt + generated + discarded + len(steps), (role, processed, prompt, generated)
    prm = models["prm"]["prefill_tokens"] + models["prm"]["decode_tokens"]
    # each drafted step is scored once, each accepted (target) step read once as history
    assert prm - len(p.engines.prm.fmt.prefix_ids(QUESTION)) <= 1.6 * (generated + drafted), (prm, generated, drafted)
    for role, arena in _arenas(p).items():
        copied = arena.copied_tokens - before[role]
        assert copied <= 2 * CONTEXT, (role, copied)
    per_token = [(b - a) / max(1, len(s.token_ids)) for a, b, s in zip(stamps, stamps[1:], steps)]
    early, late = statistics.median(per_token[1:11]), statistics.median(per_token[-10:])
    assert late <= 3.0 * early, (early, late)


def test_concurrent_decodes_attend_in_place(long_pipeline) -> None:  # type: ignore[no-untyped-def]
    """16 target-only requests decode together: their rows are consecutive slots of the arena,
    so the forwards read the cache as a view (copies stay O(length) per sequence)."""
    p = long_pipeline
    arena = p.engines.target.scheduler.runner.arena
    sched = p.engines.target.scheduler
    before, forwards, rows, live = arena.copied_tokens, sched.forwards, sched.batched_rows, arena.live
    params = {"method": "target", "max_tokens": 96}

    async def together() -> list:
        return await asyncio.gather(*(p.generate(f"{i}*{i}+1", params) for i in range(16)))

    results = asyncio.run(together())
    total = sum(len(p.request(f"{i}*{i}+1").prompt_ids) + r.stats["tokens"] for i, r in enumerate(results))
    assert (sched.batched_rows - rows) / (sched.forwards - forwards) > 8
    assert arena.copied_tokens - before <= 2 * total, (arena.copied_tokens - before, total)
    assert arena.live == live  # every request's slot was freed



def test_the_kv_arena_stays_within_its_budget_and_refuses_clearly() -> None:
    """Growth is capped to engine.kv_cache_mb: sequences are added until the budget holds no more,
    the arena's tensors never exceed it, and the refusal names the setting."""
    import torch

    from runtime.core.errors import EngineError
    from runtime.engines.torch.kvcache import KVArena

    per_position = 2 * 2 * 4 * 8 * 4  # K and V, 2 layers, 4 heads, head_dim 8, float32
    arena = KVArena(max_len=512, budget_bytes=64 * 100 * per_position, name="draft")  # 6,400 positions
    like = torch.zeros(1, 4, 1, 8)
    arena.reserve(1, 100)
    for layer in range(2):
        arena.layer(layer, like)
    caches = []
    with pytest.raises(EngineError, match=r"draft: the KV cache would need .* over its budget .*engine.kv_cache_mb"):
        while True:
            caches.append(arena.new())
            assert arena.bytes <= arena.budget_bytes
    assert len(caches) == arena.slot_cap == 64  # doubling was cut back to what the budget holds
    unbounded = KVArena(max_len=512)
    unbounded.reserve(1, 100)
    unbounded.layer(0, like)
    for _ in range(80):
        unbounded.new()
    assert unbounded.slot_cap == 128  # without a budget it doubles on
