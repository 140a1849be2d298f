"""A request's own stopping and logit rules, built once per request from its parameters.

- `logit_rules`: RequestParams -> LogitRules (bad words and bias words tokenised alone, as
  TensorRT-LLM's preprocessing does with add_special_tokens=False; the tokenizer's EOS ids are
  the end ids min_tokens holds back).
- `StopScanner`: stop strings are matched on the output *text* (TensorRT-LLM's BLS does the
  same), across step boundaries: a stop may start in one step and end in the next. The output is
  cut right after the first stop that ends at or after `min_tokens` output tokens (the stop
  string is part of the output, as in TensorRT-LLM); the step's tokens are cut to the fewest
  that cover that text.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from runtime.core.params import RequestParams
from runtime.core.protocols import Tokenizer
from runtime.core.types import LogitRules


def logit_rules(params: RequestParams, tokenizer: Tokenizer) -> LogitRules:
    bad = tuple(ids for ids in (tuple(tokenizer.encode(w)) for w in params.bad_words) if ids)
    bias: list[tuple[int, float]] = []
    for word, weight in zip(params.embedding_bias_words, params.embedding_bias_weights):
        bias += [(token, weight) for token in tokenizer.encode(word)]
    return LogitRules(params.repetition_penalty, params.presence_penalty, params.frequency_penalty,
                      tuple(bias), bad, held_end_ids(params.min_tokens, tokenizer.eos_ids))


def held_end_ids(min_tokens: int, eos_ids: Iterable[int]) -> frozenset[int]:
    """The end-id rule: while min_tokens > 0, every EOS id of the tokenizer is held back (banned
    until min_tokens tokens were drawn); without min_tokens nothing is."""
    return frozenset(eos_ids) if min_tokens > 0 else frozenset()


@dataclass(slots=True)
class StopScanner:
    stops: tuple[str, ...]
    tail: str = ""  # the output's last len(longest stop) - 1 characters

    def scan(self, text: str, ids: Sequence[int], decode: Callable[[Sequence[int]], str], before: int,
             min_tokens: int) -> tuple[str, int] | None:
        """For one step (`text` = decode(ids), `before` output tokens before it): (the step's text
        up to the end of the first stop string, the number of its tokens that cover it), or None."""
        if not self.stops:
            return None
        window = self.tail + text
        for end in self._ends(window):
            cut = window[len(self.tail):end]
            count = next((k for k in range(1, len(ids) + 1) if len(decode(ids[:k])) >= len(cut)), len(ids))
            if before + count >= min_tokens:
                return cut, count
        keep = max(len(s) for s in self.stops) - 1
        self.tail = window[-keep:] if keep else ""  # the whole window while it is shorter than keep
        return None

    def _ends(self, window: str) -> list[int]:
        """End offsets of every stop occurrence that ends in the new text, first first."""
        ends = set()
        for stop in self.stops:
            start = window.find(stop)
            while start >= 0:
                if start + len(stop) > len(self.tail):
                    ends.add(start + len(stop))
                start = window.find(stop, start + 1)
        return sorted(ends)
