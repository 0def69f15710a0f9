"""The demo tokenizer: Qwen's special tokens and the belief/action tokens are single ids, text
round-trips, training is deterministic, and the saved files load offline with AutoTokenizer."""

from __future__ import annotations

import json

import pytest

from vlalert.beliefs.schema import Belief
from vlalert.beliefs.text import ACTION_CLOSE, ACTION_OPEN, BELIEF_CLOSE, BELIEF_OPEN, target_text
from vlalert.vlm.tokenizer import (
    ALL_SPECIAL_TOKENS,
    QWEN_SPECIAL_TOKENS,
    build_tokenizer,
    train_bpe,
    wrap_tokenizer,
)


def _corpus() -> list[str]:
    beliefs = [
        (
            Belief(
                hazard="vehicle", where="ahead", motion="braking", ttc_s=1.5, danger=0.8, ego_involved=True
            ),
            "ALERT",
        ),
        (
            Belief(
                hazard="pedestrian",
                where="right",
                motion="crossing",
                ttc_s=3.0,
                danger=0.4,
                ego_involved=False,
            ),
            "OBSERVE",
        ),
        (
            Belief(hazard="none", where="none", motion="none", ttc_s=None, danger=0.0, ego_involved=False),
            "SILENT",
        ),
    ]
    texts = ["A car ahead brakes hard.", "A pedestrian crosses from the right.", "The road ahead is clear."]
    return [target_text(t, b, a) for t, (b, a) in zip(texts, beliefs, strict=True) for _ in range(5)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    out = build_tokenizer(_corpus(), tmp_path_factory.mktemp("tok"), vocab_size=600)
    return AutoTokenizer.from_pretrained(str(out), local_files_only=True)


def test_special_tokens_take_the_first_ids_in_qwen_order(tok):
    ids = tok.convert_tokens_to_ids(list(ALL_SPECIAL_TOKENS))
    assert ids == list(range(len(ALL_SPECIAL_TOKENS)))
    assert ALL_SPECIAL_TOKENS[: len(QWEN_SPECIAL_TOKENS)] == QWEN_SPECIAL_TOKENS
    assert QWEN_SPECIAL_TOKENS[9:14] == (
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    )


@pytest.mark.parametrize("token", ALL_SPECIAL_TOKENS)
def test_each_special_token_is_one_id_and_round_trips(tok, token):
    ids = tok(f"x {token} y", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids(token) in ids
    assert tok.decode(ids) == f"x {token} y"
    assert tok(token, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(token)]


def test_a_target_keeps_its_spans_as_single_tokens(tok):
    text = _corpus()[0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    for special in (BELIEF_OPEN, BELIEF_CLOSE, ACTION_OPEN, ACTION_CLOSE):
        assert pieces.count(special) == 1
    assert tok.decode(ids) == text


def test_roles_and_padding_follow_qwen_instruct(tok):
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token == "<|endoftext|>"
    assert tok.padding_side == "left"


def test_any_text_round_trips_byte_level(tok):
    text = "Straße, 東京 → 🚗 at 12.5 m/s!\n\tTab"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_training_is_deterministic_and_bounded():
    a = train_bpe(_corpus(), vocab_size=600).to_str()
    b = train_bpe(list(reversed(_corpus())) * 2, vocab_size=600).to_str()  # order and counts scaled
    c = train_bpe(_corpus(), vocab_size=600).to_str()
    assert a == c
    assert json.loads(a)["model"]["vocab"] == json.loads(b)["model"]["vocab"]
    assert len(json.loads(a)["model"]["vocab"]) <= 600


def test_special_tokens_in_the_corpus_spend_no_merges():
    vocab = json.loads(train_bpe(_corpus(), vocab_size=600).to_str())["model"]["vocab"]
    learned = [t for t in vocab if t not in ALL_SPECIAL_TOKENS]
    assert not [t for t in learned if "BELIEF" in t or "ACTION" in t]
    assert "hazard" in learned or "Ġhazard" in learned  # corpus words do get merged


def test_vocab_size_must_leave_room_for_the_bytes():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(_corpus(), vocab_size=100)


def test_chat_template_renders_qwen3_vl_turns(tok):
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q"}]},
        {"role": "assistant", "content": "A"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Q<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("Q<|im_end|>\n<|im_start|>assistant\n")


def test_wrap_skips_tokens_the_vocabulary_lacks():
    wrapped = wrap_tokenizer(train_bpe(_corpus(), vocab_size=600, special_tokens=QWEN_SPECIAL_TOKENS))
    assert BELIEF_OPEN not in wrapped.get_vocab()
    assert len(wrapped) == len(wrapped.get_vocab())
