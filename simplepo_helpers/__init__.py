"""SimplePO helpers: the tested code behind the SimPO / DPO notebooks.

Names are imported lazily (``from simplepo_helpers import simpo_loss`` loads only the module that
defines it), so light modules such as the data world do not pay for heavy imports they do not use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # log-probabilities
    "sequence_logps": "logps",
    "token_logps": "logps",
    # losses and regularisers
    "simpo_loss": "losses",
    "dpo_loss": "losses",
    "sft_nll_loss": "losses",
    "kl_penalty": "losses",
    # tokenisation and batching
    "tokenize_preference": "batching",
    "PreferenceCollator": "batching",
    "decode_masked": "batching",
    "explain_tokens": "batching",
    "truncate_preference": "batching",
    # loading and validation
    "load_preference_dataset": "data",
    "validate_preferences": "data",
    "ValidationReport": "data",
    "PreferenceDataError": "data",
    # device and precision
    "select_device": "device",
    "DevicePolicy": "device",
    # training
    "LossConfig": "training",
    "TrainConfig": "training",
    "concatenated_forward": "training",
    "preference_loss": "training",
    "training_step": "training",
    "train": "training",
    "TrainResult": "training",
    "NonFiniteLossError": "training",
    "precompute_reference_logps": "training",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    # generation and the self-made preference world
    "generate_responses": "generation",
    "judge": "world.judge",
    "JudgeResult": "world.judge",
    "load_reference_model": "world.reference",
    # evaluation, cached comparison runs, results file (notebooks 04-05)
    "win_rate": "evaluation",
    "wilson_interval": "evaluation",
    "lc_win_rate": "evaluation",
    "preference_rewards": "evaluation",
    "kl_to_reference": "evaluation",
    "response_lengths": "evaluation",
    "repetition_rate": "evaluation",
    "judge_responses": "evaluation",
    "family_breakdown": "evaluation",
    "safety_summary": "evaluation",
    "generate_and_judge": "evaluation",
    "evaluate_policy": "evaluation",
    "GenerationBrowser": "evaluation",
    "RunSpec": "experiments",
    "train_or_load": "experiments",
    "comparison_specs": "experiments",
    "variant": "experiments",
    "train_all": "experiments",
    "seed_band": "experiments",
    "measure_step_cost": "experiments",
    "reference_logps": "experiments",
    "summarize_seeds": "results",
    "write_results": "results",
    "load_results": "results",
    "RewardModelJudge": "reward_model",
    # notebook utilities and the notebook-03 profiles
    "cmp": "notebook",
    "in_colab": "notebook",
    "PairBrowser": "notebook",
    "LossExplorer": "notebook",
    "simpo_curves": "notebook",
    "draw_simpo_curves": "notebook",
    "tokens_html": "notebook",
    "html_table": "notebook",
    "check": "check",  # exercise self-checks (course mode)
    "CheckResult": "check",
    "load_profile": "hub",
    "HubConfig": "hub",
    "ultrafeedback_to_preference": "hub",
    # scale-out: config-driven entry point, LoRA via PEFT
    "apply_lora": "lora",
    "adapter_disabled_reference": "lora",
    "LoraOptions": "lora",
    "RunConfig": "config",
    "ConfigError": "config",
    "load_config": "config",
    "run_training": "cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'simplepo_helpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
