"""The synthetic task (generator, verifier, grader), the shared tokenizer and the shipped model folders."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from runtime.task import (
    PROMPT_TEMPLATE,
    STEP_SEPARATOR,
    check_step,
    extract_boxed,
    format_prompt,
    generate_problems,
    grade,
    parse_question,
    perturb_step,
    problem_from_question,
    split_of,
    split_steps,
)

MODELS = Path(__file__).resolve().parents[1] / "models" / "embedded"


def test_generator_is_deterministic_in_seed_and_split() -> None:
    assert generate_problems(50, 3, "train") == generate_problems(50, 3, "train")
    assert generate_problems(50, 3, "train") != generate_problems(50, 4, "train")
    assert generate_problems(20, 3, "test") != generate_problems(20, 3, "train")


def test_splits_are_disjoint_and_labelled_by_hash() -> None:
    train = {p.question for p in generate_problems(3000, 0, "train")}
    test = {p.question for p in generate_problems(500, 0, "test")}
    assert not train & test
    assert {split_of(q) for q in train} == {"train"}
    assert {split_of(q) for q in test} == {"test"}
    with pytest.raises(ValueError):
        generate_problems(1, 0, "dev")


def test_solution_is_one_step_per_paragraph_ending_in_boxed_answer() -> None:
    for problem in generate_problems(200, 1, "test"):
        assert all(STEP_SEPARATOR not in s and s for s in problem.steps)
        assert split_steps(problem.solution) == list(problem.steps)
        assert problem.steps[-1] == f"\\boxed{{{problem.answer}}}"
        assert problem_from_question(problem.question) == problem
        start, ops = parse_question(problem.question)
        assert len(ops) == len(problem.steps) - 1 and 0 <= start <= 99
    assert "{question}" in PROMPT_TEMPLATE
    assert format_prompt("Q?") == PROMPT_TEMPLATE.format(question="Q?")


def test_check_step_accepts_gold_and_rejects_corruptions() -> None:
    rng = random.Random(0)
    for problem in generate_problems(200, 2, "train"):
        for i, step in enumerate(problem.steps):
            prefix = list(problem.steps[:i])
            assert check_step(problem.question, prefix, step)
            assert check_step(problem, prefix, step + STEP_SEPARATOR)
            wrong = perturb_step(problem, i, rng)
            assert wrong != step and not check_step(problem, prefix, wrong)
        assert not check_step(problem, list(problem.steps), "1+1=2")


def test_check_step_rejects_steps_after_a_wrong_step() -> None:
    problem = problem_from_question("What is 10+5-3+1?")
    assert problem.steps == ("10+5=15", "15-3=12", "12+1=13", "\\boxed{13}")
    assert not check_step(problem, ["10+5=16"], "16-3=13")
    assert not check_step(problem, ["10+5=15"], "15-3=11")
    assert check_step(problem, ["10+5=15", "15-3=12"], "12 + 1 = 13")


def test_grade_uses_the_last_boxed_integer() -> None:
    problem = problem_from_question("What is 10+5-3+1?")
    assert grade(problem, problem.solution)
    assert grade(problem.question, "x\n\n\\boxed{2}\n\n\\boxed{13}")
    assert not grade(problem, "10+5=15\n\n\\boxed{12}")
    assert not grade(problem, "no answer")
    assert not grade(problem, "\\boxed{thirteen}")
    assert extract_boxed("a \\boxed{{1}} b") == "{1}"


def _tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(MODELS / "draft")


def test_tokenizer_round_trip_and_single_separator_token() -> None:
    tok = _tokenizer()
    sep = tok.encode("\n\n", add_special_tokens=False)
    assert len(sep) == 1
    assert tok.encode("Q", add_special_tokens=True) == [tok.bos_token_id, *tok.encode("Q", add_special_tokens=False)]
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    for problem in generate_problems(50, 5, "test"):
        text = problem.prompt + problem.solution
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        assert ids.count(sep[0]) == len(problem.steps) - 1
        pieces = [tok.decode(ids[i:i + 7]) for i in range(0, len(ids), 7)]
        assert "".join(pieces) == text
        assert "".join(tok.decode([t]) for t in ids) == text


def test_generators_and_prm_share_one_prefix() -> None:
    """The generator prompt is the value-head PRM's prefix: [bos] + question + "\\n"."""
    from runtime.config import load_config
    from runtime.engines.hf import HFTokenizer
    from runtime.engines.prm_format import value_head_format

    assert PROMPT_TEMPLATE == "{question}\n"
    assert load_config(MODELS.parents[1] / "configs" / "default.yaml").prompt_template == PROMPT_TEMPLATE
    tok = _tokenizer()
    question = "What is 47+8-3+9?"
    generator = tok.encode(format_prompt(question), add_special_tokens=True)
    assert value_head_format(HFTokenizer(tok, frozenset({tok.eos_token_id})), "prm").prefix_ids(question) == generator


def test_shipped_folders_load_and_prm_has_value_head() -> None:
    transformers = pytest.importorskip("transformers")
    safetensors = pytest.importorskip("safetensors")
    sizes = {}
    for name in ("draft", "target", "prm"):
        tok = transformers.AutoTokenizer.from_pretrained(MODELS / name)
        model = transformers.AutoModelForCausalLM.from_pretrained(MODELS / name)
        assert model.config.vocab_size == len(tok)
        sizes[name] = sum(p.numel() for p in model.parameters())
    assert sizes["target"] >= 10 * sizes["draft"]
    with safetensors.safe_open(str(MODELS / "prm" / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        hidden = model.config.hidden_size
        assert tuple(f.get_tensor("v_head.summary.weight").shape) == (1, hidden)
        assert tuple(f.get_tensor("v_head.summary.bias").shape) == (1,)
    assert any(k.startswith("model.layers.") for k in keys)
    assert not any(k.startswith("lm_head.") for k in keys)  # the PRM ships without training-only heads
