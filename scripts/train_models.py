"""Train the embedded default models (draft, target, PRM) on the synthetic arithmetic task.

    PYTHONPATH=scripts:. python scripts/train_models.py --out models/embedded [--seed 0] [--reuse]

Stages (each saved as a Hugging Face folder under --cache, so one stage can be re-run alone):
- target: an 8-layer LM, trained, then grown to 16 layers (identity-initialised layers interleaved)
  and fine-tuned: deep, because on a CPU per-token decode time grows with depth, not width, and
  wide (96), because FLOPs grow with width while CPU decode time hardly does (the draft's and the
  PRM's FLOPs are then a small share of what RSD spends);
- draft: a small LM run; its checkpoint nearest DRAFT_GOAL validation accuracy (train split) is the
  draft, its final state (about 100% validation accuracy) the PRM's starting point;
- prm: labelled data from the exact draft checkpoint (its greedy and temperature-1 continuations
  after gold prefixes, its rollouts, gold solutions with one corrupted step, gold solutions, all
  labelled by the exact checker), then the small LM + 2 layers + value head, trained with the
  losses of prm_train.py.
The target stage runs in a child process (one torch thread each), in parallel with draft and PRM.
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
from pathlib import Path

import torch

from lm_train import LmSpec, greedy_accuracy, grow_interleaved, lm_examples, sample, train_lm
from prm_train import PrmLoss, PrmModel, deepen, gold_examples, label_completion, perturbed_examples, save_prm, train_prm
from runtime.task import generate_problems
from tinylm import SEP, build_tokenizer, llama_config, save_generator

TARGET_BASE = LmSpec(hidden=96, layers=8, heads=4, ffn=192, steps=750, lr=3e-3)
TARGET_TUNE = LmSpec(hidden=96, layers=16, heads=4, ffn=192, steps=80, lr=2e-4)  # after growing
SMALL = LmSpec(hidden=48, layers=2, heads=4, ffn=96, steps=1600, lr=5e-3)
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
STAGES = ("target", "draft", "prm")


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


def train_target(tokenizer: object, examples: list, seed: int, cache: Path) -> None:
    target = build_lm(TARGET_BASE, seed + 1)
    train_lm(target, examples, TARGET_BASE, seed + 1, f"target {TARGET_BASE.layers} layers")
    print(f"target {TARGET_BASE.layers} layers: validation accuracy {validation(target, tokenizer, seed):.3f}")
    target = grow_interleaved(target)
    train_lm(target, examples, TARGET_TUNE, seed + 5, f"target grown to {TARGET_TUNE.layers} layers")
    print(f"target {TARGET_TUNE.layers} layers: validation accuracy {validation(target, tokenizer, seed):.3f}")
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


def train_prm_stage(tokenizer: object, problems: list, seed: int, cache: Path) -> None:
    data = prm_data(problems, load_lm(cache / "draft"), tokenizer, seed + 3)
    prm = PrmModel(deepen(load_lm(cache / "small"), PRM_EXTRA_LAYERS, copy_from=SMALL.layers - 1))
    torch.manual_seed(seed + 4)
    torch.nn.init.normal_(prm.v_head.summary.weight, std=0.02)
    torch.nn.init.zeros_(prm.v_head.summary.bias)
    train_prm(prm, tokenizer, data, PRM, seed + 4, PRM_LOSS)
    save_prm(prm, tokenizer, cache / "prm")
    print(f"prm: {prm.num_params()} parameters (backbone + value head)")


def run_stage(stage: str, seed: int, cache: Path) -> None:
    """One stage, its wall and CPU seconds written beside its folder (`<stage>.time.json`)."""
    wall, cpu = time.time(), time.process_time()
    tokenizer = build_tokenizer()
    problems = generate_problems(TRAIN_PROBLEMS, seed, "train", unique=False)
    if stage == "prm":
        train_prm_stage(tokenizer, problems, seed, cache)
    else:
        examples = lm_examples(tokenizer, problems)
        (train_target if stage == "target" else train_draft)(tokenizer, examples, seed, cache)
    spent = {"wall_s": round(time.time() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
             "load_before": round(os.getloadavg()[0], 2)}
    (cache / f"{stage}.time.json").write_text(json.dumps(spent) + "\n")
    print(f"stage {stage}: {spent['wall_s']:.0f} s wall, {spent['cpu_s']:.0f} s CPU")


def cpu_summary(cache: Path) -> str:
    """The two chains' CPU seconds: on an idle 2-core machine (one core each) the wall time is about their max."""
    spent = {}
    for stage in STAGES:
        path = cache / f"{stage}.time.json"
        spent[stage] = json.loads(path.read_text())["cpu_s"] if path.is_file() else None
    if None in spent.values():
        return "CPU seconds per stage: " + ", ".join(f"{k} {v}" for k, v in spent.items())
    chains = {"target": spent["target"], "draft + prm": spent["draft"] + spent["prm"]}
    return (f"CPU seconds per chain: target {chains['target']:.0f}, draft + prm {chains['draft + prm']:.0f}; "
            f"on an idle 2-core machine training takes about {max(chains.values()) / 60:.1f} min")


def run_all(args: argparse.Namespace) -> None:
    """Target in a child process, draft then PRM here; stages already in the cache are kept with --reuse."""
    todo = [s for s in STAGES if not (args.reuse and (args.cache / s / "config.json").is_file())]
    print(f"stages to run: {todo or 'none (all cached)'}; cache {args.cache}")
    child = None
    if "target" in todo:
        command = [sys.executable, __file__, "--stage", "target", "--cache", str(args.cache.parent),
                   "--seed", str(args.seed)]
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        child = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": path})
    for stage in ("draft", "prm"):
        if stage in todo or (stage == "prm" and "draft" in todo):
            run_stage(stage, args.seed, args.cache)
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
