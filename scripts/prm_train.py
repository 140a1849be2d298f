"""The process reward model: a tiny Llama backbone plus a Skywork-style value head.

Reward of a step = sigmoid(v_head.summary(h)) at the step's separator token, h being the backbone's
final hidden state (after the final RMSNorm). Training losses, all on the same forward:
- BCE at every separator (the step's check_step label) and at every step token (is the step still
  on the gold path after this token);
- a training-only "gold-token" head (hidden -> vocabulary): at each step token it predicts the gold
  token that belongs at that position given the correct text before it. The draft's mistakes are
  mostly off-by-one results, which only an exact recomputation catches; this head makes the
  backbone recompute each result where it is written, so the value head can compare the two;
- a causal-LM loss on correct steps (through ``lm_head``) that keeps the arithmetic in the backbone.
Both heads are dropped when saving: the folder is a standard value-head PRM.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from lm_train import LmSpec, run_training
from runtime.task import Problem, check_step, perturb_step, problem_from_question, split_steps
from tinylm import SEP_ID, VOCAB, encode, pad_batch, param_count, prm_ids, save_tokenizer

Labelled = tuple[str, list[str], list[bool]]  # (question, steps, per-step correctness)


@dataclass(frozen=True, slots=True)
class PrmLoss:
    """Weights of the PRM training losses (see the module docstring)."""

    dense: float = 1.0  # per-token on-gold-path BCE, relative to the separator BCE (weight 1)
    negative: float = 2.0  # BCE weight of label-0 targets: keeps wrong steps well under threshold
    gold_token: float = 1.0
    lm: float = 0.2


class ValueHead(torch.nn.Module):
    """Skywork's ValueHead layout, so the weights are named ``v_head.summary.{weight,bias}``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.summary = torch.nn.Linear(hidden, 1)


class PrmModel(torch.nn.Module):
    """LlamaForCausalLM (backbone ``model.*`` + ``lm_head``), a value head and the gold-token head."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self.v_head = ValueHead(lm.config.hidden_size)
        self.gold_head = torch.nn.Linear(lm.config.hidden_size, lm.config.vocab_size)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value logits [B, T], LM logits [B, T, V], gold-token logits [B, T, V]."""
        hidden = self.lm.model(input_ids=ids).last_hidden_state
        return self.v_head.summary(hidden).squeeze(-1), self.lm.lm_head(hidden), self.gold_head(hidden)

    def num_params(self) -> int:
        """What scoring runs: the backbone and the value head (no lm_head, no gold head)."""
        return param_count(self.lm.model) + param_count(self.v_head)


def deepen(lm: torch.nn.Module, extra_layers: int, copy_from: int = -1) -> torch.nn.Module:
    """The trained LM with ``extra_layers`` new decoder layers on top that start as the identity.

    New layers copy layer ``copy_from`` (its attention patterns are a head start) with zeroed
    output projections, so the deeper model computes exactly what the LM did until training moves it.
    """
    from transformers import LlamaForCausalLM

    config = copy.deepcopy(lm.config)
    config.num_hidden_layers += extra_layers
    deeper = LlamaForCausalLM(config)
    missing, _ = deeper.load_state_dict(lm.state_dict(), strict=False)
    assert all(".layers." in key for key in missing), missing
    for layer in deeper.model.layers[lm.config.num_hidden_layers:]:
        if copy_from >= 0:
            layer.load_state_dict(lm.model.layers[copy_from].state_dict())
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
    return deeper


def label_steps(problem: Problem, steps: list[str]) -> Labelled:
    """Steps with their exact check_step labels."""
    return problem.question, steps, [check_step(problem, steps[:i], s) for i, s in enumerate(steps)]


def label_completion(problem: Problem, completion: str, prefix: Sequence[str] = ()) -> Labelled:
    """Gold ``prefix`` steps + the steps of a sampled completion, labelled by check_step."""
    return label_steps(problem, [*prefix, *split_steps(completion)])


def perturbed_examples(problems: Sequence[Problem], rng: random.Random) -> list[Labelled]:
    """Gold prefix, then one corrupted step (label False) at a random position."""
    out = []
    for problem in problems:
        index = rng.randrange(len(problem.steps))
        steps = [*problem.steps[:index], perturb_step(problem, index, rng)]
        out.append((problem.question, steps, [True] * index + [False]))
    return out


def gold_examples(problems: Sequence[Problem]) -> list[Labelled]:
    """Complete gold solutions, every step correct."""
    return [(p.question, list(p.steps), [True] * len(p.steps)) for p in problems]


