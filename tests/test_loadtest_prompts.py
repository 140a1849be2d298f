"""scripts/loadtest.sh --prompts: built-in, embedded held-out questions, a file, an empty file."""
from __future__ import annotations

import pytest

from runtime.clients.loadtest import PROMPTS, load_prompts
from runtime.task import heldout_problems, split_of


def test_prompt_sources(tmp_path) -> None:
    assert load_prompts(None) == PROMPTS
    embedded = load_prompts("embedded")
    assert embedded == tuple(p.question for p in heldout_problems(len(PROMPTS)))
    assert all(split_of(q) == "test" for q in embedded)
    file = tmp_path / "p.txt"
    file.write_text("first?\n\n  second?  \n")
    assert load_prompts(str(file)) == ("first?", "second?")
    file.write_text("\n \n")
    with pytest.raises(SystemExit, match="no prompts"):
        load_prompts(str(file))
