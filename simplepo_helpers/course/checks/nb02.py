"""Notebook 02's exercise graders (the loss)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .base import IGNORE_INDEX, _array, _call, _close, _diagnose, _exercise, _toy_labels, _toy_logits


@_exercise("ex2.1", "02", "warm-up", "a SimPO loss by hand")
def _grade_simpo_by_hand(answer: Any) -> str | None:
    avg_w, avg_l, beta, gamma = -0.7, -1.5, 2.5, 1.375  # the numbers in the exercise text
    z = beta * (avg_w - avg_l) - gamma

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    return _diagnose(
        _array(answer, "the loss"),
        softplus(-z),
        [
            (
                softplus(-(beta * (avg_w - avg_l) - gamma / beta)),
                "you used gamma / beta as the margin: gamma is absolute here.",
            ),
            (softplus(z), "sign: the loss is -log sigma(z), so it falls as the chosen reward grows."),
            (softplus(-(beta * (avg_w - avg_l))), "you left out the target margin gamma."),
            (math.log(2), "ln 2 is the loss at z = 0; compute z first."),
        ],
        "compute z = beta * (avg_w - avg_l) - gamma, then -log sigma(z).",
        rtol=1e-4,
        atol=1e-6,
    )


@_exercise("ex2.2", "02", "core", "sequence log-probs with the mask")
def _grade_sequence_logps(answer: Any) -> str | None:
    from ...logps import sequence_logps

    labels = _toy_labels()
    logits = _toy_logits(labels)  # [N, T, V]
    log_probs = torch.log_softmax(logits, -1)  # [N, T, V]
    unshifted = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # no causal shift
    mask = labels != IGNORE_INDEX
    for average in (False, True):
        value = _array(_call(answer, logits.clone(), labels.clone(), average=average), f"average={average}")
        expected = sequence_logps(logits, labels, length_normalize=average)
        shifted_sum = sequence_logps(logits, labels, length_normalize=False)
        no_shift = (unshifted * mask).sum(-1)
        mistakes = [
            (
                (no_shift / mask.sum(-1)) if average else no_shift,
                "the causal shift is missing: the logits at t score the label at t + 1.",
            ),
            (shifted_sum / (labels.shape[1] - 1), "divide by the number of response tokens, not by T - 1."),
            (shifted_sum / labels.shape[1], "divide by the number of response tokens, not by T."),
            (
                sequence_logps(logits, labels, length_normalize=not average),
                "average=True divides each row's sum by its response token count; average=False returns the sum.",
            ),
        ]
        hint = _diagnose(
            value, expected, mistakes, f"average={average}: compare one row with a loop over its tokens."
        )
        if hint:
            return hint
    return None


@_exercise("ex2.3", "02", "core", "SimPO's gradient weight")
def _grade_grad_weight(answer: Any) -> str | None:
    from ...losses import simpo_loss

    generator = torch.Generator().manual_seed(1)
    avg_w = -torch.rand(6, generator=generator, dtype=torch.float64) * 2  # [B]
    avg_l = -torch.rand(6, generator=generator, dtype=torch.float64) * 2  # [B]
    for beta, gamma in ((2.5, 1.375), (10.0, 3.0)):
        leaf = avg_w.clone().requires_grad_()
        losses, _, _ = simpo_loss(leaf, avg_l, beta=beta, gamma=gamma)
        (autograd,) = torch.autograd.grad(losses.sum(), leaf)  # dL_i / d avg_w_i
        z = beta * (avg_w - avg_l) - gamma
        value = _array(_call(answer, avg_w.clone(), avg_l.clone(), beta, gamma), "the gradient")
        hint = _diagnose(
            value,
            autograd,
            [
                (-autograd, "sign: raising the chosen average lowers the loss, so dL/d avg_w is negative."),
                (autograd / beta, "chain rule: dz / d avg_w = beta, so beta multiplies the weight."),
                (
                    -beta * torch.sigmoid(z),
                    "sigma(z) or sigma(-z)? The weight should be large for a pair ranked wrongly.",
                ),
            ],
            f"beta={beta}, gamma={gamma}: differentiate softplus(-z) with z = beta * (avg_w - avg_l) - gamma.",
        )
        if hint:
            return hint
    return None


@_exercise("ex2.4", "02", "stretch", "the authors' setting as TRL CPOConfig arguments")
def _grade_trl_settings(answer: Any) -> str | None:
    for beta, ratio in ((2.5, 0.55), (10.0, 0.3)):
        settings = _call(answer, beta, ratio)
        if not isinstance(settings, Mapping):
            return "return a dict of CPOConfig keyword arguments"
        missing = {"loss_type", "beta", "simpo_gamma", "cpo_alpha"} - set(settings)
        if missing:
            return f"also set {sorted(missing)}: TRL's defaults are not SimPO's."
        if settings["loss_type"] != "simpo":
            return "which loss_type makes CPOTrainer compute SimPO?"
        if settings["cpo_alpha"] != 0:
            return "cpo_alpha adds an NLL term (that is CPO-SimPO); pure SimPO has none."
        if not _close(settings["beta"], beta):
            return "beta is the same number in both conventions."
        if _close(settings["simpo_gamma"], ratio):
            return "TRL's simpo_gamma is the absolute margin, not gamma_beta_ratio."
        if not _close(settings["simpo_gamma"], beta * ratio):
            return "convert gamma_beta_ratio to the absolute margin TRL expects."
    return None
