"""Train the embedded default models (draft, target, PRM) on the synthetic arithmetic task.

    PYTHONPATH=scripts:. python scripts/train_models.py --out models/embedded [--seed 0] [--reuse]

Stages (each saved as a Hugging Face folder under --cache, so one stage can be re-run alone):
- draft: a small LM run; its checkpoint nearest DRAFT_GOAL validation accuracy (train split) is the
  draft, its final state (100% held-out accuracy) the starting point of the target and the PRM;
- target: the small LM's final state grown without changing its function, 2x wide (more heads of
  the same size, more MLP units) and 8x deep (identity-initialised layers interleaved), then
  fine-tuned: deep, because on a CPU per-token decode time grows with depth, not width, and wide,
  because FLOPs grow with width while CPU decode time hardly does (the draft's and the PRM's FLOPs
  are then a small share of what RSD spends). Growing a trained model costs a fraction of training
  the big one from scratch (a from-scratch 16 x 96 target took over 15 minutes alone);
- prm: labelled data from the exact draft checkpoint (its greedy and temperature-1 continuations
  after gold prefixes, its rollouts, gold solutions with one corrupted step, gold solutions, all
  labelled by the exact checker), then the small LM + 2 layers + value head, trained with the
  losses of prm_train.py.
The draft stage runs first (two torch threads); then the target stage runs in a child process
(one torch thread each), in parallel with the PRM stage, which takes both threads once the target is done.
Then the folders are copied to --out and scripts/check_models.py measures them on held-out problems.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lm_train import LmSpec, greedy_accuracy, grow_interleaved, grow_wider, lm_examples, sample, train_lm
from prm_train import PrmLoss, PrmModel, deepen, gold_examples, label_completion, perturbed_examples, save_prm, train_prm
from runtime.task import generate_problems
from tinylm import SEP, build_tokenizer, llama_config, save_generator

SMALL = LmSpec(hidden=48, layers=2, heads=4, ffn=96, steps=1600, lr=5e-3)
# grown from the small LM's final state (same head size, so heads double with the width), then tuned
TARGET = LmSpec(hidden=96, layers=16, heads=8, ffn=192, steps=120, lr=1e-3)
PRM = LmSpec(hidden=48, layers=4, heads=4, ffn=96, steps=1600, lr=3e-3)  # hidden must equal SMALL's
PRM_EXTRA_LAYERS = 2
PRM_LOSS = PrmLoss(dense=1.0, negative=2.0, gold_token=1.0, lm=0.2)
DRAFT_GOAL = 0.80  # greedy accuracy on validation problems (train split) the draft is picked for
VALIDATE_EVERY = 25
VALIDATE_FROM = 300  # the small LM is far from the goal before this step
VALIDATION_PROBLEMS = 100
TRAIN_PROBLEMS = 60_000
# PRM data: draft continuations after a gold prefix of random length (the RSD situation), draft
# rollouts from the question, corrupted gold solutions, gold solutions.
NEXT_SAMPLED, NEXT_GREEDY, ROLLOUTS, PERTURBED, GOLD = 8_000, 4_000, 3_000, 4_000, 1_000
STAGES = ("draft", "target", "prm")
ALL_THREADS = min(2, os.cpu_count() or 1)  # a stage alone on the machine: two threads are about 1.4x one


class DraftPicker:
    """Keeps the checkpoint whose validation accuracy is closest to DRAFT_GOAL.

    An undertrained checkpoint of the small LM makes realistic mistakes (mostly slips in the
    arithmetic), and picking it by accuracy on train-split validation problems keeps the draft's
    strength stable across seeds without ever looking at the held-out test split.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: object, seed: int) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.problems = generate_problems(VALIDATION_PROBLEMS, seed + 100, "train")
        self.best: tuple[float, int, float, dict] | None = None  # (distance, step, accuracy, state)
        self.done = False

    def __call__(self, step: int) -> None:
        if self.done or step < VALIDATE_FROM or step % VALIDATE_EVERY:
            return
        accuracy = greedy_accuracy(self.model, self.tokenizer, self.problems)
        distance = abs(accuracy - DRAFT_GOAL)
        if self.best is None or distance < self.best[0]:
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best = (distance, step, accuracy, state)
        self.done = accuracy >= 0.97  # past the goal for good: stop paying for validation


