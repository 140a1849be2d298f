"""Sanity check of the embedded models with plain transformers, independent of the serving engine.

Greedy decoding by full recompute: every new token re-runs the whole right-padded batch and reads the
logits at each row's last real position, so no KV cache, attention mask or position ids can be wrong
(causal attention never sees the pads after a row). Measures, on held-out problems: draft and target
accuracy, PRM AUROC on the draft's next step after every gold prefix and on the draft's greedy
rollouts, RSD (greedy draft step, PRM reward of the last step, accept iff r >= threshold, else the
target regenerates the step from the same prefix) over a threshold sweep that includes the default
threshold of configs/default.yaml, and the per-token decode time of draft and target (batch 1, KV
cache, one thread). Checks issue 10's targets and exits 1 if one is missed.

    PYTHONPATH=. python scripts/check_models.py [--models models/embedded] [--problems 300]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from runtime.config import load_config
from runtime.eval.separation import auroc
from runtime.task import PROMPT_TEMPLATE, Problem, check_step, generate_problems, grade

EVAL_SEED = 1234
VALIDATION_SEED = 4321  # --split train: problems for choosing the threshold, never the held-out ones
MAX_STEP_TOKENS = 24
MAX_STEPS = 10
THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


@dataclass
class Models:
    """Loaded folders; the PRM is its backbone plus the value head read from safetensors."""

    tokenizer: object
    draft: torch.nn.Module
    target: torch.nn.Module
    prm: torch.nn.Module
    v_weight: torch.Tensor  # [1, hidden]
    v_bias: torch.Tensor  # [1]
    params: dict[str, int] = field(default_factory=dict)

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))


def load(folder: Path) -> Models:
    """Load the three folders with AutoTokenizer / AutoModelForCausalLM."""
    transformers.logging.set_verbosity_error()  # the PRM's v_head keys are expected to be "unexpected"
    tok = AutoTokenizer.from_pretrained(folder / "draft")
    nets = [AutoModelForCausalLM.from_pretrained(folder / n, dtype=torch.float32).eval() for n in ("draft", "target", "prm")]
    with safe_open(str(folder / "prm" / "model.safetensors"), framework="pt") as f:
        weight, bias = f.get_tensor("v_head.summary.weight"), f.get_tensor("v_head.summary.bias")
    params = {name: n_params(net) for name, net in zip(("draft", "target", "prm"), nets)}
    params["prm"] = n_params(nets[2].model) + weight.numel() + bias.numel()  # scoring never runs lm_head
    return Models(tok, *nets, weight.float(), bias.float(), params)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def padded(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


@torch.no_grad()
def greedy_steps(m: Models, model: torch.nn.Module, prefixes: list[list[int]]) -> list[tuple[str, bool, int]]:
    """One greedy step per prefix: (text without separator, finished by eos or cap, tokens generated)."""
    tok, sep = m.tokenizer, m.ids("\n\n")[0]
    rows, new = [list(p) for p in prefixes], [[] for _ in prefixes]
    live = list(range(len(rows)))
    while live:
        logits = model(input_ids=padded([rows[i] for i in live], tok.pad_token_id)).logits
        still = []
        for k, i in enumerate(live):
            token = int(logits[k, len(rows[i]) - 1].argmax())
            rows[i].append(token)
            new[i].append(token)
            if token not in (sep, tok.eos_token_id) and len(new[i]) < MAX_STEP_TOKENS:
                still.append(i)
        live = still
    return [(tok.decode([t for t in n if t not in (sep, tok.eos_token_id)]), n[-1] != sep, len(n)) for n in new]


@torch.no_grad()
def prm_rewards(m: Models, questions: list[str], steps: list[list[str]]) -> tuple[list[list[float]], int]:
    """Skywork format: [bos] + question + "\\n", each step + sep; sigmoid(v_head) at every sep.

    Returns the rewards per row and the number of tokens the PRM processed.
    """
    sep, rows, seps = m.ids("\n\n")[0], [], []
    for q, ss in zip(questions, steps):
        ids, pos = [m.tokenizer.bos_token_id, *m.ids(q + "\n")], []
        for s in ss:
            ids += m.ids(s) + [sep]
            pos.append(len(ids) - 1)
        rows.append(ids)
        seps.append(pos)
    hidden = m.prm.model(input_ids=padded(rows, m.tokenizer.pad_token_id)).last_hidden_state
    values = torch.sigmoid(hidden @ m.v_weight.T + m.v_bias).squeeze(-1)
    return [[float(values[r, p]) for p in pos] for r, pos in enumerate(seps)], sum(map(len, rows))


def prefix_ids(m: Models, problem: Problem, steps: list[str]) -> list[int]:
    """Generator input: [bos] + prompt + accepted steps, each followed by the separator."""
    return [m.tokenizer.bos_token_id, *m.ids(problem.prompt + "".join(s + "\n\n" for s in steps))]


@dataclass
class Run:
    """Result of one decoding mode over all problems.

    flops = sum over calls of 2 x params x tokens processed, where a generator call processes its
    whole prefix plus the tokens it generates (no KV cache kept between steps) and a PRM call its
    whole input: the same accounting for every mode, so the ratios are comparable.
    """

    steps: list[list[str]]
    by_target: int = 0
    total: int = 0
    flops: float = 0.0

    def accuracy(self, problems: list[Problem]) -> float:
        return float(np.mean([grade(p, "\n\n".join(s)) for p, s in zip(problems, self.steps)]))


def generate(m: Models, run: Run, name: str, prefixes: list[list[int]]) -> list[tuple[str, bool, int]]:
    """greedy_steps with FLOPs bookkeeping."""
    out = greedy_steps(m, getattr(m, name), prefixes)
    run.flops += 2 * m.params[name] * sum(len(p) + n for p, (_, _, n) in zip(prefixes, out))
    return out


def decode(m: Models, problems: list[Problem], threshold: float | None, only: str = "") -> Run:
    """Step loop: ``only`` = "draft"/"target" for one model, else RSD at ``threshold``."""
    run, live = Run([[] for _ in problems]), list(range(len(problems)))
    for _ in range(MAX_STEPS):
        if not live:
            break
        prefixes = [prefix_ids(m, problems[i], run.steps[i]) for i in live]
        out = generate(m, run, only or "draft", prefixes)
        if not only:
            rewards, n = prm_rewards(m, [problems[i].question for i in live],
                                     [run.steps[i] + [s] for i, (s, _, _) in zip(live, out)])
            run.flops += 2 * m.params["prm"] * n
            bad = [k for k in range(len(live)) if rewards[k][-1] < threshold]
            redo = generate(m, run, "target", [prefixes[k] for k in bad]) if bad else []
            for k, step in zip(bad, redo):
                out[k] = step
            run.by_target += len(bad)
        run.by_target += len(live) if only == "target" else 0
        run.total += len(live)
        for i, (s, _, _) in zip(live, out):
            run.steps[i].append(s)
        live = [i for i, (_, done, _) in zip(live, out) if not done]
    return run


@dataclass
class Separation:
    """PRM rewards of draft steps with their check_step labels."""

    scores: list[float]
    labels: list[bool]

    def auroc(self) -> float:
        return auroc(self.scores, self.labels)

    def accepted(self, threshold: float, label: bool) -> float:
        """Share of the steps with ``label`` whose reward reaches ``threshold``."""
        picked = [s >= threshold for s, y in zip(self.scores, self.labels) if y == label]
        return float(np.mean(picked)) if picked else float("nan")

    def describe(self, threshold: float) -> str:
        ok = sum(self.labels)
        return (f"AUROC {self.auroc():.4f} ({ok} correct, {len(self.labels) - ok} incorrect draft steps); "
                f"at {threshold}: accepts {self.accepted(threshold, True):.1%} of correct, "
                f"{self.accepted(threshold, False):.1%} of incorrect")


def rollout_separation(m: Models, problems: list[Problem], run: Run) -> Separation:
    """PRM rewards of every step of the draft's greedy solutions, labelled by check_step."""
    rewards, _ = prm_rewards(m, [p.question for p in problems], run.steps)
    scores, labels = [], []
    for p, steps, rs in zip(problems, run.steps, rewards):
        scores += rs
        labels += [check_step(p, steps[:i], s) for i, s in enumerate(steps)]
    return Separation(scores, labels)


