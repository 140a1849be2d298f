"""rsd eval: planning, grading per run, error isolation, outputs (results.json, samples, plot)."""
from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from runtime.core.methods import Engines
from runtime.core.params import RequestParams
from runtime.core.segment import StepSegmenter
from runtime.eval.datasets import Problem
from runtime.eval.report import plot_accuracy_vs_budget, plot_accuracy_vs_flops, write_results
from runtime.eval.runner import plan_runs, run_one, summary_table
from runtime.pipeline import Pipeline
from support.fakes import FakePRM, FakeTokenizer, ScriptedLM

TOK = FakeTokenizer(pieces=("<eos>", "\n\n", "a", "b", "1", "2", "\\boxed{", "}", " "))


def pipeline() -> Pipeline:
    draft = ScriptedLM(TOK, ["a\n\n", "\\boxed{1}<eos>"], by_step_index=True)  # the draft answers 1
    target = ScriptedLM(TOK, ["b\n\n", "\\boxed{2}<eos>"], by_step_index=True)  # the target answers 2
    prm = FakePRM(fn=lambda q, steps, cand: 0.1 if "1" in cand else 0.9)  # the PRM dislikes "1"
    seg = StepSegmenter(TOK.piece, TOK.eos_ids)
    return Pipeline(Engines(draft, target, prm), TOK, seg, "{question}", RequestParams(), 100)


def test_plan_sweeps_thresholds_for_rsd_only() -> None:
    runs = plan_runs(["target", "rsd", "gsi"], [0.3, 0.9], RequestParams(temperature=0.5))
    assert [r.label for r in runs] == ["target", "rsd@0.3", "rsd@0.9", "gsi"]
    assert [r.threshold for r in runs] == [None, 0.3, 0.9, None]
    assert all(r.params.temperature == 0.5 for r in runs)


def test_plan_sweeps_target_budgets_for_rsd_only() -> None:
    runs = plan_runs(["target", "rsd"], [0.5, 0.9], RequestParams(target_budget=0.3), [1.0, 0.2])
    assert [r.label for r in runs] == ["target", "rsd@0.5", "rsd@0.5 b0.2", "rsd@0.9", "rsd@0.9 b0.2"]
    assert [r.target_budget for r in runs] == [None, 1.0, 0.2, 1.0, 0.2]
    assert runs[0].params.target_budget == 1.0  # target-only has no budget to keep


def test_a_budget_caps_the_targets_share_in_a_run() -> None:
    problems = [Problem(id=str(i), question="ab", answer="2") for i in range(3)]
    (run,) = plan_runs(["rsd"], [0.5], RequestParams(), [0.5])
    rsd, outcomes = asyncio.run(run_one(pipeline(), problems, run, concurrency=2))
    # the draft's "\boxed{1}" second step would be rewritten (see below), and the budget allows it:
    # step 2 of 2 may be the target's (1 <= floor(0.5 * 2)), and it scored lowest
    assert rsd.target_budget == 0.5 and rsd.target_step_share == 0.5 and rsd.accuracy == 1.0
    (run,) = plan_runs(["rsd"], [0.5], RequestParams(), [0.4])  # floor(0.4 * 2) = 0: nothing to spend
    rsd, outcomes = asyncio.run(run_one(pipeline(), problems, run, concurrency=2))
    assert rsd.target_step_share == 0.0 and rsd.accuracy == 0.0


def test_runs_are_graded_and_counted() -> None:
    problems = [Problem(id=str(i), question="ab", answer="2") for i in range(3)]
    p = pipeline()
    results = {}
    for run in plan_runs(["draft", "target", "rsd"], [0.5], RequestParams()):
        results[run.label] = asyncio.run(run_one(p, problems, run, concurrency=2))
    assert results["draft"][0].accuracy == 0.0 and results["target"][0].accuracy == 1.0
    rsd, outcomes = results["rsd@0.5"]
    # the draft's first step is kept, its "\boxed{1}" step is rejected and the target answers 2
    assert rsd.accuracy == 1.0 and rsd.target_step_share == 0.5 and rsd.step_acceptance_rate == 0.5
    assert all(o.predicted == "2" and o.steps == 2 and o.target_steps == 1 for o in outcomes)
    assert rsd.calls_per_model["target"] == 3 and rsd.flops_per_model["prm"] > 0
    assert "rsd@0.5" in summary_table([rsd])


