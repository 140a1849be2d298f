"""The step loop: one async generator per request, the same in-process, in tests and in Triton.

    with engines.open(request_id, needs) as sessions:   # closed however the request ends
        while not finished:
            outcome = await method.step(context)   # the method decides one step
            event = state.commit(outcome)          # append, count, check the stop rules
            yield event

It holds no tensors and no transport code; the request's engine state (KV caches, the ids a
server holds) lives in its sessions, never on the engines. Concurrent requests each run this
loop; engines batch whatever they are handed at the same time, which gives in-flight batching
everywhere.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from runtime.core.boxed import has_boxed
from runtime.core.confidence import ConfidenceVerifier
from runtime.core.errors import EngineError, RequestValidationError
from runtime.core.lookahead import Lookahead
from runtime.core.methods import Engines, StepContext, get_method
from runtime.core.methods.calls import EngineCalls
from runtime.core.methods.rsd import BudgetWindow
from runtime.core.methods.rule import StepRule
from runtime.core.params import RequestParams
from runtime.core.protocols import Tokenizer
from runtime.core.segment import StepSegmenter, prm_step_text
from runtime.core.stats import RequestStats, draft_tokens
from runtime.core.stopping import StopScanner, logit_rules
from runtime.core.types import Finish, Generation, StepEvent, StepOutcome


@dataclass(frozen=True, slots=True)
class Request:
    request_id: str
    question: str  # what the PRM sees
    prompt_ids: tuple[int, ...]  # what the generators see (the question in the prompt template)
    params: RequestParams


@dataclass(slots=True)
class RequestState:
    """Per-request mutable state, owned by one loop."""

    request: Request
    max_len: int
    tokens: list[int] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    stats: RequestStats = field(default_factory=RequestStats)
    stops: StopScanner = field(default_factory=lambda: StopScanner(()))

    def step_cap(self, tokens: int | None = None) -> int:
        """The next step's token cap, after `tokens` output tokens (default: those output so far)."""
        p = self.request.params
        tokens = len(self.tokens) if tokens is None else tokens
        left_total = p.max_tokens - tokens
        left_context = self.max_len - len(self.request.prompt_ids) - tokens
        return max(0, min(p.max_step_tokens, left_total, left_context))

    def after(self, gen: Generation, decode: Callable[[Sequence[int]], str]) -> tuple[int, int] | None:
        """(token cap, min new tokens) of the step after `gen` if it were accepted as it is, or None
        when it would end the request (StepContext.speculate). A stop string found in its text
        counts as an end; one spanning two steps is missed (the early call is then cancelled)."""
        p = self.request.params
        tokens = len(self.tokens) + len(gen.token_ids)
        text = decode(gen.token_ids) if p.stop_at_boxed or p.stop_words else ""
        if any(w and w in text for w in p.stop_words):
            return None
        if self._reason(gen.finish, bool(gen.token_ids), text, tokens, len(self.steps) + 1) is not None:
            return None
        return self.step_cap(tokens), max(0, p.min_tokens - tokens)

    def commit(self, outcome: StepOutcome, text: str, draft_text: str | None, delimiter: str,
               decode: Callable[[Sequence[int]], str]) -> StepEvent:
        p = self.request.params
        if p.return_log_probs and len(outcome.token_logprobs) != len(outcome.token_ids):
            raise EngineError(f"{outcome.source}: reported {len(outcome.token_logprobs)} log-probs for "
                              f"{len(outcome.token_ids)} tokens")
        stop = self.stops.scan(text, outcome.token_ids, decode, len(self.tokens), p.min_tokens)
        if stop is not None:  # the output ends right after the stop string
            text, kept = stop
            outcome = replace(outcome, token_ids=outcome.token_ids[:kept], token_logprobs=outcome.token_logprobs[:kept])
        self.tokens.extend(outcome.token_ids)
        self.steps.append(prm_step_text(text, delimiter))
        self.stats.observe_step(outcome)
        reason = "stop" if stop is not None else self.finish_reason(outcome, text)
        drafted, accepted = draft_tokens(outcome)
        return StepEvent(len(self.steps) - 1, text, outcome.token_ids, outcome.source, outcome.reward,
                         outcome.accepted, draft_text, finished=reason is not None, finish_reason=reason,
                         token_logprobs=outcome.token_logprobs, draft_tokens=drafted, accepted_draft_tokens=accepted)

    def finish_reason(self, outcome: StepOutcome, text: str) -> str | None:
        """Hard limits (max_tokens, context, max_steps) always end the request; an end token or a
        boxed answer only once min_tokens tokens are out (an engine that cannot hold end tokens
        back, e.g. TensorRT-LLM on an EOS id other than end_id, then just goes on)."""
        return self._reason(outcome.finish, bool(outcome.token_ids), text, len(self.tokens), len(self.steps))

    def _reason(self, finish: Finish, wrote: bool, text: str, tokens: int, steps: int) -> str | None:
        p = self.request.params
        short = tokens < p.min_tokens
        if finish == Finish.EOS and not short:
            return "eos"
        if p.stop_at_boxed and not short and has_boxed(text):
            return "boxed"
        if tokens >= p.max_tokens:
            return "max_tokens"
        if len(self.request.prompt_ids) + tokens >= self.max_len:
            return "context"
        if steps >= p.max_steps:
            return "max_steps"
        if not wrote and finish == Finish.LENGTH:
            return "max_tokens"  # no room left to write anything
        return None


