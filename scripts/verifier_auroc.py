"""How well each verifier tells the draft's right steps from its wrong ones (AUROC), on the engines we serve.

The trained PRM (configs/default.yaml) against the confidence verifier (runtime.core.confidence:
the draft's own token log-probs, reduced by mean, min or last), on the same draft steps of the
held-out embedded problems, each labelled right or wrong by runtime.task.check_step:
- gold prefix: the draft's greedy next step after every prefix of the gold solution (what RSD
  judges when the answer so far is right);
- rollouts: every step of the draft's own greedy solutions.
AUROC is the probability that a right step outscores a wrong one (ties count half).

    .venv/bin/python scripts/verifier_auroc.py [--problems 300] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.assembly.torch import build_pipeline  # noqa: E402
from runtime.config import load_config  # noqa: E402
from runtime.eval.separation import auroc  # noqa: E402
from runtime.core.confidence import REDUCTIONS, confidence  # noqa: E402
from runtime.core.segment import prm_step_text  # noqa: E402
from runtime.core.types import RewardRequest, StepRequest  # noqa: E402
from runtime.pipeline import Pipeline  # noqa: E402
from runtime.task import Problem, check_step  # noqa: E402
from runtime.task.problems import STEP_SEPARATOR, heldout_problems  # noqa: E402

MAX_STEP_TOKENS = 24  # configs/default.yaml's max_step_tokens


async def judged_step(pipe: Pipeline, problem: Problem, done: int) -> tuple[bool, float, tuple[float, ...]]:
    """The draft's greedy step after `done` gold steps: (right, PRM reward, its token log-probs)."""
    history = problem.steps[:done]
    text = pipe.prompt_template.replace("{question}", problem.question) + "".join(
        s + STEP_SEPARATOR for s in history)
    draft = pipe.engines.draft.open(f"{problem.id}.{done}")
    prm = pipe.engines.prm.open(f"{problem.id}.{done}")
    try:
        req = StepRequest(tuple(pipe.tokenizer.encode_prompt(text)), 1, 0.0, 1.0, MAX_STEP_TOKENS, 0,
                          want_logprobs=True)
        (gen,) = (await draft.generate(req)).generations
        step = prm_step_text(pipe.tokenizer.decode(gen.token_ids), STEP_SEPARATOR)
        (reward,) = (await prm.reward(RewardRequest(problem.question, history, (step,)))).rewards
    finally:
        draft.close()
        prm.close()
    return check_step(problem, list(history), step), reward, gen.token_logprobs


async def rollout(pipe: Pipeline, problem: Problem) -> list[tuple[bool, float, tuple[float, ...]]]:
    """Every step of the draft's greedy solution (RSD at threshold 0 keeps them all, each scored)."""
    result = await pipe.generate(problem.question, {"method": "rsd", "threshold": 0.0, "return_log_probs": True})
    steps = [prm_step_text(s.text, STEP_SEPARATOR) for s in result.steps]
    return [(check_step(problem, steps[:i], step), float(e.reward or 0.0), e.token_logprobs)
            for i, (step, e) in enumerate(zip(steps, result.steps))]


async def gather(pipe: Pipeline, problems: list[Problem], concurrency: int) -> dict[str, list]:
    gate = asyncio.Semaphore(concurrency)

    async def limited(coro):  # type: ignore[no-untyped-def]
        async with gate:
            return await coro

    gold = await asyncio.gather(*(limited(judged_step(pipe, p, k)) for p in problems for k in range(len(p.steps))))
    rolled = await asyncio.gather(*(limited(rollout(pipe, p)) for p in problems))
    return {"gold prefix": list(gold), "rollouts": [s for steps in rolled for s in steps]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=300, help="held-out problems (default 300)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    pipe = build_pipeline(load_config(ROOT / "configs" / "default.yaml"))
    sets = asyncio.run(gather(pipe, heldout_problems(args.problems), args.concurrency))
    figures: dict[str, dict[str, float]] = {}
    print("| steps | right / wrong | trained PRM | " + " | ".join(f"confidence, {r}" for r in REDUCTIONS) + " |")
    print("|---|---|---:|" + "---:|" * len(REDUCTIONS))
    for name, steps in sets.items():
        labels = [right for right, _, _ in steps]
        row = {"trained PRM": auroc([reward for _, reward, _ in steps], labels)}
        row.update({f"confidence, {r}": auroc([confidence(lps, r) for _, _, lps in steps], labels)
                    for r in REDUCTIONS})
        figures[name] = {**row, "right": sum(labels), "wrong": len(labels) - sum(labels)}
        print(f"| {name} | {sum(labels)} / {len(labels) - sum(labels)} | "
              + " | ".join(f"{v:.4f}" for v in row.values()) + " |")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
