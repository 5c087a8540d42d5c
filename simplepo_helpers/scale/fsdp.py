"""FSDP for the entry point: PyTorch's ``fully_shard`` (FSDP2) on each decoder layer and the whole model.

``accelerate launch --config_file configs/accelerate/fsdp.yaml`` sets ``ACCELERATE_USE_FSDP=true``; the entry
point then shards the model itself (on GPUs over NCCL, and on CPU processes over gloo, which accelerate's own
FSDP path does not offer: it turns a CPU launch into DDP). Each process keeps 1/N of every weight, gradient
and AdamW state; a layer's full weights exist only while it runs. The training step is unchanged
(``clip_grad_norm_`` and AdamW work on the sharded DTensor parameters); checkpoints gather the full
weights and optimizer state onto process 0 (``runtime.checkpoint``).
"""

from __future__ import annotations

import os

import torch


def fsdp_requested() -> bool:
    """True under ``accelerate launch`` with an FSDP config (``ACCELERATE_USE_FSDP=true``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """Shard ``model`` in place: every module of a class the model names in ``_no_split_modules`` (its decoder
    layers), then the root (embeddings, final norm, LM head). Returns the same object."""
    from torch.distributed.fsdp import fully_shard

    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} names no decoder layer class (_no_split_modules) to shard by"
        )
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model
