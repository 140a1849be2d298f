"""`rsd eval`: accuracy against compute for every method on a dataset."""
from __future__ import annotations

import argparse
import asyncio
import platform
import time
from pathlib import Path
from typing import Any

from runtime.cli.flags import add_param_flags, param_values
from runtime.core.errors import ConfigError
from runtime.core.params import METHOD_NAMES

DEFAULT_METHODS = "target,draft,rsd,sd,gsi,bon"
DEFAULT_THRESHOLDS = "0.3,0.5,0.7,0.9"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ev = sub.add_parser("eval", help="accuracy against compute for every method on a dataset")
    ev.add_argument("--config", help="pipeline YAML (default: the embedded models)")
    ev.add_argument("--dataset", required=True, help="embedded, gsm8k, math500, gsm8k-test100, or a .jsonl path")
    ev.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma list (default {DEFAULT_METHODS})")
    ev.add_argument("--thresholds", default=DEFAULT_THRESHOLDS, help="RSD thresholds to sweep")
    ev.add_argument("--target-budgets", help="RSD target budgets to sweep, e.g. 1,0.5,0.2 (the target writes at most "
                                             "this share of the steps; default: --target-budget)")
    ev.add_argument("--limit", type=int, help="first N problems only")
    ev.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    ev.add_argument("--out", required=True, help="output folder (results.json, samples.jsonl, plot)")
    ev.add_argument("--data-dir", help="folder holding <name>/test.jsonl (default $RSD_DATA_DIR)")
    ev.add_argument("--question-field", help="for .jsonl paths (default: question)")
    ev.add_argument("--answer-field", help="for .jsonl paths (default: answer)")
    ev.add_argument("--kind", choices=["gsm8k", "math"], help="answer extraction for .jsonl paths (default gsm8k)")
    add_param_flags(ev)
    ev.set_defaults(run=cmd_eval)


def parse_list(text: str, key: str, kind: type) -> list[Any]:
    try:
        values = [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(key, f"cannot parse {text!r}: {exc}") from exc
    if not values:
        raise ConfigError(key, "must list at least one value")
    return values


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config
    from runtime.eval.datasets import resolve_dataset
    from runtime.eval.report import plot_accuracy_vs_budget, plot_accuracy_vs_flops, write_results
    from runtime.eval.runner import plan_runs, run_one, summary_table

    methods = parse_list(args.methods, "methods", str)
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        raise ConfigError("methods", f"unknown method(s) {', '.join(unknown)}; expected {', '.join(METHOD_NAMES)}")
    thresholds = parse_list(args.thresholds, "thresholds", float)
    if args.concurrency < 1:
        raise ConfigError("concurrency", "must be >= 1")
    problems = resolve_dataset(args.dataset, limit=args.limit, data_dir=args.data_dir,
                               question_field=args.question_field, answer_field=args.answer_field, kind=args.kind)
    if not problems:
        raise ConfigError("dataset", f"{args.dataset} has no problems")
    config = load_config(args.config)
    pipeline = build_pipeline(config)
    base = pipeline.params(param_values(args))
    budgets = (parse_list(args.target_budgets, "target_budgets", float) if args.target_budgets
               else [base.target_budget])
    runs = plan_runs(methods, thresholds, base, budgets)
    warm_up(pipeline, problems[0].question)
    done = []
    with tqdm(total=len(runs) * len(problems), desc="rsd eval", unit="problem") as bar:
        for run in runs:
            bar.set_postfix_str(run.label)
            done.append(asyncio.run(run_one(pipeline, problems, run, args.concurrency, lambda: bar.update(1))))
    meta = {"dataset": args.dataset, "problems": len(problems), "config": str(config.source),
            "concurrency": args.concurrency, "params": pipeline.params(param_values(args)).to_dict(),
            "machine": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = Path(args.out)
    write_results(out, meta, done)
    summaries = [summary for summary, _ in done]
    plots = [plot_accuracy_vs_flops(out, summaries, f"{args.dataset}: accuracy vs compute ({len(problems)} problems)")]
    if len(budgets) > 1:
        plots.append(plot_accuracy_vs_budget(out, summaries, f"{args.dataset}: RSD under a target budget "
                                                             f"({len(problems)} problems)"))
    print(summary_table(summaries))
    print(f"\nwrote {out / 'results.json'}, {out / 'samples.jsonl'} and {', '.join(map(str, plots))}")
    return 0


def warm_up(pipeline: Any, question: str) -> None:
    """One short request per model before timing, so lazy start-up costs land in no run."""
    for method in ("draft", "target", "rsd"):
        try:
            pipeline.generate_sync(question, {"method": method, "max_tokens": 4})
        except ConfigError:
            continue
        except Exception:  # a method this pipeline cannot serve; the runs will report it
            continue
