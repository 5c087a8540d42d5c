"""Win rates with a Wilson interval and a length-controlled win rate: the statistics of judged pairs.

- **Win rate.** Per prompt, the policy's judge score against the baseline's: higher is a win (1), equal a
  tie (1/2), lower a loss (0). The 95% interval is the **Wilson score interval** over prompts, with ties
  entering as half a win. A tie has less variance than a coin flip, so the interval is conservative.
- **Length-controlled (LC) win rate**, in the spirit of AlpacaEval 2: fit
  ``P(win) = sigma(theta + phi * tanh(delta / sd(delta)))`` with ``delta`` the policy's minus the baseline's
  response length (tokens) by maximum likelihood (Newton's method, float64), and report ``sigma(theta)``, the
  win probability at zero length difference. ``theta`` is the policy's term; ``phi`` the length term. Ties
  enter the likelihood as outcome 1/2 (a fractional Bernoulli target, as AlpacaEval's soft preferences do).
  A small L2 penalty on ``phi`` keeps the fit finite when length alone separates wins from losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (``successes`` may be fractional: ties)."""
    if n < 1:
        raise ValueError(f"wilson_interval needs n >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class WinRate:
    """Wins, ties and losses over prompts; ``rate`` = (wins + ties / 2) / n with its Wilson 95% interval."""

    wins: int
    ties: int
    losses: int
    rate: float
    ci_low: float
    ci_high: float

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    def __str__(self) -> str:
        return (
            f"{self.rate:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] "
            f"({self.wins} wins, {self.ties} ties, {self.losses} losses)"
        )


def _as_float_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is not finite ({array[bad[0]]})")
    return array


def _paired(a: Sequence[float], b: Sequence[float], names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    first, second = _as_float_array(a, names[0]), _as_float_array(b, names[1])
    if first.shape != second.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must pair up prompt by prompt: {first.size} vs {second.size}"
        )
    if first.size == 0:
        raise ValueError(f"{names[0]} is empty")
    return first, second


def outcomes(scores: Sequence[float], baseline_scores: Sequence[float]) -> np.ndarray:
    """Per-prompt outcome: 1 (policy scored higher), 0.5 (tie), 0 (lower)."""
    policy, baseline = _paired(scores, baseline_scores, ("scores", "baseline_scores"))
    return 0.5 * (np.sign(policy - baseline) + 1.0)


def win_rate(scores: Sequence[float], baseline_scores: Sequence[float], z: float = Z_95) -> WinRate:
    """Win rate of ``scores`` over ``baseline_scores`` (same prompts, same order); ties count as half."""
    result = outcomes(scores, baseline_scores)
    wins, ties = int((result == 1).sum()), int((result == 0.5).sum())
    low, high = wilson_interval(wins + 0.5 * ties, result.size, z)
    return WinRate(wins, ties, result.size - wins - ties, float(result.mean()), low, high)


@dataclass(frozen=True)
class LCWinRate:
    """Length-controlled win rate ``sigma(intercept)`` and the fitted model (see the module docstring)."""

    lc_win_rate: float
    raw_win_rate: float
    intercept: float  # theta: the policy's term
    length_slope: float  # phi: coefficient of tanh(delta / length_scale)
    length_scale: float  # sd of the length differences (0: no length variation, phi is then 0)
    n: int


def fit_length_logistic(
    outcome: np.ndarray, feature: np.ndarray, *, l2: float = 0.1, tol: float = 1e-10, max_iter: int = 100
) -> tuple[float, float]:
    """(theta, phi) maximising sum[o log p + (1-o) log(1-p)] - l2/2 phi^2, p = sigma(theta + phi x).

    Newton's method with step halving; ``outcome`` in [0, 1] must not be all 0 or all 1 (no finite MLE).
    """
    design = np.stack([np.ones_like(feature), feature], axis=1)  # [N, 2]
    penalty = np.diag([0.0, l2])

    def objective(params: np.ndarray) -> float:
        logits = design @ params
        return float(np.sum(np.logaddexp(0.0, logits) - outcome * logits) + 0.5 * params @ penalty @ params)

    params = np.array([math.log(outcome.mean() / (1 - outcome.mean())), 0.0])  # the intercept-only MLE
    value = objective(params)
    for _ in range(max_iter):
        prob = 1.0 / (1.0 + np.exp(-(design @ params)))  # [N]
        gradient = design.T @ (prob - outcome) + penalty @ params  # [2]
        hessian = design.T @ (design * (prob * (1 - prob))[:, None]) + penalty  # [2, 2]
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        scale = 1.0
        while scale > 1e-8:
            candidate = params - scale * step
            candidate_value = objective(candidate)
            if candidate_value <= value:
                break
            scale /= 2
        params, value = candidate, candidate_value
        if np.max(np.abs(scale * step)) < tol:
            break
    return float(params[0]), float(params[1])


def lc_win_rate(
    scores: Sequence[float],
    baseline_scores: Sequence[float],
    lengths: Sequence[float],
    baseline_lengths: Sequence[float],
    *,
    l2: float = 0.1,
) -> LCWinRate:
    """Length-controlled win rate of the policy over the baseline (module docstring: model and ties)."""
    result = outcomes(scores, baseline_scores)
    policy_len, baseline_len = _paired(lengths, baseline_lengths, ("lengths", "baseline_lengths"))
    if policy_len.shape != result.shape:
        raise ValueError(f"{policy_len.size} lengths for {result.size} scores")
    delta = policy_len - baseline_len  # [N]
    scale = float(delta.std())
    feature = np.tanh(delta / scale) if scale > 0 else np.zeros_like(delta)  # [N]
    raw = float(result.mean())
    if raw in (0.0, 1.0):  # every prompt won (lost): the MLE sits at infinity, its limit is the raw rate
        return LCWinRate(raw, raw, math.copysign(math.inf, raw - 0.5), 0.0, scale, result.size)
    theta, phi = fit_length_logistic(result, feature, l2=l2)
    return LCWinRate(1.0 / (1.0 + math.exp(-theta)), raw, theta, phi, scale, result.size)
