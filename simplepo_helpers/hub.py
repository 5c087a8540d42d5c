"""Training profiles for notebook 03: ``cpu`` (the kit's tiny offline world) and ``gpu`` (a real small model).

- ``cpu``: the world's reference model and preference data (``simplepo_helpers.world``), CPU float32.
- ``gpu``: ``HuggingFaceTB/SmolLM2-135M-Instruct`` trained on a subset of ``trl-lib/ultrafeedback_binarized``
  sized for a free Colab T4; the precision comes from `select_device` (fp16 + GradScaler on a T4, bf16 on
  compute capability 8+), parameters stay float32.
- ``auto``: ``gpu`` when CUDA is available and the model and data load, otherwise ``cpu``; the reason is
  recorded in ``ProfileSetup.reason``.

UltraFeedback rows hold the prompt implicitly: ``chosen`` and ``rejected`` are whole conversations that end
with the assistant's reply. `ultrafeedback_to_preference` maps them to TRL's conversational preference
format with an explicit prompt. Rows whose responses do not fit ``max_length`` whole are left out by
`validate_preferences` (reported, not silent); note that this favours shorter responses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .device import DevicePolicy, select_device

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .data import ValidationReport

PROFILES = ("auto", "cpu", "gpu")

# Training and evaluation settings per profile; notebook 03 records the sweep behind the cpu values.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    # n_eval_prompts None: all held-out prompts; max_new_tokens comes from the world (load_cpu_profile)
    "cpu": {"learning_rate": 2e-4, "beta": 2.5, "gamma": 1.375, "steps": 120, "batch_size": 16,
            "grad_accum_steps": 1, "warmup_ratio": 0.1, "n_eval_prompts": None},
    # SmolLM2-135M on a T4: 16 pairs per optimizer step, 200 steps (3,200 pairs, one pass)
    "gpu": {"learning_rate": 1e-6, "beta": 2.5, "gamma": 1.375, "steps": 200, "batch_size": 4,
            "grad_accum_steps": 4, "warmup_ratio": 0.1, "n_eval_prompts": 32, "max_new_tokens": 256},
}


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


@dataclass
class ProfileSetup:
    """Everything notebook 03 needs for one profile."""

    name: str  # "cpu" or "gpu"
    reason: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    policy: DevicePolicy
    train_rows: Dataset  # conversational preference rows
    eval_rows: Dataset  # held-out preference pairs (reward accuracy)
    eval_prompts: list[list[dict[str, str]]]  # held-out prompts (generations)
    max_length: int
    max_prompt_length: int
    defaults: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, ValidationReport] = field(default_factory=dict)


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


def resolve_profile(requested: str, *, cuda_available: bool | None = None) -> tuple[str, str]:
    """``(profile to try, reason)``; for ``auto`` that is ``gpu`` only when CUDA is available."""
    if requested not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {requested!r}")
    if requested != "auto":
        return requested, f"profile {requested!r} requested"
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return "gpu", "auto: CUDA is available, so the gpu profile"
    return "cpu", "auto: no CUDA device, so the cpu profile (the tiny world model, offline)"


def load_hub_model(model_id: str, policy: DevicePolicy) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from the Hub or a local folder: safetensors only, no remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False)
    if tokenizer.chat_template is None:
        raise ValueError(f"{model_id}: the tokenizer has no chat template; the gpu profile needs a chat model")
    if tokenizer.pad_token is None:  # batching and generation pad with it; the eos token is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        model_id, dtype=policy.param_dtype, trust_remote_code=False, use_safetensors=True, attn_implementation="sdpa"
    )
    return model.to(policy.device), tokenizer


def _subset(
    split: Dataset, n: int, config: HubConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[Dataset, ValidationReport]:
    """The first ``n`` rows (after a seeded shuffle) that map to explicit prompts and fit ``max_length``."""
    from .data import load_preference_dataset

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

    splits = load_dataset(config.dataset_id)
    for split in (config.train_split, config.eval_split):
        if split not in splits:
            raise ValueError(f"{config.dataset_id} has no split {split!r} (it has {list(splits)})")
    train_rows, train_report = _subset(splits[config.train_split], config.n_train, config, tokenizer)
    eval_rows, eval_report = _subset(splits[config.eval_split], config.n_eval, config, tokenizer)
    return train_rows, eval_rows, {"train": train_report, "eval": eval_report}


def load_gpu_profile(
    config: HubConfig = HubConfig(), *, policy: DevicePolicy | None = None, reason: str = "profile 'gpu' requested"
) -> ProfileSetup:
    """The ``gpu`` profile: model, tokenizer and data subsets as ``config`` says."""
    policy = policy if policy is not None else select_device()
    model, tokenizer = load_hub_model(config.model_id, policy)
    train_rows, eval_rows, reports = load_hub_preferences(config, tokenizer)
    return ProfileSetup(
        name="gpu",
        reason=reason,
        model=model,
        tokenizer=tokenizer,
        policy=policy,
        train_rows=train_rows,
        eval_rows=eval_rows,
        eval_prompts=list(eval_rows["prompt"]),
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        defaults=dict(PROFILE_DEFAULTS["gpu"]),
        reports=reports,
    )


def load_cpu_profile(*, reason: str = "profile 'cpu' requested") -> ProfileSetup:
    """The ``cpu`` profile: the world's reference model, its training and held-out data, CPU float32."""
    from .data import load_preference_dataset, read_jsonl
    from .world import data_file, load_reference_model
    from .world.reference import MAX_NEW_TOKENS

    policy = select_device("cpu")
    model, tokenizer = load_reference_model()
    # the world model's context (tokenizer.model_max_length) bounds prompt + response; prompts get half of it
    limits = {"max_length": tokenizer.model_max_length, "max_prompt_length": tokenizer.model_max_length // 2}
    train_rows, train_report = load_preference_dataset(data_file("pairs_train"), tokenizer=tokenizer, **limits)
    eval_rows, eval_report = load_preference_dataset(data_file("pairs_test"), tokenizer=tokenizer, **limits)
    prompt_rows, _ = read_jsonl(data_file("eval_prompts"))
    return ProfileSetup(
        name="cpu",
        reason=reason,
        model=model.to(policy.device),
        tokenizer=tokenizer,
        policy=policy,
        train_rows=train_rows,
        eval_rows=eval_rows,
        eval_prompts=[row["prompt"] for row in prompt_rows],
        **limits,
        defaults={**PROFILE_DEFAULTS["cpu"], "max_new_tokens": MAX_NEW_TOKENS},
        reports={"train": train_report, "eval": eval_report},
    )


def load_profile(profile: str = "auto", *, config: HubConfig = HubConfig()) -> ProfileSetup:
    """Resolve ``profile`` and load it; ``auto`` falls back to ``cpu`` (saying why) when ``gpu`` fails to load."""
    name, reason = resolve_profile(profile)
    if name == "cpu":
        return load_cpu_profile(reason=reason)
    if profile == "gpu":
        return load_gpu_profile(config, reason=reason)
    try:
        return load_gpu_profile(config, reason=reason)
    except Exception as error:  # offline, missing files, no access, no GPU memory: reported, then cpu
        return load_cpu_profile(
            reason=f"auto: CUDA is available but the gpu profile could not load ({type(error).__name__}: "
            f"{error}), so the cpu profile"
        )
