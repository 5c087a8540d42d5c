"""SimPO / DPO losses and the regularisers: public test vectors, hand-derived gradients, properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from simplepo_helpers import dpo_loss, kl_penalty, sft_nll_loss, simpo_loss

IGNORE = -100
LN2 = math.log(2.0)
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


def f64(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def softplus(x: float) -> float:
    """log(1 + e^x), the hand formula for -log sigma(-x)."""
    return math.log1p(math.exp(x))


def sigma(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- SimPO: public vectors S1-S3


def test_s1_zero_logit_gives_ln2_and_unit_gradients():
    avg_w, avg_l, beta, gamma = -1.0, -1.5, 2.0, 1.0
    z = beta * (avg_w - avg_l) - gamma
    assert z == 0.0
    chosen, rejected = f64(avg_w, grad=True), f64(avg_l, grad=True)
    losses, _, _ = simpo_loss(chosen, rejected, beta=beta, gamma=gamma)
    assert losses.item() == pytest.approx(softplus(-z), abs=1e-15)
    assert losses.item() == pytest.approx(0.693147180560, abs=1e-12)
    losses.sum().backward()
    # dL/d avg_w = -beta * sigma(-z) = -1 ; dL/d avg_l = +1
    assert chosen.grad.item() == pytest.approx(-beta * sigma(-z), abs=1e-15)
    assert chosen.grad.item() == pytest.approx(-1.0, abs=1e-15)
    assert rejected.grad.item() == pytest.approx(1.0, abs=1e-15)


def test_s2_loss_and_rewards():
    avg_w, avg_l, beta, gamma = -0.8, -1.2, 2.5, 1.375
    z = beta * (avg_w - avg_l) - gamma  # -0.375
    losses, chosen_rewards, rejected_rewards = simpo_loss(f64(avg_w), f64(avg_l), beta=beta, gamma=gamma)
    assert losses.item() == pytest.approx(softplus(-z), abs=1e-14)
    assert losses.item() == pytest.approx(0.898123264140, abs=1e-12)
    assert chosen_rewards.item() == pytest.approx(-2.0, abs=1e-14)
    assert rejected_rewards.item() == pytest.approx(-3.0, abs=1e-14)


def test_s3_label_smoothing():
    avg_w, avg_l, beta, gamma, ls = -0.8, -1.2, 2.5, 1.375, 0.1
    z = beta * (avg_w - avg_l) - gamma
    losses, _, _ = simpo_loss(f64(avg_w), f64(avg_l), beta=beta, gamma=gamma, label_smoothing=ls)
    expected = (1 - ls) * softplus(-z) + ls * softplus(z)
    assert losses.item() == pytest.approx(expected, abs=1e-14)
    assert losses.item() == pytest.approx(0.860623264140, abs=1e-12)


def test_gamma_is_absolute_and_matches_the_authors_ratio_convention():
    chosen, rejected = f64(-0.7, -1.9, -0.2), f64(-1.1, -1.0, -0.9)
    beta, ratio = 2.5, 0.55
    losses, _, _ = simpo_loss(chosen, rejected, beta=beta, gamma=beta * ratio)  # 1.375
    authors = -F.logsigmoid(beta * ((chosen - rejected) - ratio))  # princeton-nlp/SimPO simpo_trainer.py form
    torch.testing.assert_close(losses, authors)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_simpo_gradient_matches_hand_formula(label_smoothing):
    beta, gamma = 3.0, 0.7
    chosen = f64(-0.4, -2.0, -1.0, -0.3, grad=True)
    rejected = f64(-1.6, -1.0, -1.0, -0.9, grad=True)
    losses, _, _ = simpo_loss(chosen, rejected, beta=beta, gamma=gamma, label_smoothing=label_smoothing)
    losses.sum().backward()
    for i in range(4):
        z = beta * (chosen[i].item() - rejected[i].item()) - gamma
        # d/dz [(1-ls) softplus(-z) + ls softplus(z)] = -(1-ls) sigma(-z) + ls sigma(z); dz/d avg_w = beta
        expected = beta * (-(1 - label_smoothing) * sigma(-z) + label_smoothing * sigma(z))
        assert chosen.grad[i].item() == pytest.approx(expected, abs=1e-14)
        assert rejected.grad[i].item() == pytest.approx(-expected, abs=1e-14)


def test_simpo_hinge():
    beta, gamma = 2.0, 0.5
    chosen, rejected = f64(-1.0, -0.5, -1.0), f64(-1.2, -2.0, -0.5)
    losses, _, _ = simpo_loss(chosen, rejected, beta=beta, gamma=gamma, loss_type="hinge")
    expected = [
        max(0.0, 1 - (beta * (w - lo) - gamma)) for w, lo in [(-1.0, -1.2), (-0.5, -2.0), (-1.0, -0.5)]
    ]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=torch.float64))
    assert losses[1].item() == 0.0  # z = 2.5 > 1: no loss


def test_simpo_rewards_are_detached_and_scaled():
    chosen, rejected = f64(-1.0, -2.0, grad=True), f64(-3.0, -4.0, grad=True)
    _, chosen_rewards, rejected_rewards = simpo_loss(chosen, rejected, beta=2.0, gamma=0.0)
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
    torch.testing.assert_close(chosen_rewards, f64(-2.0, -4.0))
    torch.testing.assert_close(rejected_rewards, f64(-6.0, -8.0))


# ---------------------------------------------------------------- DPO: public vectors D1-D2


def test_d1_loss_and_rewards():
    pw, pl, rw, rl, beta = -10.0, -12.0, -11.0, -11.0, 0.1
    h = (pw - rw) - (pl - rl)  # 2
    losses, chosen_rewards, rejected_rewards = dpo_loss(f64(pw), f64(pl), f64(rw), f64(rl), beta=beta)
    assert losses.item() == pytest.approx(softplus(-beta * h), abs=1e-14)
    assert losses.item() == pytest.approx(0.598138869382, abs=1e-12)
    assert chosen_rewards.item() == pytest.approx(0.1, abs=1e-14)
    assert rejected_rewards.item() == pytest.approx(-0.1, abs=1e-14)


def test_d2_policy_equals_reference_gives_ln2_exactly():
    chosen, rejected = f64(-7.25, -31.0), f64(-9.5, -2.0)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        chosen, rejected, chosen.clone(), rejected.clone(), beta=0.1
    )
    assert torch.all(losses == LN2)
    assert torch.all(chosen_rewards - rejected_rewards == 0)


def test_dpo_gradient_matches_hand_formula():
    beta = 0.5
    pw, pl = f64(-10.0, -3.0, grad=True), f64(-12.0, -2.0, grad=True)
    rw, rl = f64(-11.0, -4.0), f64(-11.0, -1.0)
    losses, _, _ = dpo_loss(pw, pl, rw, rl, beta=beta)
    losses.sum().backward()
    for i in range(2):
        h = (pw[i].item() - rw[i].item()) - (pl[i].item() - rl[i].item())
        assert pw.grad[i].item() == pytest.approx(-beta * sigma(-beta * h), abs=1e-14)
        assert pl.grad[i].item() == pytest.approx(beta * sigma(-beta * h), abs=1e-14)


def test_dpo_label_smoothing_hinge_and_ipo_by_hand():
    pw, pl, rw, rl, beta = -10.0, -12.0, -11.0, -11.0, 0.1
    h = (pw - rw) - (pl - rl)
    args = (f64(pw), f64(pl), f64(rw), f64(rl))
    smoothed, _, _ = dpo_loss(*args, beta=beta, label_smoothing=0.25)
    assert smoothed.item() == pytest.approx(0.75 * softplus(-beta * h) + 0.25 * softplus(beta * h), abs=1e-14)
    hinge, _, _ = dpo_loss(*args, beta=beta, loss_type="hinge")
    assert hinge.item() == pytest.approx(max(0.0, 1 - beta * h), abs=1e-14)  # 0.8
    ipo, _, _ = dpo_loss(*args, beta=beta, loss_type="ipo")
    assert ipo.item() == pytest.approx((h - 1 / (2 * beta)) ** 2, abs=1e-12)  # (2 - 5)^2 = 9


def test_dpo_rewards_are_detached():
    pw, pl = f64(-1.0, grad=True), f64(-2.0, grad=True)
    _, chosen_rewards, rejected_rewards = dpo_loss(pw, pl, f64(-1.5), f64(-1.0), beta=0.2)
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
    assert chosen_rewards.item() == pytest.approx(0.2 * 0.5)
    assert rejected_rewards.item() == pytest.approx(0.2 * -1.0)


# ---------------------------------------------------------------- option and shape errors


def test_unknown_loss_type_lists_the_valid_ones():
    with pytest.raises(ValueError, match="sigmoid, hinge$"):
        simpo_loss(f64(-1.0), f64(-2.0), beta=2.0, gamma=1.0, loss_type="ipo")
    with pytest.raises(ValueError, match="sigmoid, hinge, ipo"):
        dpo_loss(f64(-1.0), f64(-2.0), f64(-1.0), f64(-2.0), beta=0.1, loss_type="simpo")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0.0}, "beta must be > 0"),
        ({"beta": -1.0}, "beta must be > 0"),
        ({"beta": 1.0, "label_smoothing": 0.5}, r"label_smoothing must be in \[0, 0.5\)"),
        ({"beta": 1.0, "label_smoothing": -0.1}, "label_smoothing must be in"),
        ({"beta": 1.0, "label_smoothing": 0.1, "loss_type": "hinge"}, "'sigmoid' only"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simpo_loss(f64(-1.0), f64(-2.0), gamma=0.5, **kwargs)
    with pytest.raises(ValueError, match=message):
        dpo_loss(f64(-1.0), f64(-2.0), f64(-1.0), f64(-2.0), **kwargs)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="one shape"):
        simpo_loss(f64(-1.0, -2.0), f64(-1.0), beta=2.0, gamma=1.0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(f64(-1.0), f64(-2.0), f64(-1.0, -3.0), f64(-2.0), beta=0.1)
    with pytest.raises(ValueError, match="float tensor"):
        simpo_loss(torch.tensor([1]), torch.tensor([2]), beta=2.0, gamma=1.0)


# ---------------------------------------------------------------- properties (hypothesis)

logp = st.floats(min_value=-1e4, max_value=0.0, allow_nan=False)
margin = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
beta_value = st.floats(min_value=1e-3, max_value=20.0)
smoothing = st.sampled_from([0.0, 0.1, 0.3])


@PROPERTY_SETTINGS
@given(avg_w=logp, avg_l=logp, beta=beta_value, gamma=st.floats(0.0, 10.0), ls=smoothing)
def test_simpo_loss_and_gradient_are_finite(avg_w, avg_l, beta, gamma, ls):
    chosen, rejected = f64(avg_w, grad=True), f64(avg_l, grad=True)
    losses, _, _ = simpo_loss(chosen, rejected, beta=beta, gamma=gamma, label_smoothing=ls)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and losses.item() >= 0
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()


@PROPERTY_SETTINGS
@given(pw=logp, pl=logp, rw=logp, rl=logp, beta=beta_value, ls=smoothing)
def test_dpo_loss_and_gradient_are_finite(pw, pl, rw, rl, beta, ls):
    policy_w, policy_l = f64(pw, grad=True), f64(pl, grad=True)
    losses, _, _ = dpo_loss(policy_w, policy_l, f64(rw), f64(rl), beta=beta, label_smoothing=ls)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and losses.item() >= 0
    assert torch.isfinite(policy_w.grad).all() and torch.isfinite(policy_l.grad).all()


@PROPERTY_SETTINGS
@given(
    m1=margin,
    m2=margin,
    beta=beta_value,
    gamma=st.floats(0.0, 10.0),
    loss_type=st.sampled_from(["sigmoid", "hinge"]),
)
def test_simpo_is_non_increasing_in_the_margin(m1, m2, beta, gamma, loss_type):
    low, high = sorted((m1, m2))
    rejected = f64(-1.0, -1.0)
    chosen = rejected + f64(low, high)
    losses, _, _ = simpo_loss(chosen, rejected, beta=beta, gamma=gamma, loss_type=loss_type)
    assert losses[0].item() >= losses[1].item()


@PROPERTY_SETTINGS
@given(m1=margin, m2=margin, beta=beta_value, loss_type=st.sampled_from(["sigmoid", "hinge"]))
def test_dpo_is_non_increasing_in_the_margin(m1, m2, beta, loss_type):
    low, high = sorted((m1, m2))
    zeros = f64(0.0, 0.0)
    losses, _, _ = dpo_loss(f64(low, high), zeros, zeros, zeros, beta=beta, loss_type=loss_type)
    assert losses[0].item() >= losses[1].item()


@PROPERTY_SETTINGS
@given(avg=logp, beta=beta_value, gamma=st.floats(0.0, 30.0))
def test_simpo_equal_logps_give_softplus_gamma(avg, beta, gamma):
    losses, _, _ = simpo_loss(f64(avg), f64(avg), beta=beta, gamma=gamma)
    assert losses.item() == pytest.approx(softplus(gamma), rel=1e-14, abs=1e-14)


@PROPERTY_SETTINGS
@given(chosen=logp, rejected=logp, beta=beta_value)
def test_dpo_policy_equal_to_reference_is_ln2_exactly(chosen, rejected, beta):
    losses, _, _ = dpo_loss(f64(chosen), f64(rejected), f64(chosen), f64(rejected), beta=beta)
    assert losses.item() == LN2


# ---------------------------------------------------------------- SFT / NLL term


def logits_with_token_logps(token_logps: list[list[float]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-token vocabulary logits [B, T, 2] whose label-0 log-probs are exactly the given values.

    logits (lp, log(1 - e^lp)) have logsumexp 0, so log_softmax returns lp for token 0. Row b scores its
    tokens at positions 1..n (label 0), prompt position 0 and padding are ignored.
    """
    batch = len(token_logps)
    logits = torch.zeros(batch, length, 2, dtype=torch.float64)
    labels = torch.full((batch, length), IGNORE)
    for row, values in enumerate(token_logps):
        for t, lp in enumerate(values):
            logits[row, t] = torch.tensor([lp, math.log(-math.expm1(lp))], dtype=torch.float64)
            labels[row, t + 1] = 0
    return logits, labels


