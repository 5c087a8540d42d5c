"""Notebook 06's exercise graders (LoRA)."""

from __future__ import annotations

from typing import Any

import torch

from .base import _array, _call, _diagnose, _exercise

# weight shapes (d_out, d_in) of one made-up transformer block: q, k, v, o, gate, up, down
_SHAPES = [(64, 64), (16, 64), (16, 64), (64, 64), (172, 64), (172, 64), (64, 172)]


@_exercise("ex6.1", "06", "warm-up", "LoRA's trainable parameters")
def _grade_lora_params(answer: Any) -> str | None:
    for r in (8, 2):
        value = _array(_call(answer, list(_SHAPES), r), "the parameter count")
        expected = sum(r * (d_in + d_out) for d_out, d_in in _SHAPES)  # A [r, d_in] + B [d_out, r] per layer
        hint = _diagnose(
            value,
            expected,
            [
                (
                    sum(r * d_in * d_out for d_out, d_in in _SHAPES),
                    "A is [r, d_in] and B is [d_out, r]: add them.",
                ),
                (sum(d_in * d_out for d_out, d_in in _SHAPES), "that is full fine-tuning's count, W itself."),
                (sum(r * d_in for _, d_in in _SHAPES), "you counted A only; B trains too."),
                (sum(r * d_out for d_out, _ in _SHAPES), "you counted B only; A trains too."),
            ],
            f"r={r}: sum r * (d_in + d_out) over the adapted layers.",
        )
        if hint:
            return hint
    return None


@_exercise("ex6.2", "06", "stretch", "merge an adapter into its weight")
def _grade_merge_lora(answer: Any) -> str | None:
    generator = torch.Generator().manual_seed(6)
    for d_out, d_in, r, alpha in ((5, 7, 2, 4.0), (3, 4, 1, 16.0)):
        weight = torch.randn(d_out, d_in, generator=generator, dtype=torch.float64)
        a = torch.randn(r, d_in, generator=generator, dtype=torch.float64)
        b = torch.randn(d_out, r, generator=generator, dtype=torch.float64)
        value = _array(_call(answer, weight.clone(), a.clone(), b.clone(), alpha, r), "the merged weight")
        hint = _diagnose(
            value,
            weight + (alpha / r) * b @ a,
            [
                (weight + b @ a, "the update is scaled by alpha / r."),
                (weight + alpha * r * b @ a, "the scale is alpha divided by r."),
                ((alpha / r) * b @ a, "the merged layer keeps the frozen W and adds the update."),
            ],
            f"d_out={d_out}, d_in={d_in}, r={r}, alpha={alpha}: W + (alpha / r) B A, shape [d_out, d_in].",
        )
        if hint:
            return hint
    return None
