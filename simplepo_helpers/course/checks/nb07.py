"""Notebook 07's exercise graders (human evaluation)."""

from __future__ import annotations

import math
from typing import Any

from .base import _array, _call, _diagnose, _exercise


@_exercise("ex7.1", "07", "warm-up", "a win rate from human verdicts")
def _grade_human_win_rate(answer: Any) -> str | None:
    verdicts = ["policy", "tie", "reference", "policy", "tie", "tie", "policy", "reference"]  # 3 wins, 3 ties
    value = _array(_call(answer, list(verdicts)), "the win rate")
    return _diagnose(
        value,
        4.5 / 8,
        [
            (3 / 8, "a tie counts as half a win, not as a loss."),
            (6 / 8, "a tie counts as half a win, not a full one."),
            (3 / 5, "divide by every labelled item, ties included."),
        ],
        "score each verdict 1 (policy), 1/2 (tie) or 0 (reference), then average.",
    )


def _wilson_half_width(n: int, z: float) -> float:
    """Half the width of the Wilson 95% interval at an observed rate of 1/2 (its widest)."""
    from ...evaluation.metrics import wilson_interval

    low, high = wilson_interval(n / 2, n, z=z)
    return (high - low) / 2


@_exercise("ex7.2", "07", "stretch", "how many items a human study needs")
def _grade_items_needed(answer: Any) -> str | None:
    z = 1.959963984540054
    for half_width in (0.1, 0.05, 0.2):
        expected = next(n for n in range(1, 100_000) if _wilson_half_width(n, z) <= half_width)
        value = _array(_call(answer, half_width, z=z), "the number of items")
        normal = math.ceil((z / (2 * half_width)) ** 2)  # the normal approximation's answer
        hint = _diagnose(
            value,
            expected,
            [
                (expected - 1, "one item short: the interval at that n is still wider than asked."),
                (4 * expected, "half-width, not full width: the interval is the rate plus or minus it."),
            ]
            + (
                [(normal, "that is the normal approximation; use the Wilson interval's width.")]
                if normal != expected
                else []
            ),
            f"half_width={half_width}: the smallest n whose Wilson interval at rate 1/2 is at most that wide on each side.",
            rtol=0,
            atol=0.5,
        )
        if hint:
            return hint
    return None
