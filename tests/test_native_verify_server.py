"""Verification where the KV cache lives, through a real tritonserver (CPU, the embedded models).

The torch sub-model answers TensorRT-LLM's draft_input_ids (+ draft_logits) on the request's own
cache with the core's rule; `NativeVerifyLM` (the BLS's target for the torch backend) reads its
reply. Against `ReferenceVerifier` on the in-process target, given the same inputs and seeds:
token-identical at T = 0 and at T > 0 (the same uniforms: both draw from
numpy's default_rng(seed)), over sd-like rounds on one session (so the server's cache is reused
and cropped between rounds); a deliberately wrong rule (swapped ratio, accept-all) disagrees.
Also: bytes moved per sd / cos round and per GSI step before (context logits, one request per
proposed token or candidate) and after, with the same greedy output; greedy RSD with the
draft hint through the server writes the same text with fewer target forwards.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtime.core.verify as verify_module
from runtime.core.sampling import adjust, process, sample
from runtime.core.types import LogitRules, LogitsRequest, VerifyRequest
from runtime.engines.triton.lm import TritonLM
from runtime.task import heldout_problems
from support.hints import without_hints
from support.scrape import metrics_text

pytestmark = [pytest.mark.server, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "configs" / "default.yaml"
TOKEN = "native-verify-test-token"
GAMMA = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    from runtime.deploy.config import load_serve_config
    from runtime.deploy.repo import render_repository
    from runtime.deploy.server import TritonServer, free_ports

    root = tmp_path_factory.mktemp("native_verify")
    http, grpc, metrics = free_ports(3)
    cfg = load_serve_config(ROOT / "configs" / "triton" / "torch_cpu.yaml").with_overrides(
        pipeline=PIPELINE, http_port=http, grpc_port=grpc, metrics_port=metrics, sub_request_timeout_s=60.0)
    repo = render_repository(cfg, root / "repo")
    triton = TritonServer(repo, http, grpc, metrics, cfg.address, exit_timeout_s=10,
                          log_file=root / "tritonserver.log", internal_token=TOKEN)
    triton.start(ready_timeout_s=300)
    try:
        yield cfg
    finally:
        triton.stop()


@pytest.fixture(scope="module")
def local():  # type: ignore[no-untyped-def]
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config

    return build_pipeline(load_config(PIPELINE))


@dataclass(slots=True)
class Metered:
    """A transport that counts the bytes of every tensor sent and received, per model."""

    inner: Any
    bytes: dict[str, int]
    requests: dict[str, int]

    def release(self, model: str, key: str) -> None:
        self.inner.release(model, key)

    async def infer(self, model: str, inputs: Any, outputs: Any, key: str, kind: str = "") -> list[dict[str, np.ndarray]]:
        replies = await self.inner.infer(model, inputs, outputs, key, kind)
        moved = sum(v.nbytes for v in inputs.values()) + sum(v.nbytes for r in replies for v in r.values())
        self.bytes[model] = self.bytes.get(model, 0) + moved
        self.requests[model] = self.requests.get(model, 0) + 1
        return replies


def on_server(cfg, work: Callable[[Any, Metered], Awaitable[Any]]) -> Any:  # type: ignore[no-untyped-def]
    """Run `work(bls_pipeline, transport)` here, its sub-requests going to the server's sub-models."""
    from runtime.assembly.bls import build_bls_pipeline
    from runtime.config import load_config
    from runtime.in_server.grpc_transport import GrpcTransport

    async def run() -> Any:
        grpc = GrpcTransport(f"127.0.0.1:{cfg.grpc_port}", 60.0, token=TOKEN)
        transport = Metered(grpc, {}, {})
        try:
            return await work(build_bls_pipeline(load_config(PIPELINE), transport), transport)
        finally:
            await grpc.close()

    return asyncio.run(run())


@dataclass(slots=True)
class Legacy(TritonLM):
    """A TritonLM that sends none of the on-cache requests (what the BLS sent before)."""

    @property
    def on_cache(self) -> bool:
        return False


def before(pipeline):  # type: ignore[no-untyped-def]
    """The BLS engines as they were: context logits, a request per proposed token or candidate,
    verification by the reference rule over those logits, no hints."""
    from runtime.core.methods import Engines

    def plain(lm: Any) -> Legacy:
        return Legacy(**{f.name: getattr(lm, f.name) for f in fields(Legacy)})

    e = pipeline.engines
    return replace(pipeline, engines=Engines(plain(e.draft), plain(e.target), e.prm))