def test_s4_token_weighted_nll():
    # chosen A tokens [-0.5, -1.5], chosen B [-2.0]: -(sum of token log-probs) / (total tokens) = 4/3
    logits, labels = logits_with_token_logps([[-0.5, -1.5], [-2.0]], length=4)
    loss = sft_nll_loss(logits, labels)
    assert loss.item() == pytest.approx((0.5 + 1.5 + 2.0) / 3, abs=1e-14)
    assert loss.item() == pytest.approx(4 / 3, abs=1e-14)
    assert loss.item() != pytest.approx((1.0 + 2.0) / 2)  # not the mean of per-row means


def test_sft_nll_matches_cross_entropy_as_trl_cpo_computes_it():
    # TRL CPOTrainer: nn.CrossEntropyLoss() on logits[..., :-1, :] and labels[..., 1:] of the chosen rows
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 13, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 13, (3, 7), generator=generator)
    labels[:, :2] = IGNORE
    labels[1, 5:] = IGNORE
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 13), labels[:, 1:].reshape(-1), ignore_index=IGNORE)
    result = sft_nll_loss(logits, labels)
    torch.testing.assert_close(result, expected)
    (grad,) = torch.autograd.grad(result, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad)


def test_sft_nll_empty_row_raises():
    logits, labels = logits_with_token_logps([[-0.5], [-1.0]], length=3)
    labels[1] = IGNORE
    with pytest.raises(ValueError, match=r"\[1\]"):
        sft_nll_loss(logits, labels)


