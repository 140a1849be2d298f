#!/usr/bin/env python3
"""In-process benchmarks, as ratios measured in one run.

    python scripts/bench.py [--config FILE] [--dataset embedded] [--limit 64] [--concurrency 8]
                            [--methods target,draft,rsd,sd,gsi,bon,cos] [--markdown OUT.md] [param flags]
    python scripts/bench.py --floor [--limit 24] [--repeats 3]           # engine vs bare HF decode loop
    python scripts/bench.py --scaling 1,16 [--methods target,draft,rsd] [--limit 48] [--repeats 3]

Default (method table): every method on the same problems with the same parameters, after a
warm-up: requests/s, output tokens/s and their ratio to target-only, target calls per request,
the target's share of steps, processed tokens per model, estimated FLOPs per request.

--floor: ms per generated token of the engine's target-only requests at concurrency 1 against a
bare Hugging Face loop on the same target weights (batch 1, DynamicCache, greedy argmax, one
`.item()` per token), decoding exactly as many tokens per prompt as the engine generated. Runs
interleave (engine, loop, engine, loop, ...); the median of `--repeats` is reported.

--scaling: output tokens/s per method at each listed concurrency, interleaved within a repeat,
median of `--repeats`, and each concurrency's ratio to the first.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from runtime.assembly.torch import build_pipeline
from runtime.cli.evaluate import parse_list, warm_up
from runtime.cli.flags import add_param_flags, param_values
from runtime.config import load_config
from runtime.eval.datasets import Problem, resolve_dataset
from runtime.eval.runner import EvalRun, RunSummary, plan_runs, run_one
from runtime.pipeline import Pipeline


def table(rows: list[tuple[RunSummary, float]], base: RunSummary | None) -> str:
    head = ("| method | accuracy | req/s | tokens/s | tokens/s vs target | target calls/req | target steps | "
            "processed tokens/req (draft / target / prm) | FLOPs/req | FLOPs vs target |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s, calls in rows:
        proc = {r: (t["prefill"] + t["decode"]) / s.problems for r, t in s.tokens_per_model.items()}
        speed = f"{s.tokens_per_s / base.tokens_per_s:.2f}x" if base else "-"
        flops = f"{s.flops_per_problem / base.flops_per_problem:.2f}x" if base else "-"
        lines.append(
            f"| {s.label} | {s.accuracy:.1%} | {s.problems / s.wall_time_s:.2f} | {s.tokens_per_s:.0f} | {speed} | "
            f"{calls:.1f} | {s.target_step_share:.0%} | {proc.get('draft', 0):.0f} / {proc.get('target', 0):.0f} / "
            f"{proc.get('prm', 0):.0f} | {s.flops_per_problem:.3g} | {flops} |")
    return "\n".join(lines)


def method_table(pipeline: Pipeline, problems: Sequence[Problem], runs: list[EvalRun], concurrency: int) -> str:
    rows = []
    for run in runs:
        started = time.perf_counter()
        summary, _ = asyncio.run(run_one(pipeline, problems, run, concurrency))
        rows.append((summary, summary.calls_per_model.get("target", 0) / summary.problems))
        print(f"{run.label}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return table(rows, next((s for s, _ in rows if s.method == "target"), None))


class BareLoop:
    """The floor: a plain transformers decode loop on the target's weights, batch 1."""

    def __init__(self, path: str, dtype: str, device: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from runtime.engines.torch.factory import resolve_device
        from runtime.engines.torch.loading import DTYPES

        self.torch = torch
        self.device = resolve_device(device)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], attn_implementation="sdpa")
        self.model.to(self.device).eval()

    def decode(self, prompt: Sequence[int], tokens: int) -> None:
        from transformers import DynamicCache

        torch = self.torch
        with torch.inference_mode():
            ids = torch.tensor([list(prompt)], device=self.device)
            cache = DynamicCache()
            for _ in range(tokens):
                logits = self.model(input_ids=ids, past_key_values=cache, use_cache=True).logits
                ids = torch.tensor([[int(logits[0, -1].argmax().item())]], device=self.device)


