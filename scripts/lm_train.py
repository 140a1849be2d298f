"""Training and sampling loops for the tiny generator LMs (draft and target).

Batches are right-padded, so no attention mask is needed: causal attention never looks at the pads
after a sequence, and their labels are ignored.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from runtime.task import Problem, grade
from tinylm import BOS_ID, EOS_ID, PAD_ID, encode, pad_batch

Example = tuple[list[int], int]  # (token ids, number of leading prompt tokens excluded from the loss)


@dataclass(frozen=True, slots=True)
class LmSpec:
    """Architecture and schedule of one tiny Llama LM."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    steps: int
    lr: float
    batch: int = 64


def grow_interleaved(lm: torch.nn.Module) -> torch.nn.Module:
    """The trained LM with every decoder layer followed by a new identity-initialised copy of it.

    The copies have zeroed output projections (attention o_proj, MLP down_proj), so the deeper
    model computes exactly what the trained one did; a short fine-tune then puts the new layers
    to use. This buys a deep target (decode time on a CPU grows with depth, not width) for about
    half the training cost of training it from scratch.
    """
    import copy

    from transformers import LlamaForCausalLM

    config = copy.deepcopy(lm.config)
    config.num_hidden_layers = 2 * lm.config.num_hidden_layers
    deeper = LlamaForCausalLM(config)
    deeper.model.embed_tokens.load_state_dict(lm.model.embed_tokens.state_dict())
    deeper.model.norm.load_state_dict(lm.model.norm.state_dict())
    deeper.lm_head.load_state_dict(lm.lm_head.state_dict())
    for index, layer in enumerate(lm.model.layers):
        deeper.model.layers[2 * index].load_state_dict(layer.state_dict())
        fresh = deeper.model.layers[2 * index + 1]
        fresh.load_state_dict(layer.state_dict())
        torch.nn.init.zeros_(fresh.self_attn.o_proj.weight)
        torch.nn.init.zeros_(fresh.mlp.down_proj.weight)
    return deeper


def grow_wider(lm: torch.nn.Module, hidden: int, heads: int, ffn: int, seed: int) -> torch.nn.Module:
    """The trained LM widened to `hidden` (more heads of the same size, more MLP units), same function.

    A fresh random model of the new width gets the trained weights in its leading block. Weights
    that write into the residual stream (embeddings, attention o_proj, MLP down_proj) are zero
    outside that block, so the new stream dimensions start at 0 and the new heads and MLP units
    add nothing; weights that read the stream keep their random values there (they read zeros
    now, and give training a gradient to move the new parts). RMSNorm divides by the root mean
    square over all dimensions, so its trained weights are scaled by sqrt(old / new) and its eps
    by old / new to cancel the zeros. The head size, hence the rotary frequencies, is unchanged.
    """
    import copy

    from transformers import LlamaForCausalLM

    old = lm.config
    head_dim = old.hidden_size // old.num_attention_heads
    assert hidden // heads == head_dim and hidden >= old.hidden_size and ffn >= old.intermediate_size, \
        "widening keeps the head size and never shrinks"
    config = copy.deepcopy(old)
    config.hidden_size, config.num_attention_heads, config.num_key_value_heads = hidden, heads, heads
    config.intermediate_size = ffn
    config.rms_norm_eps = old.rms_norm_eps * old.hidden_size / hidden
    torch.manual_seed(seed)
    wide = LlamaForCausalLM(config)
    scale = (old.hidden_size / hidden) ** 0.5
    writes_stream = ("embed_tokens", "o_proj", "down_proj")
    trained = lm.state_dict()
    with torch.no_grad():
        for name, param in wide.state_dict().items():
            src = trained[name]
            if name.endswith("norm.weight"):
                param.fill_(scale)
                param[: src.shape[0]] = src * scale
                continue
            if any(part in name for part in writes_stream):
                param.zero_()
            param[tuple(slice(0, n) for n in src.shape)] = src
    return wide


