"""Implicit rewards on held-out pairs: reward accuracy and agreement with the likelihood ranking.

- **Implicit rewards** come from the method's own loss (``LossConfig.pairwise_loss``): SimPO
  ``beta * avg log p``, DPO ``beta * (log p - log p_ref)`` summed. Reward accuracy counts a pair whose two
  rewards are equal as half (so a DPO policy identical to its reference scores 0.5, not 0 as TRL's strict
  training metric ``rewards/accuracies`` would).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..batching import PreferenceCollator


@dataclass(frozen=True)
class RewardReport:
    """Implicit rewards of held-out pairs under one method, and how they rank the pairs."""

    chosen_rewards: torch.Tensor  # [N], beta-scaled, as the method's loss defines them
    rejected_rewards: torch.Tensor  # [N]
    avg_logp_margins: torch.Tensor  # [N] policy's average log-prob, chosen minus rejected

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def reward_accuracy(self) -> float:
        """Share of pairs whose reward ranks the chosen response higher (a tie counts half)."""
        return float((0.5 * (torch.sign(self.margins) + 1)).mean())

    @property
    def likelihood_agreement(self) -> float:
        """Share of pairs the reward ranks as the average log-likelihood does (what decoding follows).

        Per pair: 1 when both margins have the same sign, 0 when opposite, 1/2 when exactly one is zero.
        """
        agree = 1 - 0.5 * (torch.sign(self.margins) - torch.sign(self.avg_logp_margins)).abs()  # [N]
        return float(agree.mean())


def _pair_logps(
    model, examples, collator, batch_size: int, length_normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from ..precompute import pair_logps

    chosen, rejected = pair_logps(model, examples, collator, batch_size, length_normalize=length_normalize)
    return chosen.double(), rejected.double()  # [N] each


def preference_rewards(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Mapping[str, Any]],
    loss_config: Any,
    *,
    ref_model: torch.nn.Module | None = None,
    ref_logps: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
) -> RewardReport:
    """Implicit rewards of ``examples`` (preference rows) under ``loss_config``'s method.

    DPO needs the reference: ``ref_model`` or ``ref_logps`` (from ``precompute_reference_logps`` on the same
    examples, summed). Raises ValueError naming the row for a pair that cannot be scored.
    """
    collator = PreferenceCollator(tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    length_normalize = bool(loss_config.length_normalize)
    chosen, rejected = _pair_logps(model, examples, collator, batch_size, length_normalize)  # [N] each
    ref_chosen = ref_rejected = None
    if loss_config.name == "dpo":
        if ref_logps is not None:
            if bool(ref_logps.get("length_normalize", length_normalize)) != length_normalize:
                raise ValueError(
                    f"ref_logps were computed with length_normalize={ref_logps['length_normalize']}, the loss uses {length_normalize}"
                )
            ref_chosen = torch.as_tensor(ref_logps["ref_chosen_logps"], dtype=torch.float64)
            ref_rejected = torch.as_tensor(ref_logps["ref_rejected_logps"], dtype=torch.float64)
            if ref_chosen.shape != chosen.shape or ref_rejected.shape != rejected.shape:
                raise ValueError(f"ref_logps hold {ref_chosen.numel()} pairs, examples {chosen.numel()}")
        elif ref_model is not None:
            ref_chosen, ref_rejected = _pair_logps(
                ref_model, examples, collator, batch_size, length_normalize
            )
        else:
            raise ValueError("DPO's implicit reward needs the reference: pass ref_model or ref_logps")
    _, chosen_rewards, rejected_rewards = loss_config.pairwise_loss(
        chosen, rejected, ref_chosen, ref_rejected
    )
    if length_normalize:
        avg_margins = chosen - rejected
    else:
        avg_chosen, avg_rejected = _pair_logps(model, examples, collator, batch_size, True)
        avg_margins = avg_chosen - avg_rejected
    return RewardReport(chosen_rewards, rejected_rewards, avg_margins)
