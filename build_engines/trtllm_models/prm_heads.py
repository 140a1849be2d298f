"""Custom TensorRT-LLM (1.2, TensorRT backend) model classes for PRM engines.

Loaded only by `trtllm-build --model_cls_file <this file> --model_cls_name <class>` inside the
TensorRT-LLM container (trtllm-build imports it with SourceFileLoader, so it uses absolute imports
only). Nothing in build_engines imports it; it needs tensorrt_llm, torch and safetensors.

Both classes start from the stock Qwen2 sequence-classification engine that QWenForCausalLM builds
for a checkpoint with architecture `Qwen2ForSequenceClassification` (lm_head = Linear(h, num_labels),
no bias; weights from HF `score.weight`), prepared by `python -m build_engines.prm_remap prepare`.

- QWenValueHeadPRM: unchanged head; only the engine's `vocab_size` is set to `num_labels`, so the
  runtime's logits buffers and sampler agree with the head width (the embedding keeps the full
  vocabulary). Optional for Skywork value heads (prm.model_cls_name: QWenValueHeadPRM).
- QWenTwoClassPRM: Qwen2.5-Math-PRM head score.2(ReLU(score.0(h))) with biases. The converted
  checkpoint carries lm_head.weight (= score.2.weight); `prm_remap attach` copies
  rsd_two_class_head.safetensors (lm_head.bias, lm_head.fc1.weight, lm_head.fc1.bias) next to it,
  and from_checkpoint merges those tensors before loading.

At serving time send request_output_len=1, return_context_logits=true, end_id=pad_id=0 (< vocab 2),
and read context_logits[t, :2] at the separator positions (see the engine manifest's `prm` entry).
Not verified on a GPU from this repository; see docs/production_gpu.md.
"""
import os

import safetensors.torch
from tensorrt_llm.functional import relu
from tensorrt_llm.layers import ColumnLinear
from tensorrt_llm.models import QWenForCausalLM

HEAD_FILE = "rsd_two_class_head.safetensors"


class TwoLayerHead(ColumnLinear):
    """out(relu(fc1(h))). The output projection is this ColumnLinear itself, so `lm_head.weight`
    exists for TRT-LLM passes that inspect it (embedding sharing compares its shape)."""

    def __init__(self, hidden_size, num_labels, dtype):
        super().__init__(hidden_size, num_labels, bias=True, dtype=dtype, tp_group=None, tp_size=1,
                         gather_output=True)
        self.hidden_size = hidden_size
        self.num_labels = num_labels
        self.fc1 = ColumnLinear(hidden_size, hidden_size, bias=True, dtype=dtype, tp_group=None, tp_size=1,
                                gather_output=True)

    def forward(self, x, *args, **kwargs):
        return super().forward(relu(self.fc1(x)))


def _narrow_vocab(config):
    # The engine's logits row is num_labels wide; the runtime sizes logits buffers from vocab_size.
    config.vocab_size = config.num_labels


class QWenValueHeadPRM(QWenForCausalLM):

    def __init__(self, config):
        super().__init__(config)
        _narrow_vocab(config)


class QWenTwoClassPRM(QWenForCausalLM):

    def __init__(self, config):
        super().__init__(config)
        if config.mapping.is_last_pp_rank():
            self.lm_head = TwoLayerHead(config.hidden_size, config.num_labels, config.dtype)
        _narrow_vocab(config)

    @classmethod
    def from_checkpoint(cls, ckpt_dir, rank=None, config=None, *, preprocess_weights_hook=None):
        head = safetensors.torch.load_file(os.path.join(ckpt_dir, HEAD_FILE))

        def merge(weights):
            dtype = weights["lm_head.weight"].dtype
            weights.update({name: tensor.to(dtype) for name, tensor in head.items()})
            return preprocess_weights_hook(weights) if preprocess_weights_hook else weights

        return super().from_checkpoint(ckpt_dir, rank, config, preprocess_weights_hook=merge)
