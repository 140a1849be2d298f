"""The PyTorch engine on real (tiny, random-weight) Hugging Face models: batched forwards equal
single ones, degenerate method equalities hold token for token, KV caches are reused, concurrent
requests share forwards and sample as they do alone, and after a rejected step the PRM's and the
draft's caches equal a recompute from scratch. Where a test guards a defect the older tests could
not see, a companion test shows it failing on a deliberately wrong rule."""
from __future__ import annotations

import asyncio
import math
from contextlib import closing

import pytest
import torch

from runtime.engines.torch.kvcache import SeqCache
from runtime.engines.torch.runner import BatchRunner, Row
from runtime.pipeline import Pipeline

pytestmark = pytest.mark.slow  # real (tiny) models

QUESTIONS = ["1+2", "12*3-4", "abc", "7"]


def test_batched_forward_equals_single_forwards(tiny_pipeline: Pipeline) -> None:
    lm = tiny_pipeline.engines.target
    runner: BatchRunner = lm.scheduler.runner
    seqs = [[3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17], [20, 21, 22, 23, 24, 25]]
    split = [7, 0, 5]  # tokens already cached before the batched call

    def prepared() -> list[SeqCache]:
        caches = []
        for seq, n in zip(seqs, split):
            cache = runner.new_cache()
            if n:
                runner.run([Row(cache, seq[:n], 0)])
            caches.append(cache)
        return caches

    first, second = prepared(), prepared()
    batched = runner.run([Row(c, s[n:], len(s) - n) for c, s, n in zip(first, seqs, split)])
    for cache, seq, n, got in zip(second, seqs, split, batched):
        (alone,) = runner.run([Row(cache, seq[n:], len(seq) - n)])
        fresh = runner.new_cache()
        full = runner.run([Row(fresh, seq, len(seq))])[0][n:]
        fresh.free()
        assert torch.allclose(got, alone, atol=1e-5) and torch.allclose(got, full, atol=1e-5)
    for cache in first + second:
        cache.free()


def test_rows_in_scattered_slots_equal_single_forwards(tiny_pipeline: Pipeline) -> None:
    """Rows whose slots are consecutive attend on a view of the arena, others on a gather; a
    freed slot is refilled by the last live sequence. All equal a fresh single-row forward."""
    runner: BatchRunner = tiny_pipeline.engines.target.scheduler.runner
    seqs = [list(range(3, 3 + n)) for n in (9, 5, 12, 7)]
    caches = [runner.new_cache() for _ in seqs]
    runner.run([Row(c, s[:-2], 0) for c, s in zip(caches, seqs)])
    together = runner.run([Row(c, s[-2:], 2) for c, s in zip(caches, seqs)])
    gathered = runner.run([Row(caches[i], [5], 1) for i in (0, 2)])
    assert runner.arena.owners[-1] is caches[3]
    slot = caches[1].slot
    caches[1].free()  # the last sequence moves into its slot
    assert caches[3].slot == slot
    moved = runner.run([Row(caches[3], [6], 1)])[0]
    fresh = [runner.new_cache() for _ in range(7)]
    for cache, seq, got in zip(fresh, seqs, together):
        assert torch.allclose(got, runner.run([Row(cache, seq, 2)])[0], atol=1e-5)
    for cache, i, got in zip(fresh[4:], (0, 2), gathered):
        assert torch.allclose(got, runner.run([Row(cache, seqs[i] + [5], 1)])[0], atol=1e-5)
    assert torch.allclose(moved, runner.run([Row(fresh[6], seqs[3] + [6], 1)])[0], atol=1e-5)
    for cache in caches + fresh:
        cache.free()


