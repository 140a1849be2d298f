#!/usr/bin/env python3
"""Throughput and compute of each method on the same prompts, in one run (ratios vs target-only).

    python scripts/bench.py [--config FILE] [--dataset embedded] [--limit 64] [--concurrency 8]
                            [--methods target,draft,rsd,sd,gsi,bon,cos] [--markdown OUT.md] [param flags]

Every method runs on the same problems with the same parameters in one process, after a warm-up;
the table reports requests/s and output tokens/s, their ratio to target-only, target calls per
request, the target's share of steps, processed tokens per model and estimated FLOPs per request.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time

from runtime.cli import add_param_flags, param_values
from runtime.config import load_config
from runtime.engines.torch.factory import build_pipeline
from runtime.eval.cli import parse_list, warm_up
from runtime.eval.datasets import resolve_dataset
from runtime.eval.runner import RunSummary, plan_runs, run_one


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--methods", default="target,draft,rsd,sd,gsi,bon,cos")
    parser.add_argument("--markdown", help="also write the table to this file")
    add_param_flags(parser)
    args = parser.parse_args()
    problems = resolve_dataset(args.dataset, limit=args.limit)
    pipeline = build_pipeline(load_config(args.config))
    base = pipeline.params(param_values(args))
    runs = plan_runs(parse_list(args.methods, "methods", str), [base.threshold], base)
    warm_up(pipeline, problems[0].question)
    rows = []
    for run in runs:
        started = time.perf_counter()
        summary, _ = asyncio.run(run_one(pipeline, problems, run, args.concurrency))
        rows.append((summary, summary.calls_per_model.get("target", 0) / summary.problems))
        print(f"{run.label}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    target = next((s for s, _ in rows if s.method == "target"), None)
    text = table(rows, target)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
