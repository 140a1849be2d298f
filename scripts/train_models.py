"""Train the embedded default models (draft, target, PRM) on the synthetic arithmetic task.

    PYTHONPATH=. python scripts/train_models.py --out models/embedded [--seed 0]

Stages: target LM, draft LM (smaller, trained less, so it slips on some steps), labelled PRM data
(gold steps, perturbed gold steps and the draft's own temperature-1 samples, labelled by the exact
verifier), PRM (the trained target plus one new decoder layer on top and a value head, fine-tuned
with BCE at every separator, dense per-token targets and an LM loss), save, then measure on held-out
problems with scripts/check_models.py.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from lm_train import LmSpec, greedy_accuracy, lm_examples, sample, train_lm
from prm_train import PrmModel, deepen, gold_examples, label_completion, perturbed_examples, save_prm, train_prm
from runtime.task import generate_problems
from tinylm import build_tokenizer, llama_config, param_count, save_generator

TARGET = LmSpec(hidden=96, layers=3, heads=3, ffn=256, steps=700, lr=3e-3)
# The draft is an early checkpoint of a small LM run, picked on validation accuracy.
SMALL = LmSpec(hidden=64, layers=2, heads=4, ffn=96, steps=1000, lr=5e-3)
# The PRM starts from the trained target (it must know the arithmetic it checks) with one extra
# layer on top that can compare each token with the previous position's prediction.
PRM = LmSpec(hidden=96, layers=3, heads=3, ffn=256, steps=400, lr=1e-3)  # dims must equal TARGET
PRM_EXTRA_LAYERS = 1
PRM_DENSE_WEIGHT = 0.3
DRAFT_GOAL = 0.65  # greedy accuracy on validation problems (train split) the draft is picked for
VALIDATE_EVERY = 25
VALIDATE_FROM = 300  # the small LM is far from the goal before this step
VALIDATION_PROBLEMS = 100
TRAIN_PROBLEMS = 60_000
DRAFT_SAMPLES = 6_000  # temperature-1 draft completions
DRAFT_GREEDY = 2_000  # greedy draft completions
PERTURBED = 6_000
GOLD = 2_000
PRM_LM_WEIGHT = 0.5
PRM_NEGATIVE_WEIGHT = 3.0  # BCE weight of wrong steps: pushes wrong-step rewards well under 0.7


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


def prm_data(problems: list, draft: torch.nn.Module, tokenizer: object, seed: int) -> list:
    """Labelled PRM sequences: the draft's own completions (T=1 and greedy), perturbed and gold steps."""
    rng = random.Random(seed)
    picked = rng.sample(problems, DRAFT_SAMPLES + DRAFT_GREEDY + PERTURBED + GOLD)
    sampled, rest = picked[:DRAFT_SAMPLES], picked[DRAFT_SAMPLES:]
    greedy, rest = rest[:DRAFT_GREEDY], rest[DRAFT_GREEDY:]
    torch.manual_seed(seed)
    completions = sample(draft, tokenizer, [p.prompt for p in sampled], 1.0, desc="sample draft T=1")
    completions += sample(draft, tokenizer, [p.prompt for p in greedy], 0.0, desc="sample draft T=0")
    data = [label_completion(p, c) for p, c in zip(sampled + greedy, completions)]
    data = [row for row in data if row[1]]
    wrong = sum(not all(labels) for _, _, labels in data)
    print(f"draft completions: {len(data)}, with a wrong step: {wrong}")
    return data + perturbed_examples(rest[:PERTURBED], rng) + gold_examples(rest[PERTURBED:])


def train_generators(args: argparse.Namespace, tokenizer: object, examples: list) -> tuple:
    """Target, then the small LM run that yields the draft checkpoint."""
    target = build_lm(TARGET, args.seed + 1)
    train_lm(target, examples, TARGET, args.seed + 1, "train target")
    save_generator(target, tokenizer, args.out / "target")
    small = build_lm(SMALL, args.seed + 2)
    picker = DraftPicker(small, tokenizer, args.seed)
    train_lm(small, examples, SMALL, args.seed + 2, "train draft LM", after_step=picker)
    assert picker.best is not None, "no validation checkpoint"
    _, step, accuracy, state = picker.best
    print(f"draft = small LM at step {step}/{SMALL.steps} (validation accuracy {accuracy:.2f})")
    draft = build_lm(SMALL, args.seed + 2)
    draft.load_state_dict(state)
    draft.eval()
    save_generator(draft, tokenizer, args.out / "draft")
    return target, draft, small


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-check", action="store_true", help="skip the held-out measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    tokenizer = build_tokenizer()
    problems = generate_problems(TRAIN_PROBLEMS, args.seed, "train", unique=False)
    target, draft, small = train_generators(args, tokenizer, lm_examples(tokenizer, problems))
    data = prm_data(problems, draft, tokenizer, args.seed + 3)
    prm = PrmModel(deepen(target, PRM_EXTRA_LAYERS, copy_from=TARGET.layers - 1))
    torch.manual_seed(args.seed + 4)
    torch.nn.init.normal_(prm.v_head.summary.weight, std=0.02)
    torch.nn.init.zeros_(prm.v_head.summary.bias)
    train_prm(prm, tokenizer, data, PRM, args.seed + 4, PRM_LM_WEIGHT, PRM_NEGATIVE_WEIGHT,
              PRM_DENSE_WEIGHT, new_layers=PRM_EXTRA_LAYERS)
    save_prm(prm, tokenizer, args.out / "prm")
    train_time = time.time() - start
    sizes = {"draft": param_count(draft), "target": param_count(target), "prm": prm.num_params()}
    print(f"params: {sizes}; training time {train_time:.0f} s")
    if args.no_check:
        return 0
    import check_models

    code = check_models.main(["--models", str(args.out)])
    print(f"training time {train_time:.0f} s, total with check {time.time() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