def test_forward_groups_bound_padding(tiny_pipeline: Pipeline) -> None:
    """Steps of different lengths share one forward, decode rows share one, and a long prefill
    never pads the rows beside it; every row's output still equals its single forward."""
    runner: BatchRunner = tiny_pipeline.engines.target.scheduler.runner
    widths = {"steps": [8, 13, 21, 30], "decode": [1] * 12, "long": [150]}
    caches = {k: [runner.new_cache() for _ in v] for k, v in widths.items()}
    rows = [Row(c, [3 + j % 20 for j in range(w)], 1) for k in widths for c, w in zip(caches[k], widths[k])]
    rows.sort(key=lambda r: r.cache.slot)
    groups = runner._groups(rows)
    by_width = sorted(sorted(len(rows[i].new_ids) for i in g) for g in groups)
    assert by_width == [[1] * 12, [8, 13, 21, 30], [150]]
    assert all([rows[i].cache.slot for i in g] == sorted(rows[i].cache.slot for i in g) for g in groups)
    before = runner.forwards
    together = runner.run(rows)
    assert runner.forwards - before == 3
    for row, got in zip(rows, together):
        fresh = runner.new_cache()
        assert torch.allclose(got, runner.run([Row(fresh, row.new_ids, 1)])[0], atol=1e-5)
        fresh.free()
    for cache in (c for v in caches.values() for c in v):
        cache.free()


def generate(p: Pipeline, question: str, **params: object) -> str:
    return p.generate_sync(question, {"max_tokens": 40, "max_step_tokens": 10, **params}).text


@pytest.mark.parametrize("question", QUESTIONS)
def test_degenerate_equalities_token_for_token(tiny_pipeline: Pipeline, question: str) -> None:
    p = tiny_pipeline
    target, draft = generate(p, question, method="target"), generate(p, question, method="draft")
    assert target != draft
    assert generate(p, question, method="rsd", threshold=1.01) == target
    assert generate(p, question, method="rsd", threshold=0.0) == draft
    assert generate(p, question, method="sd", temperature=0.0, gamma=3) == target
    assert generate(p, question, method="cos", cos_combine="we", cos_lambda=0.0) == target
    assert generate(p, question, method="cos", cos_combine="we", cos_lambda=1.0) == draft
    assert generate(p, question, method="cos", cos_combine="cd", cos_mu=0.0) == target
    assert generate(p, question, method="gsi", gsi_u=-math.inf, n=3) == draft
    assert generate(p, question, method="gsi", gsi_u=math.inf, n=3) == target
    assert generate(p, question, method="bon", n=3) == draft  # greedy candidates are all the same


def test_gsi_thresholds_when_sampling(tiny_pipeline: Pipeline) -> None:
    never = tiny_pipeline.generate_sync("1+2", {"method": "gsi", "gsi_u": -math.inf, "n": 4, "temperature": 1.0,
                                                "max_tokens": 30, "max_step_tokens": 8})
    assert all(s.accepted for s in never.steps) and never.stats["models"]["target"]["generated_tokens"] == 0
    always = tiny_pipeline.generate_sync("1+2", {"method": "gsi", "gsi_u": math.inf, "n": 4, "temperature": 1.0,
                                                 "max_tokens": 30, "max_step_tokens": 8})
    assert all(s.accepted is False and s.source == "target" for s in always.steps)


def test_kv_cache_is_reused_across_steps(tiny_pipeline: Pipeline) -> None:
    result = tiny_pipeline.generate_sync("12*3-4", {"method": "target", "max_tokens": 60, "max_step_tokens": 6})
    prompt = len(tiny_pipeline.request("12*3-4").prompt_ids)
    m = result.stats["models"]["target"]
    processed, generated = m["prefill_tokens"] + m["decode_tokens"], m["generated_tokens"]
    assert len(result.steps) >= 5
    # every token runs through the model once (a request that re-encoded its prefix each step
    # would process about steps x (prompt + generated / 2) tokens)
    assert prompt + generated - len(result.steps) <= processed <= prompt + generated
    # one pass per drawn token (n = 1): the step's tokens, and the end token that ended the request
    assert m["forwards"] == generated + (result.finish_reason == "eos")
    prm = tiny_pipeline.generate_sync("12*3-4", {"method": "rsd", "max_tokens": 30, "threshold": 0.0}).stats
    assert prm["models"]["prm"]["forwards"] == prm["models"]["prm"]["calls"]  # one row per call: one pass