async def run_request(
    request: Request,
    engines: Engines,
    tokenizer: Tokenizer,
    segmenter: StepSegmenter,
    max_len: int,
    window: BudgetWindow | None = None,
) -> AsyncIterator[StepEvent]:
    """Yield one StepEvent per decided step; the last has `finished` set and carries the stats.
    `window`: the server's recent budgeted steps (the pipeline's), for target_budget_scope server."""
    method = get_method(request.params.method)
    p = request.params
    # what a target budget counts over: the server's recent steps, or this request's (all of them)
    budget = (window or BudgetWindow()) if p.target_budget_scope == "server" else BudgetWindow(p.max_steps + 1)
    # the request's engine state lives in its sessions, closed when it finishes, fails or is cancelled
    with engines.open(request.request_id, method.needs(request.params)) as sessions:
        if len(request.prompt_ids) >= max_len:
            raise RequestValidationError(
                "text_input", f"prompt is {len(request.prompt_ids)} tokens; the models accept at most {max_len - 1}")
        state = RequestState(request, max_len, stops=StopScanner(request.params.stop_words))
        rules = logit_rules(request.params, tokenizer)
        rng = np.random.default_rng(request.params.seed)
        reads_logprobs = isinstance(engines.prm, ConfidenceVerifier)  # the PRM reads the steps' log-probs
        ahead = Lookahead(lambda role, usage: state.stats.observe_call(role, usage, engines.role(role).num_params))
        calls = EngineCalls(sessions, state.stats, ahead)
        started = time.perf_counter()
        try:
            while True:
                rule = StepRule(request.params, rules, len(state.tokens), reads_logprobs)
                ctx = StepContext(request.params, request.question,
                                  request.prompt_ids + tuple(state.tokens), tuple(state.steps), state.step_cap(),
                                  tokenizer, segmenter, rng, rule, calls, *budget.history(),
                                  lambda gen: state.after(gen, tokenizer.decode))
                outcome = await method.step(ctx)
                text = tokenizer.decode(outcome.token_ids)
                draft_text = tokenizer.decode(outcome.draft_token_ids) if outcome.draft_token_ids else None
                event = state.commit(outcome, text, draft_text, segmenter.delimiter, tokenizer.decode)
                if outcome.reward is not None and p.target_budget < 1:
                    budget.record(outcome.reward, outcome.source == "target")
                if event.finished:
                    state.stats.wall_time_s = time.perf_counter() - started
                    event = _with_stats(event, state.stats)
                yield event
                if event.finished:
                    return
        finally:
            await ahead.close()  # nothing of this request in flight when its sessions close


def _with_stats(event: StepEvent, stats: RequestStats) -> StepEvent:
    return replace(event, stats=stats.to_dict())
