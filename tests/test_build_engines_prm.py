"""PRM head remapping on tiny random safetensors checkpoints, the reward readout, and separator ids."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from engine_build_helpers import make_hf_model
from safetensors.numpy import load_file

from build_engines.errors import ModelFolderError
from build_engines.models import byte_to_unicode, separator_token_id
from build_engines.prm_remap import (
    HEAD_INFO,
    HEAD_SHARD,
    TWO_CLASS_HEAD,
    attach_head,
    prepare_two_class,
    prepare_value_head,
)
from build_engines.prm_remap import (
    main as remap_main,
)
from build_engines.safetensors_io import RawTensor, decode_floats, read_header, write_file
from runtime.engines.prm_readout import RewardReadout, reward_from_row


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _readout(op: str, index: int, bias: float | None, num_labels: int) -> RewardReadout:
    return RewardReadout("value_head" if op == "sigmoid" else "two_class", "score_head", op, index, bias,
                         num_labels, "\n\n", 3, 8, "")


@pytest.mark.parametrize("num_labels", [1, 2])
@pytest.mark.parametrize("shards", [1, 2])
def test_value_head_to_score_head(tmp_path, num_labels, shards):
    src = tmp_path / "skywork"
    w = make_hf_model(src, head="value_head", hidden=6, shards=shards)
    info = prepare_value_head(src, tmp_path / "prm_hf", "score_head", num_labels)
    dst = tmp_path / "prm_hf"
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForSequenceClassification"]
    assert cfg["num_labels"] == num_labels and cfg["tie_word_embeddings"] is False and "auto_map" not in cfg
    score = load_file(str(dst / HEAD_SHARD))["score.weight"]
    assert score.shape == (num_labels, 6)
    np.testing.assert_array_equal(score[0], w["v_head.summary.weight"][0])
    if num_labels == 2:
        assert not score[1].any()
    index = json.loads((dst / "model.safetensors.index.json").read_text())["weight_map"]
    assert index["score.weight"] == HEAD_SHARD
    assert index["model.embed_tokens.weight"].startswith("model")
    # TRT-LLM's loader globs *.safetensors sorted and later files win: the head shard must sort last
    assert sorted(p.name for p in dst.glob("*.safetensors"))[-1] == HEAD_SHARD
    assert (dst / "tokenizer.json").is_symlink()
    assert info.bias == pytest.approx(0.25) and info.reward_index == 0 and info.num_labels == num_labels
    assert json.loads((dst / HEAD_INFO).read_text())["bias"] == pytest.approx(0.25)
    # the engine row reproduces Skywork's reward: sigmoid(v.h + b)
    h = np.random.default_rng(1).standard_normal(6).astype(np.float32)
    row = score @ h
    readout = _readout("sigmoid", 0, info.bias, num_labels)
    expected = _sigmoid(float(w["v_head.summary.weight"][0] @ h) + 0.25)
    assert reward_from_row(row.tolist(), readout) == pytest.approx(expected, rel=1e-5)


def test_value_head_to_vocab_row_for_llama(tmp_path):
    src = tmp_path / "tiny_prm"
    w = make_hf_model(src, family="llama", head="value_head", vocab_size=12, hidden=4)
    info = prepare_value_head(src, tmp_path / "out", "vocab_row", 1)
    lm_head = load_file(str(tmp_path / "out" / HEAD_SHARD))["lm_head.weight"]
    assert lm_head.shape == (12, 4)
    np.testing.assert_array_equal(lm_head[0], w["v_head.summary.weight"][0])
    assert not lm_head[1:].any()
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["vocab_size"] == 12
    assert info.head_layout == "vocab_row" and info.num_labels == 12


def test_value_head_in_bfloat16_keeps_bytes_and_decodes_bias(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch
    src = tmp_path / "bf16"
    make_hf_model(src, head="value_head", hidden=4)
    v = torch.tensor([[0.5, -1.25, 2.0, 0.125]], dtype=torch.bfloat16)
    save_torch({"model.norm.weight": torch.ones(4, dtype=torch.bfloat16), "v_head.summary.weight": v,
                "v_head.summary.bias": torch.tensor([-0.375], dtype=torch.bfloat16)}, str(src / "model.safetensors"))
    info = prepare_value_head(src, tmp_path / "o", "score_head", 2)
    assert info.bias == -0.375 and info.source_dtype == "BF16"
    from safetensors.torch import load_file as load_torch
    score = load_torch(str(tmp_path / "o" / HEAD_SHARD))["score.weight"]
    assert score.dtype == torch.bfloat16 and torch.equal(score[0], v[0]) and not score[1].any()


def test_two_class_head_and_attach(tmp_path):
    src = tmp_path / "qwen_prm"
    w = make_hf_model(src, head="two_class", hidden=5)
    info = prepare_two_class(src, tmp_path / "prm_hf")
    assert (info.prm_format, info.num_labels, info.reward_index, info.bias) == ("two_class", 2, 1, 0.0)
    np.testing.assert_array_equal(load_file(str(tmp_path / "prm_hf" / HEAD_SHARD))["score.weight"], w["score.2.weight"])
    extra = load_file(str(tmp_path / "prm_hf" / TWO_CLASS_HEAD))
    np.testing.assert_array_equal(extra["lm_head.bias"], w["score.2.bias"])
    np.testing.assert_array_equal(extra["lm_head.fc1.weight"], w["score.0.weight"])
    np.testing.assert_array_equal(extra["lm_head.fc1.bias"], w["score.0.bias"])
    # the engine row (score.2(relu(score.0 h))) read with softmax gives Qwen's P(correct)
    h = np.random.default_rng(2).standard_normal(5).astype(np.float32)
    row = w["score.2.weight"] @ np.maximum(w["score.0.weight"] @ h + w["score.0.bias"], 0) + w["score.2.bias"]
    p = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
    assert reward_from_row(row.tolist(), _readout("softmax", 1, 0.0, 2)) == pytest.approx(float(p[1]), rel=1e-5)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with pytest.raises(ModelFolderError, match="not a TRT-LLM checkpoint"):
        attach_head(tmp_path / "prm_hf" / TWO_CLASS_HEAD, ckpt)
    (ckpt / "config.json").write_text("{}")
    assert remap_main(["attach", "--head", str(tmp_path / "prm_hf" / TWO_CLASS_HEAD), "--checkpoint", str(ckpt)]) == 0
    assert (ckpt / TWO_CLASS_HEAD.name).read_bytes() == (tmp_path / "prm_hf" / TWO_CLASS_HEAD).read_bytes()


def test_missing_or_misshaped_head_is_a_clear_error(tmp_path):
    make_hf_model(tmp_path / "plain")
    with pytest.raises(ModelFolderError, match="v_head.summary.weight"):
        prepare_value_head(tmp_path / "plain", tmp_path / "o", "score_head", 1)
    with pytest.raises(ModelFolderError, match="score.0.weight"):
        prepare_two_class(tmp_path / "plain", tmp_path / "o2")
    make_hf_model(tmp_path / "prm", head="value_head")
    with pytest.raises(ModelFolderError, match="source folder"):
        prepare_value_head(tmp_path / "prm", tmp_path / "prm", "score_head", 1)
    assert (tmp_path / "prm" / "model.safetensors").is_file()


def test_raw_safetensors_roundtrip(tmp_path):
    data = np.arange(6, dtype=np.float16).reshape(2, 3)
    write_file(tmp_path / "x.safetensors", {"a": RawTensor("F16", (2, 3), data.tobytes())}, {"format": "pt"})
    np.testing.assert_array_equal(load_file(str(tmp_path / "x.safetensors"))["a"], data)
    info = read_header(tmp_path / "x.safetensors")["a"]
    assert (info.dtype, info.shape, info.numel) == ("F16", (2, 3), 6)
    assert decode_floats(RawTensor("F32", (2,), np.array([1.5, -2], np.float32).tobytes())) == [1.5, -2.0]
    with pytest.raises(ValueError):
        RawTensor("F32", (3,), b"\x00" * 8)


def test_reward_readout_rules():
    assert reward_from_row([0.0, 9.0], _readout("sigmoid", 0, 0.0, 1)) == pytest.approx(0.5)
    assert reward_from_row([2.0], _readout("sigmoid", 0, -2.0, 1)) == pytest.approx(0.5)
    assert reward_from_row([-800.0], _readout("sigmoid", 0, 0.0, 1)) == pytest.approx(0.0)
    assert reward_from_row([1.0, 1.0, 50.0], _readout("softmax", 1, 0.0, 2)) == pytest.approx(0.5)
    assert reward_from_row([0.0, math.log(3)], _readout("softmax", 1, 0.0, 2)) == pytest.approx(0.75)
    assert "sigmoid(context_logits[t, 0] + b)" in _readout("sigmoid", 0, None, 1).formula


def test_separator_token_ids(tmp_path):
    assert byte_to_unicode()[ord("\n")] == "Ċ" and byte_to_unicode()[ord(" ")] == "Ġ"
    make_hf_model(tmp_path / "qwen", vocab_size=8)
    assert separator_token_id(tmp_path / "qwen", "\n\n") == 3  # "ĊĊ"
    assert separator_token_id(tmp_path / "qwen", "<extra_0>") == 7  # added special token
    make_hf_model(tmp_path / "chars", tokenizer={"a": 0, "\n": 1, " ": 2})
    assert separator_token_id(tmp_path / "chars", "\n\n") == 1  # char-level: last token of encode("\n\n")
    assert separator_token_id(tmp_path / "nowhere", "\n\n") is None


def test_real_qwen_style_tokenizer_via_tokenizers_library(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {c: i for i, c in enumerate(sorted(byte_to_unicode().values(), key=ord))}
    vocab["ĊĊ"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ċ", "Ċ")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    (tmp_path / "m").mkdir()
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    assert separator_token_id(tmp_path / "m", "\n\n") == vocab["ĊĊ"]
    assert tokenizers is not None