def test_steps_end_at_the_delimiter_or_the_cap(tiny_pipeline: Pipeline) -> None:
    ended_by_delimiter = 0
    for question in QUESTIONS:
        result = tiny_pipeline.generate_sync(question, {"method": "target", "max_tokens": 80, "max_step_tokens": 10})
        for step in result.steps[:-1]:
            at_cap = len(step.token_ids) == 10
            assert step.text.endswith("\n\n") or at_cap, step.text
            assert "\n\n" not in step.text[:-2], step.text  # nothing runs past a delimiter
            ended_by_delimiter += step.text.endswith("\n\n")
    assert ended_by_delimiter >= 3


def test_concurrent_requests_share_forwards_and_match_sequential(tiny_pipeline: Pipeline) -> None:
    p = tiny_pipeline
    questions = [f"{i}+{i * 7}" for i in range(8)]

    async def together(params: dict) -> list[str]:
        results = await asyncio.gather(*(p.generate(q, params) for q in questions))
        return [r.text for r in results]

    rsd = {"method": "rsd", "threshold": 0.5, "max_tokens": 30, "max_step_tokens": 8}
    assert asyncio.run(together(rsd)) == [p.generate_sync(q, rsd).text for q in questions]
    # requests that all decode the same model join the same forwards (in-flight batching)
    sched = p.engines.target.scheduler
    forwards, rows = sched.forwards, sched.batched_rows
    asyncio.run(together({"method": "target", "max_tokens": 30, "max_step_tokens": 8}))
    assert (sched.batched_rows - rows) / (sched.forwards - forwards) > 4.0


# RSD on the tiny models at this threshold keeps some draft steps and has the target rewrite others.
MIXED = {"method": "rsd", "threshold": 0.06, "max_tokens": 48, "max_step_tokens": 6}


def _rsd_runs(p: Pipeline) -> list:  # type: ignore[type-arg]
    runs = [p.generate_sync(q, MIXED) for q in QUESTIONS]
    sources = {s.source for r in runs for s in r.steps}
    assert sources == {"draft", "target"}, f"nothing was tested: steps came from {sources} only"
    return runs


def _prm_mismatches(p: Pipeline) -> int:
    """Steps whose reward differs from scoring question + accepted steps + that draft candidate
    from scratch (a fresh cache), over RSD runs in which the target rewrote some steps."""
    prm, bad = p.engines.prm, 0
    for question, result in zip(QUESTIONS, _rsd_runs(p)):
        accepted: list[str] = []
        for step in result.steps:
            candidate = step.draft_text if step.draft_text is not None else step.text
            ids = prm.fmt.prefix_ids(question)
            for text in accepted + [candidate]:
                ids += prm.fmt.step_ids(text.split("\n\n")[0])
            cache = prm.scheduler.runner.new_cache()
            (hidden,) = prm.scheduler.runner.run([Row(cache, ids, 1)])
            cache.free()
            bad += abs(prm.head.fn(hidden).item() - step.reward) > 1e-5
            accepted.append(step.text)
    return bad


def _draft_mismatches(p: Pipeline) -> int:
    """Draft steps (kept or rewritten) that differ from what a fresh draft session writes from the
    same prefix, token for token, over RSD runs in which the target rewrote some steps: the draft's
    cache after a rejected step must hold the target's tokens, not its own rejected ones."""
    from runtime.core.types import StepRequest

    draft, bad = p.engines.draft, 0

    async def fresh(prefix: tuple[int, ...], cap: int) -> tuple[int, ...]:
        with closing(draft.open("fresh")) as session:
            result = await session.generate(StepRequest(prefix, 1, 0.0, 1.0, cap, 0))
        return result.generations[0].token_ids

    for question, result in zip(QUESTIONS, _rsd_runs(p)):
        prefix = p.request(question).prompt_ids
        for step in result.steps:
            written = p.tokenizer.decode(asyncio.run(fresh(prefix, MIXED["max_step_tokens"])))
            candidate = step.draft_text if step.draft_text is not None else step.text
            bad += not (written == candidate or (step.finished and written.startswith(candidate)))
            prefix += step.token_ids
    return bad


