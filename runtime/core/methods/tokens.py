"""Token-by-token step writing for token-level methods (sd, cos): where a step ends."""
from __future__ import annotations

from dataclasses import dataclass, field

from runtime.core.segment import StepSegmenter
from runtime.core.types import Finish


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
