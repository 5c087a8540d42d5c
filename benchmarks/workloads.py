"""The two model shapes of the benchmark and their data, as token ids every row receives unchanged.

- ``world``: the tiny world reference model's architecture (``simplepo_helpers.world``), its tokenizer and
  its training pairs, tokenised once by the kit's ``tokenize_preference``.
- ``smollm2``: the architecture of SmolLM2-135M (Llama, hidden 576, 30 layers, 9 heads, 3 KV heads,
  intermediate 1536, vocabulary 49152, tied embeddings) with random weights; the data are random token ids
  of fixed, seeded lengths and the tokenizer is a word-level one whose words are the ids themselves
  (``"t123"`` -> 123), so nothing is downloaded.

Both sides of every comparison get the same ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` rows, so a
tokenizer difference cannot change the work (TRL's own chat-template tokenisation keeps ChatML's newline after
``<|im_end|>``; the kit drops it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SHAPES = ("world", "smollm2")

# SmolLM2-135M's config.json (HuggingFaceTB/SmolLM2-135M), the fields that set the cost of a step
SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "hidden_act": "silu",
}
SYNTHETIC_SPECIALS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2 of the synthetic tokenizer


@dataclass(frozen=True)
class DataSize:
    """How many pairs per step and (for synthetic data) how long prompts and responses are."""

    pairs_per_step: int
    num_batches: int
    prompt_tokens: tuple[int, int] = (24, 40)  # inclusive range, BOS included
    response_tokens: tuple[int, int] = (128, 160)  # inclusive range, EOS included: >= 256 per pair


DEFAULT_SIZES = {"world": DataSize(pairs_per_step=16, num_batches=4), "smollm2": DataSize(2, 3)}


@dataclass
class Workload:
    """A model shape, its tokenizer, and the token rows of each step's batch (the same for every row)."""

    shape: str
    model_config: LlamaConfig
    tokenizer: PreTrainedTokenizerFast
    batches: list[list[dict[str, list[int]]]] = field(repr=False)
    dummy_texts: list[dict] = field(repr=False)  # a few text rows, only for building the TRL trainers

    def build_model(self, seed: int = 0) -> LlamaForCausalLM:
        """A fresh model of this shape; the same seed gives the same weights in every row's process."""
        torch.manual_seed(seed)
        return LlamaForCausalLM(self.model_config)

    def batch_rows(self, step: int) -> list[dict[str, list[int]]]:
        return self.batches[step % len(self.batches)]


def expected_counts(rows: list[dict[str, list[int]]]) -> dict[str, int]:
    """Tokens a batch of these rows must hold: all non-padding tokens, and the response tokens alone."""
    responses = sum(len(row["chosen_ids"]) + len(row["rejected_ids"]) for row in rows)
    return {
        "tokens": responses + 2 * sum(len(row["prompt_ids"]) for row in rows),
        "response_tokens": responses,
    }


def synthetic_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``vocab_size`` ids: specials 0-2, then the word ``t<id>`` for each id."""
    vocab = {token: index for index, token in enumerate(SYNTHETIC_SPECIALS)}
    vocab.update({f"t{index}": index for index in range(len(SYNTHETIC_SPECIALS), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    pad, bos, eos = SYNTHETIC_SPECIALS
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=pad, bos_token=bos, eos_token=eos)


def _synthetic_rows(size: DataSize, vocab_size: int, tokenizer, seed: int) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    first = len(SYNTHETIC_SPECIALS)

    def ids(length: int) -> list[int]:
        return [rng.randrange(first, vocab_size) for _ in range(length)]

    rows = []
    for _ in range(size.pairs_per_step * size.num_batches):
        prompt = [tokenizer.bos_token_id] + ids(rng.randint(*size.prompt_tokens) - 1)
        chosen, rejected = (
            ids(rng.randint(*size.response_tokens) - 1) + [tokenizer.eos_token_id] for _ in "cr"
        )
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


def _as_text(tokenizer, row: dict[str, list[int]]) -> dict[str, str]:
    """The row as standard-format strings (leading spaces keep word boundaries when TRL concatenates)."""
    return {key: " " + tokenizer.decode(row[f"{key}_ids"]) for key in ("prompt", "chosen", "rejected")}


def synthetic_workload(shape: str, config: LlamaConfig, size: DataSize, *, seed: int = 0) -> Workload:
    """Random token rows for a model ``config`` (ids 0-2 are the pad, BOS and EOS of the synthetic tokenizer)."""
    tokenizer = synthetic_tokenizer(config.vocab_size)
    rows = _synthetic_rows(size, config.vocab_size, tokenizer, seed)
    batches = [rows[i : i + size.pairs_per_step] for i in range(0, len(rows), size.pairs_per_step)]
    return Workload(shape, config, tokenizer, batches, [_as_text(tokenizer, row) for row in rows[:4]])


def smollm2_workload(size: DataSize, *, seed: int = 0) -> Workload:
    config = LlamaConfig(**SMOLLM2_135M, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return synthetic_workload("smollm2", config, size, seed=seed)


def world_workload(size: DataSize) -> Workload:
    """The world reference model's shape (random weights: a step's cost does not depend on their values)."""
    from simplepo_helpers.batching import tokenize_preference
    from simplepo_helpers.world import build_world
    from simplepo_helpers.world.reference import ReferenceConfig, model_config
    from simplepo_helpers.world.tokenizer import world_tokenizer

    reference = ReferenceConfig()
    tokenizer = world_tokenizer(reference.world)  # the reference model's tokenizer, rebuilt deterministically
    examples = build_world(reference.world)["pairs_train"][: size.pairs_per_step * size.num_batches]
    rows = [tokenize_preference(example, tokenizer) for example in examples]
    batches = [rows[i : i + size.pairs_per_step] for i in range(0, len(rows), size.pairs_per_step)]
    dummy = [{key: example[key] for key in ("prompt", "chosen", "rejected")} for example in examples[:4]]
    return Workload("world", model_config(reference, tokenizer), tokenizer, batches, dummy)


def build_workload(shape: str, size: DataSize | None = None) -> Workload:
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    size = size or DEFAULT_SIZES[shape]
    return world_workload(size) if shape == "world" else smollm2_workload(size)
