"""One policy evaluated end to end: generate, judge, compare with the reference (win rates), KL and implicit
rewards. The measures live in modules with one job each (``winrates``, ``rewards``, ``kl``, ``judging``); their
names are re-exported here so ``simplepo_helpers.evaluation.metrics`` keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .judging import (
    Judge,
    family_breakdown,
    judge_responses,
    repetition_rate,
    response_lengths,
    safety_summary,
)
from .kl import KLEstimate, kl_to_reference, response_logps
from .rewards import RewardReport, preference_rewards
from .winrates import (
    Z_95,
    LCWinRate,
    WinRate,
    fit_length_logistic,
    lc_win_rate,
    outcomes,
    wilson_interval,
    win_rate,
)

__all__ = [
    "Z_95",
    "Generations",
    "Judge",
    "KLEstimate",
    "LCWinRate",
    "PolicyEvaluation",
    "RewardReport",
    "WinRate",
    "evaluate_policy",
    "family_breakdown",
    "fit_length_logistic",
    "generate_and_judge",
    "judge_responses",
    "kl_to_reference",
    "lc_win_rate",
    "outcomes",
    "preference_rewards",
    "repetition_rate",
    "response_lengths",
    "response_logps",
    "safety_summary",
    "wilson_interval",
    "win_rate",
]


@dataclass(frozen=True)
class Generations:
    """One model's responses to the held-out prompts, with the judge's verdicts and token lengths."""

    prompts: list[Any]
    responses: list[str]
    verdicts: list[Any]
    lengths: list[int]

    @property
    def scores(self) -> list[float]:
        return [float(v.score) for v in self.verdicts]

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores))

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths))


def generate_and_judge(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    judge: Judge | None = None,
    seed: int = 0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
) -> Generations:
    """Sample one response per prompt at temperature 1 (top_p 1, so KL estimates stay valid) and judge it."""
    from .generation import generate_responses

    responses = generate_responses(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size
    )
    return Generations(
        list(prompts),
        responses,
        judge_responses(prompts, responses, judge),
        response_lengths(tokenizer, responses),
    )


@dataclass(frozen=True)
class PolicyEvaluation:
    """A policy against the reference: generations, win rates, KL and (optionally) implicit rewards."""

    generations: Generations
    win: WinRate
    lc: LCWinRate
    kl: KLEstimate
    rewards: RewardReport | None = None

    def metrics(self) -> dict[str, float]:
        """Flat numbers under the names results.json uses."""
        values = {
            "win_rate_vs_ref": self.win.rate,
            "lc_win_rate_vs_ref": self.lc.lc_win_rate,
            "judge_score": self.generations.mean_score,
            "mean_length": self.generations.mean_length,
            "repetition_rate": repetition_rate(self.generations.responses),
            "kl_to_ref": self.kl.mean,
        }
        if self.rewards is not None:
            values["reward_accuracy"] = self.rewards.reward_accuracy
            values["likelihood_agreement"] = self.rewards.likelihood_agreement
        values.update(
            {
                k: v
                for k, v in safety_summary(self.generations.verdicts).items()
                if not k.startswith("n_") and v is not None
            }
        )
        return values


def evaluate_policy(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    reference_generations: Generations,
    *,
    judge: Judge | None = None,
    seed: int = 0,
    max_new_tokens: int = 64,
    pairs: Sequence[Mapping[str, Any]] | None = None,
    loss_config: Any = None,
    pair_kwargs: Mapping[str, Any] | None = None,
) -> PolicyEvaluation:
    """Generate on the reference's prompts with the same seed, judge, compare, estimate KL; with ``pairs`` and
    ``loss_config`` also the implicit-reward report (``pair_kwargs`` go to ``preference_rewards``)."""
    prompts = reference_generations.prompts
    generations = generate_and_judge(
        policy, tokenizer, prompts, judge=judge, seed=seed, max_new_tokens=max_new_tokens
    )
    win = win_rate(generations.scores, reference_generations.scores)
    lc = lc_win_rate(
        generations.scores, reference_generations.scores, generations.lengths, reference_generations.lengths
    )
    kl = kl_to_reference(
        policy, reference, tokenizer, prompts, generations.responses, max_new_tokens=max_new_tokens
    )
    rewards = None
    if pairs is not None and loss_config is not None:
        rewards = preference_rewards(
            policy, tokenizer, pairs, loss_config, **{"ref_model": reference, **(pair_kwargs or {})}
        )
    return PolicyEvaluation(generations, win, lc, kl, rewards)
