"""SimPO and DPO losses, their relatives (cDPO and IPO in ``dpo_loss``, R-DPO, ORPO's odds-ratio term), and two
optional regularisers (the NLL term and a KL penalty to the reference).

Pairwise losses return ``(losses [B], chosen_rewards [B], rejected_rewards [B])``: per-example losses and
beta-scaled, detached rewards (logged as ``rewards/chosen``, ``rewards/rejected``); ``F.logsigmoid`` keeps
huge margins finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .batching import IGNORE_INDEX
from .logps import (
    compute_dtype_for,
    require_response_tokens,
    resolve_chunk_tokens,
    shifted_targets,
    token_logps,
)

SIMPO_LOSS_TYPES = ("sigmoid", "hinge")
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo")


def _check_pair(**tensors: torch.Tensor) -> None:
    """All inputs must be float tensors of the same shape [B]."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(tensors.values()))
    if first.dim() != 1 or len(set(shapes.values())) != 1:
        raise ValueError(f"expected float tensors of one shape [B], got shapes {shapes}")
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be a float tensor of log-probs, got {tensor.dtype}")


def _check_options(beta: float, label_smoothing: float, loss_type: str, valid: tuple[str, ...]) -> None:
    if loss_type not in valid:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid loss types: {', '.join(valid)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to loss_type 'sigmoid' only, not {loss_type!r}")


def _pairwise_loss(z: torch.Tensor, label_smoothing: float, loss_type: str) -> torch.Tensor:
    """Loss of a preference logit z [B]: (conservative) logistic or hinge."""
    if loss_type == "hinge":
        return torch.relu(1.0 - z)
    # -(1 - ls) * log sigma(z) - ls * log sigma(-z); logsigmoid is stable for any finite z
    return -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    *,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO loss (Meng, Xia & Chen 2024, Eq. 6) from **average** per-token log-probs [B].

    z = beta * (avg_w - avg_l) - gamma;
    "sigmoid": -(1-ls) log sigma(z) - ls log sigma(-z);  "hinge": relu(1 - z).

    ``gamma`` is the paper's **absolute** target margin (TRL's ``simpo_gamma``); the authors' beta=2.5,
    ``gamma_beta_ratio=0.55`` is ``gamma=1.375`` here. Rewards: ``beta * avg``.
    """
    _check_pair(chosen_logps=chosen_logps, rejected_logps=rejected_logps)
    _check_options(beta, label_smoothing, loss_type, SIMPO_LOSS_TYPES)
    z = beta * (chosen_logps - rejected_logps) - gamma  # [B]
    losses = _pairwise_loss(z, label_smoothing, loss_type)
    return losses, beta * chosen_logps.detach(), beta * rejected_logps.detach()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss (Rafailov et al. 2023) from **summed** log-probs [B] of the policy and the reference.

    h = (policy_w - ref_w) - (policy_l - ref_l);
    "sigmoid": -(1-ls) log sigma(beta h) - ls log sigma(-beta h)  (conservative DPO, as TRL CPOTrainer's
    "sigmoid"; TRL 1.16 DPOTrainer's "sigmoid" ignores label_smoothing, so compare with it at ls=0);
    "hinge": relu(1 - beta h) (SLiC, as TRL);  "ipo": (h - 1/(2 beta))^2 (IPO Eq. 17, as TRL).

    IPO: TRL 1.16 uses per-token **averages**; to match it pass ``length_normalize=True`` log-probs.
    Rewards: ``beta * (policy - ref)``.
    """
    _check_pair(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    _check_options(beta, label_smoothing, loss_type, DPO_LOSS_TYPES)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [B]
    logits = chosen_logratios - rejected_logratios  # [B]
    if loss_type == "ipo":
        # IPO (Azar et al. 2024, Eq. 17): L = (h - 1 / (2 beta))^2, a squared loss with a fixed target margin
        losses = (logits - 1.0 / (2.0 * beta)) ** 2
    else:
        # DPO: L = -log sigma(beta h); cDPO (Mitchell 2023, label_smoothing eps, for labels flipped with
        # probability eps): L = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)
        losses = _pairwise_loss(beta * logits, label_smoothing, loss_type)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def rdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    *,
    beta: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R-DPO (Park et al. 2024, arXiv:2403.19159): DPO whose objective penalises length, from **summed** log-probs.

    The objective max E[r(x, y) - alpha |y|] - beta KL gives the implicit reward beta * log-ratio + alpha |y|,
    so the length difference enters the logit with a plus sign: the part of a preference that length explains
    is credited to length, not pushed into the policy (the SimPO paper's Table 3 writes the same loss).
    ``chosen_lengths`` / ``rejected_lengths`` [B] are response token counts. alpha = 0 is DPO; rewards as DPO's.
    """
    _check_pair(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    _check_options(beta, 0.0, "sigmoid", ("sigmoid",))
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha (R-DPO's length penalty) must be >= 0, got {alpha}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [B]
    length_gap = chosen_lengths.to(chosen_logratios) - rejected_lengths.to(chosen_logratios)  # [B] tokens
    # L = -log sigma( beta * [(l_w - ref_w) - (l_l - ref_l)] + alpha * (|y_w| - |y_l|) )
    z = beta * (chosen_logratios - rejected_logratios) + alpha * length_gap  # [B]
    losses = -F.logsigmoid(z)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(x < -math.log(2.0), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_odds_ratio_loss(
    chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, *, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO's odds-ratio term (Hong, Lee & Thorne 2024, arXiv:2403.07691, Eqs. 4-7) from **average** log-probs [B].

    With p = exp(avg) the geometric-mean token probability of a response, odds(y) = p / (1 - p) and
    log odds(y) = avg - log(1 - exp(avg)). The term is -beta * log sigma(log odds(y_w) - log odds(y_l)); beta is
    the paper's lambda (TRL's ``ORPOConfig.beta``). ORPO's full loss adds the chosen responses' NLL (the SFT
    term, weight 1): ``LossConfig("orpo")`` does that. No reference model, like SimPO. Rewards: ``beta * avg``.
    """
    _check_pair(chosen_logps=chosen_logps, rejected_logps=rejected_logps)
    _check_options(beta, 0.0, "sigmoid", ("sigmoid",))
    # log odds ratio = (avg_w - avg_l) - (log(1 - exp(avg_w)) - log(1 - exp(avg_l)))
    log_odds = (chosen_logps - rejected_logps) - (log1mexp(chosen_logps) - log1mexp(rejected_logps))  # [B]
    # L_OR = -beta * log sigma(log odds ratio)
    losses = -beta * F.logsigmoid(log_odds)
    return losses, beta * chosen_logps.detach(), beta * rejected_logps.detach()


def sft_nll_loss(
    chosen_logits: torch.Tensor, chosen_labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The NLL term (the authors' ``sft_weight``, TRL's ``cpo_alpha``) from chosen logits [B, T, V] and
    unshifted labels [B, T]: :func:`token_weighted_nll` of their response tokens' log-probs. Scalar."""
    per_token, mask = token_logps(chosen_logits, chosen_labels, ignore_index=ignore_index)  # [B, T-1] x2
    counts = require_response_tokens(mask, ignore_index=ignore_index)  # [B]
    return token_weighted_nll(per_token, counts)


def token_weighted_nll(logps: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The one NLL term: -(sum of the response tokens' log-probs) / (their number), over the whole batch (not
    per row). ``logps``: per-token [B, T-1] (0 off the response) or per-row sums [B]; ``counts`` [B]."""
    return -logps.sum() / counts.sum()


def kl_penalty(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Token-weighted mean of KL(policy || reference) of the next-token distributions at response positions.

    Positions whose next label is a response token (the causal shift), ``chunk_tokens`` at a time, in at least
    float32; ``ref_logits`` detached (the reference is frozen). Scalar; exactly 0 when the logits are equal.
    """
    if policy_logits.shape != ref_logits.shape:
        raise ValueError(
            f"policy_logits {tuple(policy_logits.shape)} and ref_logits {tuple(ref_logits.shape)} "
            "differ in shape"
        )
    _, mask = shifted_targets(policy_logits, labels, ignore_index=ignore_index)  # [B, T-1]
    counts = require_response_tokens(mask, ignore_index=ignore_index)  # [B]
    batch, length, vocab = policy_logits.shape
    chunk_tokens = resolve_chunk_tokens(chunk_tokens, vocab)  # two [chunk, V] float32 log-softmaxes at once
    dtype = compute_dtype_for(policy_logits)
    # flat index b*T + t of every position t whose next label (t+1) is a response token
    positions = F.pad(mask, (0, 1)).reshape(-1).nonzero().squeeze(-1)  # [N]
    flat_policy = policy_logits.reshape(batch * length, vocab)  # [B*T, V] view
    flat_ref = ref_logits.detach().reshape(batch * length, vocab)  # [B*T, V] view
    total = policy_logits.new_zeros((), dtype=dtype)
    for chunk in positions.split(chunk_tokens):
        log_p = F.log_softmax(flat_policy.index_select(0, chunk).to(dtype), dim=-1)  # [n, V]
        log_q = F.log_softmax(flat_ref.index_select(0, chunk).to(dtype), dim=-1)  # [n, V]
        # kl_div(input=log q, target=log p, log_target=True) = p * (log p - log q)
        total = total + F.kl_div(log_q, log_p, reduction="sum", log_target=True)
    return total / counts.sum()