def floor(pipeline: Pipeline, cfg: Any, problems: Sequence[Problem], params: Any, repeats: int) -> str:
    """Engine target-only at c = 1 vs the bare loop, ms per generated token, interleaved."""
    import dataclasses

    target = dataclasses.replace(params, method="target")
    bare = BareLoop(str(cfg.target.path), cfg.target.dtype, cfg.target.device)
    prompts = [pipeline.request(p.question).prompt_ids for p in problems]
    engine_ms, bare_ms, counts = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        counts = asyncio.run(_one_by_one(pipeline, problems, target))
        engine_ms.append(1000 * (time.perf_counter() - started) / sum(counts))
        started = time.perf_counter()
        for prompt, n in zip(prompts, counts):
            bare.decode(prompt, n)
        bare_ms.append(1000 * (time.perf_counter() - started) / sum(counts))
        print(f"engine {engine_ms[-1]:.3f} ms/token, bare loop {bare_ms[-1]:.3f}", file=sys.stderr)
    e, b = statistics.median(engine_ms), statistics.median(bare_ms)
    return ("| what (c = 1, target only) | ms / generated token (median of %d) | runs |\n|---|---:|---|\n"
            "| bare HF loop (batch 1, DynamicCache) | %.3f | %s |\n| engine (in-process) | %.3f | %s |\n"
            "| **engine / bare loop** | **%.2fx** | %d prompts, %d tokens |"
            % (repeats, b, _fmt(bare_ms), e, _fmt(engine_ms), e / b, len(problems), sum(counts)))


async def _one_by_one(pipeline: Pipeline, problems: Sequence[Problem], params: Any) -> list[int]:
    """Generated tokens per problem, one request at a time on one event loop."""
    return [(await pipeline.generate(p.question, params)).stats["tokens"] for p in problems]


def scaling(pipeline: Pipeline, problems: Sequence[Problem], runs: list[EvalRun], levels: list[int],
            repeats: int) -> str:
    speeds: dict[tuple[str, int], list[float]] = {}
    batching: dict[tuple[str, int], str] = {}
    for _ in range(repeats):
        for run in runs:
            for c in levels:
                before = _counters(pipeline)
                summary, _ = asyncio.run(run_one(pipeline, problems, run, c))
                speeds.setdefault((run.label, c), []).append(summary.tokens_per_s)
                batching[(run.label, c)] = _rows_per_forward(before, _counters(pipeline))
                print(f"{run.label} c={c}: {summary.tokens_per_s:.0f} tokens/s", file=sys.stderr)
    head = "| method | " + " | ".join(f"tokens/s c={c}" for c in levels) + " | " + " | ".join(
        f"c={c} / c={levels[0]}" for c in levels[1:]) + f" | rows/forward at c={levels[-1]} (forwards, s in them; last run) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run in runs:
        med = [statistics.median(speeds[(run.label, c)]) for c in levels]
        lines.append(f"| {run.label} | " + " | ".join(f"{m:.0f} ({_fmt(speeds[(run.label, c)], 0)})"
                                                      for m, c in zip(med, levels))
                     + " | " + " | ".join(f"**{m / med[0]:.2f}x**" for m in med[1:])
                     + f" | {batching[(run.label, levels[-1])]} |")
    return "\n".join(lines)


def _counters(pipeline: Pipeline) -> dict[str, tuple[int, int, float]]:
    """(forwards, rows, seconds in forwards) per model, from each engine's scheduler."""
    out = {}
    for role in ("draft", "target", "prm"):
        sched = getattr(getattr(pipeline.engines, role, None), "scheduler", None)
        if sched is not None:
            out[role] = (sched.forwards, sched.batched_rows, sched.busy_s)
    return out


def _rows_per_forward(before: dict[str, tuple[int, int, float]], after: dict[str, tuple[int, int, float]]) -> str:
    """Per model: rows per forward (forwards, seconds inside them) over one run."""
    parts = []
    for role, (f1, r1, s1) in after.items():
        f0, r0, s0 = before.get(role, (0, 0, 0.0))
        if f1 > f0:
            parts.append(f"{role} {(r1 - r0) / (f1 - f0):.1f} ({f1 - f0} fwd, {s1 - s0:.2f} s)")
    return ", ".join(parts) or "-"


def _fmt(values: list[float], digits: int = 3) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--methods", default=None, help="default: all (table), target,draft,rsd (--scaling)")
    parser.add_argument("--floor", action="store_true", help="engine vs the bare HF decode loop at c = 1")
    parser.add_argument("--scaling", help="concurrency levels, e.g. 1,16: tokens/s per method and ratios")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", help="also write the table to this file")
    add_param_flags(parser)
    args = parser.parse_args()
    problems = resolve_dataset(args.dataset, limit=args.limit)
    cfg = load_config(args.config)
    pipeline = build_pipeline(cfg)
    base = pipeline.params(param_values(args))
    default_methods = "target,draft,rsd" if args.scaling else "target,draft,rsd,sd,gsi,bon,cos"
    runs = plan_runs(parse_list(args.methods or default_methods, "methods", str), [base.threshold], base)
    warm_up(pipeline, problems[0].question)
    load = os.getloadavg()
    if args.floor:
        text = floor(pipeline, cfg, problems, base, args.repeats)
    elif args.scaling:
        text = scaling(pipeline, problems, runs, parse_list(args.scaling, "scaling", int), args.repeats)
    else:
        text = method_table(pipeline, problems, runs, args.concurrency)
    text += "\n\nload average before / after: %.2f / %.2f" % (load[0], os.getloadavg()[0])
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