def build_lm(spec: LmSpec, seed: int) -> torch.nn.Module:
    """A freshly initialised tiny Llama, seeded so each model's init is reproducible on its own."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(spec.hidden, spec.layers, spec.heads, spec.ffn))


def load_lm(folder: Path) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def validation(model: torch.nn.Module, tokenizer: object, seed: int) -> float:
    return greedy_accuracy(model, tokenizer, generate_problems(VALIDATION_PROBLEMS, seed + 100, "train"))


def grow_target(small: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The small LM, same function, at TARGET's width and depth (doubling the depth until it fits)."""
    target = grow_wider(small, TARGET.hidden, TARGET.heads, TARGET.ffn, seed)
    while target.config.num_hidden_layers < TARGET.layers:
        target = grow_interleaved(target)
    assert target.config.num_hidden_layers == TARGET.layers, "TARGET.layers must be the small LM's times 2^k"
    return target


def train_target(tokenizer: object, examples: list, seed: int, cache: Path) -> None:
    target = grow_target(load_lm(cache / "small"), seed + 1)
    train_lm(target, examples, TARGET, seed + 5, f"target grown to {TARGET.layers} x {TARGET.hidden}")
    print(f"target: validation accuracy {validation(target, tokenizer, seed):.3f}")
    save_generator(target, tokenizer, cache / "target")


def train_draft(tokenizer: object, examples: list, seed: int, cache: Path) -> None:
    """One small LM run: the checkpoint nearest DRAFT_GOAL is the draft, the final state the PRM init."""
    small = build_lm(SMALL, seed + 2)
    picker = DraftPicker(small, tokenizer, seed)
    train_lm(small, examples, SMALL, seed + 2, "small LM (draft, PRM init)", after_step=picker)
    assert picker.best is not None, "no validation checkpoint"
    _, step, accuracy, state = picker.best
    print(f"draft = small LM at step {step}/{SMALL.steps} (validation accuracy {accuracy:.2f}); "
          f"final validation accuracy {validation(small, tokenizer, seed):.3f}")
    save_generator(small, tokenizer, cache / "small")
    small.load_state_dict(state)
    save_generator(small, tokenizer, cache / "draft")


def prm_data(problems: list, draft: torch.nn.Module, tokenizer: object, seed: int) -> list:
    """Labelled PRM sequences from the exact draft checkpoint, plus corrupted and gold solutions."""
    rng = random.Random(seed)
    picked = rng.sample(problems, NEXT_SAMPLED + NEXT_GREEDY + ROLLOUTS + PERTURBED + GOLD)
    drafted, rest = picked[:NEXT_SAMPLED + NEXT_GREEDY + ROLLOUTS], picked[NEXT_SAMPLED + NEXT_GREEDY + ROLLOUTS:]
    prefixes = [list(p.steps[:rng.randrange(len(p.steps))]) for p in drafted[:NEXT_SAMPLED + NEXT_GREEDY]]
    prefixes += [[] for _ in range(ROLLOUTS)]
    prompts = [p.prompt + "".join(s + SEP for s in prefix) for p, prefix in zip(drafted, prefixes)]
    greedy = set(range(NEXT_SAMPLED, NEXT_SAMPLED + NEXT_GREEDY))
    torch.manual_seed(seed)
    completions = [""] * len(prompts)
    for temperature, rows in ((1.0, [i for i in range(len(prompts)) if i not in greedy]), (0.0, sorted(greedy))):
        outs = sample(draft, tokenizer, [prompts[i] for i in rows], temperature, desc=f"draft samples T={temperature:g}")
        for i, out in zip(rows, outs):
            completions[i] = out
    data = [label_completion(p, c, prefix) for p, c, prefix in zip(drafted, completions, prefixes)]
    data = [row for row in data if row[1]]
    wrong = sum(not all(labels) for _, _, labels in data)
    print(f"draft sequences: {len(data)}, with a wrong step: {wrong}")
    return data + perturbed_examples(rest[:PERTURBED], rng) + gold_examples(rest[PERTURBED:])


def train_prm_stage(tokenizer: object, problems: list, seed: int, cache: Path,
                    after_step: Callable[[int], None] | None = None) -> None:
    data = prm_data(problems, load_lm(cache / "draft"), tokenizer, seed + 3)
    prm = PrmModel(deepen(load_lm(cache / "small"), PRM_EXTRA_LAYERS, copy_from=SMALL.layers - 1))
    torch.manual_seed(seed + 4)
    torch.nn.init.normal_(prm.v_head.summary.weight, std=0.02)
    torch.nn.init.zeros_(prm.v_head.summary.bias)
    train_prm(prm, tokenizer, data, PRM, seed + 4, PRM_LOSS, after_step)
    save_prm(prm, tokenizer, cache / "prm")
    print(f"prm: {prm.num_params()} parameters (backbone + value head)")


