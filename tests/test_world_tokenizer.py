"""The world's tokenizer: round trip, single-digit tokens, one BOS, the chat template, save and load."""

from __future__ import annotations

import json

import pytest
from transformers import LlamaConfig

from simplepo_helpers.world.tokenizer import CHAT_TEMPLATE, load_tokenizer, world_tokenizer


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


def test_build_is_deterministic(tok):
    again = world_tokenizer()
    assert again.get_vocab() == tok.get_vocab()
    assert len(tok) == 640


@pytest.mark.parametrize(
    "text",
    [
        "What is 7 + 5?",
        "Reversed, the words are key hat cup.",
        "Sorry, I can't help.",
        "  spaces\tand\nnewlines ",
        "unseen: ß漢字🙂 Zebra 12345",
    ],
)
def test_round_trip(tok, text):
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text


def test_digits_are_single_tokens(tok):
    ids = tok("What is 17 + 5?")["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == ["What", "Ġis", "Ġ", "1", "7", "Ġ+", "Ġ", "5", "?"]  # 9 tokens: spaces are separate
    digit_tokens = [t for t in tok.get_vocab() if any(c.isdigit() for c in t)]
    assert all(len(t) == 1 for t in digit_tokens)


def test_special_tokens_and_no_implicit_bos(tok):
    tok = tok
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "<|im_end|>", "<pad>")
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert tok.bos_token_id not in tok("hello", add_special_tokens=True)["input_ids"]


def test_chat_template(tok):
    tok = tok
    conversation = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5."}]
    text = tok.apply_chat_template(conversation, tokenize=False)
    assert text == "<s><|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n5.<|im_end|>\n"
    prompt = tok.apply_chat_template(conversation[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s><|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.apply_chat_template(conversation, tokenize=True)["input_ids"]
    # <s> <|im_start|> user \n | What is ' ' 2 ' +' ' ' 3 ? | <|im_end|> \n <|im_start|> assistant \n | 5 . | <|im_end|> \n
    assert len(ids) == 4 + 8 + 5 + 2 + 2
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert tok(text)["input_ids"] == ids  # encoding the templated text again adds no second BOS


def test_save_and_load_keeps_class_and_ids(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    LlamaConfig(vocab_size=len(tok)).save_pretrained(tmp_path)  # a model folder, as in the cache
    loaded = load_tokenizer(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == type(loaded).__name__
    assert loaded.chat_template == CHAT_TEMPLATE
    text = "Which is larger, 32 or 23?"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert len(loaded(text)["input_ids"]) == 12
