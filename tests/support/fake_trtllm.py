"""A fake TensorRT-LLM engine behind the real `tensorrt_llm` tensor contract, for CPU tests.

Small seeded numpy tables stand in for the networks: an LM's next-token logits depend on the last
two tokens (logits = A[t-1] + B[t-2] (+ noise N[t-1] for a draft) + boosts), a PRM engine's
context-logit row at t on tokens t and t-1. Every request is validated against the real contract
(tests/support/trtllm_contract.py: names, dtypes, shapes) and the real backend's rules
(tests/support/trtllm_rules.py, each citing its source: required config parameters, end_id range,
embedding_bias and draft_logits widths, build flags for logits, which outputs a response carries
and that the model's config declares them), and parsed here independently of the BLS's own
parser. Behaviours follow TensorRT-LLM where the sources say so, and otherwise take the option that
tests the BLS's robustness:
- the end token is not returned (generation stops before it); stop-word tokens are returned;
- n sequences come back as n responses tagged sequence_index;
- with draft_input_ids (engines with max_draft_len > 0) the draft tokens are verified (greedy:
  token match; with draft_logits: speculative sampling) and the request ends there, with the
  accepted tokens and one more, whatever request_output_len says;
- context logits only from engines built with gather_context_logits (which excludes max_draft_len
  and turns KV-cache reuse off, so they are always the whole prompt's);
- return_perf_metrics adds the ten perf outputs to every response, requested or not
  (kv_cache_reused_blocks: those blocks);
- output_ids and sequence_length always; cum_log_probs / output_log_probs, context_logits,
  generation_logits only when asked for and requested; sequence_index only when n > 1; no
  batch_index (one row per request);
- embedding_bias is added to the logits (it must be exactly the engine's vocabulary wide).
A fake engine folder holds `fake_engine.json` (FakeSpec) and the `rsd_engine_manifest.json`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.core.errors import EngineError
from runtime.core.sampling import process, sample, speculative_verify
from runtime.engines.triton.contract import parse_stop_words

from . import trtllm_rules
from .trtllm_contract import check_request

FAKE_SPEC = "fake_engine.json"
POSITIONS = 11
IMPLEMENTED = {"input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "stop_words_list",
               "temperature", "runtime_top_k", "runtime_top_p", "seed", "num_return_sequences", "return_log_probs",
               "return_context_logits", "return_generation_logits", "exclude_input_in_output", "draft_input_ids",
               "draft_logits", "return_perf_metrics", "embedding_bias"}


@dataclass(frozen=True, slots=True)
class FakeSpec:
    kind: str  # lm | prm
    vocab_size: int  # tokens the engine accepts; also the LM's logits width (its model's config vocab_size)
    seed: int
    width: int = 0  # prm: context-logit row width (1: a narrowed value head)
    noise: float = 0.0  # lm: scale of the draft's deviation from the shared tables
    boosts: tuple[tuple[int, float], ...] = ()  # lm: (token, added logit), e.g. the step delimiter
    gather_context_logits: bool = False
    gather_generation_logits: bool = False
    max_draft_len: int = 0
    tokens_per_block: int = 4
    tokens: int = 0  # the tokenizer's size (0: vocab_size): rows past it are padding a trained model never picks

    @classmethod
    def load(cls, engine_dir: Path) -> FakeSpec:
        data = json.loads((engine_dir / FAKE_SPEC).read_text())
        data["boosts"] = tuple(tuple(b) for b in data.get("boosts", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class FakeNet:
    spec: FakeSpec
    a: np.ndarray  # [V, W] by the last token
    b: np.ndarray  # [V, W] by the token before
    c: np.ndarray  # [V, W] by the one before that (LM only)
    pos: np.ndarray  # [POSITIONS, W] by the length (breaks greedy cycles; LM only)
    bias: np.ndarray  # [W]

    @classmethod
    def build(cls, spec: FakeSpec) -> FakeNet:
        rng = np.random.default_rng(spec.seed)
        rows = spec.tokens or spec.vocab_size  # the tables are drawn for the tokenizer's ids, then padded
        width = spec.width if spec.kind == "prm" else rows
        a, b, c = (scale * rng.normal(size=(rows, width)) for scale in (1.0, 0.6, 0.4))
        pos = 0.5 * rng.normal(size=(POSITIONS, width))
        if spec.noise:
            a = a + spec.noise * np.random.default_rng(spec.seed + 1000).normal(size=a.shape)
        bias = np.zeros(width)
        for token, value in spec.boosts:
            bias[token] += value
        if rows < spec.vocab_size:
            pad = spec.vocab_size - rows
            a, b, c = (np.pad(t, ((0, pad), (0, pad if spec.kind == "lm" else 0))) for t in (a, b, c))
            if spec.kind == "lm":
                pos, bias = np.pad(pos, ((0, 0), (0, pad))), np.pad(bias, (0, pad), constant_values=-30.0)
        return cls(spec, a, b, c, pos, bias)

    def next_logits(self, ids: tuple[int, ...]) -> np.ndarray:  # [V]
        back = (0, 0) + ids
        row = self.a[back[-1]] + self.b[back[-2]] + self.c[back[-3]] + self.pos[len(ids) % POSITIONS] + self.bias
        return row.astype(np.float32)

    def context_rows(self, ids: tuple[int, ...]) -> np.ndarray:  # [L, width]
        if self.spec.kind == "lm":
            return np.stack([self.next_logits(ids[:t + 1]) for t in range(len(ids))])
        prev = (0,) + ids[:-1]
        return (self.a[list(ids)] + self.b[list(prev)]).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Request:
    ids: tuple[int, ...]
    output_len: int
    end_id: int
    pad_id: int
    stop_words: tuple[tuple[int, ...], ...]
    greedy: bool
    temperature: float
    top_p: float
    seed: int
    n: int
    logprobs: bool
    context_logits: bool
    generation_logits: bool
    exclude_input: bool
    draft: tuple[int, ...]
    draft_logits: np.ndarray | None
    perf_metrics: bool = False
    bias: np.ndarray | None = None  # embedding_bias, squeezed to [V] as the backend does


def parse_request(t: Mapping[str, np.ndarray], exclude_default: bool) -> Request:
    check_request(t)
    unsupported = sorted(set(t) - IMPLEMENTED)
    if unsupported:
        raise EngineError(f"{unsupported[0]}: a real tensorrt_llm input the fake engine does not implement")

    def value(name: str, default: Any) -> Any:
        return np.asarray(t[name]).reshape(-1)[0].item() if name in t else default

    length = value("input_lengths", None)
    ids = tuple(int(x) for x in np.asarray(t["input_ids"])[0, :length])
    draft = tuple(int(x) for x in np.asarray(t["draft_input_ids"])[0]) if "draft_input_ids" in t else ()
    logits = np.asarray(t["draft_logits"])[0] if "draft_logits" in t else None
    bias = np.asarray(t["embedding_bias"])[0] if "embedding_bias" in t else None  # BE squeezeTensor(.., 1)
    stop = parse_stop_words(np.asarray(t["stop_words_list"])) if "stop_words_list" in t else ()
    return Request(ids, int(value("request_output_len", 0)), int(value("end_id", -1)), int(value("pad_id", 0)), stop,
                   value("runtime_top_k", 0) == 1, float(value("temperature", 1.0)), float(value("runtime_top_p", 1.0)),
                   int(value("seed", 0)), int(value("num_return_sequences", 1)), bool(value("return_log_probs", False)),
                   bool(value("return_context_logits", False)), bool(value("return_generation_logits", False)),
                   bool(value("exclude_input_in_output", exclude_default)), draft, logits,
                   bool(value("return_perf_metrics", False)), bias)


@dataclass(slots=True)
class FakeEngine:
    """One fake `tensorrt_llm` model: `respond` returns the responses of one request."""

    net: FakeNet
    exclude_default: bool = True
    reuse: bool = False
    _blocks: set[tuple[int, ...]] = field(default_factory=set)  # token prefixes of cached full blocks

    @classmethod
    def load(cls, params: Mapping[str, str]) -> FakeEngine:
        trtllm_rules.check_model_parameters(params)
        check_parameters(params)
        spec = FakeSpec.load(Path(params["gpt_model_path"]))
        return cls(FakeNet.build(spec), params["exclude_input_in_output"] == "true",
                   params["enable_kv_cache_reuse"] == "true")

    def __post_init__(self) -> None:
        # an engine built to return context logits never reuses KV blocks, whatever the config says
        # ("KV cache reuse disabled because model was built to return context logits",
        # trtGptModelInflightBatching.cpp fixExecutorConfig, TensorRT-LLM b35ac1b6)
        self.reuse = self.reuse and not self.net.spec.gather_context_logits

    def respond(self, tensors: Mapping[str, np.ndarray],
                requested: frozenset[str] = frozenset()) -> list[dict[str, np.ndarray]]:
        """The responses the real backend would send: the outputs its flags and `requested` (the
        request's requested output names; empty: every output) make it emit."""
        req = parse_request(tensors, self.exclude_default)
        self._check(req)
        out = [self._sequence(req, i) for i in range(req.n)]
        if req.context_logits:
            out[0]["context_logits"] = self._context(req.ids)[None]
        wanted = requested or frozenset(name for response in out for name in response)
        out = [{k: v for k, v in response.items() if k in trtllm_rules.ALWAYS_OUTPUTS or k in wanted}
               for response in out]
        if req.perf_metrics:  # every response, requested or not
            for response in out:
                response.update(self._perf(req))
        self._store(req.ids)
        return out

    def _perf(self, req: Request) -> dict[str, np.ndarray]:
        block = self.net.spec.tokens_per_block
        reused = self._reused(req.ids) // block if self.reuse else 0
        total = -(-len(req.ids) // block)
        return trtllm_rules.perf_outputs(reused, total - reused, total, 0, len(req.draft))

    def _check(self, req: Request) -> None:
        spec = self.net.spec
        if spec.kind == "lm" and req.ids and max(req.ids) >= spec.vocab_size:  # the fake's own tables' size
            raise EngineError(f"input_ids: token id {max(req.ids)} >= vocabulary {spec.vocab_size}")
        trtllm_rules.check_request(
            vocab_size=spec.width if spec.kind == "prm" else spec.vocab_size, end_id=req.end_id,
            output_len=req.output_len, ids=req.ids, draft=req.draft, draft_logits=req.draft_logits, bias=req.bias,
            max_draft_len=spec.max_draft_len, context_logits=req.context_logits,
            generation_logits=req.generation_logits, gather_context=spec.gather_context_logits,
            gather_generation=spec.gather_generation_logits)
        if spec.kind == "prm" and req.output_len != 1:
            raise EngineError("request_output_len: the fake PRM engine only scores (1)")

    def _sequence(self, req: Request, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([req.seed, index])
        tokens, rows, logp = self._verified(req, rng) if req.draft else ([], [], 0.0)
        token_logps: list[float] = [0.0] * len(tokens)
        # a target request with draft tokens ends after one engine step: the accepted tokens + one
        # (EX trtGptModelInflightBatching.cpp updateRequests, isDraftTokensExternal() && hasDraftTokens())
        while len(tokens) < req.output_len and not _ends(tokens, req.stop_words) and not self._ended(tokens, req) \
                and not req.draft:
            row = self.net.next_logits(req.ids + tuple(tokens))
            if req.bias is not None:
                row = row + req.bias.astype(np.float32)
            dist = process(row, 1.0 if req.greedy else req.temperature, req.top_p)
            token = int(np.argmax(row)) if req.greedy else sample(dist, rng)
            rows.append(row)
            logp += float(np.log(dist[token]))
            token_logps.append(float(np.log(dist[token])))
            tokens.append(token)
        if req.end_id in tokens:  # generation ends at the end token, which is not returned
            del tokens[tokens.index(req.end_id):]
        seq = (() if req.exclude_input else req.ids) + tuple(tokens)
        ids = np.full((1, 1, max(len(seq), 1)), req.pad_id, dtype=np.int32)
        ids[0, 0, :len(seq)] = seq
        out = {"output_ids": ids, "sequence_length": np.array([[len(seq)]], np.int32)}
        if req.n > 1:
            out["sequence_index"] = np.array([[index]], np.int32)
        if req.logprobs:
            out["cum_log_probs"] = np.array([[logp]], np.float32)
            lps = np.full((1, 1, max(len(seq), 1)), -1.0, np.float32)  # padded with -1, as the backend does
            lps[0, 0, len(seq) - len(tokens):len(seq)] = token_logps[:len(tokens)]
            out["output_log_probs"] = lps
        if req.generation_logits:
            out["generation_logits"] = np.stack(rows)[None, None].astype(np.float32)
        return out

    def _verified(self, req: Request, rng: np.random.Generator) -> tuple[list[int], list[np.ndarray], float]:
        bias = req.bias.astype(np.float32) if req.bias is not None else np.float32(0.0)
        rows = [self.net.next_logits(req.ids + req.draft[:i]) + bias for i in range(len(req.draft) + 1)]
        if req.greedy or req.draft_logits is None:
            tokens = []
            for i, row in enumerate(rows):
                tokens.append(int(np.argmax(row)))
                if i == len(req.draft) or tokens[-1] != req.draft[i] or tokens[-1] == req.end_id:
                    break
        else:
            target = np.stack([process(r, req.temperature, req.top_p) for r in rows])
            q = np.exp(req.draft_logits.astype(np.float64))
            q /= q.sum(axis=-1, keepdims=True)
            tokens = list(speculative_verify(req.draft, q[:, :target.shape[1]], target, rng)[0])
        return tokens, rows[:len(tokens)], 0.0

    def _ended(self, tokens: list[int], req: Request) -> bool:
        return req.end_id in tokens

    def _context(self, ids: tuple[int, ...]) -> np.ndarray:
        rows = self.net.context_rows(ids)
        return rows[self._reused(ids):] if self.reuse else rows

    def _reused(self, ids: tuple[int, ...]) -> int:
        block = self.net.spec.tokens_per_block
        reused = 0
        while reused + block < len(ids) and ids[:reused + block] in self._blocks:
            reused += block
        return reused

    def _store(self, ids: tuple[int, ...]) -> None:
        block = self.net.spec.tokens_per_block
        if self.reuse:
            self._blocks.update(ids[:end] for end in range(block, len(ids) + 1, block))


def _ends(tokens: list[int], words: tuple[tuple[int, ...], ...]) -> bool:
    return any(len(tokens) >= len(w) and tuple(tokens[-len(w):]) == w for w in words)


def check_parameters(params: Mapping[str, str]) -> None:
    """What this project's layout must set for the BLS (ours, on top of the backend's own rules in
    trtllm_rules.check_model_parameters)."""
    expected = {"gpt_model_type": "inflight_fused_batching", "max_beam_width": "1", "exclude_input_in_output": "true"}
    for key, want in expected.items():
        if params.get(key) != want:
            raise EngineError(f"parameters.{key}: expected {want!r}, got {params.get(key)!r}")
    for key in ("gpt_model_path", "gpu_device_ids", "max_tokens_in_paged_kv_cache", "kv_cache_free_gpu_mem_fraction",
                "enable_kv_cache_reuse", "batch_scheduler_policy", "executor_worker_path"):
        if not params.get(key) or params[key].startswith("${"):
            raise EngineError(f"parameters.{key}: missing")