def run_stage(stage: str, seed: int, cache: Path, after_step: Callable[[int], None] | None = None) -> None:
    """One stage, its wall and CPU seconds written beside its folder (`<stage>.time.json`)."""
    wall, cpu, load = time.time(), time.process_time(), os.getloadavg()[0]
    tokenizer = build_tokenizer()
    problems = generate_problems(TRAIN_PROBLEMS, seed, "train", unique=False)
    if stage == "prm":
        train_prm_stage(tokenizer, problems, seed, cache, after_step)
    else:
        examples = lm_examples(tokenizer, problems)
        (train_target if stage == "target" else train_draft)(tokenizer, examples, seed, cache)
    spent = {"wall_s": round(time.time() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
             "load_before": round(load, 2)}
    (cache / f"{stage}.time.json").write_text(json.dumps(spent) + "\n")
    print(f"stage {stage}: {spent['wall_s']:.0f} s wall, {spent['cpu_s']:.0f} s CPU")


def cpu_summary(cache: Path) -> str:
    """CPU seconds per stage: the draft stage runs alone, then target and PRM side by side."""
    spent = {}
    for stage in STAGES:
        path = cache / f"{stage}.time.json"
        spent[stage] = json.loads(path.read_text())["cpu_s"] if path.is_file() else None
    return "CPU seconds per stage: " + ", ".join(f"{k} {v}" for k, v in spent.items())


class TakeFreeCore:
    """PRM training's step hook: once the target's child process is done, train on ALL_THREADS."""

    def __init__(self, child: subprocess.Popen) -> None:
        self.child, self.done = child, False

    def __call__(self, step: int) -> None:
        if not self.done and step % 10 == 0 and self.child.poll() is not None:
            torch.set_num_threads(ALL_THREADS)
            self.done = True


def run_all(args: argparse.Namespace) -> None:
    """The draft stage here, then the target in a child process while the PRM trains here; stages
    already in the cache are kept with --reuse (a re-run draft stage re-runs the other two)."""
    cached = {s for s in STAGES if args.reuse and (args.cache / s / "config.json").is_file()}
    todo = [s for s in STAGES if s not in cached or "draft" not in cached]
    print(f"stages to run: {todo or 'none (all cached)'}; cache {args.cache}")
    if "draft" in todo:  # alone on the machine
        torch.set_num_threads(ALL_THREADS)
        run_stage("draft", args.seed, args.cache)
    torch.set_num_threads(1)
    child = None
    if "target" in todo:
        command = [sys.executable, __file__, "--stage", "target", "--cache", str(args.cache.parent),
                   "--seed", str(args.seed)]
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        child = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": path})
    try:
        if "prm" in todo:
            if child is None:  # alone on the machine
                torch.set_num_threads(ALL_THREADS)
            run_stage("prm", args.seed, args.cache, after_step=TakeFreeCore(child) if child is not None else None)
    except BaseException:
        if child is not None:
            child.terminate()
        raise
    if child is not None and child.wait() != 0:
        raise SystemExit(f"target stage failed (exit code {child.returncode})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/embedded"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/train_models"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=("all", *STAGES), default="all")
    parser.add_argument("--reuse", action="store_true", help="keep stages already saved in --cache")
    parser.add_argument("--no-check", action="store_true", help="skip the held-out measurement")
    args = parser.parse_args()
    args.cache = args.cache / f"seed{args.seed}"
    torch.set_num_threads(1)  # tiny models: two 1-thread processes beat one 2-thread process
    start, load = time.time(), os.getloadavg()
    if args.stage != "all":
        run_stage(args.stage, args.seed, args.cache)
        return 0
    run_all(args)
    for name in ("draft", "target", "prm"):
        shutil.rmtree(args.out / name, ignore_errors=True)
        shutil.copytree(args.cache / name, args.out / name)
    train_time = time.time() - start
    print(f"training time {train_time:.0f} s wall; load average before {load[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f} (1 min)")
    print(cpu_summary(args.cache))
    if args.no_check:
        return 0
    import check_models

    return check_models.main(["--models", str(args.out)])


if __name__ == "__main__":
    sys.exit(main())
