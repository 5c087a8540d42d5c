"""Notebook 03's exercise graders (training)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .base import IGNORE_INDEX, _array, _call, _clone, _diagnose, _exercise, _tiny_model_and_batch


@_exercise("ex3.1", "03", "warm-up", "the SimPO loss before training")
def _grade_expected_first_loss(answer: Any) -> str | None:
    for beta, gamma in ((2.5, 1.375), (10.0, 3.0), (2.0, 0.0)):
        value = _array(_call(answer, beta, gamma), "the loss")
        hint = _diagnose(
            value,
            math.log1p(math.exp(gamma)),
            [
                (math.log(2), "ln 2 is DPO's loss at initialisation; SimPO's depends on its target margin."),
                (math.log1p(math.exp(gamma / beta)), "gamma is the absolute margin: no division by beta."),
                (
                    math.log1p(math.exp(-gamma)),
                    "sign: with equal averages z = -gamma, and the loss is -log sigma(z).",
                ),
            ],
            f"beta={beta}, gamma={gamma}: with equal averages, what is z?",
            rtol=1e-5,
        )
        if hint:
            return hint
    return None


def _grade_batch_loss(answer: Any, sft_weight: float) -> str | None:
    from ...training import LossConfig, preference_loss

    model, batch = _tiny_model_and_batch()
    beta, gamma = 2.5, 1.375
    config = LossConfig(name="simpo", beta=beta, gamma=gamma, sft_weight=sft_weight)

    def kit_loss(batch: Mapping[str, torch.Tensor], config: LossConfig) -> float:
        with torch.no_grad():
            return float(preference_loss(model, batch, config)[0])

    expected = kit_loss(batch, config)
    kwargs = {"beta": beta, "gamma": gamma} | ({"sft_weight": sft_weight} if sft_weight else {})
    loss = _call(answer, model, _clone(batch), **kwargs)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        return "return the batch loss as a one-element tensor (it is what .backward() is called on)."
    if not loss.requires_grad:
        return "the loss has no gradient: compute it without torch.no_grad() and without .item() / .detach()."
    value = _array(loss.reshape(()), "the loss")
    swapped = {**batch, **{k: torch.cat([batch[k][2:], batch[k][:2]]) for k in batch}}
    mistakes = [
        (kit_loss(swapped, config), "chosen and rejected are swapped: rows 0..B-1 are the chosen responses."),
        (
            kit_loss(
                batch,
                LossConfig("simpo", beta=beta, gamma=gamma, length_normalize=False, sft_weight=sft_weight),
            ),
            "SimPO uses the average log-prob per response token, not the sum.",
        ),
    ]
    if sft_weight:
        with torch.no_grad():
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.double()
        simpo_only = kit_loss(batch, LossConfig("simpo", beta=beta, gamma=gamma))
        chosen_avgs = _avg_token_logps(logits[:2], batch["labels"][:2])
        all_tokens = _avg_token_logps(logits, batch["labels"], token_weighted=True)
        mistakes += [
            (simpo_only, "the SFT term is missing (or multiplied by 0)."),
            (
                simpo_only - sft_weight * float(chosen_avgs.mean()),
                "average the NLL over all chosen response tokens of the batch (token-weighted), not per row.",
            ),
            (simpo_only - sft_weight * float(all_tokens), "the SFT term uses the chosen responses only."),
            (2 * simpo_only - expected, "sign: the SFT term adds the negative log-likelihood."),
        ]
    return _diagnose(
        value,
        expected,
        mistakes,
        "compare each step with notebook 02: log-probs, averages, loss, mean.",
        rtol=1e-4,
        atol=1e-6,
    )


def _avg_token_logps(
    logits: torch.Tensor, labels: torch.Tensor, token_weighted: bool = False
) -> torch.Tensor:
    """Per-row average log-prob [N] of the response tokens, or one token-weighted average."""
    targets = labels[:, 1:]  # [N, T-1]
    mask = targets != IGNORE_INDEX
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logps = logps * mask
    return logps.sum() / mask.sum() if token_weighted else logps.sum(-1) / mask.sum(-1)


@_exercise("ex3.2", "03", "core", "the SimPO loss of a collated batch")
def _grade_simpo_batch_loss(answer: Any) -> str | None:
    return _grade_batch_loss(answer, sft_weight=0.0)


@_exercise("ex3.3", "03", "stretch", "SimPO plus an SFT term (CPO-SimPO)")
def _grade_simpo_sft_loss(answer: Any) -> str | None:
    return _grade_batch_loss(answer, sft_weight=0.5)
