"""LoRA through PEFT: wrap a causal LM with adapters, and use its adapter-free base as DPO's reference.

With LoRA only the adapter matrices train; the base weights stay frozen. DPO's reference is then the base
model itself: `adapter_disabled_reference` runs the same module under ``model.disable_adapter()`` (as TRL's
DPOTrainer does), so no second copy of the weights is held in memory. To export a plain model, call PEFT's
``model.merge_and_unload()`` (it folds ``B @ A * alpha / r`` into each base weight, in place).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch


@dataclass
class LoraOptions:
    """LoRA settings (PEFT's ``LoraConfig`` names: ``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``).

    ``target_modules="all-linear"`` adapts every linear layer except the output head. ``enabled`` and
    ``merge_at_end`` are read by the training entry point (``merge_at_end`` exports a merged plain model).
    """

    enabled: bool = False
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    merge_at_end: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"r must be an integer >= 1, got {self.r!r}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be > 0, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules:
            raise ValueError("target_modules must name modules (or be 'all-linear'), got nothing")


def is_peft_model(model: Any) -> bool:
    """True for a PEFT-wrapped model (it has adapters that ``disable_adapter`` can switch off)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def _linear_module_names(model: torch.nn.Module) -> list[str]:
    return sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    )


def apply_lora(
    model: torch.nn.Module, options: LoraOptions | None = None, **settings: Any
) -> torch.nn.Module:
    """Wrap ``model`` with fresh LoRA adapters (PEFT ``get_peft_model``) and return the PEFT model.

    ``settings`` override fields of ``options`` (e.g. ``apply_lora(model, r=8, dropout=0.0)``). Only the
    adapter parameters require gradients afterwards. Seed the RNG first for reproducible adapters.
    """
    from peft import LoraConfig, get_peft_model

    unknown = set(settings) - {f.name for f in fields(LoraOptions)}
    if unknown:
        raise TypeError(f"apply_lora got unknown settings {sorted(unknown)}; see LoraOptions")
    options = replace(options or LoraOptions(), **settings)
    if is_peft_model(model):
        raise ValueError("the model already has PEFT adapters; apply_lora expects a plain model")
    peft_config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=options.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as error:  # PEFT's NoMatchingPeftModuleError is a ValueError
        raise ValueError(
            f"lora.target_modules={options.target_modules!r}: {error} "
            f"(linear layers of this model: {_linear_module_names(model)})"
        ) from error


class AdapterDisabledReference(torch.nn.Module):
    """DPO's reference for a LoRA policy: the same PEFT model, run in eval mode with its adapters disabled.

    The policy is held outside the module tree, so ``.eval()`` or ``.to()`` on this wrapper (as ``train``
    does with a ``ref_model``) leave the policy alone; ``parameters()`` yields the policy's, so the wrapper
    reports the policy's device. Forward runs without gradients and restores the policy's train mode.
    """

    def __init__(self, peft_model: torch.nn.Module) -> None:
        super().__init__()
        if not is_peft_model(peft_model):
            raise TypeError(
                f"adapter_disabled_reference needs a PEFT model (see apply_lora), got {type(peft_model).__name__}"
            )
        object.__setattr__(self, "policy", peft_model)  # not registered as a submodule on purpose

    def parameters(self, recurse: bool = True):
        return self.policy.parameters(recurse)

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        was_training = self.policy.training
        self.policy.eval()  # no dropout in the reference, as with a separate frozen copy
        try:
            with self.policy.disable_adapter():
                return self.policy(*args, **kwargs)
        finally:
            self.policy.train(was_training)


def adapter_disabled_reference(peft_model: torch.nn.Module) -> AdapterDisabledReference:
    """The reference model for DPO (or the KL term) under LoRA, sharing the policy's frozen base weights."""
    return AdapterDisabledReference(peft_model)
