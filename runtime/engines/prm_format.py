"""How a process reward model reads (question, steps): token ids only, no torch.

value_head (Skywork-o1-Open-PRM): input = [bos] + encode(question + "\\n"), then per step
  encode(step) + [id("\\n\\n")]; the reward is read at each step's separator token.
two_class (Qwen2.5-Math-PRM): input = ChatML(system, user=question) + assistant steps, each
  terminated by <extra_0>; the reward is read at each <extra_0>.
Each step is tokenised on its own and a request's PRM ids are kept step by step (`PrmHistory`,
one per request session), so only new steps are encoded and a PRM engine can reuse its KV cache.
The heads that turn hidden states into rewards live with the engine (`torch/prm.py`); the
Triton BLS uses this module to build PRM inputs without loading torch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from runtime.core.errors import ConfigError
from runtime.core.types import PrmKind
from runtime.engines.hf import HFTokenizer

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
PRM_FORMATS = tuple(k.value for k in PrmKind if k.has_head)


@dataclass(frozen=True, slots=True)
class PrmFormat:
    """Token ids of the question part and of one step (its reward is read at its last token)."""

    name: str
    prefix_ids: Callable[[str], list[int]]
    step_ids: Callable[[str], list[int]]


def value_head_format(tok: HFTokenizer, key: str) -> PrmFormat:
    sep = tok.encode("\n\n")
    if not sep:
        raise ConfigError(key, "the PRM tokenizer cannot encode the step separator")
    bos = [tok.bos_id] if tok.bos_id is not None else []
    return PrmFormat("value_head", lambda q: bos + tok.encode(q + "\n"), lambda s: tok.encode(s) + [sep[-1]])


def two_class_format(tok: HFTokenizer, key: str) -> PrmFormat:
    step_token = tok.token_id("<extra_0>")
    if step_token is None:
        raise ConfigError(key, "the PRM tokenizer has no <extra_0> token (two_class PRM format)")

    def prefix(question: str) -> list[int]:
        messages = [{"role": "system", "content": QWEN_PRM_SYSTEM}, {"role": "user", "content": question}]
        return tok.encode(tok.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    return PrmFormat("two_class", prefix, lambda s: tok.encode(s) + [step_token])


def make_prm_format(kind: str, tok: HFTokenizer, key: str) -> PrmFormat:
    if kind == "value_head":
        return value_head_format(tok, key)
    if kind == "two_class":
        return two_class_format(tok, key)
    raise ConfigError(key, f"unknown PRM format {kind!r}; expected {' or '.join(PRM_FORMATS)}")


@dataclass(slots=True)
class PrmHistory:
    """One request's question ids and each accepted step's ids, encoded once."""

    fmt: PrmFormat
    _known: list[tuple[str, list[int]]] = field(default_factory=list)  # (text, ids): question, steps

    def prefix(self, question: str, steps: Sequence[str]) -> list[int]:
        """Question ids + each accepted step's ids, re-encoding only steps not seen before."""
        known = self._known
        if not known or known[0][0] != question:
            known[:] = [(question, self.fmt.prefix_ids(question))]
        for i, text in enumerate(steps, start=1):
            if i < len(known) and known[i][0] == text:
                continue
            del known[i:]
            known.append((text, self.fmt.step_ids(text)))
        del known[len(steps) + 1:]
        return [t for _, ids in known for t in ids]
