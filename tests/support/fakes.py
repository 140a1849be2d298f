"""Scripted fake engines for unit tests of the core (the same tests also run on real models).

FakeTokenizer: a fixed list of pieces. FakeLM: a deterministic "language model" whose next-token
distribution is a seeded function of the last token (a Markov chain), with step and token
sessions and exact probabilities, so statistical tests can compute the true distribution.
FakePRM: rewards from a script or a function. Every fake counts its calls. The fakes hold no
per-request state, so each is its own session: `open` returns the fake and counts opens,
`close` counts closes.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from runtime.core.sampling import adjust, is_greedy, logprob_of, process, sample, sampled_logprob
from runtime.core.types import (
    Finish,
    GenerateResult,
    Generation,
    LogitsRequest,
    LogitsResult,
    ProposeRequest,
    ProposeResult,
    RewardRequest,
    RewardResult,
    ScoreRequest,
    ScoreResult,
    StepRequest,
    Usage,
)

DEFAULT_PIECES = ("<eos>", "\n\n", "a", "b", "c", "1", "2", " ")


class CountsSessions:
    """A fake engine is its own session; `calls` counts opens and closes (the leak tests)."""

    __slots__ = ()
    calls: Counter[str]

    def open(self, key: str) -> Self:
        self.calls["open"] += 1
        return self

    def close(self) -> None:
        self.calls["close"] += 1


@dataclass(frozen=True, slots=True)
class FakeTokenizer:
    pieces: tuple[str, ...] = DEFAULT_PIECES
    eos: int = 0

    @property
    def eos_ids(self) -> frozenset[int]:
        return frozenset({self.eos})

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        """Greedy longest match (so "\\n\\n" is one token)."""
        out, i = [], 0
        order = sorted(range(len(self.pieces)), key=lambda k: -len(self.pieces[k]))
        while i < len(text):
            for k in order:
                if k != self.eos and self.pieces[k] and text.startswith(self.pieces[k], i):
                    out.append(k)
                    i += len(self.pieces[k])
                    break
            else:
                raise ValueError(f"cannot encode {text[i]!r}")
        return out

    def encode_prompt(self, text: str) -> list[int]:
        """No special tokens: the fake vocabulary has no BOS."""
        return self.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.pieces[i] for i in ids)

    def piece(self, token_id: int) -> str:
        return self.pieces[token_id]


@dataclass(slots=True)
class FakeLM(CountsSessions):
    """Next-token logits depend only on the last token: logits = table[last]."""

    vocab: int
    seed: int
    sharpness: float = 2.0
    num_params: int = 1000
    max_len: int = 10_000
    calls: Counter[str] = field(default_factory=Counter)
    table: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.table = np.random.default_rng(self.seed).normal(size=(self.vocab, self.vocab)) * self.sharpness

    def next_logits(self, ids: Sequence[int]) -> np.ndarray:
        return self.table[ids[-1] if ids else 0]

    async def generate(self, req: StepRequest) -> GenerateResult:
        from runtime.core.segment import StepSegmenter

        self.calls["generate"] += 1
        rng = np.random.default_rng(req.seed)
        seg = StepSegmenter(lambda i: DEFAULT_PIECES[i] if i < len(DEFAULT_PIECES) else "?", frozenset({0}))
        gens = []
        for _ in range(req.n):
            ids, lps, finish = list(req.prefix), [], Finish.LENGTH
            tail, out = "", []
            while len(out) < req.max_new_tokens:
                # the engine's rule: logit rules, then greedy / tempered top-k top-p (runtime.core.sampling)
                logits = adjust(self.next_logits(ids), req.rules, ids, ban_ends=len(out) < req.min_new_tokens)
                probs = process(logits, req.temperature, req.top_p, req.top_k)
                token = sample(probs, rng)
                if token == 0:
                    finish = Finish.EOS
                    break
                # the log-prob under the distribution sampled from (top-p renormalised), like the engine
                lps.append(sampled_logprob(logits, probs, token, is_greedy(req.temperature, req.top_k)))
                out.append(token)
                ids.append(token)
                end, tail = seg.feed(tail, token)
                if end is Finish.STEP:
                    finish = Finish.STEP
                    break
            gens.append(Generation(tuple(out), finish, float(sum(lps)), tuple(lps) if req.want_logprobs else ()))
        generated = sum(len(g.token_ids) for g in gens)
        return GenerateResult(tuple(gens), Usage(prefill_tokens=len(req.prefix), decode_tokens=generated,
                                                 generated_tokens=generated))

    async def score(self, req: ScoreRequest) -> ScoreResult:
        self.calls["score"] += 1
        out = []
        for cont in req.continuations:
            ids = list(req.prefix)
            total = 0.0
            for token in cont:
                total += logprob_of(self.next_logits(ids), token, req.temperature)
                ids.append(token)
            out.append(total)
        return ScoreResult(tuple(out), Usage(prefill_tokens=sum(map(len, req.continuations))))

    async def logits(self, req: LogitsRequest) -> LogitsResult:
        self.calls["logits"] += 1
        ids = list(req.ids)
        rows = [self.next_logits(ids[: len(ids) - req.count + 1 + j]) for j in range(req.count)]
        return LogitsResult(np.stack(rows).astype(np.float32), Usage(prefill_tokens=req.count))


@dataclass(slots=True)
class ProposingLM(FakeLM):
    """A FakeLM that also draws token-level proposals itself (a DraftProposer, as the torch
    engine does): its own seeded draws from the core's processed distribution, with the rows.
    `draw_temperature` (a mutant) draws at another temperature than the request's."""

    draw_temperature: float | None = None

    async def propose(self, req: ProposeRequest) -> ProposeResult:
        self.calls["propose"] += 1
        rng = np.random.default_rng(req.seed)
        ids, tokens, rows = list(req.prefix), [], []
        while len(tokens) < req.gamma:
            row = self.next_logits(ids)
            z = adjust(row, req.rules, ids, ban_ends=len(tokens) < req.min_new_tokens)
            t = req.temperature if self.draw_temperature is None else self.draw_temperature
            token = sample(process(z, t, req.top_p, req.top_k), rng)
            tokens.append(token)
            rows.append(row)
            ids.append(token)
            if token == 0 or DEFAULT_PIECES[token] == "\n\n":  # an end token or the step delimiter
                break
        return ProposeResult(tuple(tokens), np.stack(rows).astype(np.float32),
                             Usage(prefill_tokens=len(req.prefix), decode_tokens=len(tokens) - 1,
                                   generated_tokens=len(tokens)))