def _crop_by_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deliberately wrong cache rule: trust the cached length, not the cached tokens (what a
    cache that is not cropped after a rejected step does)."""
    monkeypatch.setattr(SeqCache, "reuse", lambda self, ids, keep_new=0: self.crop(
        min(self.length, len(ids) - keep_new)))


SAMPLED = ("rsd", "gsi", "sd", "cos", "bon", "target", "draft")


def _seeded_differences(p: Pipeline) -> list[str]:
    """Methods whose seeded T > 0 output differs between the request alone and the same request
    batched with seven others (other prompts, other seeds), as vLLM's test_deterministic_when_seeded."""
    others = [(f"{i}*{i + 3}", 100 + i) for i in range(7)]
    differ = []
    for method in SAMPLED:
        params = {"method": method, "temperature": 0.8, "top_p": 0.95, "n": 3, "threshold": 0.06, "gamma": 3,
                  "max_tokens": 36, "max_step_tokens": 6}
        alone = p.generate_sync("12*3-4", {**params, "seed": 7}).text

        async def together() -> str:
            runs = [p.generate("12*3-4", {**params, "seed": 7})]
            runs += [p.generate(q, {**params, "seed": seed}) for q, seed in others]
            return (await asyncio.gather(*runs))[0].text

        if asyncio.run(together()) != alone:
            differ.append(method)
    return differ


def test_seeded_sampling_is_the_same_alone_and_batched(tiny_pipeline: Pipeline) -> None:
    assert _seeded_differences(tiny_pipeline) == []


