"""Records passed between the loop, the methods and the engines. All frozen; token ids are tuples."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Finish(str, Enum):
    """Why one generated step ended."""

    STEP = "step"  # a step delimiter ("\n\n") was generated
    EOS = "eos"  # an end-of-sequence token was generated (not included in the step's ids)
    LENGTH = "length"  # the per-step token cap (or the remaining budget) was reached


class PrmKind(str, Enum):  # not StrEnum: Triton 24.10's Python is 3.10
    """The PRM formats, declared once for configs, engines and the engine build.

    value_head (Skywork-o1-Open-PRM): a scalar head, sigmoid at each step separator.
    two_class (Qwen2.5-Math-PRM): a two-logit head, softmax[1] at each `<extra_0>`.
    likelihood: no head; an LM's mean log-likelihood of the step is the reward.
    confidence: no model; the producing model's own token log-probs of the step give the reward
    (runtime.core.confidence).
    """

    VALUE_HEAD = "value_head"
    TWO_CLASS = "two_class"
    LIKELIHOOD = "likelihood"
    CONFIDENCE = "confidence"

    @property
    def has_head(self) -> bool:
        """A trained reward head (a PRM engine of its own), not an LM scoring its own text."""
        return self in (PrmKind.VALUE_HEAD, PrmKind.TWO_CLASS)

    @property
    def has_model(self) -> bool:
        """A model of its own to load (a folder): every format but confidence."""
        return self is not PrmKind.CONFIDENCE


@dataclass(frozen=True, slots=True)
class Usage:
    """Work one engine call did; the stats turn it into FLOPs (2 x params per processed token).

    `forwards` counts the batched model passes the call took part in, one after the other (a pass
    may carry other requests' rows too): the call's sequential depth, what its latency scales with.
    """

    prefill_tokens: int = 0  # tokens run through the model in context passes (cache misses)
    decode_tokens: int = 0  # tokens run through the model one (or a few) at a time while generating
    generated_tokens: int = 0  # tokens sampled
    forwards: int = 0  # model passes the call waited on

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prefill_tokens + other.prefill_tokens,
            self.decode_tokens + other.decode_tokens,
            self.generated_tokens + other.generated_tokens,
            self.forwards + other.forwards,
        )

    @property
    def processed_tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens


@dataclass(frozen=True, slots=True)
class LogitRules:
    """A request's changes to a generator's next-token logits, before temperature, top-k and top-p.

    The same rule everywhere: `runtime.core.sampling.adjust` (reference) and the torch engine's
    `runtime.engines.torch.sampling.RuleState` (tests/test_sampling_agreement.py). "Seen" tokens
    are those of the sequence the model continues (prompt, accepted steps, this step so far), as
    TensorRT-LLM counts them.
    """

    repetition_penalty: float = 1.0  # seen token: logit / p if logit > 0 else logit * p
    presence_penalty: float = 0.0  # seen token: logit - presence
    frequency_penalty: float = 0.0  # seen token: logit - frequency * its count
    bias: tuple[tuple[int, float], ...] = ()  # (token id, added logit)
    bad_words: tuple[tuple[int, ...], ...] = ()  # a word's last id is banned when the rest ends the context
    end_ids: frozenset[int] = frozenset()  # banned while a call is short of its min_new_tokens

    @property
    def penalizes(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def neutral(self) -> bool:
        return not (self.penalizes or self.bias or self.bad_words)


NO_RULES = LogitRules()


@dataclass(frozen=True, slots=True)
class StepRequest:
    """Generate `n` candidate steps continuing `prefix` (prompt + accepted tokens)."""

    prefix: tuple[int, ...]
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    want_logprobs: bool = False
    top_k: int = 0  # 0: off; 1: greedy
    rules: LogitRules = NO_RULES
    min_new_tokens: int = 0  # the rules' end ids are banned for this many tokens
    # A proposal the engine may accept in one pass where its greedy choice agrees (TensorRT-LLM's
    # draft_input_ids on a generation request); the step must be the same as without it.
    draft_tokens: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Generation:
    """One generated step.

    `logprob` is the sum over the step's tokens of log p(token) under the distribution that was
    actually sampled from: softmax(logits / T) restricted to the top-p nucleus when T > 0, and
    the untempered softmax(logits) when T == 0 (a point mass has no useful log-prob).
    """

    token_ids: tuple[int, ...]  # [step_len], EOS excluded
    finish: Finish
    logprob: float = 0.0
    token_logprobs: tuple[float, ...] = ()  # [step_len] when asked for (want_logprobs); sums to logprob


@dataclass(frozen=True, slots=True)
class GenerateResult:
    generations: tuple[Generation, ...]  # [n]
    usage: Usage


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """Log-probability of each continuation given `prefix`, at `temperature` (no top-p)."""

    prefix: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]  # [n][len_i]
    temperature: float


@dataclass(frozen=True, slots=True)
class ScoreResult:
    logprobs: tuple[float, ...]  # [n]
    usage: Usage


@dataclass(frozen=True, slots=True)
class RewardRequest:
    """PRM input: the raw question, the accepted steps so far, and candidate next steps (text)."""

    question: str
    steps: tuple[str, ...]  # accepted steps, delimiter removed
    candidates: tuple[str, ...]  # [n] candidate next steps, delimiter removed
    # [n] each candidate's token log-probs from the model that wrote it (the confidence verifier reads them)
    logprobs: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class RewardResult:
    rewards: tuple[float, ...]  # [n] P(candidate step is correct), in [0, 1]
    usage: Usage


@dataclass(frozen=True, slots=True)
class LogitsRequest:
    """Next-token logits at the last `count` positions of `ids` (count <= len(ids))."""

    ids: tuple[int, ...]
    count: int


@dataclass(frozen=True, slots=True)
class LogitsResult:
    logits: Any  # numpy float32 [count, vocab]; row j predicts the token after ids[: len(ids) - count + 1 + j]
    usage: Usage


@dataclass(frozen=True, slots=True)
class ProposeRequest:
    """Draw up to `gamma` tokens continuing `prefix` as one sequence, stopping after a step end or
    an end token, under the request's rules (a draft proposal for token-level methods)."""

    prefix: tuple[int, ...]
    gamma: int
    temperature: float
    top_p: float
    seed: int
    top_k: int = 0
    rules: LogitRules = NO_RULES
    min_new_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ProposeResult:
    tokens: tuple[int, ...]  # [g <= gamma], an end token included where one was drawn
    logits: Any  # numpy float32 [g, vocab]: the raw next-token logits each token was drawn from
    usage: Usage


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """Verify draft tokens against the target by speculative sampling (one target pass)."""

    prefix: tuple[int, ...]
    draft_tokens: tuple[int, ...]  # [gamma]
    draft_probs: Any  # numpy float32 [gamma, vocab]: the processed distributions they were sampled from
    temperature: float
    top_p: float
    seed: int
    top_k: int = 0
    rules: LogitRules = NO_RULES
    min_new_tokens: int = 0


@dataclass(frozen=True, slots=True)
class VerifyResult:
    tokens: tuple[int, ...]  # accepted draft tokens, then one corrected or bonus token
    num_accepted: int
    usage: Usage
    logprobs: tuple[float, ...] = ()  # [len(tokens)] under the target's processed distribution (if known)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What a method decided for one step."""

    token_ids: tuple[int, ...]
    finish: Finish
    source: str  # "draft" | "target" | "ensemble": which model wrote the step's tokens
    reward: float | None = None  # PRM reward of the judged draft step (or of the chosen step)
    accepted: bool | None = None  # for judged methods: was the draft's proposal accepted
    draft_token_ids: tuple[int, ...] = ()  # the rejected draft step, when one was regenerated
    drafted_tokens: int = 0  # draft tokens proposed in this step (token-level methods)
    accepted_draft_tokens: int = 0  # of which accepted
    token_logprobs: tuple[float, ...] = ()  # [len(token_ids)] when the request asked for log-probs


@dataclass(frozen=True, slots=True)
class StepEvent:
    """One decided step, as streamed to clients."""

    index: int
    text: str
    token_ids: tuple[int, ...]
    source: str
    reward: float | None
    accepted: bool | None
    draft_text: str | None = None  # the rejected draft step, when the target regenerated it
    finished: bool = False
    finish_reason: str | None = None  # eos | stop | max_tokens | max_steps | boxed | context (last event only)
    token_logprobs: tuple[float, ...] = ()  # [len(token_ids)] when asked for
    draft_tokens: int = 0  # this step's share of RequestStats.draft_tokens_drafted
    accepted_draft_tokens: int = 0  # and of draft_tokens_accepted
    stats: dict[str, Any] | None = field(default=None)  # request stats (last event only)
