"""Writing an evaluation: results.json, samples.jsonl and the accuracy-vs-FLOPs plot."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.eval.runner import ProblemOutcome, RunSummary


def write_results(out: Path, meta: dict[str, Any], runs: Sequence[tuple[RunSummary, list[ProblemOutcome]]]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    results = {**meta, "runs": [summary.to_dict() for summary, _ in runs]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    with (out / "samples.jsonl").open("w") as f:
        for summary, outcomes in runs:
            for o in outcomes:
                f.write(json.dumps({"run": summary.label, **dataclasses.asdict(o)}) + "\n")
    return out / "results.json"


def plot_accuracy_vs_flops(out: Path, summaries: Sequence[RunSummary], title: str) -> Path:
    """One point per method; the threshold sweep of a method as a labelled curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    swept: dict[str, list[RunSummary]] = {}
    for s in summaries:
        if s.threshold is not None:
            budget = "" if s.target_budget is None or s.target_budget >= 1 else f", budget {s.target_budget:g}"
            swept.setdefault(s.method + budget, []).append(s)
            continue
        ax.scatter(s.flops_per_problem, 100 * s.accuracy, s=50, zorder=3)
        ax.annotate(s.label, (s.flops_per_problem, 100 * s.accuracy), textcoords="offset points", xytext=(5, 4))
    for method, points in swept.items():
        points.sort(key=lambda s: s.threshold or 0.0)
        xs, ys = [p.flops_per_problem for p in points], [100 * p.accuracy for p in points]
        ax.plot(xs, ys, marker="o", zorder=2, label=f"{method} (threshold sweep)")
        for p, x, y in zip(points, xs, ys):
            ax.annotate(f"{p.threshold:g}", (x, y), textcoords="offset points", xytext=(4, -11), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("estimated FLOPs per problem (2 x params x processed tokens, all models)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if swept:
        ax.legend(loc="lower right")
    fig.tight_layout()
    path = out / "accuracy_vs_flops.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_vs_budget(out: Path, summaries: Sequence[RunSummary], title: str) -> Path:
    """RSD's accuracy and the target's measured share of steps against the budget, one curve per threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, share) = plt.subplots(1, 2, figsize=(10, 4))
    by_threshold: dict[float, list[RunSummary]] = {}
    for s in summaries:
        if s.threshold is not None and s.target_budget is not None:
            by_threshold.setdefault(s.threshold, []).append(s)
    for threshold, points in sorted(by_threshold.items()):
        points.sort(key=lambda s: s.target_budget or 0.0)
        budgets = [p.target_budget for p in points]
        acc.plot(budgets, [100 * p.accuracy for p in points], marker="o", label=f"threshold {threshold:g}")
        share.plot(budgets, [100 * p.target_step_share for p in points], marker="o", label=f"threshold {threshold:g}")
    share.plot([0, 1], [0, 100], linestyle="--", color="grey", label="the budget")
    acc.set_ylabel("accuracy (%)")
    share.set_ylabel("target's share of steps (%)")
    for ax in (acc, share):
        ax.set_xlabel("target_budget")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path = out / "accuracy_vs_budget.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