def test_the_seeded_test_catches_a_generator_shared_between_requests(tiny_pipeline: Pipeline,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A deliberately wrong engine: one random generator for every request (draws then depend on
    who else is batched). The greedy-only concurrency test above passes with it."""
    from runtime.engines.torch.generator import TorchLM

    shared = torch.Generator().manual_seed(0)
    monkeypatch.setattr(TorchLM, "_generator", lambda self, seed, index: shared)
    assert len(_seeded_differences(tiny_pipeline)) >= 3


def test_cached_prm_rewards_equal_a_full_recompute(tiny_pipeline: Pipeline) -> None:
    """Step-by-step scoring with KV reuse equals scoring each transcript from scratch, including the
    steps after a draft step was rejected and rewritten (the old version of this test ran at
    threshold 0, where no step is rewritten, and passed with the wrong rule below)."""
    assert _prm_mismatches(tiny_pipeline) == 0


def test_the_prm_recompute_test_catches_a_cache_kept_after_a_rejection(tiny_pipeline: Pipeline,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _crop_by_length(monkeypatch)
    assert _prm_mismatches(tiny_pipeline) > 0


def test_the_draft_cache_after_a_rejected_step_equals_a_fresh_session(tiny_pipeline: Pipeline) -> None:
    assert _draft_mismatches(tiny_pipeline) == 0


def test_the_draft_cache_test_catches_a_cache_kept_after_a_rejection(tiny_pipeline: Pipeline,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The degenerate equalities (threshold 0: no rejection; above 1: the draft's output unused)
    pass with this wrong rule; the test above does not."""
    _crop_by_length(monkeypatch)
    assert _draft_mismatches(tiny_pipeline) > 0


def test_logits_with_cache_equal_full_forward(tiny_pipeline: Pipeline) -> None:
    lm = tiny_pipeline.engines.draft
    from runtime.core.types import LogitsRequest

    async def run() -> tuple:
        ids = tuple(range(3, 15))
        with closing(lm.open("k")) as warm, closing(lm.open("other")) as cold:
            await warm.logits(LogitsRequest(ids[:8], 1))  # warm the cache with a prefix
            cached = (await warm.logits(LogitsRequest(ids, 3))).logits
            fresh = (await cold.logits(LogitsRequest(ids, 3))).logits
        return cached, fresh

    cached, fresh = asyncio.run(run())
    assert cached.shape == (3, lm.vocab_size) and abs(cached - fresh).max() < 1e-4


def test_prm_forwards_batch_steps_of_concurrent_requests(tiny_pipeline: Pipeline) -> None:
    """Steps of concurrent requests end at different tokens; the PRM waits a few loop turns while
    the generators are busy, so one PRM forward scores several requests' steps."""
    p = tiny_pipeline
    sched = p.engines.prm.scheduler
    forwards, rows = sched.forwards, sched.batched_rows
    params = {"method": "rsd", "threshold": 0.0, "max_tokens": 40, "max_step_tokens": 6}

    async def together() -> list:
        return await asyncio.gather(*(p.generate(f"{i}+{i}*3", params) for i in range(12)))

    results = asyncio.run(together())
    steps = sum(len(r.steps) for r in results)
    assert sched.batched_rows - rows == steps  # one PRM row per drafted step
    assert steps / (sched.forwards - forwards) >= 2.0, (steps, sched.forwards - forwards)


def test_a_cancelled_request_leaves_the_engine_consistent(tiny_pipeline: Pipeline) -> None:
    p = tiny_pipeline
    params = {"method": "rsd", "threshold": 0.5, "max_tokens": 40, "max_step_tokens": 8}
    expected = [p.generate_sync(f"{i}*7", params).text for i in range(4)]
    live = {role: getattr(p.engines, role).scheduler.runner.arena.live for role in ("draft", "target", "prm")}

    async def run() -> list:
        tasks = [asyncio.ensure_future(p.generate(f"{i}*7", params)) for i in range(5)]
        for _ in range(30):
            await asyncio.sleep(0)
        tasks[4].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        return done

    done = asyncio.run(run())
    assert isinstance(done[4], asyncio.CancelledError)
    assert [r.text for r in done[:4]] == expected
    for role in ("draft", "target", "prm"):  # every slot the five requests took was freed
        assert getattr(p.engines, role).scheduler.runner.arena.live == live[role], role


def test_no_request_leaves_a_cache_behind(tiny_pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished, failing, invalid, cancelled and abandoned requests: afterwards no engine holds a
    KV cache (every arena slot a session took was freed when the loop closed it)."""
    from runtime.core.errors import RequestValidationError
    from runtime.engines.torch.prm import TorchPRM

    p = tiny_pipeline
    params = {"method": "rsd", "threshold": 0.5, "max_tokens": 40, "max_step_tokens": 8}

    async def broken(*args: object) -> None:
        raise RuntimeError("the PRM failed")

    with monkeypatch.context() as patch:  # an engine failing mid-request, after both LMs ran
        patch.setattr(TorchPRM, "rewards_at", broken)
        for i in range(2):
            with pytest.raises(RuntimeError, match="the PRM failed"):
                p.generate_sync(f"{i}*7", params)
    with pytest.raises(RequestValidationError):
        p.generate_sync("1+1" * p.max_len, params)

    async def run() -> list:
        tasks = [asyncio.ensure_future(p.generate(f"{i}*9", params)) for i in range(6)]
        stream = p.stream("3*3", params)
        await stream.__anext__()
        for _ in range(30):
            await asyncio.sleep(0)
        tasks[4].cancel()
        tasks[5].cancel()
        await stream.aclose()  # a client that went away after the first step
        return await asyncio.gather(*tasks, return_exceptions=True)

    done = asyncio.run(run())
    assert [isinstance(d, asyncio.CancelledError) for d in done] == [False] * 4 + [True] * 2
    for role in ("draft", "target", "prm"):
        assert getattr(p.engines, role).scheduler.runner.arena.live == 0, role
