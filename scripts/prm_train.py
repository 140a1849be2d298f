"""The process reward model: a tiny Llama backbone plus a Skywork-style value head.

Reward of a step = sigmoid(v_head.summary(h)) at the step's separator token, h being the backbone's
final hidden state (after the final RMSNorm). Training mixes a BCE loss at every separator with a
causal-LM loss on gold steps, so the backbone keeps learning the arithmetic it has to verify.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from lm_train import LmSpec, run_training
from runtime.task import Problem, check_step, perturb_step, problem_from_question, split_steps
from tinylm import VOCAB, encode, pad_batch, param_count, prm_ids, save_tokenizer

Labelled = tuple[str, list[str], list[bool]]  # (question, steps, per-step correctness)


class ValueHead(torch.nn.Module):
    """Skywork's ValueHead layout, so the weights are named ``v_head.summary.{weight,bias}``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.summary = torch.nn.Linear(hidden, 1)


class PrmModel(torch.nn.Module):
    """LlamaForCausalLM (backbone ``model.*`` + ``lm_head``) with a value head."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self.v_head = ValueHead(lm.config.hidden_size)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token value logits [batch, seq] and LM logits [batch, seq, vocab]."""
        hidden = self.lm.model(input_ids=ids).last_hidden_state
        return self.v_head.summary(hidden).squeeze(-1), self.lm.lm_head(hidden)

    def num_params(self) -> int:
        return param_count(self)


def deepen(lm: torch.nn.Module, extra_layers: int, copy_from: int = -1) -> torch.nn.Module:
    """The trained LM with ``extra_layers`` new decoder layers on top that start as the identity.

    A PRM must compare each step token with what the LM predicted for it, and an LM of the draft's
    depth spends all its layers on the prediction; a layer on top can read the previous position's
    prediction and flag a mismatch. New layers copy layer ``copy_from`` (its attention patterns,
    e.g. previous-token heads, are a head start) with zeroed output projections, so the deeper
    model computes exactly what the LM did until training moves it.
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


def label_completion(problem: Problem, completion: str) -> Labelled:
    """Steps of a sampled completion with their exact check_step labels."""
    steps = split_steps(completion)
    return problem.question, steps, [check_step(problem, steps[:i], s) for i, s in enumerate(steps)]


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


def _token_targets(step_ids: list[int], gold: str | None, ok_so_far: bool) -> list[float]:
    """1.0 while the step text up to this token is still a prefix of the gold step, else 0.0."""
    text, out = "", []
    for token in step_ids:
        text += VOCAB[token]
        out.append(float(ok_so_far and gold is not None and gold.startswith(text)))
    return out


def prm_batch(tokenizer: object, rows: Sequence[Labelled], dense_weight: float) -> tuple[torch.Tensor, ...]:
    """ids, value targets, target weights and LM labels, all [B,T].

    Targets sit at every separator (the check_step label, weight 1) and, with ``dense_weight``, at
    every step token (is the step still on the gold path after this token). The dense labels teach
    the backbone to flag the first wrong digit where it appears, which the separator then reads.
    LM labels cover the step tokens up to the last correct step.
    """
    encoded = [prm_ids(tokenizer, q, steps) for q, steps, _ in rows]
    ids = pad_batch([e[0] for e in encoded])
    targets, weights = torch.zeros(ids.shape), torch.zeros(ids.shape)
    lm_labels = torch.full(ids.shape, -100, dtype=torch.long)
    for row, ((question, steps, labels), (_, seps)) in enumerate(zip(rows, encoded)):
        gold = problem_from_question(question).steps
        start = seps[0] - len(encode(tokenizer, steps[0]))
        for index, (sep, label) in enumerate(zip(seps, labels)):
            ok_before = all(labels[:index])
            step_ids = ids[row, start:sep].tolist()
            dense = _token_targets(step_ids, gold[index] if index < len(gold) else None, ok_before)
            targets[row, start:sep] = torch.tensor(dense)
            weights[row, start:sep] = dense_weight
            targets[row, sep], weights[row, sep] = float(label), 1.0
            if label:
                lm_labels[row, start:sep + 1] = ids[row, start:sep + 1]
            start = sep + 1
    return ids, targets, weights, lm_labels


def train_prm(
    prm: PrmModel, tokenizer: object, data: Sequence[Labelled], spec: LmSpec, seed: int,
    lm_weight: float, negative_weight: float, dense_weight: float, frozen_layers: int = 0,
    new_layers: int = 0, new_lr_scale: float = 1.0,
) -> float:
    """Weighted BCE (wrong labels weighted up) + weighted LM loss; returns the smoothed final loss.

    ``frozen_layers`` > 0 freezes the embeddings and the first decoder layers (the trained LM), so
    only the layers on top and the value head learn: they read the LM's own predictions.
    """
    rng = random.Random(seed)
    prm.train()
    frozen = ("lm.model.embed_tokens.", "lm.lm_head.", *(f"lm.model.layers.{i}." for i in range(frozen_layers)))
    layers = prm.lm.config.num_hidden_layers
    fresh = ("v_head.", *(f"lm.model.layers.{i}." for i in range(layers - new_layers, layers)))
    old, new = [], []
    for name, param in prm.named_parameters():
        param.requires_grad_(not (frozen_layers and name.startswith(frozen)))
        if param.requires_grad:
            (new if name.startswith(fresh) else old).append(param)
    params = [{"params": old, "lr_scale": 1.0}, {"params": new, "lr_scale": new_lr_scale}]

    def loss_fn(_: int) -> torch.Tensor:
        ids, targets, weights, lm_labels = prm_batch(tokenizer, rng.sample(data, spec.batch), dense_weight)
        values, logits = prm(ids)
        weights = weights * (1.0 + (negative_weight - 1.0) * (targets == 0).float())
        bce = torch.nn.functional.binary_cross_entropy_with_logits(values, targets, weight=weights, reduction="sum")
        lm = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), lm_labels[:, 1:].reshape(-1))
        return bce / weights.sum() + lm_weight * lm

    loss = run_training(params, loss_fn, spec.steps, spec.lr, "train prm")
    prm.eval()
    return loss


def save_prm(prm: PrmModel, tokenizer: object, folder: Path) -> None:
    """Skywork value-head folder: config.json (LlamaConfig) + model.safetensors + tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    prm.lm.config.architectures = ["LlamaForCausalLM"]
    prm.lm.config.save_pretrained(folder)
    state = {f"{k}": v.detach().contiguous() for k, v in prm.lm.state_dict().items()}
    state["v_head.summary.weight"] = prm.v_head.summary.weight.detach().contiguous()
    state["v_head.summary.bias"] = prm.v_head.summary.bias.detach().contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    save_tokenizer(tokenizer, folder)
