"""Evaluation: judge win rates with a Wilson interval, a length-controlled win rate, implicit-reward accuracy,
agreement with the likelihood ranking, Monte-Carlo KL to the reference, lengths, repetition, per-family tables.

Conventions:
- **Win rate.** Per prompt, the policy's judge score against the baseline's: higher is a win (1), equal a
  tie (1/2), lower a loss (0). The 95% interval is the **Wilson score interval** over prompts, with ties
  entering as half a win. A tie has less variance than a coin flip, so the interval is conservative.
- **Length-controlled (LC) win rate**, in the spirit of AlpacaEval 2: fit
  ``P(win) = sigma(theta + phi * tanh(delta / sd(delta)))`` with ``delta`` the policy's minus the baseline's
  response length (tokens) by maximum likelihood (Newton's method, float64), and report ``sigma(theta)``, the
  win probability at zero length difference. ``theta`` is the policy's term; ``phi`` the length term. Ties
  enter the likelihood as outcome 1/2 (a fractional Bernoulli target, as AlpacaEval's soft preferences do).
  A small L2 penalty on ``phi`` keeps the fit finite when length alone separates wins from losses.
- **Implicit rewards** come from the method's own loss (``LossConfig.pairwise_loss``): SimPO
  ``beta * avg log p``, DPO ``beta * (log p - log p_ref)`` summed. Reward accuracy counts a pair whose two
  rewards are equal as half (so a DPO policy identical to its reference scores 0.5, not 0 as TRL's strict
  training metric ``rewards/accuracies`` would).
- **KL(policy || reference)** is the Monte-Carlo mean of ``log p(y|x) - log p_ref(y|x)`` (whole responses)
  over responses sampled from the policy at temperature 1 with top_p 1. Generation returns text, so responses
  are re-tokenised; both models score the same tokens, so identical models give exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..batching import PreferenceCollator
from ..logps import sequence_logps
from .generation import _as_messages

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
Judge = Callable[[Any, str], Any]  # (prompt, response) -> a result with .score (world.judge.JudgeResult)


# ----------------------------------------------------------------------------------------- win rates


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


# ------------------------------------------------------------------------- implicit rewards on pairs


@dataclass(frozen=True)
class RewardReport:
    """Implicit rewards of held-out pairs under one method, and how they rank the pairs."""

    chosen_rewards: torch.Tensor  # [N], beta-scaled, as the method's loss defines them
    rejected_rewards: torch.Tensor  # [N]
    avg_logp_margins: torch.Tensor  # [N] policy's average log-prob, chosen minus rejected

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def reward_accuracy(self) -> float:
        """Share of pairs whose reward ranks the chosen response higher (a tie counts half)."""
        return float((0.5 * (torch.sign(self.margins) + 1)).mean())

    @property
    def likelihood_agreement(self) -> float:
        """Share of pairs the reward ranks as the average log-likelihood does (what decoding follows).

        Per pair: 1 when both margins have the same sign, 0 when opposite, 1/2 when exactly one is zero.
        """
        agree = 1 - 0.5 * (torch.sign(self.margins) - torch.sign(self.avg_logp_margins)).abs()  # [N]
        return float(agree.mean())


def _pair_logps(
    model, examples, collator, batch_size: int, length_normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from ..reference import precompute_reference_logps  # any model's log-probs of every pair, no grad

    logps = precompute_reference_logps(
        model, examples, collator, batch_size, length_normalize=length_normalize
    )
    return logps["ref_chosen_logps"].double(), logps["ref_rejected_logps"].double()


def preference_rewards(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Mapping[str, Any]],
    loss_config: Any,
    *,
    ref_model: torch.nn.Module | None = None,
    ref_logps: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
) -> RewardReport:
    """Implicit rewards of ``examples`` (preference rows) under ``loss_config``'s method.

    DPO needs the reference: ``ref_model`` or ``ref_logps`` (from ``precompute_reference_logps`` on the same
    examples, summed). Raises ValueError naming the row for a pair that cannot be scored.
    """
    collator = PreferenceCollator(tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    average = bool(loss_config.length_normalize)
    chosen, rejected = _pair_logps(model, examples, collator, batch_size, average)  # [N] each
    ref_chosen = ref_rejected = None
    if loss_config.name == "dpo":
        if ref_logps is not None:
            if bool(ref_logps.get("length_normalize", average)) != average:
                raise ValueError(
                    f"ref_logps were computed with length_normalize={ref_logps['length_normalize']}, the loss uses {average}"
                )
            ref_chosen = torch.as_tensor(ref_logps["ref_chosen_logps"], dtype=torch.float64)
            ref_rejected = torch.as_tensor(ref_logps["ref_rejected_logps"], dtype=torch.float64)
            if ref_chosen.shape != chosen.shape or ref_rejected.shape != rejected.shape:
                raise ValueError(f"ref_logps hold {ref_chosen.numel()} pairs, examples {chosen.numel()}")
        elif ref_model is not None:
            ref_chosen, ref_rejected = _pair_logps(ref_model, examples, collator, batch_size, average)
        else:
            raise ValueError("DPO's implicit reward needs the reference: pass ref_model or ref_logps")
    _, chosen_rewards, rejected_rewards = loss_config.pairwise_loss(
        chosen, rejected, ref_chosen, ref_rejected
    )
    if average:
        avg_margins = chosen - rejected
    else:
        avg_chosen, avg_rejected = _pair_logps(model, examples, collator, batch_size, True)
        avg_margins = avg_chosen - avg_rejected
    return RewardReport(chosen_rewards, rejected_rewards, avg_margins)


# ------------------------------------------------------------------------------- KL on samples


def _response_tokens(
    tokenizer: Any, prompt: Any, response: str, index: int, max_new_tokens: int | None
) -> dict[str, list[int]]:
    """Prompt ids exactly as generation builds them; response ids, plus EOS unless generation was cut off."""
    if not isinstance(response, str):
        raise ValueError(f"response {index} must be a string, got {type(response).__name__}")
    text = tokenizer.apply_chat_template(
        [_as_messages(prompt, index)], tokenize=False, add_generation_prompt=True
    )[0]
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if max_new_tokens is None or len(response_ids) < max_new_tokens:
        response_ids = response_ids + [tokenizer.eos_token_id]  # the sampled stop token
    return {"prompt_ids": prompt_ids, "chosen_ids": response_ids, "rejected_ids": response_ids}


@torch.no_grad()
def response_logps(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Any],
    responses: Sequence[str],
    *,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
) -> torch.Tensor:
    """Summed log-prob [N] (float64) of each response (with its EOS) given its prompt under ``model``.

    ``max_new_tokens``: the generation limit; a response that reached it was cut off and gets no EOS.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    rows = [
        _response_tokens(tokenizer, p, r, i, max_new_tokens)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
    ]
    collator = PreferenceCollator(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    try:
        for start in range(0, len(rows), batch_size):
            batch = collator(
                rows[start : start + batch_size]
            )  # [2b, T]: the response twice; the second half is unused
            half = batch["input_ids"].shape[0] // 2
            logits = model(
                input_ids=batch["input_ids"][:half].to(device),
                attention_mask=batch["attention_mask"][:half].to(device),
            ).logits  # [b, T, V]
            scores.append(
                sequence_logps(logits.float(), batch["labels"][:half].to(device), length_normalize=False)
                .double()
                .cpu()
            )
    finally:
        model.train(was_training)
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)


@dataclass(frozen=True)
class KLEstimate:
    """Monte-Carlo KL(policy || reference) in nats per response: mean and standard error over samples."""

    mean: float
    stderr: float
    log_ratios: torch.Tensor  # [N] log p(y|x) - log p_ref(y|x), y sampled from the policy


def kl_to_reference(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Any],
    responses: Sequence[str],
    *,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
) -> KLEstimate:
    """KL(policy || reference) from ``responses`` sampled from ``policy`` at temperature 1, top_p 1."""
    if len(responses) == 0:
        raise ValueError("kl_to_reference needs at least one sampled response")
    kwargs = {"batch_size": batch_size, "max_new_tokens": max_new_tokens}
    log_ratios = response_logps(policy, tokenizer, prompts, responses, **kwargs) - response_logps(
        reference, tokenizer, prompts, responses, **kwargs
    )  # [N]
    stderr = float(log_ratios.std() / math.sqrt(log_ratios.numel())) if log_ratios.numel() > 1 else 0.0
    return KLEstimate(float(log_ratios.mean()), stderr, log_ratios)


# ----------------------------------------------------------------------- lengths and repetition


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


# ------------------------------------------------------------------------- one policy, end to end


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