def test_a_failing_problem_is_recorded_not_fatal(tmp_path: Path) -> None:
    problems = [Problem(id="ok", question="ab", answer="2"), Problem(id="long", question="a" * 200, answer="2")]
    (run,) = plan_runs(["target"], [0.5], RequestParams())
    summary, outcomes = asyncio.run(run_one(pipeline(), problems, run, concurrency=1))
    assert (summary.problems, summary.correct, summary.errors) == (2, 1, 1)
    assert outcomes[1].error is not None and "text_input" in outcomes[1].error
    write_results(tmp_path, {"dataset": "x"}, [(summary, outcomes)])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["runs"][0]["label"] == "target" and data["dataset"] == "x"
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["problem_id"] for s in samples] == ["ok", "long"] and samples[1]["error"]


def test_plot_is_written(tmp_path: Path) -> None:
    problems = [Problem(id="0", question="ab", answer="2")]
    summaries = [asyncio.run(run_one(pipeline(), problems, run, 1))[0]
                 for run in plan_runs(["target", "draft", "rsd"], [0.05, 0.5, 0.95], RequestParams())]
    path = plot_accuracy_vs_flops(tmp_path, summaries, "test")
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
    budgets = [asyncio.run(run_one(pipeline(), problems, run, 1))[0]
               for run in plan_runs(["rsd"], [0.5, 0.95], RequestParams(), [1.0, 0.5, 0.0])]
    path = plot_accuracy_vs_budget(tmp_path, budgets, "test")
    assert path.name == "accuracy_vs_budget.png" and path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_eval_cli_end_to_end(tiny_config: Path, tmp_path: Path) -> None:
    from runtime.cli.main import main

    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "1+2", "answer": "3"}\n{"q": "2+2", "a": "4"}\n')
    bad = main(["eval", "--config", str(tiny_config), "--dataset", str(data), "--methods", "target",
                "--out", str(tmp_path / "o")])
    assert bad == 2  # the second line lacks the "question" field: a clear error, exit 2
    data.write_text('{"question": "1+2", "answer": "3"}\n')
    assert main(["eval", "--config", str(tiny_config), "--dataset", str(data), "--methods", "target,rsd",
                 "--thresholds", "0.5", "--out", str(tmp_path / "o"), "--max-tokens", "8"]) == 0
    runs = json.loads((tmp_path / "o" / "results.json").read_text())["runs"]
    assert [r["label"] for r in runs] == ["target", "rsd@0.5"]
    assert main(["eval", "--config", str(tiny_config), "--dataset", str(data), "--methods", "nope",
                 "--out", str(tmp_path / "o")]) == 2
    assert main(["eval", "--config", str(tiny_config), "--dataset", str(data), "--methods", "rsd", "--thresholds",
                 "1.01", "--target-budgets", "1,0", "--out", str(tmp_path / "b"), "--max-tokens", "8"]) == 0
    runs = json.loads((tmp_path / "b" / "results.json").read_text())["runs"]
    assert [(r["label"], r["target_budget"]) for r in runs] == [("rsd@1.01", 1.0), ("rsd@1.01 b0", 0.0)]
    assert runs[0]["target_step_share"] == 1.0 and runs[1]["target_step_share"] == 0.0
    assert (tmp_path / "b" / "accuracy_vs_budget.png").is_file()
    assert main(["eval", "--config", str(tiny_config), "--dataset", str(data), "--methods", "rsd",
                 "--target-budgets", "2", "--out", str(tmp_path / "b")]) == 2  # names target_budget


def test_auroc_by_hand() -> None:
    from runtime.eval.separation import auroc

    assert auroc([0.9, 0.2, 0.5], [True, False, False]) == 1.0
    assert auroc([0.4, 0.2, 0.5], [True, False, False]) == 0.5  # beats 0.2, loses to 0.5
    assert auroc([0.5, 0.5], [True, False]) == 0.5  # a tie counts half
    assert math.isnan(auroc([0.5], [True]))
