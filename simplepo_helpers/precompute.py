"""DPO's reference side without a second model in every step: each pair's log-probs under a model, once."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .batching import PreferenceCollator
from .runtime.batch_order import collate_examples
from .runtime.device import DevicePolicy
from .runtime.progress import progress_bar
from .training import concatenated_forward

if TYPE_CHECKING:
    from datasets import Dataset


@torch.no_grad()
def pair_logps(
    model: torch.nn.Module,
    examples: Sequence[Mapping[str, Any]] | Dataset,
    collator: PreferenceCollator,
    batch_size: int,
    *,
    length_normalize: bool = False,
    device_policy: DevicePolicy | None = None,
    progress: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Any model's log-probs of each pair's chosen and rejected response, no grad: ([N], [N]), float32, CPU.
    ``progress``: a bar (default: from 256 pairs, not under pytest)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chosen, rejected = [], []
    model.eval()
    bar = progress_bar(len(examples), progress, "log-probs of the pairs")
    for start in range(0, len(examples), batch_size):
        indices = list(range(start, min(start + batch_size, len(examples))))
        batch = collate_examples(collator, examples, indices, context="pair log-probs")
        with device_policy.autocast() if device_policy is not None else contextlib.nullcontext():
            # the layout train() uses (fast/ where tested), so precomputed and live log-probs agree bit for bit
            out = concatenated_forward(model, batch, length_normalize=length_normalize, layout="auto")
        chosen.append(out["chosen_logps"].float().cpu())
        rejected.append(out["rejected_logps"].float().cpu())
        bar.update(len(indices))
    bar.close()
    if not chosen:
        raise ValueError("pair_logps got no examples")
    return torch.cat(chosen), torch.cat(rejected)


def precompute_reference_logps(
    ref_model: torch.nn.Module,
    examples: Sequence[Mapping[str, Any]] | Dataset,
    collator: PreferenceCollator,
    batch_size: int,
    *,
    length_normalize: bool = False,
    device_policy: DevicePolicy | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Reference log-probs of every example, in order: DPO without a live reference model. Returns
    ``{"ref_chosen_logps": [N], "ref_rejected_logps": [N], "length_normalize": ...}`` (float32, CPU); its
    ``length_normalize`` must match the loss's (``train`` checks it)."""
    opts: dict[str, Any] = dict(
        length_normalize=length_normalize, device_policy=device_policy, progress=progress
    )
    chosen, rejected = pair_logps(ref_model, examples, collator, batch_size, **opts)  # [N] each
    return {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected, "length_normalize": length_normalize}