# ---- native verification against the core's rule ----

RULES = LogitRules(repetition_penalty=1.3, presence_penalty=0.2)


async def _rounds(local, remote_target, problem: str, temperature: float, seed: int,
                  rules: LogitRules) -> list[tuple[VerifyRequest, Any, Any]]:  # type: ignore[no-untyped-def]
    """sd-like rounds: the in-process draft proposes (q under the request's rules), both verifiers
    verify, the reference's tokens extend the prefix. (request, reference result, server result)."""
    rng = np.random.default_rng(seed)
    prefix = local.request(problem).prompt_ids
    draft, target = local.engines.draft.open("d"), local.engines.target.open("t")
    reference = verify_module.ReferenceVerifier(target)
    out = []
    try:
        for _ in range(8):
            tokens: list[int] = []
            probs = []
            for _ in range(GAMMA):
                ids = prefix + tuple(tokens)
                row = (await draft.logits(LogitsRequest(ids, 1))).logits[0]
                q = process(adjust(row, rules, ids), PROPOSAL_TEMPERATURE, 0.9)
                tokens.append(sample(q, rng))
                probs.append(q)
            req = VerifyRequest(prefix, tuple(tokens), np.stack(probs), temperature, 0.9,
                                int(rng.integers(0, 2**63 - 1)), rules=rules)
            want, got = await reference.verify(req), await remote_target.verify(req)
            out.append((req, want, got))
            prefix += want.tokens
            if local.tokenizer.eos_ids & set(want.tokens):
                break
    finally:
        draft.close()
        target.close()
    return out


# Proposals are drawn hotter than the target verifies (a valid proposal: q is what they were drawn
# from), so that rejections at the first token, at later ones, and none all occur even with a
# draft that mostly agrees with the target.
PROPOSAL_TEMPERATURE = 3.0


def _collect(cfg, local, temperature: float, rules: LogitRules = LogitRules(), problems: int = 12):  # type: ignore[no-untyped-def]
    async def work(pipeline: Any, _: Metered) -> list:
        rounds = []
        for i, p in enumerate(heldout_problems(problems)):
            session = pipeline.engines.target.open(f"verify-{temperature}-{i}")
            rounds += await _rounds(local, session, p.question, temperature, i, rules)
        return rounds

    return on_server(cfg, work)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_the_torch_sub_model_verifies_like_the_core_rule(server, local, temperature: float) -> None:
    rounds = _collect(server, local, temperature)
    assert len(rounds) >= 40
    for req, want, got in rounds:
        assert (got.tokens, got.num_accepted) == (want.tokens, want.num_accepted), req.draft_tokens
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    accepted = {want.num_accepted for _, want, _ in rounds}
    assert {0, GAMMA} <= accepted and len(accepted) >= 4, accepted  # rejections at the first, later tokens, none


def test_the_torch_sub_model_applies_the_request_rules_when_verifying(server, local) -> None:
    for temperature in (0.0, 0.8):
        for req, want, got in _collect(server, local, temperature, RULES, problems=4):
            assert (got.tokens, got.num_accepted) == (want.tokens, want.num_accepted)


