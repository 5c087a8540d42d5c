"""The world's tokenizer: a small byte-level BPE with single-digit tokens and a ChatML chat template.

The chat template starts with the BOS token and the tokenizer itself adds no special tokens, so a
templated conversation carries exactly one BOS whether it is encoded with or without special tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .dataset import WorldConfig, sft_rows

BOS, EOS, PAD, IM_START = "<s>", "<|im_end|>", "<pad>", "<|im_start|>"
SPECIAL_TOKENS = [PAD, BOS, IM_START, EOS]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VOCAB_SIZE = 640
MAX_LENGTH = 128


def build_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the BPE on `texts` (digits always split one per token) and wrap it for transformers."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_LENGTH,
    )


def load_tokenizer(path) -> PreTrainedTokenizerFast:
    """Load a saved world tokenizer with the class it was saved as (never AutoTokenizer's guess)."""
    return PreTrainedTokenizerFast.from_pretrained(path)


def world_texts(world: dict[str, list[dict]]) -> list[str]:
    """Every message text of the generated data, role names included: the BPE's training corpus."""
    texts = []
    for rows in world.values():
        for row in rows:
            for key in ("messages", "prompt", "chosen", "rejected"):
                for message in row.get(key, []):
                    texts += [message["role"], message["content"]]
    return texts


def world_tokenizer(config: WorldConfig | None = None) -> PreTrainedTokenizerFast:
    """The reference model's tokenizer: the BPE trained on the world's SFT conversations."""
    return build_tokenizer(world_texts({"sft_train": sft_rows(config or WorldConfig())}))
