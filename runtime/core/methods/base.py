"""What a method is, and the per-step context the loop hands it.

A method is a stateless strategy: `step(ctx)` decides one reasoning step and returns a
`StepOutcome`. It declares the engines it needs so the loop can reject a request up front
instead of branching on method names. All per-request state lives in `StepContext` and the
request's engine `Sessions`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from runtime.core.errors import EngineError, RequestValidationError
from runtime.core.lookahead import Lookahead
from runtime.core.params import RequestParams
from runtime.core.protocols import (
    DraftProposer,
    Engine,
    ScorerSession,
    Session,
    StepSession,
    Tokenizer,
    TokenSession,
    TokenVerifier,
)
from runtime.core.sampling import adjust, is_greedy, process, sample, sampled_logprob
from runtime.core.segment import StepSegmenter, prm_step_text
from runtime.core.stats import RequestStats
from runtime.core.types import (
    NO_RULES,
    GenerateResult,
    Generation,
    LogitRules,
    LogitsRequest,
    LogitsResult,
    ProposeRequest,
    RewardRequest,
    RewardResult,
    ScoreRequest,
    ScoreResult,
    StepOutcome,
    StepRequest,
    VerifyRequest,
)


@dataclass(frozen=True, slots=True)
class Needs:
    """Engines a method needs for given parameters: roles and the interfaces they must offer."""

    step_roles: tuple[str, ...] = ()  # roles used through a StepSession
    token_roles: tuple[str, ...] = ()  # roles used through a TokenSession
    prm: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.step_roles + self.token_roles + (("prm",) if self.prm else ())))


class Method(Protocol):
    name: ClassVar[str]

    def needs(self, params: RequestParams) -> Needs: ...

    async def step(self, ctx: StepContext) -> StepOutcome: ...


@dataclass(frozen=True, slots=True)
class Engines:
    """The models one pipeline serves, by role. `draft` and `target` share a tokenizer."""

    draft: Any = None
    target: Any = None
    prm: Engine | None = None

    def role(self, name: str) -> Any:
        engine = getattr(self, name)
        if engine is None:
            raise RequestValidationError("method", f"needs a {name} model, and none is configured")
        return engine

    def open(self, key: str, needs: Needs) -> Sessions:
        """One session per role the method needs; the caller closes them (`with` or `close`)."""
        sessions = Sessions(self)
        try:
            for name in needs.roles:
                sessions.by_role[name] = self.role(name).open(key)
            sessions.check(needs)
        except BaseException:
            sessions.close()
            raise
        return sessions


@dataclass(slots=True)
class Sessions:
    """One request's sessions on the engines, by role: its KV caches and the ids engines hold."""

    engines: Engines
    by_role: dict[str, Session] = field(default_factory=dict)

    def role(self, name: str) -> Any:
        """The session of a role `check` found offering what the method calls."""
        return self.by_role[name]

    def check(self, needs: Needs) -> None:
        for name in needs.step_roles:
            if not isinstance(self.by_role[name], StepSession):
                raise RequestValidationError("method", f"the {name} engine cannot generate steps")
        for name in needs.token_roles:
            if not isinstance(self.by_role[name], TokenSession):
                raise RequestValidationError("method", f"the {name} engine does not expose token logits")
        if needs.prm and not isinstance(self.by_role["prm"], ScorerSession):
            raise RequestValidationError("method", "the prm engine cannot score steps")

    def close(self) -> None:
        while self.by_role:
            self.by_role.popitem()[1].close()

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@dataclass(slots=True)
class StepContext:
    """Everything a method may use to decide one step; records engine usage into `stats`."""

    params: RequestParams
    question: str
    prefix: tuple[int, ...]  # prompt + accepted tokens
    steps: tuple[str, ...]  # accepted steps as the PRM sees them
    max_new_tokens: int  # cap for this step (per-step cap, remaining budget, context)
    sessions: Sessions
    tokenizer: Tokenizer
    segmenter: StepSegmenter
    rng: np.random.Generator
    stats: RequestStats
    rules: LogitRules = NO_RULES  # the request's logit rules (runtime.core.loop.logit_rules)
    generated: int = 0  # tokens the request has output before this step
    ahead: Lookahead | None = None  # calls started early for the next step (runtime.core.lookahead)
    # (cap, min new tokens) of the next step if a generation were accepted now; None: it would end the request
    next_step: Callable[[Generation], tuple[int, int] | None] | None = None

    def min_new_tokens(self, emitted: int = 0) -> int:
        """Tokens this step must still write before an end id may be drawn (`emitted` already)."""
        return max(0, self.params.min_tokens - self.generated - emitted)

    def processed(self, row: npt.NDArray[np.floating[Any]], ids: tuple[int, ...], emitted: int
                  ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(adjusted logits, the distribution to sample from) for the token after `ids`, `emitted`
        tokens into this step: the rule every generator call follows (runtime.core.sampling)."""
        p = self.params
        z = adjust(row, self.rules, ids, ban_ends=self.min_new_tokens(emitted) > 0)
        return z, process(z, p.temperature, p.top_p, p.top_k)

    def logprob(self, z: npt.NDArray[np.float64], probs: npt.NDArray[np.float64], token: int) -> float:
        return sampled_logprob(z, probs, token, is_greedy(self.params.temperature, self.params.top_k))

    def next_seed(self) -> int:
        return int(self.rng.integers(0, 2**63 - 1))

    def text(self, ids: tuple[int, ...]) -> str:
        return self.tokenizer.decode(ids)

    def _step_request(self, prefix: tuple[int, ...], cap: int, min_new: int, n: int = 1, logprobs: bool = False,
                      draft_tokens: tuple[int, ...] = ()) -> StepRequest:
        """The one way a step request is built: `generate` now, `speculate` for the next step (an
        early call is used only when it equals what `generate` builds then, seed aside)."""
        p = self.params
        return StepRequest(prefix, n, p.temperature, p.top_p, cap, self.next_seed(), logprobs or p.return_log_probs,
                           p.top_k, self.rules, min_new, draft_tokens)

    async def generate(self, role: str, n: int = 1, logprobs: bool = False,
                       draft_tokens: tuple[int, ...] = ()) -> tuple[Generation, ...]:
        """`draft_tokens`: a proposal the engine may check in one pass (StepRequest.draft_tokens)."""
        req = self._step_request(self.prefix, self.max_new_tokens, self.min_new_tokens(), n, logprobs, draft_tokens)
        early = await self.ahead.take(role, req) if self.ahead is not None else None
        result: GenerateResult = early if early is not None else await self.sessions.role(role).generate(req)
        self._record(role, result.usage)
        if len(result.generations) != n:
            raise EngineError(f"{role} returned {len(result.generations)} generations, asked for {n}")
        return result.generations

    def speculate(self, role: str, gen: Generation) -> None:
        """Start `role`'s next step now, as if `gen` were accepted as it is; the next step's
        `generate` uses it if it asks the same. Nothing when accepting `gen` would end the request."""
        if self.ahead is None or self.next_step is None or self.ahead.pending(role):
            return
        after = self.next_step(gen)
        if after is None:
            return
        req = self._step_request(self.prefix + gen.token_ids, *after)
        self.ahead.start(role, req, self.sessions.role(role).generate(req))

    async def _settled(self, role: str) -> Any:
        """The role's session, once no early call is pending on it."""
        if self.ahead is not None:
            await self.ahead.settle(role)
        return self.sessions.role(role)

    async def score(self, role: str, continuations: tuple[tuple[int, ...], ...], temperature: float) -> tuple[float, ...]:
        req = ScoreRequest(self.prefix, continuations, temperature)
        result: ScoreResult = await (await self._settled(role)).score(req)
        self._record(role, result.usage)
        return result.logprobs

    async def rewards(self, candidates: tuple[tuple[int, ...], ...]) -> tuple[float, ...]:
        texts = tuple(prm_step_text(self.text(ids), self.segmenter.delimiter) for ids in candidates)
        result: RewardResult = await self.sessions.role("prm").reward(RewardRequest(self.question, self.steps, texts))
        self._record("prm", result.usage)
        if len(result.rewards) != len(candidates):
            raise EngineError(f"prm returned {len(result.rewards)} rewards for {len(candidates)} steps")
        return result.rewards

    async def logits(self, role: str, ids: tuple[int, ...], count: int) -> npt.NDArray[np.float32]:
        result: LogitsResult = await (await self._settled(role)).logits(LogitsRequest(ids, count))
        self._record(role, result.usage)
        rows: npt.NDArray[np.float32] = result.logits
        return rows

    async def propose(self, role: str, base: tuple[int, ...], gamma: int, emitted: int,
                      ends: Callable[[list[int]], bool]) -> tuple[list[int], list[Any], list[npt.NDArray[np.float64]]]:
        """Up to `gamma` proposal tokens continuing `base` (`emitted` tokens into this step), with each
        token's raw logits row and the processed distribution q it was drawn from; the proposal stops
        where `ends(tokens)` says the step would end. A DraftProposer session draws them in one call
        (q is recomputed here from its rows with the same rule); other sessions take one logits call
        per token, drawn here."""
        session = await self._settled(role)
        native = gamma > 0 and isinstance(session, DraftProposer)
        given: list[tuple[int, Any]] = []
        if native:
            p = self.params
            result = await session.propose(ProposeRequest(base, gamma, p.temperature, p.top_p, self.next_seed(),
                                                          p.top_k, self.rules, self.min_new_tokens(emitted)))
            self._record(role, result.usage)
            given = list(zip(result.tokens, result.logits))
        tokens: list[int] = []
        rows: list[Any] = []
        qs: list[npt.NDArray[np.float64]] = []
        while len(tokens) < gamma and not (tokens and ends(tokens)) and (not native or len(tokens) < len(given)):
            ids = base + tuple(tokens)
            token, row = given[len(tokens)] if native else (-1, (await self.logits(role, ids, 1))[0])
            q = self.processed(row, ids, emitted + len(tokens))[1]
            tokens.append(token if native else sample(q, self.rng))
            rows.append(row)
            qs.append(q)
        return tokens, rows, qs

    async def verify(self, role: str, prefix: tuple[int, ...], tokens: tuple[int, ...],
                     probs: npt.NDArray[np.float64], emitted: int = 0
                     ) -> tuple[tuple[int, ...], int, tuple[float, ...]]:
        """(emitted tokens, accepted draft tokens, their log-probs if the verifier knows them)."""
        from runtime.core.verify import ReferenceVerifier  # local: verify imports this module's types

        session = await self._settled(role)
        verifier = session if isinstance(session, TokenVerifier) else ReferenceVerifier(session)
        p = self.params
        req = VerifyRequest(prefix, tokens, probs, p.temperature, p.top_p, self.next_seed(), p.top_k,
                            self.rules, self.min_new_tokens(emitted))
        result = await verifier.verify(req)
        self._record(role, result.usage)
        return result.tokens, result.num_accepted, result.logprobs

    def _record(self, role: str, usage: Any) -> None:
        self.stats.observe_call(role, usage, self.sessions.engines.role(role).num_params)