@dataclass(slots=True)
class FakePRM(CountsSessions):
    """Rewards from `script` in order (cycling), or from `fn(question, steps, candidate)`."""

    script: Sequence[float] = (0.9,)
    fn: Callable[[str, tuple[str, ...], str], float] | None = None
    num_params: int = 500
    calls: Counter[str] = field(default_factory=Counter)
    seen: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)

    async def reward(self, req: RewardRequest) -> RewardResult:
        self.seen.append((req.question, req.steps, req.candidates))
        rewards = []
        for cand in req.candidates:
            if self.fn is not None:
                rewards.append(self.fn(req.question, req.steps, cand))
            else:
                rewards.append(self.script[self.calls["scored"] % len(self.script)])
            self.calls["scored"] += 1
        self.calls["reward"] += 1
        return RewardResult(tuple(rewards), Usage(prefill_tokens=len(req.candidates)))


@dataclass(slots=True)
class ScriptedLM(CountsSessions):
    """Returns scripted steps in order (cycling): "text" ends with the delimiter or is cut at the
    cap; a trailing "<eos>" means the step ends with EOS. Counts calls; `prefixes` records inputs.
    With `by_step_index`, the step is chosen by how many delimiters the prefix already holds, so
    concurrent requests each follow the script from its start."""

    tokenizer: FakeTokenizer
    steps: Sequence[str]
    by_step_index: bool = False
    num_params: int = 1000
    max_len: int = 10_000
    calls: Counter[str] = field(default_factory=Counter)
    prefixes: list[tuple[int, ...]] = field(default_factory=list)
    hints: list[tuple[int, ...]] = field(default_factory=list)  # each call's StepRequest.draft_tokens

    async def generate(self, req: StepRequest) -> GenerateResult:
        gens = []
        delimiter = self.tokenizer.encode("\n\n")[0]
        for _ in range(req.n):
            index = req.prefix.count(delimiter) if self.by_step_index else self.calls["step"]
            text = self.steps[index % len(self.steps)]
            self.calls["step"] += 1
            eos = text.endswith("<eos>")
            ids = self.tokenizer.encode(text.removesuffix("<eos>"))
            finish = Finish.EOS if eos else (Finish.STEP if text.endswith("\n\n") else Finish.LENGTH)
            if len(ids) > req.max_new_tokens:
                ids, finish = ids[: req.max_new_tokens], Finish.LENGTH
            gens.append(Generation(tuple(ids), finish, -float(len(ids)), (-1.0,) * len(ids) if req.want_logprobs else ()))
        self.calls["generate"] += 1
        self.prefixes.append(req.prefix)
        self.hints.append(req.draft_tokens)
        return GenerateResult(tuple(gens), Usage(prefill_tokens=len(req.prefix),
                                                 generated_tokens=sum(len(g.token_ids) for g in gens)))

    async def score(self, req: ScoreRequest) -> ScoreResult:
        self.calls["score"] += 1
        return ScoreResult(tuple(-float(len(c)) for c in req.continuations), Usage())
