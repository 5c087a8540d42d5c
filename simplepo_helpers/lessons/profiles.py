"""Where the lessons run: ``cpu`` (the kit's tiny offline world) or ``gpu`` (a real small model from the Hub).

- ``cpu``: the world's reference model and preference data (``simplepo_helpers.world``), CPU float32.
- ``gpu``: ``HuggingFaceTB/SmolLM2-135M-Instruct`` trained on a subset of ``trl-lib/ultrafeedback_binarized``
  sized for a free Colab T4; the precision comes from `select_device` (fp16 + GradScaler on a T4, bf16 on
  compute capability 8+), parameters stay float32.
- ``auto``: ``gpu`` when CUDA is available and the model and data load, otherwise ``cpu``; the reason is
  recorded in ``ProfileSetup.reason``.

**Stand-ins** (``docs/standins.md``): with the environment variable ``SIMPLEPO_STANDINS`` set (``1`` or ``tiny``:
a SmolLM2-pattern model scaled down to a CPU test; ``smollm2``: SmolLM2-135M's exact shape), or
``load_profile(..., standins=...)``, the ``gpu`` profile loads stand-ins the kit makes offline
(``world.standins``: random weights, a tokenizer, UltraFeedback-schema pairs, a random reward model) through
the same loaders, with its sizes (steps, pairs, prompts, generation length) shrunk by ``STANDIN_DEFAULTS``.
``ProfileSetup.standins`` says so, and notebooks skip the checks calibrated on real models with a printed note.

``PROFILE_DEFAULTS`` is the one source of the training defaults that notebooks, configs and the README quote
(tests check that the configs and the prose agree with it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..runtime.device import DevicePolicy, select_device
from ..scale.hub import HubConfig, load_hub_model, load_hub_preferences

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..data import ValidationReport

PROFILES = ("auto", "cpu", "gpu")
STANDINS_ENV = "SIMPLEPO_STANDINS"  # the hook: "1"/"tiny" or "smollm2" loads the gpu profile on stand-ins

# Training and evaluation settings per profile. The cpu values are the ones `make experiments` chose on the
# dev split (results/experiments.json, "tuning"; tests/test_profile_defaults.py checks that they agree):
# SimPO, DPO and SimPO without length normalisation each on a learning rate x beta grid of the same size, 2 seeds,
# the highest mean expected judge score on dev (from the shipped reference model).
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    # n_eval_prompts None: all held-out prompts; max_new_tokens comes from the world (load_cpu_profile)
    "cpu": {
        "learning_rate": 2e-4,
        "beta": 2.5,
        "gamma": 1.375,  # gamma / beta = 0.55, held fixed while tuning (the gamma sweep varies it)
        "dpo_learning_rate": 2e-4,
        "dpo_beta": 0.5,
        "no_ln_learning_rate": 2e-4,  # SimPO on summed log-probs (the ablation): its own beta, same ratio
        "no_ln_beta": 0.25,
        "steps": 120,
        "batch_size": 16,
        "grad_accum_steps": 1,
        "warmup_ratio": 0.1,
        "n_eval_prompts": None,
    },
    # SmolLM2-135M on a T4: 16 pairs per optimizer step, 200 steps (3,200 pairs, one pass)
    "gpu": {
        "learning_rate": 1e-6,
        "beta": 2.5,
        "gamma": 1.375,
        "dpo_learning_rate": 1e-6,  # not tuned: no GPU was available to tune on
        "dpo_beta": 0.1,
        "no_ln_learning_rate": 1e-6,  # not tuned either
        "no_ln_beta": 0.25,
        "steps": 200,
        "batch_size": 4,
        "grad_accum_steps": 4,
        "warmup_ratio": 0.1,
        "n_eval_prompts": 32,
        "max_new_tokens": 256,
    },
}
# The gpu profile on stand-ins (SIMPLEPO_STANDINS): the gpu settings, with the sizes shrunk so that notebooks
# 03-05 run on a CPU within a test's budget (learning rates, betas and gamma stay the gpu profile's).
STANDIN_DEFAULTS: dict[str, Any] = {
    "steps": 4,
    "batch_size": 2,
    "grad_accum_steps": 2,
    "n_eval_prompts": 4,
    "max_new_tokens": 8,
}
STANDIN_HUB: dict[str, Any] = {"n_train": 32, "n_eval": 6, "max_length": 128, "max_prompt_length": 64}


@dataclass
class ProfileSetup:
    """Everything notebook 03 needs for one profile."""

    name: str  # "cpu" or "gpu"
    reason: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device_policy: DevicePolicy  # where and in which precision (runtime.device)
    train_rows: Dataset  # conversational preference rows
    eval_rows: Dataset  # held-out preference pairs (reward accuracy)
    eval_prompts: list[list[dict[str, str]]]  # held-out prompts (generations)
    max_length: int
    max_prompt_length: int
    defaults: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, ValidationReport] = field(default_factory=dict)
    reward_model: str | None = None  # the gpu profile's judge (Hub id or folder); None: the world's judge
    standins: bool = False  # True: random stand-ins (SIMPLEPO_STANDINS), not the real model and data


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


def load_gpu_profile(
    config: HubConfig = HubConfig(),
    *,
    device_policy: DevicePolicy | None = None,
    reason: str = "profile 'gpu' requested",
) -> ProfileSetup:
    """The ``gpu`` profile: model, tokenizer and data subsets as ``config`` says."""
    from ..evaluation.reward_model import DEFAULT_REWARD_MODEL

    policy = device_policy if device_policy is not None else select_device()
    model, tokenizer = load_hub_model(config.model_id, policy)
    train_rows, eval_rows, reports = load_hub_preferences(config, tokenizer)
    return ProfileSetup(
        name="gpu",
        reason=reason,
        model=model,
        tokenizer=tokenizer,
        device_policy=policy,
        train_rows=train_rows,
        eval_rows=eval_rows,
        eval_prompts=list(eval_rows["prompt"]),
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        defaults=dict(PROFILE_DEFAULTS["gpu"]),
        reports=reports,
        reward_model=DEFAULT_REWARD_MODEL,
    )


def standins_requested(value: str | None = None) -> str | None:
    """The stand-in kind that ``SIMPLEPO_STANDINS`` (or ``value``) asks for, or None when unset/"0"/"".

    ``"1"``, ``"true"``, ``"yes"``, ``"tiny"`` -> ``"tiny"``; ``"smollm2"`` -> ``"smollm2"``; anything else raises.
    """
    raw = os.environ.get(STANDINS_ENV, "") if value is None else value
    raw = raw.strip().lower()
    if raw in ("", "0", "false", "no"):
        return None
    if raw in ("1", "true", "yes", "tiny"):
        return "tiny"
    if raw == "smollm2":
        return "smollm2"
    raise ValueError(f"{STANDINS_ENV}={raw!r}: use 1 (or tiny), smollm2, or 0 / unset for the real downloads")


def load_standin_profile(
    kind: str = "tiny", *, device_policy: DevicePolicy | None = None, reason: str = "profile 'gpu' requested"
) -> ProfileSetup:
    """The ``gpu`` profile on the kit's own stand-ins (``world.standins``), loaded as the real ones are."""
    from ..world.standins import ensure_standins

    paths = ensure_standins(kind)
    config = HubConfig(model_id=str(paths.model), dataset_id=str(paths.data), **STANDIN_HUB)
    setup = load_gpu_profile(
        config,
        device_policy=device_policy,
        reason=f"{reason}; on stand-ins ({STANDINS_ENV}={kind}: a randomly initialised model of SmolLM2's "
        "architecture, synthetic UltraFeedback-schema pairs, a random reward model; nothing downloaded)",
    )
    setup.defaults.update(STANDIN_DEFAULTS)
    setup.reward_model = str(paths.reward_model)
    setup.standins = True
    return setup


