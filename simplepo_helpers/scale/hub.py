"""Real models and preference data from the Hugging Face Hub (or local copies of them), in the kit's formats.

UltraFeedback rows hold the prompt implicitly: ``chosen`` and ``rejected`` are whole conversations that end
with the assistant's reply. `ultrafeedback_to_preference` maps them to TRL's conversational preference
format with an explicit prompt. Rows whose responses do not fit ``max_length`` whole are left out by
`validate_preferences` (reported, not silent); note that this favours shorter responses.

When a Hub id cannot be fetched because the Hub is out of reach (offline mode, no network, not in the local
cache), `HubUnavailableError` says so in one message with what to do, instead of the libraries' chained
tracebacks; other failures (a typo in the id, a gated model) keep their own errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..runtime.device import DevicePolicy
from ..runtime.hub_access import HubUnavailableError, hub_access

__all__ = ["HubConfig", "HubUnavailableError", "hub_access", "load_hub_model", "load_hub_preferences"]

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..data import ValidationReport


@dataclass(frozen=True)
class HubConfig:
    """What the ``gpu`` profile loads: model, dataset, subset sizes and length limits."""

    model_id: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    dataset_id: str = "trl-lib/ultrafeedback_binarized"
    train_split: str = "train"
    eval_split: str = "test"
    n_train: int = 3200
    n_eval: int = 200
    max_length: int = 1024
    max_prompt_length: int = 512
    seed: int = 0
    candidate_factor: int = 2  # validate up to factor * n rows to find n that fit max_length

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval", "max_length", "max_prompt_length", "candidate_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"HubConfig.{name} must be a positive integer, got {getattr(self, name)}")


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(isinstance(m, Mapping) for m in value):
        raise ValueError(f"{where} must be a list of messages, got {type(value).__name__}")
    try:
        return [{"role": m["role"], "content": m["content"]} for m in value]
    except KeyError as missing:
        raise ValueError(f"{where}: a message lacks the key {missing}") from None


def ultrafeedback_to_preference(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    """One UltraFeedback row (implicit prompt) -> ``{"prompt", "chosen", "rejected"}`` with an explicit prompt.

    The prompt is every message before the last; both conversations must share it and end with one
    assistant message. Other columns (e.g. ``score_chosen``) are kept.
    """
    conversations = {}
    for name in ("chosen", "rejected"):
        if name not in row:
            raise ValueError(f"row {index}: no {name!r} column (expected UltraFeedback's message lists)")
        messages = _messages(row[name], f"row {index}: {name}")
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ValueError(f"row {index}: {name} must be a prompt followed by one assistant reply")
        conversations[name] = messages
    prompt = conversations["chosen"][:-1]
    if conversations["rejected"][:-1] != prompt:
        raise ValueError(f"row {index}: chosen and rejected do not share the same prompt messages")
    extra = {key: value for key, value in row.items() if key not in ("prompt", "chosen", "rejected")}
    return {
        "prompt": prompt,
        "chosen": conversations["chosen"][-1:],
        "rejected": conversations["rejected"][-1:],
        **extra,
    }


def load_hub_model(
    model_id: str, device_policy: DevicePolicy
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from the Hub or a local folder: safetensors only, no remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with hub_access("model", model_id):
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False)
    if tokenizer.chat_template is None:
        raise ValueError(
            f"{model_id}: the tokenizer has no chat template; the gpu profile needs a chat model"
        )
    if (
        tokenizer.pad_token is None
    ):  # batching and generation pad with it; the eos token is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    with hub_access("model", model_id):
        model = AutoModelForCausalLM.from_pretrained(
            model_id,
            dtype=device_policy.param_dtype,
            trust_remote_code=False,
            use_safetensors=True,
            attn_implementation="sdpa",
        )
    return model.to(device_policy.device), tokenizer


def _subset(
    split: Dataset, n: int, config: HubConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[Dataset, ValidationReport]:
    """The first ``n`` rows (after a seeded shuffle) that map to explicit prompts and fit ``max_length``."""
    from ..data import load_preference_dataset

    candidates = split.shuffle(seed=config.seed).select(range(min(len(split), n * config.candidate_factor)))
    rows = [ultrafeedback_to_preference(row, index) for index, row in enumerate(candidates)]
    good, report = load_preference_dataset(
        rows, tokenizer=tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length
    )
    if len(good) == 0:
        raise ValueError(f"no row of {config.dataset_id} fits max_length={config.max_length}:\n{report}")
    return good.select(range(min(n, len(good)))), report


def load_hub_preferences(
    config: HubConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[Dataset, Dataset, dict[str, ValidationReport]]:
    """Train and held-out subsets of ``config.dataset_id`` (Hub id or local folder) in TRL's format."""
    from datasets import load_dataset

    with hub_access("dataset", config.dataset_id):
        splits = load_dataset(config.dataset_id)
    for split in (config.train_split, config.eval_split):
        if split not in splits:
            raise ValueError(f"{config.dataset_id} has no split {split!r} (it has {list(splits)})")
    train_rows, train_report = _subset(splits[config.train_split], config.n_train, config, tokenizer)
    eval_rows, eval_report = _subset(splits[config.eval_split], config.n_eval, config, tokenizer)
    return train_rows, eval_rows, {"train": train_report, "eval": eval_report}
