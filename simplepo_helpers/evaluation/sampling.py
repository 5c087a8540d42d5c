"""k independent samples per prompt, the per-prompt expected judge score, and comparisons that resolve a
small effect: the score gain over the reference with a paired bootstrap interval, the win rate on expected
scores, the share of prompts whose answers changed, diversity, and safety rates with intervals.

Why (``docs`` and notebook 05): one sample per prompt, with the policy and the reference sharing the sampling
seed, makes a policy close to its reference write the very same text on most prompts, and a discrete judge
then ties. Averaging k independently seeded samples per prompt estimates each prompt's *expected* score
s(x); the paired difference d(x) = s_policy(x) - s_ref(x), resampled over prompts (Koehn 2004), gives the
gain and its interval. Sharing seeds (common random numbers) stays useful as a variance-reduction device
and for the changed share, never as the headline.

Pooling seeds, two questions, two schemes:
- ``score_gain`` with [S, N] policy scores averages d over seeds per prompt before resampling prompts: the
  interval is over prompts for *these* S trained models (prompt noise only);
- ``seed_prompt_gain`` resamples training seeds *and* prompts (a two-way bootstrap: Bouthillier et al. 2021):
  the interval for the *method*, which carries the seed-to-seed spread as well. Use it wherever seeds are
  pooled into one claim about a method; use a per-seed ``score_gain`` to ask whether one learner's run
  shows the effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import Judge, WinRate, judge_responses, response_lengths, win_rate

SEED_STRIDE = 1_000_003  # sample j of stream s is sampled with seed s * SEED_STRIDE + j * 10_007


@dataclass(frozen=True)
class Samples:
    """k judged samples per prompt from one model. Arrays are [N, k] (prompts x samples) unless noted."""

    prompts: list[Any]
    responses: list[list[str]]  # [N][k]
    scores: np.ndarray  # [N, k] judge scores
    correct: np.ndarray  # [N, k] bool
    refused: np.ndarray  # [N, k] bool
    lengths: np.ndarray  # [N, k] tokens
    forbidden: np.ndarray  # [N] bool
    families: list[str]  # [N]

    @property
    def k(self) -> int:
        return self.scores.shape[1]

    @property
    def expected(self) -> np.ndarray:
        """Per-prompt expected judge score s(x): the mean over the k samples, [N]."""
        return self.scores.mean(axis=1)


def sample_seeds(stream: int, k: int) -> list[int]:
    """The k sampling seeds of ``stream`` (one stream per model, so models never share seeds by accident)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return [stream * SEED_STRIDE + j * 10_007 for j in range(k)]


