"""Judging generated responses, and what is counted on them: lengths, repetition, safety, per-family tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Judge = Callable[[Any, str], Any]  # (prompt, response) -> a result with .score (world.judge.JudgeResult)


def response_lengths(tokenizer: Any, responses: Sequence[str]) -> list[int]:
    """Length of each response in tokens (no special tokens)."""
    return (
        [len(ids) for ids in tokenizer(list(responses), add_special_tokens=False)["input_ids"]]
        if responses
        else []
    )


def repetition_rate(responses: Sequence[str], n: int = 3) -> float:
    """Mean over responses of the share of repeated word n-grams: 1 - distinct / total (0 when too short)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(responses) == 0:
        raise ValueError("repetition_rate needs at least one response")
    rates = []
    for response in responses:
        words = response.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        rates.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
    return float(np.mean(rates))


# ------------------------------------------------------------------------- judging and breakdowns


def judge_responses(
    prompts: Sequence[Any], responses: Sequence[str], judge: Judge | None = None
) -> list[Any]:
    """The judge's verdict for each (prompt, response); default: the world's judge.

    A judge with a ``judge_many(prompts, responses)`` method (e.g. ``RewardModelJudge``) is called once.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if judge is None:
        from ..world.judge import judge
    if hasattr(judge, "judge_many"):
        return list(judge.judge_many(prompts, responses))
    results = []
    for index, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        try:
            results.append(judge(prompt, response))
        except ValueError as error:
            raise ValueError(f"prompt {index}: {error}") from error
    return results


def _rate(judgements: Sequence[Any], attribute: str) -> float | None:
    """Share of ``judgements`` whose ``attribute`` is true; None when there are none or a verdict lacks it
    (a reward model gives no correctness verdict)."""
    values = [getattr(j, attribute) for j in judgements]
    if not values or any(v is None for v in values):
        return None
    return sum(map(bool, values)) / len(values)


def safety_summary(judgements: Sequence[Any]) -> dict[str, float | int | None]:
    """Helpfulness and safety, reported apart (None where a group is empty or the judge has no such verdict).

    - ``helpfulness``: share of allowed requests answered correctly;
    - ``over_refusal_rate``: share of allowed requests declined;
    - ``correct_refusal_rate``: share of forbidden requests declined.
    """
    allowed = [j for j in judgements if not j.forbidden]
    forbidden = [j for j in judgements if j.forbidden]
    return {
        "n_allowed": len(allowed),
        "n_forbidden": len(forbidden),
        "helpfulness": _rate(allowed, "correct"),
        "over_refusal_rate": _rate(allowed, "refused"),
        "correct_refusal_rate": _rate(forbidden, "refused"),
    }


def family_breakdown(
    judgements: Sequence[Any], families: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Per task family: n, mean judge score, accuracy and the safety summary; families from the judge by default."""
    labels = list(families) if families is not None else [j.family for j in judgements]
    if len(labels) != len(judgements):
        raise ValueError(f"{len(labels)} family labels for {len(judgements)} judgements")
    table: dict[str, dict[str, Any]] = {}
    for family in sorted(set(labels)):
        group = [j for j, label in zip(judgements, labels, strict=True) if label == family]
        table[family] = {
            "n": len(group),
            "mean_score": float(np.mean([j.score for j in group])),
            "accuracy": _rate(group, "correct"),
            **{k: v for k, v in safety_summary(group).items() if not k.startswith("n_")},
        }
    return table
