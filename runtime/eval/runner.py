"""`rsd eval`: every method (and RSD at every threshold) on the same problems, graded.

Per run: accuracy, target share of steps and tokens, tokens and estimated FLOPs per model, wall
time and throughput. A problem that fails (e.g. its prompt is too long) is recorded with its
error and counted wrong; it never stops the run.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.core.errors import RsdError
from runtime.core.methods.rsd import BudgetWindow
from runtime.core.params import RequestParams
from runtime.core.stats import RequestStats
from runtime.eval.datasets import Problem
from runtime.eval.grading import grade_detail
from runtime.pipeline import Pipeline, Result

log = logging.getLogger(__name__)

THRESHOLD_METHODS = ("rsd",)  # methods swept over --thresholds


@dataclass(frozen=True, slots=True)
class EvalRun:
    label: str  # "rsd@0.7", "target", ...
    params: RequestParams

    @property
    def threshold(self) -> float | None:
        return self.params.threshold if self.params.method in THRESHOLD_METHODS else None

    @property
    def target_budget(self) -> float | None:
        return self.params.target_budget if self.params.method in THRESHOLD_METHODS else None


@dataclass(frozen=True, slots=True)
class ProblemOutcome:
    problem_id: str
    correct: bool
    predicted: str | None
    gold: str
    finish_reason: str | None
    steps: int
    target_steps: int
    error: str | None
    text: str


@dataclass(frozen=True, slots=True)
class RunSummary:
    label: str
    method: str
    threshold: float | None
    target_budget: float | None  # RSD's cap on the target's share of steps (1: none)
    problems: int
    correct: int
    accuracy: float
    errors: int
    target_step_share: float
    target_token_share: float
    step_acceptance_rate: float | None
    tokens_per_model: dict[str, dict[str, int]]  # role -> prefill / decode / generated
    flops_per_model: dict[str, float]
    calls_per_model: dict[str, int]
    total_flops: float
    flops_per_problem: float
    output_tokens: int
    wall_time_s: float
    tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_runs(methods: Sequence[str], thresholds: Sequence[float], base: RequestParams,
              budgets: Sequence[float] = (1.0,)) -> list[EvalRun]:
    """One run per method; RSD once per threshold and target budget ("rsd@0.7", "rsd@0.7 b0.3")."""
    runs = []
    for method in methods:
        if method in THRESHOLD_METHODS:
            runs += [EvalRun(f"{method}@{t:g}" + (f" b{b:g}" if b < 1 else ""),
                             dataclasses.replace(base, method=method, threshold=t, target_budget=b))
                     for t in thresholds for b in budgets]
        else:
            runs.append(EvalRun(method, dataclasses.replace(base, method=method, target_budget=1.0)))
    return runs


async def run_one(pipeline: Pipeline, problems: Sequence[Problem], run: EvalRun, concurrency: int,
                  on_done: Any = None) -> tuple[RunSummary, list[ProblemOutcome]]:
    """All problems through one run, `concurrency` requests in flight at a time. Each run starts with an
    empty budget window (target_budget_scope server), as a fresh server would."""
    gate = asyncio.Semaphore(concurrency)
    pipeline = dataclasses.replace(pipeline, budget_window=BudgetWindow())

    async def solve(problem: Problem) -> Result | RsdError:
        async with gate:
            try:
                return await pipeline.generate(problem.question, run.params)
            except RsdError as exc:  # recorded per problem; the run goes on
                log.warning("%s on %s failed: %s", run.label, problem.id, exc)
                return exc
            finally:
                if on_done is not None:
                    on_done()

    started = time.perf_counter()
    results = await asyncio.gather(*(solve(p) for p in problems))
    wall = time.perf_counter() - started
    outcomes = [_outcome(p, r) for p, r in zip(problems, results)]
    stats = RequestStats.total(RequestStats.from_dict(r.stats) for r in results if isinstance(r, Result))
    return _summary(run, outcomes, stats, wall), outcomes


def _outcome(problem: Problem, result: Result | RsdError) -> ProblemOutcome:
    if isinstance(result, RsdError):
        return ProblemOutcome(problem.id, False, None, problem.answer, None, 0, 0, str(result), "")
    verdict = grade_detail(problem, result.text)
    return ProblemOutcome(problem.id, verdict.correct, verdict.predicted, problem.answer, result.finish_reason,
                          len(result.steps), sum(s.source == "target" for s in result.steps), None, result.text)


def _summary(run: EvalRun, outcomes: list[ProblemOutcome], stats: RequestStats, wall: float) -> RunSummary:
    n = len(outcomes)
    correct = sum(o.correct for o in outcomes)
    tokens = {role: {"prefill": c.prefill_tokens, "decode": c.decode_tokens, "generated": c.generated_tokens}
              for role, c in sorted(stats.models.items())}
    return RunSummary(
        label=run.label, method=run.params.method, threshold=run.threshold, target_budget=run.target_budget,
        problems=n, correct=correct,
        accuracy=correct / n if n else 0.0, errors=sum(o.error is not None for o in outcomes),
        target_step_share=stats.target_step_share, target_token_share=stats.target_token_share,
        step_acceptance_rate=stats.step_acceptance_rate, tokens_per_model=tokens,
        flops_per_model={role: c.flops for role, c in sorted(stats.models.items())},
        calls_per_model={role: c.calls for role, c in sorted(stats.models.items())},
        total_flops=stats.total_flops, flops_per_problem=stats.total_flops / n if n else 0.0,
        output_tokens=stats.tokens, wall_time_s=wall, tokens_per_s=stats.tokens / wall if wall > 0 else 0.0,
    )


def summary_table(summaries: Sequence[RunSummary]) -> str:
    """A markdown table of the runs (what BENCHMARKS.md shows)."""
    lines = ["| run | accuracy | target steps | target tokens | step accept | FLOPs / problem | "
             "tokens/s | wall s |", "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        accept = f"{s.step_acceptance_rate:.0%}" if s.step_acceptance_rate is not None else "-"
        lines.append(f"| {s.label} | {s.accuracy:.1%} ({s.correct}/{s.problems}) | {s.target_step_share:.0%} | "
                     f"{s.target_token_share:.0%} | {accept} | {s.flops_per_problem:.3g} | {s.tokens_per_s:.0f} | "
                     f"{s.wall_time_s:.1f} |")
    return "\n".join(lines)
