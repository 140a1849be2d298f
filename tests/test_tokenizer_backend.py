"""HFTokenizer's direct `tokenizers` path gives exactly the transformers tokenizer's ids and text.

load_tokenizer uses the backend of a fast tokenizer only after probing it (hf.backend_if_same);
these tests compare the two paths on texts the probes never saw, on the shipped tokenizers and
on a byte-level BPE with special tokens and a BOS post-processor, and check that a wrapper
which does more than its backend (a deliberately different rule) keeps the transformers path.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from runtime.engines.hf import HFTokenizer, backend_if_same, load_tokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

MODELS = Path(__file__).resolve().parents[1] / "models" / "embedded"


def _texts(seed: int, n: int) -> list[str]:
    """Random texts over ASCII, digits, whitespace runs, accents, CJK and emoji."""
    rng = random.Random(seed)
    alphabet = list("abcxyzABC0123456789+-=*/\\{}()$^_ .,;:!?") + ["\n", "\n\n", "\t", "  ", "é", "ß", "中", "文", "😀"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(n)]


def _slow_view(tok: HFTokenizer) -> HFTokenizer:
    return HFTokenizer(tok.tok, tok.eos_ids)  # the transformers path only


def _assert_same(tok: HFTokenizer, texts: list[str]) -> None:
    assert tok.fast is not None, "the backend path was not taken"
    slow = _slow_view(tok)
    for text in texts:
        assert tok.encode(text) == slow.encode(text), text
        assert tok.encode_prompt(text) == slow.encode_prompt(text), text
        ids = slow.encode_prompt(text)
        assert tok.decode(ids) == slow.decode(ids), text
    for i in range(tok.vocab_size):
        assert tok.piece(i) == slow.piece(i), i


@pytest.mark.parametrize("name", ["draft", "target", "prm"])
def test_shipped_tokenizers_take_the_backend_path_and_agree(name: str) -> None:
    from runtime.task import heldout_problems

    tok = load_tokenizer(MODELS / name, f"models.{name}.path")
    problems = heldout_problems(40)
    texts = [p.question for p in problems] + ["\n\n".join(p.steps) for p in problems] + _texts(1, 300)
    _assert_same(tok, texts)


def _bpe_folder(tmp_path: Path) -> Path:
    """A byte-level BPE trained here, with <s> / </s> / <|im_end|> and a BOS post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_texts(7, 400), trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                                   unk_token="<unk>", additional_special_tokens=["<|im_end|>"])
    folder = tmp_path / "bpe"
    wrapped.save_pretrained(folder)
    (folder / "config.json").write_text("{}")
    return folder


def test_a_byte_level_bpe_with_special_tokens_agrees(tmp_path: Path) -> None:
    tok = load_tokenizer(_bpe_folder(tmp_path), "models.draft.path")
    assert tok.encode_prompt("hi")[0] == 1 and tok.encode("hi")[:1] != [1]  # BOS only where asked
    texts = _texts(2, 300) + ["a<|im_end|>b", "</s>", "<s> x", " leading", "trailing "]
    _assert_same(tok, texts)


def test_a_wrapper_that_does_more_than_its_backend_keeps_the_transformers_path(tmp_path: Path) -> None:
    """A wrong rule: the wrapper lower-cases before encoding, its backend does not; the probes
    (which hold capitals) see it, so the backend is not used and encode keeps the wrapper's ids."""
    base = transformers.AutoTokenizer.from_pretrained(_bpe_folder(tmp_path))

    class Lowering(type(base)):  # type: ignore[misc]
        def encode(self, text, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
            return super().encode(text.lower(), *args, **kwargs)

    lowering = Lowering(tokenizer_object=base.backend_tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert backend_if_same(lowering) is None
    assert backend_if_same(base) is not None
    tok = HFTokenizer(lowering, frozenset({2}), backend_if_same(lowering))
    assert tok.encode("ABC") == list(lowering.encode("abc", add_special_tokens=False))