@pytest.mark.filterwarnings("ignore:divide by zero")  # the wrong rule emits tokens the target gives p = 0
@pytest.mark.parametrize("mutant", ["swapped ratio", "accept all"])
def test_the_comparison_rejects_a_wrong_rule(server, local, mutant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same comparison with the reference verifying by a wrong rule disagrees with the server."""
    real = verify_module.speculative_verify

    def wrong(tokens, q, p, rng):  # type: ignore[no-untyped-def]
        if mutant == "accept all":
            return tuple(tokens) + (int(np.argmax(p[len(tokens)])),), len(tokens)
        return real(tokens, p[:len(tokens)], np.concatenate([q, p[len(tokens):]]), rng)  # min(1, q/p)

    monkeypatch.setattr(verify_module, "speculative_verify", wrong)
    rounds = _collect(server, local, 0.8 if mutant == "swapped ratio" else 0.0, problems=6)
    differ = sum((got.tokens, got.num_accepted) != (want.tokens, want.num_accepted) for _, want, got in rounds)
    assert differ >= 5, (differ, len(rounds))


# ---- bytes moved per round ----

def _run(cfg, params: dict, old: bool, problems: int = 6):  # type: ignore[no-untyped-def]
    async def work(pipeline: Any, transport: Metered) -> tuple[list[str], dict[str, int], dict[str, int], int]:
        pipe = before(pipeline) if old else pipeline
        texts, rounds = [], 0
        for p in heldout_problems(problems):
            result = await pipe.generate(p.question, params)
            texts.append(result.text)
            rounds += result.stats["models"]["target"]["calls"]
        return texts, transport.bytes, transport.requests, rounds

    return on_server(cfg, work)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("method", ["sd", "cos", "gsi"])
def test_bytes_per_round_drop_and_the_output_stays(server, local, method: str, temperature: float) -> None:
    params = {"method": method, "n": 4, "max_tokens": 60, "temperature": temperature, "seed": 1}
    old_texts, old_bytes, old_requests, old_rounds = _run(server, params, old=True)
    texts, new_bytes, new_requests, rounds = _run(server, params, old=False)
    assert texts == [local.generate_sync(p.question, params).text for p in heldout_problems(6)]
    if temperature == 0.0:  # sampling: the proposals are drawn in the engine now, another random stream
        assert texts == old_texts
    per_round = sum(new_bytes.values()) / rounds
    old_per_round = sum(old_bytes.values()) / old_rounds
    print(f"\n{method} T={temperature}: bytes per round {old_per_round:.0f} -> {per_round:.0f} ({old_rounds} -> {rounds} target calls); "
          f"requests {old_requests} -> {new_requests}")
    assert per_round < old_per_round / 3
    if method in ("sd", "cos"):  # a proposal is one draft request, not one per token
        assert new_requests["draft"] < old_requests["draft"] / 2


# ---- the draft hint over the BLS ----

def _forwards(cfg) -> float:  # type: ignore[no-untyped-def]
    text = metrics_text(f"http://127.0.0.1:{cfg.metrics_port}/metrics")
    match = re.search(r'^rsd_engine_forwards\{model="target"\} ([0-9.eE+]+)$', text, re.M)
    assert match, "no target forwards metric"
    return float(match.group(1))


def test_greedy_rsd_over_the_server_writes_the_same_text_with_the_hint_in_fewer_target_forwards(server, local) -> None:
    from runtime.clients.client import RsdClient

    problems = heldout_problems(24)
    params = {"method": "rsd", "threshold": 0.9}
    runs, forwards = [], []
    for hinted in (True, False):
        start = _forwards(server)

        async def work(pipeline: Any, _: Metered) -> list[Any]:
            pipe = pipeline if hinted else without_hints(pipeline)
            return [await pipe.generate(p.question, params) for p in problems]

        runs.append(on_server(server, work))
        forwards.append(_forwards(server) - start)
    hinted_texts, plain_texts = ([r.text for r in rs] for rs in runs)
    assert hinted_texts == plain_texts == [local.generate_sync(p.question, params).text for p in problems]
    assert sum(s.source == "target" for r in runs[1] for s in r.steps) >= 10  # the target rewrites steps
    print(f"\nrsd over the BLS: target forwards {forwards[1]:.0f} without the hint, {forwards[0]:.0f} with it")
    assert forwards[0] < 0.6 * forwards[1], forwards
    client = RsdClient(f"127.0.0.1:{server.grpc_port}", "grpc", timeout_s=60.0)  # the real rsd BLS model
    assert [client.generate(p.question, params).text for p in problems[:6]] == hinted_texts[:6]


# ---- the BLS's shared sub-request stream (runtime.in_server.grpc_transport) ----

def test_the_shared_stream_routes_answers_and_errors_to_their_calls(server) -> None:
    """Concurrent PRM calls on one stream each get their own row's reward (equal to a stream of
    its own), two of them under one cache key; an error answer fails only its call, at once: a PRM
    call that fails while a long target call of the same cache key is pending on the same stream
    (RSD's lookahead does this with a draft call) gets its own error, and the other call its own
    answer (the old routing, by request id = cache key, handed the PRM's error to that call, since Triton's
    stream names no model in an error, and left the PRM call waiting for its timeout); after the
    stream breaks, the next call opens a new one."""
    from runtime.engines.triton.contract import (
        LM_OUTPUTS,
        PRM_OUTPUTS,
        LmCall,
        PrmCall,
        lm_request_tensors,
        parse_lm_reply,
        prm_request_tensors,
    )
    from runtime.in_server.grpc_transport import GrpcTransport

    rows = [tuple(range(4, 12 + 3 * i)) for i in range(8)]

    def tensors(row: tuple[int, ...]) -> dict[str, np.ndarray]:
        return prm_request_tensors(PrmCall((row,), ((len(row) - 1,),), ()))

    async def run() -> None:
        url = f"127.0.0.1:{server.grpc_port}"
        shared, alone = GrpcTransport(url, 60.0, token=TOKEN), GrpcTransport(url, 60.0, token=TOKEN, shared_stream=False)
        try:
            want = [(await alone.infer("prm", tensors(r), PRM_OUTPUTS, f"alone-{i}"))[0]["step_rewards"]
                    for i, r in enumerate(rows)]
            calls = [shared.infer("prm", tensors(r), PRM_OUTPUTS, f"shared-{i}") for i, r in enumerate(rows)]
            calls.append(shared.infer("prm", tensors(rows[0]), PRM_OUTPUTS, "shared-0"))  # same key in flight
            got = await asyncio.gather(*calls)
            for reply, expected in zip(got, want + [want[0]]):
                np.testing.assert_allclose(reply[0]["step_rewards"], expected, atol=1e-6)

            # a long target call (32 continuations of 400 tokens scored) and a failing PRM call of one
            # cache key, pending together on the stream
            conts = tuple(tuple(5 + (i * 7 + j) % 90 for j in range(400)) for i in range(32))
            long = LmCall(tuple(range(3, 12)), 1, end_id=2, continuations=conts)
            wanted = parse_lm_reply(await alone.infer("target", lm_request_tensors(long), LM_OUTPUTS, "k-alone", "score"))
            draft = asyncio.ensure_future(shared.infer("target", lm_request_tensors(long), LM_OUTPUTS, "k", "score"))
            await asyncio.sleep(0.01)
            # an input the PRM does not declare: Triton core refuses it before the model runs, and its
            # stream error carries the request id alone (no model name)
            bad = {**tensors(rows[1]), "bogus": np.zeros((1, 1), np.int32)}
            with pytest.raises(Exception, match="bogus"):
                await shared.infer("prm", bad, PRM_OUTPUTS, "k")
            assert not draft.done(), "the target call ended before the PRM error came: nothing was tested"
            assert parse_lm_reply(await draft).cum_logprobs == pytest.approx(wanted.cum_logprobs, abs=1e-4)
            stream = shared._stream
            assert stream is not None and not stream.pending
            await stream.close()  # as when the server stops: the stream is broken
            assert stream.broken
            again = await shared.infer("prm", tensors(rows[2]), PRM_OUTPUTS, "shared-2")
            assert shared._stream is not stream
            np.testing.assert_allclose(again[0]["step_rewards"], want[2], atol=1e-6)
            # rows of two requests in one call: the row_keys BYTES tensor travels as Triton expects
            keyed = prm_request_tensors(PrmCall((rows[3], rows[4]), ((len(rows[3]) - 1,), (len(rows[4]) - 1,)),
                                                ("shared-3", "shared-4")))
            (both,) = await shared.infer("prm", keyed, PRM_OUTPUTS, "shared-3")
            np.testing.assert_allclose(both["step_rewards"][:, :1], np.concatenate([want[3], want[4]]), atol=1e-6)
        finally:
            for t in (shared, alone):
                await t.close()

    asyncio.run(run())


def test_sub_requests_of_another_client_are_refused(server) -> None:
    """Without the server's token a sub-model refuses the request (only the rsd BLS may call it)."""
    from runtime.engines.triton.contract import PRM_OUTPUTS, PrmCall, prm_request_tensors
    from runtime.in_server.grpc_transport import GrpcTransport

    async def run() -> None:
        wrong = GrpcTransport(f"127.0.0.1:{server.grpc_port}", 60.0, token="not-the-token")
        try:
            with pytest.raises(Exception, match="internal model"):
                await wrong.infer("prm", prm_request_tensors(PrmCall(((4, 5, 6),), ((2,),), ())), PRM_OUTPUTS, "x")
        finally:
            await wrong.close()

    asyncio.run(run())
