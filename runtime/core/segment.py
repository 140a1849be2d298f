"""Step segmentation: where a reasoning step ends, decided on token ids.

A step ends at the first token whose text completes the delimiter ("\n\n"): either a single token
containing it (Qwen2's pre-tokenizer glues newlines to punctuation: ".\n\n", ":\n\n", ...) or a
token starting with "\n" right after one ending with "\n" (character-level vocabularies). Looking
for "\n\n" as one token id only would miss most step ends of a byte-level BPE vocabulary.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from runtime.core.types import Finish

DEFAULT_DELIMITER = "\n\n"


@dataclass(slots=True)
class StepSegmenter:
    """Incremental delimiter detection over token pieces (piece = the text of one token)."""

    piece: Callable[[int], str]
    eos_ids: frozenset[int]
    delimiter: str = DEFAULT_DELIMITER
    _cache: dict[int, str] = field(default_factory=dict, repr=False)

    def text_of(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._cache[token_id] = self.piece(token_id)
        return text

    def feed(self, tail: str, token_id: int) -> tuple[Finish | None, str]:
        """The step-end rule, the one place it is written: feed one token after `tail` (the step's
        last len(delimiter) - 1 characters); returns (EOS: an end token, which is not part of the
        step | STEP: this token completes the delimiter, and is kept | None, the new tail)."""
        if token_id in self.eos_ids:
            return Finish.EOS, tail
        text = tail + self.text_of(token_id)
        keep = len(self.delimiter) - 1
        return (Finish.STEP if self.delimiter in text else None), (text[-keep:] if keep else "")

    def cut(self, ids: Iterable[int]) -> tuple[tuple[int, ...], str | None]:
        """Cut a token run at the first step end: (ids kept, "step" | "eos" | None if no end)."""
        kept: list[int] = []
        tail = ""
        for token in ids:
            end, tail = self.feed(tail, token)
            if end is Finish.EOS:
                return tuple(kept), "eos"
            kept.append(token)
            if end is Finish.STEP:
                return tuple(kept), "step"
        return tuple(kept), None

    def ends(self, tail: str, tokens: Iterable[int]) -> bool:
        """Would these tokens, after `tail`, end the step?"""
        for token in tokens:
            end, tail = self.feed(tail, token)
            if end is not None:
                return True
        return False


def prm_step_text(step_text: str, delimiter: str = DEFAULT_DELIMITER) -> str:
    """The step as a PRM sees it: without its trailing delimiter (and what follows it in that token).

    Scoring the text after the delimiter as a step of its own would score an empty step (the
    GSI reference bug G2); we score the candidate step itself.
    """
    cut = step_text.find(delimiter)
    return step_text if cut < 0 else step_text[:cut]


def delimiter_token_ids(pieces: Iterable[tuple[int, str]], delimiter: str = DEFAULT_DELIMITER) -> list[int]:
    """Every vocabulary id whose text contains the delimiter: the stop-word list for engines that
    stop on token ids (TensorRT-LLM's stop_words_list)."""
    return [i for i, text in pieces if delimiter in text]


@dataclass(slots=True)
class TokenStep:
    """Accumulates emitted tokens until a delimiter, EOS or the cap ends the step."""

    segmenter: StepSegmenter
    cap: int
    out: list[int] = field(default_factory=list)
    tail: str = ""
    finish: Finish | None = None

    @property
    def room(self) -> int:
        return self.cap - len(self.out)

    def push(self, token: int) -> bool:
        """Emit one token; returns True once the step has ended."""
        self.finish, self.tail = self.segmenter.feed(self.tail, token)
        if self.finish is not Finish.EOS:
            self.out.append(token)
        if self.finish is None and len(self.out) >= self.cap:
            self.finish = Finish.LENGTH
        return self.finish is not None

    def proposal_ends(self, proposal: list[int]) -> bool:
        """Would this run of proposed tokens end the step (so drafting further is wasted)?"""
        return self.segmenter.ends(self.tail, proposal)
