"""Stand-ins for the ``gpu`` profile's downloads, made offline by the kit itself (``docs/standins.md``).

The ``gpu`` profile loads SmolLM2-135M-Instruct, ``trl-lib/ultrafeedback_binarized`` and a reward model
from the Hub. With ``SIMPLEPO_STANDINS`` set (``lessons.profiles.load_profile`` reads it), it loads these
instead, through the same loaders (``scale.hub.load_hub_model``, ``load_hub_preferences``,
``evaluation.reward_model.RewardModelJudge``), so every line a Colab learner runs after loading runs here:

- a **tokenizer**: a byte-level BPE trained on the stand-in data (every text encodes), with the kit's ChatML
  chat template, saved with ``save_pretrained``;
- a **policy model**: a randomly initialised ``LlamaForCausalLM`` with SmolLM2's architecture (tied
  embeddings, 3 query heads per key-value head, SiLU MLP, RMSNorm, RoPE). ``SIMPLEPO_STANDINS=1`` (or
  ``tiny``) scales it down to fit a CPU test budget (2 layers, hidden 48); ``SIMPLEPO_STANDINS=smollm2``
  keeps SmolLM2-135M's exact shape (30 layers, hidden 576, 9/3 heads, vocabulary 49,152: a benchmark's
  cost, random weights);
- a **preference dataset** in UltraFeedback's schema (``prompt`` as text, ``chosen`` / ``rejected`` as
  message lists ending with the assistant's reply, ``score_chosen`` / ``score_rejected``), ``train`` and
  ``test`` splits as JSON lines that ``datasets.load_dataset(folder)`` reads;
- a **reward model**: a randomly initialised one-output ``LlamaForSequenceClassification`` with the same
  tokenizer, which ``RewardModelJudge(folder)`` loads as it loads the real one.

Everything is deterministic (fixed seeds) and cached under ``cache_dir() / "standins" / <kind>``, so runs
that key their caches on the model's weights (``experiments.comparisons``) find each other's results.
Nothing here says anything about SmolLM2's quality: the weights are random.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import cache_dir

__all__ = ["STANDIN_KINDS", "StandinPaths", "ensure_standins", "standin_model_config", "ultrafeedback_rows"]

VERSION = 1  # bump when what is built changes: the cache folder is keyed on it
STANDIN_KINDS = ("tiny", "smollm2")
SMOLLM2_135M: dict[str, Any] = {  # SmolLM2-135M's config.json, the fields that set its architecture
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
}
TINY: dict[str, Any] = {  # the same pattern scaled to a CPU test: 3 query heads per key-value head, tied
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
TINY_VOCAB = 512
N_ROWS = {"train": 48, "test": 12}
MODEL_MAX_LENGTH = 512

_TOPICS = [
    "a bicycle", "the tides", "a rainbow", "photosynthesis", "a volcano", "compound interest", "a compass",
    "the moon's phases", "a refrigerator", "bread dough rising", "a lighthouse", "migrating birds",
    "a suspension bridge", "recycling paper", "a thunderstorm", "a sundial",
]  # fmt: skip
_ASKS = [
    "Explain how {} works.", "Write two sentences about {}.", "Why does {} matter to people?",
    "Give me a short, friendly description of {}.", "What is the most surprising fact about {}?",
]  # fmt: skip
_GOOD = [
    "Here is a clear answer: {} depends on a few simple steps, and each one follows from the last.",
    "Good question. In short, {} is easier to understand once you picture the forces involved.",
    "Sure. {} has a long history, and the main idea fits in one sentence: energy moves from one place to another.",
]  # fmt: skip
_BAD = [
    "I am not sure.", "{} is a thing.", "Sorry, I cannot help with that request.",
    "Maybe ask someone else about {}.",
]  # fmt: skip


def ultrafeedback_rows(split: str, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` deterministic preference rows in UltraFeedback's schema (``prompt`` text, ``chosen`` /
    ``rejected`` message lists, ``score_chosen`` / ``score_rejected``)."""
    rng = random.Random(f"{seed}-{split}")
    rows = []
    for _ in range(n):
        topic = rng.choice(_TOPICS)
        prompt = rng.choice(_ASKS).format(topic)
        chosen = rng.choice(_GOOD).format(topic.capitalize())
        rejected = rng.choice(_BAD).format(topic.capitalize())
        if rng.random() < 0.3:  # some long answers: the lengths vary as real ones do
            chosen += " " + rng.choice(_GOOD).format(topic.capitalize())
        user = {"role": "user", "content": prompt}
        rows.append(
            {
                "prompt": prompt,
                "chosen": [user, {"role": "assistant", "content": chosen}],
                "rejected": [user, {"role": "assistant", "content": rejected}],
                "score_chosen": float(rng.choice([7, 8, 9, 10])),
                "score_rejected": float(rng.choice([2, 3, 4, 5])),
            }
        )
    return rows


