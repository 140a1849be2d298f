"""Per-request and aggregated statistics. Pure data; exported to logs, JSON and Triton metrics elsewhere.

Definitions:
- processed tokens (per model) = prefill (context passes, cache misses) + decode tokens.
- forwards (per model) = model passes the request's calls waited on, one after the other (each
  may batch other requests' rows too); decode-bound calls take about one per generated token.
- estimated FLOPs (per model) = 2 x parameters x processed tokens (the dense forward-pass cost).
- step acceptance rate = accepted draft steps / drafted steps (steps a judge decided on: rsd, gsi).
- token acceptance rate = accepted draft tokens / drafted tokens (RSD: tokens of accepted vs all
  draft steps, the reference's definition; sd/cos: accepted vs proposed draft tokens).
- target share of steps / tokens = steps / tokens written by the target over all steps / tokens.
- target calls = calls made to the target model (generate, score, logits, verify).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime.core.types import StepOutcome, Usage


def draft_tokens(outcome: StepOutcome) -> tuple[int, int]:
    """(draft tokens proposed, of which accepted) in one step. Judged step methods (rsd, gsi): the
    tokens of the drafted step, and all of them when it was accepted; token-level methods (sd,
    cos): the proposed and accepted draft tokens; other methods: none."""
    drafted, accepted = outcome.drafted_tokens, outcome.accepted_draft_tokens
    if outcome.accepted is not None:
        n = len(outcome.token_ids)
        drafted += n if outcome.accepted else len(outcome.draft_token_ids)
        accepted += n if outcome.accepted else 0
    return drafted, accepted


@dataclass(slots=True)
class ModelCounters:
    calls: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    generated_tokens: int = 0
    forwards: int = 0
    flops: float = 0.0

    def add(self, usage: Usage, num_params: int) -> None:
        self.calls += 1
        self.prefill_tokens += usage.prefill_tokens
        self.decode_tokens += usage.decode_tokens
        self.generated_tokens += usage.generated_tokens
        self.forwards += usage.forwards
        self.flops += 2.0 * num_params * usage.processed_tokens

    def merge(self, other: ModelCounters) -> None:
        self.calls += other.calls
        self.prefill_tokens += other.prefill_tokens
        self.decode_tokens += other.decode_tokens
        self.generated_tokens += other.generated_tokens
        self.forwards += other.forwards
        self.flops += other.flops


@dataclass(slots=True)
class RequestStats:
    """Accumulates while a request runs; `to_dict` is the JSON form in every output."""

    models: dict[str, ModelCounters] = field(default_factory=dict)
    steps: int = 0
    tokens: int = 0
    steps_by_source: dict[str, int] = field(default_factory=dict)
    tokens_by_source: dict[str, int] = field(default_factory=dict)
    steps_drafted: int = 0
    steps_accepted: int = 0
    draft_tokens_drafted: int = 0
    draft_tokens_accepted: int = 0
    wall_time_s: float = 0.0
    requests: int = 1

    def observe_call(self, role: str, usage: Usage, num_params: int) -> None:
        self.models.setdefault(role, ModelCounters()).add(usage, num_params)

    def observe_step(self, outcome: StepOutcome) -> None:
        n = len(outcome.token_ids)
        self.steps += 1
        self.tokens += n
        self.steps_by_source[outcome.source] = self.steps_by_source.get(outcome.source, 0) + 1
        self.tokens_by_source[outcome.source] = self.tokens_by_source.get(outcome.source, 0) + n
        if outcome.accepted is not None:
            self.steps_drafted += 1
            self.steps_accepted += int(outcome.accepted)
        drafted, accepted = draft_tokens(outcome)
        self.draft_tokens_drafted += drafted
        self.draft_tokens_accepted += accepted

    @classmethod
    def total(cls, parts: Iterable[RequestStats]) -> RequestStats:
        """Sum of several requests' stats (wall time is summed; throughput uses the run's clock)."""
        out = cls(requests=0)
        for part in parts:
            out.merge(part)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestStats:
        """Inverse of `to_dict` (derived rates are recomputed, not read)."""
        models = {role: ModelCounters(**m) for role, m in data.get("models", {}).items()}
        plain = {name: data[name] for name in ("steps", "tokens", "steps_drafted", "steps_accepted",
                                               "draft_tokens_drafted", "draft_tokens_accepted",
                                               "wall_time_s", "requests") if name in data}
        return cls(models=models, steps_by_source=dict(data.get("steps_by_source", {})),
                   tokens_by_source=dict(data.get("tokens_by_source", {})), **plain)

    def merge(self, other: RequestStats) -> None:
        for role, counters in other.models.items():
            self.models.setdefault(role, ModelCounters()).merge(counters)
        for name in ("steps", "tokens", "steps_drafted", "steps_accepted", "draft_tokens_drafted",
                     "draft_tokens_accepted", "requests"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.steps_by_source, other.steps_by_source),
                             (self.tokens_by_source, other.tokens_by_source)):
            for source, count in theirs.items():
                mine[source] = mine.get(source, 0) + count
        self.wall_time_s += other.wall_time_s

    @property
    def step_acceptance_rate(self) -> float | None:
        return self.steps_accepted / self.steps_drafted if self.steps_drafted else None

    @property
    def token_acceptance_rate(self) -> float | None:
        return self.draft_tokens_accepted / self.draft_tokens_drafted if self.draft_tokens_drafted else None

    @property
    def target_step_share(self) -> float:
        return self.steps_by_source.get("target", 0) / self.steps if self.steps else 0.0

    @property
    def target_token_share(self) -> float:
        return self.tokens_by_source.get("target", 0) / self.tokens if self.tokens else 0.0

    @property
    def total_flops(self) -> float:
        return sum(c.flops for c in self.models.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "steps": self.steps,
            "tokens": self.tokens,
            "steps_by_source": dict(self.steps_by_source),
            "tokens_by_source": dict(self.tokens_by_source),
            "steps_drafted": self.steps_drafted,
            "steps_accepted": self.steps_accepted,
            "draft_tokens_drafted": self.draft_tokens_drafted,
            "draft_tokens_accepted": self.draft_tokens_accepted,
            "step_acceptance_rate": self.step_acceptance_rate,
            "token_acceptance_rate": self.token_acceptance_rate,
            "target_step_share": self.target_step_share,
            "target_token_share": self.target_token_share,
            "target_calls": self.models["target"].calls if "target" in self.models else 0,
            "models": {
                role: {
                    "calls": c.calls,
                    "prefill_tokens": c.prefill_tokens,
                    "decode_tokens": c.decode_tokens,
                    "generated_tokens": c.generated_tokens,
                    "forwards": c.forwards,
                    "flops": c.flops,
                }
                for role, c in sorted(self.models.items())
            },
            "total_flops": self.total_flops,
            "wall_time_s": self.wall_time_s,
        }
