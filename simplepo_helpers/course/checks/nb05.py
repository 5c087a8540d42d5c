"""Notebook 05's exercise graders (evaluation)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import _array, _call, _diagnose, _exercise


@_exercise("ex5.1", "05", "warm-up", "a win rate with ties")
def _grade_win_rate(answer: Any) -> str | None:
    scores = [1.0, 0.5, 0.0, 1.0, 0.25, 1.0]
    baseline = [0.0, 0.5, 1.0, 0.25, 0.25, 1.0]  # wins 2, ties 3, losses 1 (by hand)
    value = _array(_call(answer, list(scores), list(baseline)), "the win rate")
    return _diagnose(
        value,
        3.5 / 6,
        [
            (2 / 6, "a tie counts as half a win, not as a loss."),
            (5 / 6, "a tie counts as half a win, not a full one."),
            (2 / 3, "divide by all prompts, ties included."),
        ],
        "score each prompt 1, 1/2 or 0, then average.",
    )


@_exercise("ex5.2", "05", "core", "the Wilson score interval")
def _grade_wilson(answer: Any) -> str | None:
    from ...evaluation.metrics import wilson_interval

    z = 1.959963984540054
    for successes, n in ((7.5, 10), (0, 10), (10, 10), (50, 100), (3, 7)):
        got = _call(answer, successes, n, z=z)
        value = _array(got, "the interval")
        p = successes / n
        half = z * math.sqrt(p * (1 - p) / n)
        hint = _diagnose(
            value,
            wilson_interval(successes, n, z),
            [
                (
                    (p - half, p + half),
                    "that is the normal (Wald) interval; Wilson solves (p_hat - p)^2 = z^2 p(1-p)/n for p.",
                ),
                (wilson_interval(successes, n, z)[::-1], "return (low, high)."),
            ],
            f"successes={successes}, n={n}: solve the quadratic in p for its two roots.",
            rtol=1e-6,
        )
        if hint:
            return hint
    return None


@_exercise("ex5.3", "05", "stretch", "a length-controlled win rate")
def _grade_lc_win(answer: Any) -> str | None:
    from ...evaluation.metrics import lc_win_rate

    rng = np.random.default_rng(5)
    n = 400
    baseline_lengths = rng.integers(10, 60, n).astype(float)
    lengths = baseline_lengths + rng.normal(8.0, 12.0, n).round()  # the policy writes longer answers
    feature = np.tanh((lengths - baseline_lengths) / np.std(lengths - baseline_lengths))
    p_win = 1 / (1 + np.exp(-(-0.4 + 1.5 * feature)))  # the policy is worse at equal length
    draws = rng.random(n)
    scores = np.where(draws < p_win, 1.0, 0.0)
    scores[rng.random(n) < 0.1] = 0.5  # some ties
    baseline_scores = np.full(n, 0.5)
    expected = lc_win_rate(scores, baseline_scores, lengths, baseline_lengths)
    value = _array(
        _call(answer, scores.tolist(), baseline_scores.tolist(), lengths.tolist(), baseline_lengths.tolist()),
        "the LC win rate",
    )
    return _diagnose(
        value.reshape(()) if value.size == 1 else value,
        expected.lc_win_rate,
        [
            (
                expected.raw_win_rate,
                "that is the raw win rate: report the fitted win probability at equal length.",
            )
        ],
        "fit P(win) = sigma(theta + phi * tanh(delta / sd(delta))) by maximum likelihood and report sigma(theta).",
        rtol=0.0,
        atol=0.01,
    )