def judge_samples(
    tokenizer: Any,
    prompts: Sequence[Any],
    responses: Sequence[Sequence[str]],
    *,
    judge: Judge | None = None,
) -> Samples:
    """Judge ``responses`` ([N][k], k the same for every prompt) to ``prompts``."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} lists of responses")
    ks = {len(r) for r in responses}
    if len(ks) != 1 or 0 in ks:
        raise ValueError(f"every prompt needs the same number (>= 1) of responses, got {sorted(ks)}")
    k = ks.pop()
    flat_prompts = [p for p in prompts for _ in range(k)]
    flat = [r for rs in responses for r in rs]
    verdicts = judge_responses(flat_prompts, flat, judge)
    shape = (len(prompts), k)

    def grid(values) -> np.ndarray:
        return np.asarray(values).reshape(shape)

    return Samples(
        prompts=list(prompts),
        responses=[list(r) for r in responses],
        scores=grid([float(v.score) for v in verdicts]).astype(np.float64),
        correct=grid([bool(v.correct) for v in verdicts]),
        refused=grid([bool(v.refused) for v in verdicts]),
        lengths=grid(response_lengths(tokenizer, flat)),
        forbidden=np.array([bool(verdicts[i * k].forbidden) for i in range(len(prompts))]),
        families=[verdicts[i * k].family for i in range(len(prompts))],
    )


def sample_k(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    k: int,
    stream: int,
    max_new_tokens: int,
    judge: Judge | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
) -> Samples:
    """k samples per prompt at temperature 1 (top_p 1), sample j seeded by ``sample_seeds(stream, k)[j]``.

    Give each model its own ``stream`` for independent samples; give two models the same ``stream`` for
    common random numbers (the variance-reduction lesson and ``changed_share``). ``progress``: a bar over the
    k x N samples (None: only for ``LONG_WORK`` samples or more).
    """
    from ..runtime.progress import progress_bar
    from .generation import generate_responses

    columns = []  # [k][N]
    with progress_bar(k * len(prompts), progress, f"sampling {k} per prompt") as bar:
        for seed in sample_seeds(stream, k):
            columns.append(
                generate_responses(
                    model,
                    tokenizer,
                    prompts,
                    max_new_tokens=max_new_tokens,
                    seed=seed,
                    batch_size=batch_size,
                    progress=False,
                )
            )
            bar.update(len(prompts))
    return judge_samples(tokenizer, prompts, [list(row) for row in zip(*columns, strict=True)], judge=judge)


# ------------------------------------------------------------------------------ the score gain


@dataclass(frozen=True)
class Interval:
    """A mean with a 95% interval; ``n`` is the number of prompts it rests on."""

    mean: float
    low: float
    high: float
    n: int

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def bootstrap_mean(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Mean of ``values`` with a percentile bootstrap 95% interval (resampling the values with replacement)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"bootstrap_mean needs a non-empty 1-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"value {int(np.flatnonzero(~np.isfinite(array))[0])} is not finite")
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, array.size, size=(n_boot, array.size))].mean(axis=1)  # [B]
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(array.mean()), float(low), float(high), int(array.size))


def score_gain(
    policy_expected: Sequence[float] | np.ndarray,
    reference_expected: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> Interval:
    """Mean of d(x) = s_policy(x) - s_ref(x) with a paired bootstrap 95% interval over prompts.

    ``policy_expected`` is [N] (one run) or [S, N] (S seeds: d is averaged over seeds per prompt first);
    ``reference_expected`` is [N].
    """
    policy = np.asarray(policy_expected, dtype=np.float64)
    reference = np.asarray(reference_expected, dtype=np.float64)
    if policy.ndim == 1:
        policy = policy[None]
    if policy.ndim != 2 or reference.ndim != 1 or policy.shape[1] != reference.shape[0]:
        raise ValueError(
            f"policy scores must be [N] or [S, N] and reference scores [N]: got {policy.shape}, {reference.shape}"
        )
    return bootstrap_mean((policy - reference[None]).mean(axis=0), n_boot=n_boot, seed=seed)


def seed_prompt_gain(
    policy_expected: Sequence[Sequence[float]] | np.ndarray,
    reference_expected: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> Interval:
    """Mean of d(s, x) = s_policy_s(x) - s_ref(x) with a 95% interval that resamples seeds and prompts.

    ``policy_expected`` is [S, N] (S >= 2 training seeds), ``reference_expected`` [N]. Each bootstrap draw picks
    S seeds and N prompts with replacement, independently, and averages d over the chosen cells.
    ``n`` of the result is the number of prompts; the seeds are ``S``.
    """
    policy = np.asarray(policy_expected, dtype=np.float64)
    reference = np.asarray(reference_expected, dtype=np.float64)
    if (
        policy.ndim != 2
        or policy.shape[0] < 2
        or reference.ndim != 1
        or policy.shape[1] != reference.shape[0]
    ):
        raise ValueError(
            f"policy scores must be [S >= 2, N] and reference scores [N]: got {policy.shape}, {reference.shape}"
        )
    if not (np.all(np.isfinite(policy)) and np.all(np.isfinite(reference))):
        raise ValueError("scores must be finite")
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    gains = policy - reference[None]  # [S, N]
    n_seeds, n_prompts = gains.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        seeds = rng.integers(0, n_seeds, n_seeds)  # [S]
        prompts = rng.integers(0, n_prompts, n_prompts)  # [N]
        means[b] = gains[np.ix_(seeds, prompts)].mean()
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(gains.mean()), float(low), float(high), int(n_prompts))


def method_difference(
    first_expected: Sequence[Sequence[float]] | np.ndarray,
    second_expected: Sequence[Sequence[float]] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> Interval:
    """Mean of method A's minus method B's expected score on the same prompts, with a 95% interval that
    resamples each method's training seeds (independently) and the prompts (jointly: the comparison is paired
    by prompt). ``first_expected`` is [S1, N], ``second_expected`` [S2, N], S1, S2 >= 2."""
    first = np.asarray(first_expected, dtype=np.float64)
    second = np.asarray(second_expected, dtype=np.float64)
    if (
        first.ndim != 2
        or second.ndim != 2
        or first.shape[1] != second.shape[1]
        or min(len(first), len(second)) < 2
    ):
        raise ValueError(
            f"expected scores must be [S >= 2, N] with the same N: got {first.shape}, {second.shape}"
        )
    rng = np.random.default_rng(seed)
    n_prompts = first.shape[1]
    means = np.empty(n_boot)
    for b in range(n_boot):
        prompts = rng.integers(0, n_prompts, n_prompts)
        a = first[rng.integers(0, len(first), len(first))][:, prompts].mean()
        c = second[rng.integers(0, len(second), len(second))][:, prompts].mean()
        means[b] = a - c
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(first.mean() - second.mean()), float(low), float(high), int(n_prompts))


def expected_win_rate(policy_expected: Sequence[float], reference_expected: Sequence[float]) -> WinRate:
    """Win rate on per-prompt expected scores: wins, ties (equal expected scores), losses, Wilson interval."""
    return win_rate(policy_expected, reference_expected)


def changed_share(policy: Sequence[Sequence[str]], reference: Sequence[Sequence[str]]) -> float:
    """Share of prompts where any of the policy's answers differs from the reference's answer drawn with the
    same seed (both sampled with the same ``stream``): near 0 means training did not move the model."""
    if len(policy) != len(reference) or not policy:
        raise ValueError(f"changed_share needs paired, non-empty lists: {len(policy)} vs {len(reference)}")
    changed = []
    for index, (mine, theirs) in enumerate(zip(policy, reference, strict=True)):
        if len(mine) != len(theirs):
            raise ValueError(
                f"prompt {index}: {len(mine)} policy samples but {len(theirs)} reference samples"
            )
        changed.append(any(a != b for a, b in zip(mine, theirs, strict=True)))
    return float(np.mean(changed))


# ------------------------------------------------------------------------------ diversity


def diversity(responses: Sequence[Sequence[str]]) -> dict[str, float]:
    """Across the k samples of each prompt: ``distinct`` = mean share of distinct answers (1/k .. 1) and
    ``entropy`` = mean entropy (nats) of the empirical answer distribution (0 when all k are the same)."""
    if not responses:
        raise ValueError("diversity needs at least one prompt")
    distinct, entropy = [], []
    for index, answers in enumerate(responses):
        if not answers:
            raise ValueError(f"prompt {index} has no samples")
        _, counts = np.unique(np.asarray(answers, dtype=object).astype(str), return_counts=True)
        share = counts / counts.sum()
        distinct.append(len(counts) / len(answers))
        entropy.append(float(-(share * np.log(share)).sum()))
    return {"distinct": float(np.mean(distinct)), "entropy": float(np.mean(entropy))}


# ------------------------------------------------------------------------------ safety both ways


def prompt_rate(flags: np.ndarray, mask: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> Interval | None:
    """Share of samples with ``flags`` [N, k] among the prompts in ``mask`` [N], with a bootstrap interval over
    those prompts (samples of one prompt move together); None when ``mask`` selects no prompt."""
    flags, mask = np.asarray(flags, dtype=np.float64), np.asarray(mask, dtype=bool)
    if flags.ndim != 2 or mask.shape != flags.shape[:1]:
        raise ValueError(f"flags must be [N, k] and mask [N]: got {flags.shape}, {mask.shape}")
    if not mask.any():
        return None
    return bootstrap_mean(flags[mask].mean(axis=1), n_boot=n_boot, seed=seed)


def behaviour_rates(samples: Samples, *, n_boot: int = 2000) -> dict[str, Interval | None]:
    """Helpfulness, over-refusal (allowed requests), harmful compliance and correct refusal (forbidden)."""
    allowed, forbidden = ~samples.forbidden, samples.forbidden
    return {
        "helpfulness": prompt_rate(samples.correct, allowed, n_boot=n_boot),
        "over_refusal": prompt_rate(samples.refused, allowed, n_boot=n_boot),
        "harmful_compliance": prompt_rate(~samples.refused, forbidden, n_boot=n_boot),
        "correct_refusal": prompt_rate(samples.refused, forbidden, n_boot=n_boot),
    }


def family_scores(samples: Samples) -> dict[str, dict[str, float]]:
    """Per family (safety split into allowed and forbidden): prompts and mean expected score."""
    groups: dict[str, list[float]] = {}
    for family, forbidden, score in zip(samples.families, samples.forbidden, samples.expected, strict=True):
        name = f"{family} ({'forbidden' if forbidden else 'allowed'})" if family == "safety" else family
        groups.setdefault(name, []).append(float(score))
    return {name: {"n": len(v), "expected_score": float(np.mean(v))} for name, v in sorted(groups.items())}


def summary(samples: Samples, reference: Samples | None = None, *, n_boot: int = 2000) -> dict[str, Any]:
    """The flat numbers a sweep records for one model (and, given the reference's samples, the comparison)."""
    rates = behaviour_rates(samples, n_boot=n_boot)
    out: dict[str, Any] = {
        "expected_score": float(samples.expected.mean()),
        "mean_length": float(samples.lengths.mean()),
        **diversity(samples.responses),
        **{name: (None if r is None else r.mean) for name, r in rates.items()},
    }
    if reference is not None:
        gain = score_gain(samples.expected, reference.expected, n_boot=n_boot)
        win = expected_win_rate(samples.expected, reference.expected)
        out.update(
            {
                "score_gain": gain.mean,
                "score_gain_low": gain.low,
                "score_gain_high": gain.high,
                "win_rate": win.rate,
                "wins": win.wins,
                "ties": win.ties,
                "losses": win.losses,
            }
        )
    return out


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (0 for fewer than two values)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else 0.0
