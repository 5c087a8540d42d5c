"""The model shapes of the benchmark and their data, as token ids every row receives unchanged.

- ``world``: the tiny world reference model's architecture (``simplepo_helpers.world``), its tokenizer and
  its training pairs, tokenised once by the kit's ``tokenize_preference``.
- ``smollm2``: the architecture of SmolLM2-135M (Llama, hidden 576, 30 layers, 9 heads, 3 KV heads,
  intermediate 1536, vocabulary 49152, tied embeddings) with random weights; the data are random token ids
  of fixed, seeded lengths and the tokenizer is a word-level one whose words are the ids themselves
  (``"t123"`` -> 123), so nothing is downloaded. Prompts of 24-40 tokens, responses of 128-160: little
  padding and short prompts, kept as a regression guard.
- ``uf2`` / ``uf8``: the same SmolLM2-135M shape on UltraFeedback-like lengths, 2 and 8 pairs per step:
  prompt, chosen and rejected lengths drawn independently from log-normals (``ULTRAFEEDBACK_LENGTHS``), then
  scaled by ``length_scale`` and cut to the stated ranges so that a step fits the CPU budget.

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

SHAPES = ("world", "smollm2", "uf2", "uf8")
SMOLLM2_SHAPES = ("smollm2", "uf2", "uf8")  # the SmolLM2-135M architecture with random token rows

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
# UltraFeedback (binarized)-like token lengths: (median, sigma of the log). Medians from the median prompt +
# completion of about 409 tokens and prompt/completion ratio 0.42 reported by the prefix-sharing paper's
# repository (Mistral tokenizer): 121 and 288. The sigmas are estimates (not fitted) chosen so that a padded
# [2B, T] batch holds about 29% padding at 2 pairs and 46% at 8, the estimate in
# ../shared/reference/performance-notes.md; chosen and rejected are drawn independently.
ULTRAFEEDBACK_LENGTHS = {"prompt": (121.0, 0.6), "response": (288.0, 0.5)}


# Warm-up steps run on the first batch cut to this many tokens per prompt and per response: one such step
# creates AdamW's state and pays every first-call cost (kernels, thread pools, autograd) at a fraction of a
# measured step's price. Measured steps come after it, on full batches (benchmarks/README.md, "Warm-up").
WARMUP_TOKENS = 16


@dataclass(frozen=True)
class DataSize:
    """How many pairs per step and (for synthetic data) how long prompts and responses are."""

    pairs_per_step: int
    num_batches: int
    prompt_tokens: tuple[int, int] = (24, 40)  # inclusive range, BOS included
    response_tokens: tuple[int, int] = (128, 160)  # inclusive range, EOS included: >= 256 per pair
    lengths: str = "uniform"  # or "ultrafeedback": log-normal lengths, cut to the ranges above
    length_scale: float = 1.0  # "ultrafeedback": the medians are multiplied by this


# UltraFeedback-like at a quarter of the length (medians 30 and 72 tokens), cut at 96 / 160: on 2 CPU cores a
# full-length 8-pair step of the 135M shape takes minutes. Scaling keeps the padding and prompt shares.
ULTRAFEEDBACK_QUARTER = {
    "prompt_tokens": (4, 96),
    "response_tokens": (4, 160),
    "lengths": "ultrafeedback",
    "length_scale": 0.25,
}
# ``num_batches`` is each shape's fixed set of timing batches: every timing round and every memory process
# runs all of them, in order, for every row (benchmarks/README.md). Expensive shapes get fewer batches rather
# than fewer rounds: `uf2` keeps 3 (its batches' FLOP ratios differ most), `uf8` (16 sequences a batch already
# average out) and the `smollm2` regression guard (uniform lengths) one.
DEFAULT_SIZES = {
    "world": DataSize(pairs_per_step=16, num_batches=4),
    "smollm2": DataSize(2, 1),
    "uf2": DataSize(2, 3, **ULTRAFEEDBACK_QUARTER),
    "uf8": DataSize(8, 1, **ULTRAFEEDBACK_QUARTER),
}


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

    @property
    def warmup_rows(self) -> list[dict[str, list[int]]]:
        """The first batch cut to ``WARMUP_TOKENS`` per prompt and response: the warm-up step's batch."""
        return [{key: ids[:WARMUP_TOKENS] for key, ids in row.items()} for row in self.batches[0]]


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


def draw_length(rng: random.Random, size: DataSize, part: str) -> int:
    """One length (BOS/EOS included) of ``part`` ("prompt" or "response") as ``size`` says."""
    low, high = size.prompt_tokens if part == "prompt" else size.response_tokens
    if size.lengths == "uniform":
        return rng.randint(low, high)
    if size.lengths != "ultrafeedback":
        raise ValueError(f"lengths must be 'uniform' or 'ultrafeedback', got {size.lengths!r}")
    median, sigma = ULTRAFEEDBACK_LENGTHS[part]
    return min(high, max(low, round(size.length_scale * median * rng.lognormvariate(0.0, sigma))))


def _synthetic_rows(size: DataSize, vocab_size: int, tokenizer, seed: int) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    first = len(SYNTHETIC_SPECIALS)

    def ids(length: int) -> list[int]:
        return [rng.randrange(first, vocab_size) for _ in range(length)]

    rows = []
    for _ in range(size.pairs_per_step * size.num_batches):
        prompt = [tokenizer.bos_token_id] + ids(draw_length(rng, size, "prompt") - 1)
        chosen, rejected = (
            ids(draw_length(rng, size, "response") - 1) + [tokenizer.eos_token_id] for _ in "cr"
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


def smollm2_workload(size: DataSize, *, seed: int = 0, shape: str = "smollm2") -> Workload:
    config = LlamaConfig(**SMOLLM2_135M, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return synthetic_workload(shape, config, size, seed=seed)


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
    return world_workload(size) if shape == "world" else smollm2_workload(size, shape=shape)