def _step_targets(step_ids: list[int], gold: str | None, ok_before: bool) -> tuple[list[float], list[int]]:
    """Per token of a step (its separator included): on-gold-path target and gold-token label.

    The on-gold-path target is 1.0 while the text up to and including the token is a prefix of
    the gold step. The gold-token label is the gold token at that position when the text before
    it is still on the gold path (the separator's gold token is the separator once the step is
    complete), else -100.
    """
    text, dense, gold_tokens = "", [], []
    for token in step_ids:
        on_path = ok_before and gold is not None and gold.startswith(text)
        if on_path:
            gold_tokens.append(VOCAB.index(gold[len(text)]) if len(text) < len(gold) else SEP_ID)
        else:
            gold_tokens.append(-100)
        text += "" if token == SEP_ID else VOCAB[token]
        dense.append(float(on_path and gold.startswith(text) and (token != SEP_ID or text == gold)))
    return dense, gold_tokens


def prm_batch(tokenizer: object, rows: Sequence[Labelled], dense_weight: float) -> tuple[torch.Tensor, ...]:
    """ids, value targets, target weights, LM labels and gold-token labels, all [B, T].

    Value targets sit at every separator (the check_step label, weight 1) and at every step token
    (``dense_weight``). LM labels cover the tokens of correct steps (after a correct prefix).
    """
    encoded = [prm_ids(tokenizer, q, steps) for q, steps, _ in rows]
    ids = pad_batch([e[0] for e in encoded])
    targets, weights = torch.zeros(ids.shape), torch.zeros(ids.shape)
    lm_labels = torch.full(ids.shape, -100, dtype=torch.long)
    gold_labels = torch.full(ids.shape, -100, dtype=torch.long)
    for row, ((question, steps, labels), (_, seps)) in enumerate(zip(rows, encoded)):
        gold = problem_from_question(question).steps
        start = seps[0] - len(encode(tokenizer, steps[0]))
        for index, (sep, label) in enumerate(zip(seps, labels)):
            ok_before = all(labels[:index])
            step_ids = ids[row, start:sep + 1].tolist()
            dense, gold_tokens = _step_targets(step_ids, gold[index] if index < len(gold) else None, ok_before)
            targets[row, start:sep + 1] = torch.tensor(dense)
            weights[row, start:sep] = dense_weight
            gold_labels[row, start:sep + 1] = torch.tensor(gold_tokens)
            targets[row, sep], weights[row, sep] = float(label), 1.0
            if label:
                lm_labels[row, start:sep + 1] = ids[row, start:sep + 1]
            start = sep + 1
    return ids, targets, weights, lm_labels, gold_labels


def prm_loss(prm: PrmModel, batch: tuple[torch.Tensor, ...], loss: PrmLoss) -> torch.Tensor:
    """The weighted sum of the PRM losses on one batch."""
    ids, targets, weights, lm_labels, gold_labels = batch
    values, logits, gold_logits = prm(ids)
    weights = weights * (1.0 + (loss.negative - 1.0) * (targets == 0).float())
    bce = torch.nn.functional.binary_cross_entropy_with_logits(values, targets, weight=weights, reduction="sum")
    vocab = logits.shape[-1]
    lm = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), lm_labels[:, 1:].reshape(-1))
    gold = torch.nn.functional.cross_entropy(gold_logits.reshape(-1, vocab), gold_labels.reshape(-1))
    return bce / weights.sum() + loss.lm * lm + loss.gold_token * gold


def train_prm(prm: PrmModel, tokenizer: object, data: Sequence[Labelled], spec: LmSpec, seed: int,
              loss: PrmLoss, after_step: Callable[[int], None] | None = None) -> float:
    """Train every PRM parameter on random batches of ``data``; returns the smoothed final loss."""
    rng = random.Random(seed)
    prm.train()

    def loss_fn(_: int) -> torch.Tensor:
        return prm_loss(prm, prm_batch(tokenizer, rng.sample(data, spec.batch), loss.dense), loss)

    final = run_training(list(prm.parameters()), loss_fn, spec.steps, spec.lr, "train prm", after_step)
    prm.eval()
    return final


def save_prm(prm: PrmModel, tokenizer: object, folder: Path) -> None:
    """Skywork value-head folder: config.json (LlamaConfig), backbone ``model.*`` + ``v_head.summary.*``.

    lm_head and the gold-token head are training-only and not saved.
    """
    folder.mkdir(parents=True, exist_ok=True)
    prm.lm.config.architectures = ["LlamaForCausalLM"]
    prm.lm.config.save_pretrained(folder)
    state = {f"model.{k}": v.detach().contiguous() for k, v in prm.lm.model.state_dict().items()}
    state["v_head.summary.weight"] = prm.v_head.summary.weight.detach().contiguous()
    state["v_head.summary.bias"] = prm.v_head.summary.bias.detach().contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    save_tokenizer(tokenizer, folder)