def load_cpu_profile(*, reason: str = "profile 'cpu' requested") -> ProfileSetup:
    """The ``cpu`` profile: the world's reference model, its training and held-out data, CPU float32."""
    from ..data import load_preference_dataset, read_jsonl
    from ..world import data_file, load_reference_model
    from ..world.reference import MAX_NEW_TOKENS

    policy = select_device("cpu")
    model, tokenizer = load_reference_model()
    # the world model's context (tokenizer.model_max_length) bounds prompt + response; prompts get half of it
    limits = {"max_length": tokenizer.model_max_length, "max_prompt_length": tokenizer.model_max_length // 2}
    train_rows, train_report = load_preference_dataset(
        data_file("pairs_train"), tokenizer=tokenizer, **limits
    )
    eval_rows, eval_report = load_preference_dataset(data_file("pairs_test"), tokenizer=tokenizer, **limits)
    prompt_rows, _ = read_jsonl(data_file("eval_prompts"))
    return ProfileSetup(
        name="cpu",
        reason=reason,
        model=model.to(policy.device),
        tokenizer=tokenizer,
        device_policy=policy,
        train_rows=train_rows,
        eval_rows=eval_rows,
        eval_prompts=[row["prompt"] for row in prompt_rows],
        **limits,
        defaults={**PROFILE_DEFAULTS["cpu"], "max_new_tokens": MAX_NEW_TOKENS},
        reports={"train": train_report, "eval": eval_report},
    )


def load_profile(
    profile: str = "auto", *, config: HubConfig = HubConfig(), standins: str | None = None
) -> ProfileSetup:
    """Resolve ``profile`` and load it; ``auto`` falls back to ``cpu`` (saying why) when ``gpu`` fails to load.

    ``standins``: the stand-in kind for the ``gpu`` profile ("tiny" or "smollm2"); None reads
    ``SIMPLEPO_STANDINS`` (unset: the real model, data and judge). ``cpu`` is never affected.
    """
    name, reason = resolve_profile(profile)
    if name == "cpu":
        return load_cpu_profile(reason=reason)
    kind = standins_requested() if standins is None else standins_requested(standins)
    if kind is not None:
        return load_standin_profile(kind, reason=reason)
    if profile == "gpu":
        return load_gpu_profile(config, reason=reason)
    try:
        return load_gpu_profile(config, reason=reason)
    except Exception as error:  # offline, missing files, no access, no GPU memory: reported, then cpu
        return load_cpu_profile(
            reason=f"auto: CUDA is available but the gpu profile could not load ({type(error).__name__}: "
            f"{error}), so the cpu profile"
        )
