"""How a PRM engine's context-logit row becomes a reward: one rule for both PRM formats.

The manifest stores a `RewardReadout`; the BLS applies `reward_from_row` to the context-logit row
of every separator position (input_ids[t] == separator_token_id):

- value_head (Skywork-o1-Open-PRM): reward = sigmoid(row[index] + bias). The engine computes
  v.h only (no bias term: TRT-LLM's score head and lm_head are bias-free), so the bias is added here.
- two_class (Qwen2.5-Math-PRM): reward = softmax(row[:num_labels])[index] with index 1 ("correct").
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from runtime.core.errors import ConfigError

VALUE_HEAD_INPUT = ("input_ids = encode(bos + problem + '\\n'); for each step: encode(step) + [separator_token_id]; "
                    "each step is tokenized on its own (Skywork-o1-Open-PRM prepare_input)")
TWO_CLASS_INPUT = ("ChatML: system 'Please reason step by step, and put your final answer within \\boxed{}.', user "
                   "problem, assistant '<extra_0>'.join(steps) + '<extra_0>' (Qwen2.5-Math-PRM)")


@dataclass(frozen=True, slots=True)
class RewardReadout:
    """Reward rule for one PRM engine (recorded in its manifest as `prm`)."""

    prm_format: str  # value_head | two_class
    head_layout: str  # score_head | vocab_row | two_class_custom
    op: str  # sigmoid | softmax
    index: int  # column of the context-logit row
    bias: float | None  # added before sigmoid (value_head); 0.0 for softmax; None = read at build time
    num_labels: int  # width of the row that matters (the engine row may be wider for vocab_row)
    separator: str
    separator_token_id: int | None  # None only in a dry run without the model folder
    engine_vocab_size: int  # logits width the runtime sees; end_id/pad_id must be below it
    input_format: str

    def __post_init__(self) -> None:
        if self.op not in ("sigmoid", "softmax"):
            raise ConfigError("prm.op", f"must be sigmoid or softmax, got {self.op}")
        if not 0 <= self.index < max(self.num_labels, 1):
            raise ConfigError("prm.index", f"{self.index} is outside the {self.num_labels} labels")

    def to_manifest(self) -> dict[str, Any]:
        out = asdict(self)
        out["formula"] = self.formula
        out["request"] = {"request_output_len": 1, "return_context_logits": True,
                          "end_id": 0 if self.engine_vocab_size <= 2 else "tokenizer eos id",
                          "pad_id": 0 if self.engine_vocab_size <= 2 else "tokenizer pad id",
                          "note": ("end_id/pad_id must be < engine_vocab_size; with KV-cache reuse the "
                                   "context logits cover only the non-reused suffix, so index separator rows "
                                   "from the end or disable enable_kv_cache_reuse on this model")}
        return out

    @property
    def formula(self) -> str:
        if self.op == "sigmoid":
            bias = "b" if self.bias is None else repr(self.bias)
            return f"reward = sigmoid(context_logits[t, {self.index}] + {bias}) at t where input_ids[t] == " \
                   f"{self.separator_token_id}"
        return f"reward = softmax(context_logits[t, 0:{self.num_labels}])[{self.index}] at t where input_ids[t] == " \
               f"{self.separator_token_id}"


def reward_from_row(row: Sequence[float], readout: RewardReadout) -> float:
    """The reward in [0, 1] for one context-logit row."""
    if readout.op == "sigmoid":
        if readout.bias is None:
            raise ConfigError("prm.bias", "is unknown until the PRM head has been prepared")
        x = float(row[readout.index]) + readout.bias
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    logits = [float(v) for v in row[: readout.num_labels]]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    return exps[readout.index] / sum(exps)