def lm_examples(tokenizer: object, problems: Sequence[Problem]) -> list[Example]:
    """[bos] + prompt + gold solution + eos, with the prompt masked out of the loss."""
    prompts = tokenizer([p.prompt for p in problems], add_special_tokens=False)["input_ids"]
    texts = tokenizer([p.prompt + p.solution for p in problems], add_special_tokens=False)["input_ids"]
    return [([BOS_ID, *text, EOS_ID], 1 + len(prompt)) for prompt, text in zip(prompts, texts)]


def lm_batch(examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and labels (-100 on prompt and padding) for a causal-LM loss."""
    ids = pad_batch([ids for ids, _ in examples])
    labels = ids.clone()
    labels[ids == PAD_ID] = -100
    for row, (_, prompt_len) in enumerate(examples):
        labels[row, :prompt_len] = -100
    return ids, labels


def cosine_lr(step: int, total: int, peak: float, warmup: int = 50) -> float:
    """Linear warm-up then cosine decay to 5% of peak: the usual recipe, robust for short runs."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def run_training(
    params: list[torch.nn.Parameter] | list[dict],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    desc: str,
    after_step: Callable[[int], None] | None = None,
) -> float:
    """AdamW loop with clipping and a tqdm bar; ``loss_fn(step)`` builds and scores one batch.

    ``params`` may be parameter groups with an ``lr_scale`` each (new layers can learn faster).
    ``after_step(step)`` runs after each update (the draft is picked from checkpoints this way).
    """
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    every = [p for group in optimizer.param_groups for p in group["params"]]
    smooth = float("nan")
    bar = tqdm(range(steps), desc=desc, dynamic_ncols=True, mininterval=2.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr) * group.get("lr_scale", 1.0)
        loss = loss_fn(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(every, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        smooth = loss.item() if math.isnan(smooth) else 0.95 * smooth + 0.05 * loss.item()
        bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
        if after_step is not None:
            after_step(step + 1)
    return smooth


def train_lm(
    model: torch.nn.Module, examples: Sequence[Example], spec: LmSpec, seed: int, desc: str,
    after_step: Callable[[int], None] | None = None,
) -> float:
    """Train a causal LM on random batches of ``examples``; returns the smoothed final loss."""
    rng = random.Random(seed)
    model.train()

    def loss_fn(_: int) -> torch.Tensor:
        ids, labels = lm_batch(rng.sample(examples, spec.batch))
        return model(input_ids=ids, labels=labels).loss

    loss = run_training(list(model.parameters()), loss_fn, spec.steps, spec.lr, desc, after_step)
    model.eval()
    return loss


@torch.no_grad()
def sample(
    model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], temperature: float,
    batch: int = 256, max_new: int = 64, desc: str | None = "sampling",
) -> list[str]:
    """Completions of [bos] + prompt until eos (KV-cached, left-padded); greedy when temperature is 0."""
    outputs: list[str] = []
    starts = range(0, len(prompts), batch)
    for start in tqdm(starts, desc=desc, dynamic_ncols=True, mininterval=2.0) if desc else starts:
        rows = [[BOS_ID, *encode(tokenizer, p)] for p in prompts[start:start + batch]]
        width = max(map(len, rows))
        ids = torch.tensor([[PAD_ID] * (width - len(r)) + r for r in rows])
        extra = {"do_sample": True, "temperature": temperature, "top_k": None, "top_p": None} \
            if temperature > 0 else {"do_sample": False}
        out = model.generate(
            input_ids=ids, attention_mask=(ids != PAD_ID).long(), max_new_tokens=max_new,
            eos_token_id=EOS_ID, pad_token_id=PAD_ID, **extra,
        )
        for row in out[:, width:].tolist():
            row = row[: row.index(EOS_ID)] if EOS_ID in row else row
            outputs.append(tokenizer.decode([t for t in row if t != PAD_ID]))
    return outputs


def greedy_accuracy(model: torch.nn.Module, tokenizer: object, problems: Sequence[Problem]) -> float:
    """Share of problems whose greedy completion grades correct."""
    was_training = model.training
    model.eval()
    outputs = sample(model, tokenizer, [p.prompt for p in problems], 0.0, desc=None)
    model.train(was_training)
    return sum(grade(p, out) for p, out in zip(problems, outputs)) / len(problems)