# ---------------------------------------------------------------- KL penalty


def naive_kl(policy: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor) -> float:
    """sum_v p log(p/q) at every position t whose label t+1 is a response token, averaged over those."""
    total, count = 0.0, 0
    for row in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if labels[row, t + 1] != IGNORE:
                p = torch.softmax(policy[row, t].double(), -1)
                q = torch.softmax(ref[row, t].double(), -1)
                total += float((p * (p.log() - q.log())).sum())
                count += 1
    return total / count


def kl_batch(seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    policy = torch.randn(3, 8, 17, generator=generator, dtype=torch.float64)
    ref = policy + 0.5 * torch.randn(3, 8, 17, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 17, (3, 8), generator=generator)
    labels[:, :3] = IGNORE
    labels[2, 6:] = IGNORE
    return policy.to(dtype), ref.to(dtype), labels


def test_kl_zero_when_models_equal():
    policy, _, labels = kl_batch()
    assert kl_penalty(policy, policy.clone(), labels).item() == 0.0


@pytest.mark.parametrize("chunk_tokens", [1, 4, 1024])
def test_kl_matches_naive_and_is_positive(chunk_tokens):
    policy, ref, labels = kl_batch(seed=1)
    result = kl_penalty(policy, ref, labels, chunk_tokens=chunk_tokens)
    assert result.item() > 0
    assert result.item() == pytest.approx(naive_kl(policy, ref, labels), rel=1e-12)


def test_kl_ignores_prompt_and_padding_positions():
    policy, ref, labels = kl_batch(seed=2)
    changed = policy.clone()
    changed[:, :2] += 5.0  # positions 0-1 predict prompt labels 1-2
    changed[2, 5:] -= 3.0  # positions 5-7 of row 2 predict padding (or nothing)
    torch.testing.assert_close(kl_penalty(changed, ref, labels), kl_penalty(policy, ref, labels))


def test_kl_gradient_reaches_only_the_policy():
    policy, ref, labels = kl_batch(seed=3)
    policy.requires_grad_(True)
    ref.requires_grad_(True)
    kl_penalty(policy, ref, labels).backward()
    assert ref.grad is None
    assert policy.grad[:, :2].abs().max() == 0  # prompt positions
    assert policy.grad[0, 2:7].abs().sum(-1).min() > 0  # positions 2-6 predict response labels 3-7
    assert policy.grad[:, 7].abs().max() == 0  # the last position predicts nothing


def test_kl_bf16_close_to_float32():
    policy, ref, labels = kl_batch(seed=4, dtype=torch.bfloat16)
    result = kl_penalty(policy, ref, labels)
    assert result.dtype == torch.float32
    assert result.item() == pytest.approx(naive_kl(policy.double(), ref.double(), labels), rel=1e-5)


def test_kl_errors():
    policy, ref, labels = kl_batch()
    with pytest.raises(ValueError, match="differ in shape"):
        kl_penalty(policy, ref[:, :-1], labels)
    labels[0] = IGNORE
    with pytest.raises(ValueError, match=r"\[0\]"):
        kl_penalty(policy, ref, labels)
