"""Notebook 04's exercise graders (the comparison)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch

from .base import _array, _call, _close, _diagnose, _exercise


@_exercise("ex4.1", "04", "warm-up", "a Monte-Carlo KL estimate")
def _grade_mc_kl(answer: Any) -> str | None:
    policy = [-12.0, -8.5, -20.0, -3.0]  # log pi(y_i | x_i) of 4 samples from the policy
    ref = [-14.0, -9.0, -19.0, -4.5]  # log pi_ref of the same samples
    value = _array(_call(answer, torch.tensor(policy), torch.tensor(ref)), "the KL")
    return _diagnose(
        value.reshape(()) if value.size == 1 else value,
        0.75,  # (2 + 0.5 - 1 + 1.5) / 4 by hand
        [
            (-0.75, "sign: KL(pi || pi_ref) averages log pi - log pi_ref over samples from pi."),
            (3.0, "average over the samples, do not sum."),
        ],
        "one number: the mean over samples of the log-ratio of the whole responses.",
    )


@_exercise("ex4.2", "04", "core", "the gamma where held-out reward accuracy stops rising")
def _grade_plateau_gamma(answer: Any) -> str | None:
    cases = [  # (gammas, accuracies, tol) -> expected gamma, worked out by hand
        (([0.0, 0.5, 1.0, 2.0, 3.0], [0.60, 0.66, 0.70, 0.705, 0.70], 0.01), 1.0, "a rise that flattens out"),
        (([0.0, 1.0, 2.0, 3.0], [0.60, 0.58, 0.66, 0.665], 0.01), 2.0, "a dip before a further rise"),
        (([3.0, 0.0, 2.0, 1.0], [0.695, 0.55, 0.69, 0.65], 0.01), 2.0, "gammas given out of order"),
        (([0.0, 1.0, 2.0], [0.7, 0.6, 0.5], 0.01), 0.0, "accuracy that only falls"),
        (([0.0, 1.0, 2.0], [0.5, 0.6, 0.7], 0.01), 2.0, "accuracy that never stops rising"),
    ]
    for (gammas, accuracies, tol), want, description in cases:
        got = _call(answer, list(gammas), list(accuracies), tol=tol)
        if not _close(_array(got, "the gamma"), want):
            return (
                f"for {description} you returned {got!r}. Sort by gamma; the plateau starts at the first gamma "
                "that no later gamma beats by more than tol."
            )
    return None


@_exercise("ex4.3", "04", "stretch", "a controlled SFT-term experiment")
def _grade_sft_spec(answer: Any, *, baseline: Any = None) -> str | None:
    if baseline is None:
        raise ValueError(
            'ex4.3 compares your spec with the SimPO run: check("ex4.3", sft_spec, baseline=specs["simpo"][0])'
        )
    if not hasattr(answer, "train") or not hasattr(answer.train, "loss"):
        return f"expected a RunSpec (like specs['simpo'][0]), got {type(answer).__name__}"
    loss, base_loss = answer.train.loss, baseline.train.loss
    if not loss.sft_weight > 0:
        return "the SFT term is switched on by a positive sft_weight in the loss config."
    changed = [
        f.name
        for f in fields(base_loss)
        if f.name != "sft_weight" and getattr(loss, f.name) != getattr(base_loss, f.name)
    ]
    changed += [
        f.name
        for f in fields(baseline.train)
        if f.name not in ("loss", "output_dir")
        and getattr(answer.train, f.name) != getattr(baseline.train, f.name)
    ]
    if changed:
        return f"change only the SFT weight, or the length difference has more than one cause; you also changed {changed}."
    if answer.label == baseline.label:
        return "give the run its own label, so plots and tables tell the two apart."
    if getattr(answer, "length_checkpoints", 0) != baseline.length_checkpoints:
        return "track length at the same checkpoints as the baseline (variant() turns length tracking off)."
    return None