def standin_model_config(kind: str, vocab_size: int, special_ids: dict[str, Any]) -> Any:
    """The ``LlamaConfig`` of the stand-in policy (and, with one label, of the reward model)."""
    from transformers import LlamaConfig

    if kind not in STANDIN_KINDS:
        raise ValueError(f"stand-in kind must be one of {STANDIN_KINDS}, got {kind!r}")
    shape = {**SMOLLM2_135M, **(TINY if kind == "tiny" else {})}
    shape["vocab_size"] = max(vocab_size, SMOLLM2_135M["vocab_size"] if kind == "smollm2" else vocab_size)
    return LlamaConfig(**shape, **special_ids)


@dataclass(frozen=True)
class StandinPaths:
    """Where the stand-ins are: folders that the gpu profile's loaders take in place of Hub ids."""

    kind: str
    model: Path  # policy model + tokenizer (``load_hub_model``)
    data: Path  # train.jsonl / test.jsonl (``load_hub_preferences``)
    reward_model: Path  # one-output sequence classifier + tokenizer (``RewardModelJudge``)


def _build_tokenizer(texts: list[str]):
    from .tokenizer import CHAT_TEMPLATE, build_tokenizer

    tokenizer = build_tokenizer(texts, vocab_size=TINY_VOCAB)  # byte-level BPE, ChatML specials
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = MODEL_MAX_LENGTH
    return tokenizer


def _build(kind: str, folder: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    splits = {split: ultrafeedback_rows(split, n) for split, n in N_ROWS.items()}
    (folder / "data").mkdir(parents=True)
    for split, rows in splits.items():
        with open(folder / "data" / f"{split}.jsonl", "w", encoding="utf-8") as out:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    texts = [
        m["content"] for rows in splits.values() for row in rows for m in row["chosen"] + row["rejected"]
    ]
    tokenizer = _build_tokenizer(texts)
    special_ids: dict[str, Any] = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = standin_model_config(kind, len(tokenizer), special_ids)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder / "model", safe_serialization=True)
    tokenizer.save_pretrained(folder / "model")
    reward_config = standin_model_config("tiny", len(tokenizer), special_ids)  # the judge stays tiny
    reward_config.num_labels = 1
    torch.manual_seed(1)
    LlamaForSequenceClassification(reward_config).save_pretrained(
        folder / "reward_model", safe_serialization=True
    )
    tokenizer.save_pretrained(folder / "reward_model")
    (folder / "README.md").write_text(
        "Stand-ins for the gpu profile (simplepo_helpers/world/standins.py): random weights, synthetic data.\n"
    )


def ensure_standins(kind: str = "tiny") -> StandinPaths:
    """Build the stand-ins of ``kind`` once (seconds for ``tiny``), then reuse them from the cache."""
    if kind not in STANDIN_KINDS:
        raise ValueError(f"stand-in kind must be one of {STANDIN_KINDS}, got {kind!r}")
    folder = cache_dir() / "standins" / f"v{VERSION}-{kind}"
    if not (folder / "README.md").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{kind}-"))
        try:
            _build(kind, staging / "built")
            try:
                (staging / "built").rename(folder)  # atomic: a concurrent builder's copy wins
            except OSError:
                if not (folder / "README.md").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return StandinPaths(kind, folder / "model", folder / "data", folder / "reward_model")