def gold_prefix_separation(m: Models, problems: list[Problem]) -> Separation:
    """PRM rewards of the draft's greedy next step after every gold prefix (the RSD situation)."""
    items = [(p, k) for p in problems for k in range(len(p.steps))]
    out = greedy_steps(m, m.draft, [prefix_ids(m, p, list(p.steps[:k])) for p, k in items])
    steps = [list(p.steps[:k]) + [s] for (p, k), (s, _, _) in zip(items, out)]
    rewards, _ = prm_rewards(m, [p.question for p, _ in items], steps)
    labels = [check_step(p, ss[:-1], ss[-1]) for (p, _), ss in zip(items, steps)]
    return Separation([r[-1] for r in rewards], labels)


@torch.no_grad()
def decode_ms(model: torch.nn.Module, prompt: list[int], tokens: int = 48, repeats: int = 7) -> tuple[float, float]:
    """Per-token greedy decode time (min, median over repeats) in ms: batch 1, KV cache, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = []
    for _ in range(repeats):
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        start = time.perf_counter()
        for _ in range(tokens):
            token = out.logits[:, -1:].argmax(-1)
            out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
        times.append((time.perf_counter() - start) / tokens * 1000)
    torch.set_num_threads(threads)
    return min(times), statistics.median(times)


def measure(m: Models, problems: list[Problem], thresholds: list[float]) -> dict[str, object]:
    """All figures: accuracies, target-step shares, FLOPs relative to target-only, PRM separation, latency."""
    runs = {"draft": decode(m, problems, None, "draft"), "target": decode(m, problems, None, "target")}
    for thr in thresholds:
        runs[f"rsd@{thr}"] = decode(m, problems, thr)
    table = {name: (run.accuracy(problems), run.by_target / run.total, run.flops / runs["target"].flops)
             for name, run in runs.items()}
    prompt = prefix_ids(m, problems[0], [])
    latency = {name: decode_ms(getattr(m, name), prompt) for name in ("draft", "target")}
    return {"table": table, "rollout": rollout_separation(m, problems, runs["draft"]),
            "gold_prefix": gold_prefix_separation(m, problems), "latency": latency}


def report(m: Models, figures: dict, threshold: float) -> bool:
    """Print the table and the pass/fail lines; True iff every target is met."""
    table, latency = figures["table"], figures["latency"]
    print(f"params: {m.params}")
    print(f"{'mode':<10}{'accuracy':>10}{'target steps':>14}{'FLOPs/target':>14}")
    for name, (acc, share, flops) in table.items():
        print(f"{name:<10}{acc:>10.3f}{share:>14.3f}{flops:>14.3f}")
    print(f"PRM on the draft's next step after a gold prefix: {figures['gold_prefix'].describe(threshold)}")
    print(f"PRM on the draft's greedy rollouts: {figures['rollout'].describe(threshold)}")
    ratio = latency["target"][0] / latency["draft"][0]
    print("decode ms/token (batch 1, KV cache, 1 thread; min / median of 7): "
          + ", ".join(f"{k} {v[0]:.2f} / {v[1]:.2f}" for k, v in latency.items())
          + f"; target/draft {ratio:.2f} (min), {latency['target'][1] / latency['draft'][1]:.2f} (median)")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    acc_t, acc_d = table["target"][0], table["draft"][0]
    rsd = table[f"rsd@{threshold}"]
    checks = {
        "PRM AUROC, draft's next step after a gold prefix >= 0.98": figures["gold_prefix"].auroc() >= 0.98,
        "PRM AUROC, draft's greedy rollouts >= 0.98": figures["rollout"].auroc() >= 0.98,
        "draft accuracy >= 15 points below target": acc_t - acc_d >= 0.15,
        "target accuracy >= 99%": acc_t >= 0.99,
        f"RSD@{threshold} accuracy >= target - 0.5 points": rsd[0] >= acc_t - 0.005 - 1e-9,
        f"RSD@{threshold} target writes <= 15% of steps": rsd[1] <= 0.15,
        f"RSD@{threshold} FLOPs <= 0.40x target-only": rsd[2] <= 0.40,
        "PRM parameters <= 2x draft": m.params["prm"] <= 2 * m.params["draft"],
        "target >= 10x draft parameters": m.params["target"] >= 10 * m.params["draft"],
        "target >= 5x draft decode time per token": ratio >= 5,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models/embedded"))
    parser.add_argument("--problems", type=int, default=300)
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="train: validation problems of the train split (for choosing the threshold)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="RSD threshold the targets are checked at (default: configs/default.yaml's)")
    args = parser.parse_args(argv)
    config = load_config(DEFAULT_CONFIG)
    if config.prompt_template != PROMPT_TEMPLATE:
        raise SystemExit(f"configs/default.yaml prompt_template {config.prompt_template!r} != runtime.task's")
    threshold = args.threshold if args.threshold is not None else config.defaults.threshold
    thresholds = sorted({*THRESHOLDS, threshold})
    torch.set_grad_enabled(False)
    m = load(args.models)
    problems = generate_problems(args.problems, EVAL_SEED if args.split == "test" else VALIDATION_SEED, args.split)
    return 0 if report(m, measure(m, problems, thresholds), threshold) else 1


if __name__ == "__main__":
    sys.exit(main())
