"""A draft proposal for speculative methods (sd, cos): up to gamma tokens continuing `base`, each
with its raw logits row and the processed distribution q it was drawn from, stopping where the
step would end.

Two ways, one result:
- `_in_one_call`: the session drafts the tokens itself (a DraftProposer: the torch engine, the
  torch sub-model), on the same rule; q is recomputed here from its rows;
- `_token_by_token`: one logits call per token (sessions that only expose logits, TensorRT-LLM's
  draft), each token drawn here from q with the request's generator.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.core.methods.base import StepContext
from runtime.core.sampling import sample
from runtime.core.types import LogitsRequest


@dataclass(slots=True)
class Proposal:
    tokens: list[int] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)  # raw logits rows, one per token
    qs: list[npt.NDArray[np.float64]] = field(default_factory=list)  # the distributions they were drawn from

    def add(self, token: int, row: Any, q: npt.NDArray[np.float64]) -> None:
        self.tokens.append(token)
        self.rows.append(row)
        self.qs.append(q)

    def probs(self) -> npt.NDArray[np.float64]:
        """[len(tokens), vocab] (the draft distributions a verifier checks the tokens against)."""
        return np.stack(self.qs) if self.qs else np.zeros((0, 0))


async def propose(ctx: StepContext, role: str, base: tuple[int, ...], gamma: int, emitted: int,
                  ends: Callable[[list[int]], bool]) -> Proposal:
    """`emitted`: the step's tokens before `base`'s end; `ends(tokens)`: the step would end after them."""
    if gamma > 0 and ctx.calls.proposes(role):
        return await _in_one_call(ctx, role, base, gamma, emitted, ends)
    return await _token_by_token(ctx, role, base, gamma, emitted, ends)


async def _in_one_call(ctx: StepContext, role: str, base: tuple[int, ...], gamma: int, emitted: int,
                       ends: Callable[[list[int]], bool]) -> Proposal:
    result = await ctx.calls.propose(role, ctx.rule.propose_request(base, gamma, emitted, ctx.next_seed()))
    proposal = Proposal()
    for token, row in zip(result.tokens[:gamma], result.logits):
        if proposal.tokens and ends(proposal.tokens):
            break
        ids = base + tuple(proposal.tokens)
        proposal.add(token, row, ctx.rule.processed(row, ids, emitted + len(proposal.tokens))[1])
    return proposal


async def _token_by_token(ctx: StepContext, role: str, base: tuple[int, ...], gamma: int, emitted: int,
                          ends: Callable[[list[int]], bool]) -> Proposal:
    proposal = Proposal()
    while len(proposal.tokens) < gamma and not (proposal.tokens and ends(proposal.tokens)):
        ids = base + tuple(proposal.tokens)
        row = (await ctx.calls.logits(role, LogitsRequest(ids, 1)))[0]
        q = ctx.rule.processed(row, ids, emitted + len(proposal.tokens))[1]
        proposal.add(sample(q, ctx.rng), row, q)
    return proposal
