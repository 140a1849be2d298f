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

    def advance(self, tail: str, token_id: int) -> tuple[bool, str]:
        """Feed one token; returns (this token ends the step, new tail)."""
        text = tail + self.text_of(token_id)
        keep = len(self.delimiter) - 1
        return self.delimiter in text, (text[-keep:] if keep else "")

    def cut(self, ids: Iterable[int]) -> tuple[tuple[int, ...], str | None]:
        """Cut a token run at the first step end: (ids kept, "step" | "eos" | None if no end).

        An EOS token ends the step and is dropped; a delimiter token is kept.
        """
        kept: list[int] = []
        tail = ""
        for token in ids:
            if token in self.eos_ids:
                return tuple(kept), "eos"
            kept.append(token)
            done, tail = self.advance(tail, token)
            if done:
                return tuple(kept), "step"
        return tuple(kept), None


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
        if token in self.segmenter.eos_ids:
            self.finish = Finish.EOS
            return True
        self.out.append(token)
        ended, self.tail = self.segmenter.advance(self.tail, token)
        if ended:
            self.finish = Finish.STEP
        elif len(self.out) >= self.cap:
            self.finish = Finish.LENGTH
        return self.finish is not None

    def proposal_ends(self, proposal: list[int]) -> bool:
        """Would this run of proposed tokens end the step (so drafting further is wasted)?"""
        tail = self.tail
        for token in proposal:
            if token in self.segmenter.eos_ids:
                return True
            ended, tail = self.segmenter.advance(tail, token)
            if ended:
                return True
        return False
