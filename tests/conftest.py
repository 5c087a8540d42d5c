"""Shared fixtures: a small byte-level BPE tokenizer with a chat template and a tiny random Llama.

The tokenizer adds a BOS through its post-processor *and* its chat template starts with the BOS, as some
real tokenizers do, so tests can check that a batch never carries two BOS tokens.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from simplepo_helpers.world.tokenizer import CHAT_TEMPLATE  # the kit's ChatML template, BOS first

SPECIAL_TOKENS = ["<pad>", "<s>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What is two plus three? Two plus three is five.",
    "Name a colour. Blue is a colour, and so is red.",
    "The quick brown fox jumps over the lazy dog.",
    "Please count the letters in the word banana. It has six letters.",
    "I cannot help with that request, sorry. Happy to help with something else!",
    "user assistant system hello world answer question 0123456789 + - * / = ? ! . ,",
]


def build_test_tokenizer() -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE (vocab ~400) with ChatML-style special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHAT_TEMPLATE,
    )


def build_test_model(vocab_size: int, seed: int = 0, **config_overrides) -> LlamaForCausalLM:
    """A 2-layer random Llama (about 100k parameters), float32, eval mode; ``config_overrides`` go to LlamaConfig."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        **{
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "tie_word_embeddings": False,
            **config_overrides,
        }
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_test_tokenizer()


@pytest.fixture()
def tiny_model(tokenizer) -> LlamaForCausalLM:
    return build_test_model(len(tokenizer))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny-model tests: tiny matrices gain nothing from threads, and on a
    busy shared CPU extra threads are much slower. Restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
