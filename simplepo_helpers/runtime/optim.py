"""The optimizer, learning-rate schedule and fp16 grad scaler of one run, built together.

AdamW with weight decay on matrices only (not on norms or biases), fused where torch supports it, and the
transformers schedule named by ``lr_scheduler_type`` with ``ceil(warmup_ratio * max_steps)`` warm-up steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import get_scheduler

from .device import DevicePolicy


def build_optimizer(
    model: torch.nn.Module, *, learning_rate: float, weight_decay: float
) -> tuple[torch.optim.AdamW, str]:
    """AdamW over the trainable parameters; returns it and the implementation used ("fused" or "default")."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad is False everywhere)")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        fused_devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # older torch: fused AdamW existed for CUDA
        fused_devices = {"cuda"}
    if all(p.device.type in fused_devices and p.is_floating_point() for p in params):
        return torch.optim.AdamW(groups, lr=learning_rate, fused=True), "fused"
    return torch.optim.AdamW(groups, lr=learning_rate), "default (foreach where available)"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


@dataclass
class Optimization:
    """What one run steps besides the model: optimizer, schedule, grad scaler (fp16 only)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    grad_scaler: torch.amp.GradScaler | None
    impl: str  # the AdamW implementation, for the run's records

    @classmethod
    def build(cls, model: torch.nn.Module, config: Any, device_policy: DevicePolicy) -> Optimization:
        """From a ``TrainConfig`` (learning_rate, weight_decay, lr_scheduler_type, warmup_ratio, max_steps)."""
        optimizer, impl = build_optimizer(
            model, learning_rate=config.learning_rate, weight_decay=config.weight_decay
        )
        scheduler = get_scheduler(
            config.lr_scheduler_type,
            optimizer,
            num_warmup_steps=math.ceil(config.warmup_ratio * config.max_steps),
            num_training_steps=config.max_steps,
        )
        return cls(optimizer, scheduler, device_policy.make_grad_scaler(), impl)

    def state_objects(self, model: torch.nn.Module) -> dict[str, Any]:
        """What a checkpoint saves and a resume loads (keyword arguments of ``save_checkpoint``)."""
        return {
            "model": unwrap(model),
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "grad_scaler": self.grad_scaler,
        }
