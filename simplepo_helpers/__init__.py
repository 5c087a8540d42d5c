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
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
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
