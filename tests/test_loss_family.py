"""The loss family around SimPO: ORPO's odds-ratio term (against TRL's ORPOTrainer), R-DPO and cDPO (against
hand-derived values), and each new loss trained for a few steps through ``LossConfig`` and ``train``."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch
from conftest import build_test_model

from simplepo_helpers.batching import PreferenceCollator
from simplepo_helpers.losses import dpo_loss, log1mexp, orpo_odds_ratio_loss, rdpo_loss
from simplepo_helpers.runtime.device import DevicePolicy
from simplepo_helpers.training import LossConfig, TrainConfig, concatenated_forward, preference_loss, train

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
CPU = DevicePolicy(torch.device("cpu"), torch.float32, None, False, "tests")
EXAMPLES = [
    {"prompt": "What is two plus three?", "chosen": " Two plus three is five.", "rejected": " It is six."},
    {"prompt": "Name a colour.", "chosen": " Blue is a colour.", "rejected": " The quick brown fox jumps."},
    {"prompt": "Say hello.", "chosen": " hello world", "rejected": " dog"},
    {"prompt": "What is 2 + 3?", "chosen": " 5", "rejected": " The answer is 6, I think."},
]


def f64(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def sigma(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- ORPO


def trl_odds_ratio_loss(chosen, rejected, beta):
    """TRL 1.16's ORPOTrainer.odds_ratio_loss, the independent implementation (it reads only beta and the
    accelerator's device from the trainer). It returns beta * log sigma(log odds): the trainer subtracts it."""
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    fake = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device=chosen.device))
    losses, chosen_rewards, rejected_rewards, _, log_odds = ORPOTrainer.odds_ratio_loss(
        fake, chosen, rejected
    )
    return losses, chosen_rewards, rejected_rewards


@pytest.mark.parametrize("beta", [0.1, 0.25, 1.0])
def test_orpo_matches_trl_odds_ratio_loss(beta):
    generator = torch.Generator().manual_seed(21)
    # average log-probs on both sides of -ln 2 (where log1mexp switches formula), and close to 0
    chosen = -torch.rand(64, generator=generator, dtype=torch.float64) * 4.0 - 1e-3
    rejected = -torch.rand(64, generator=generator, dtype=torch.float64) * 4.0 - 1e-3
    ours, ours_w, ours_l = orpo_odds_ratio_loss(chosen, rejected, beta=beta)
    theirs, theirs_w, theirs_l = trl_odds_ratio_loss(chosen, rejected, beta)
    # TRL computes in float32 (it casts with .float()): compare at float32 precision
    torch.testing.assert_close(ours.float(), -theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_w.float(), theirs_w, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_l.float(), theirs_l, rtol=1e-6, atol=1e-6)


def test_orpo_by_hand():
    avg_w, avg_l, beta = -0.5, -1.0, 0.1
    log_odds = (avg_w - avg_l) - (math.log(1 - math.exp(avg_w)) - math.log(1 - math.exp(avg_l)))
    losses, chosen_rewards, _ = orpo_odds_ratio_loss(f64(avg_w), f64(avg_l), beta=beta)
    assert losses.item() == pytest.approx(-beta * math.log(sigma(log_odds)), abs=1e-14)
    assert chosen_rewards.item() == pytest.approx(beta * avg_w)
    # equal averages: odds ratio 1, term beta * ln 2
    equal, _, _ = orpo_odds_ratio_loss(f64(-0.7), f64(-0.7), beta=beta)
    assert equal.item() == pytest.approx(beta * math.log(2.0), abs=1e-14)


def test_log1mexp_is_stable_on_both_branches():
    x = f64(-1e-8, -0.5, -math.log(2.0), -1.0, -30.0)
    expected = torch.tensor([math.log(-math.expm1(v)) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(log1mexp(x), expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- R-DPO and cDPO, hand-derived


def test_rdpo_by_hand_and_its_gradient():
    # D1's log-probs, chosen 5 tokens and rejected 3: z = beta * 2 + alpha * (5 - 3) = 0.2 + 0.1 = 0.3
    pw, pl = f64(-10.0, grad=True), f64(-12.0, grad=True)
    losses, chosen_rewards, rejected_rewards = rdpo_loss(
        pw, pl, f64(-11.0), f64(-11.0), f64(5.0), f64(3.0), beta=0.1, alpha=0.05
    )
    assert losses.item() == pytest.approx(0.554355244468, abs=1e-12)  # log(1 + e^-0.3)
    assert (chosen_rewards.item(), rejected_rewards.item()) == pytest.approx((0.1, -0.1))
    losses.sum().backward()
    assert pw.grad.item() == pytest.approx(-0.1 * sigma(-0.3), abs=1e-14)
    assert pl.grad.item() == pytest.approx(0.1 * sigma(-0.3), abs=1e-14)


def test_rdpo_with_alpha_zero_is_dpo_and_length_absorbs_the_preference():
    args = (f64(-10.0, -3.0), f64(-12.0, -2.5), f64(-11.0, -3.1), f64(-11.0, -2.4))
    lengths = (f64(7.0, 2.0), f64(3.0, 9.0))
    zero, _, _ = rdpo_loss(*args, *lengths, beta=0.1, alpha=0.0)
    dpo, _, _ = dpo_loss(*args, beta=0.1)
    torch.testing.assert_close(zero, dpo, rtol=0, atol=1e-15)
    # a longer chosen response: the length term already explains part of the preference, the loss is lower
    penalised, _, _ = rdpo_loss(*args, *lengths, beta=0.1, alpha=0.1)
    assert penalised[0] < dpo[0] and penalised[1] > dpo[1]


def test_cdpo_by_hand():
    # D1 with label smoothing 0.1: beta h = 0.2; 0.9 softplus(-0.2) + 0.1 softplus(0.2) = softplus(-0.2) + 0.02
    losses, _, _ = dpo_loss(f64(-10.0), f64(-12.0), f64(-11.0), f64(-11.0), beta=0.1, label_smoothing=0.1)
    assert losses.item() == pytest.approx(0.618138869382, abs=1e-12)


# ---------------------------------------------------------------- through LossConfig and train()


@pytest.fixture(scope="module")
def collator(tokenizer):
    return PreferenceCollator(tokenizer)


def test_loss_config_orpo_is_odds_ratio_plus_nll(tokenizer, collator):
    model = build_test_model(len(tokenizer))
    batch = collator(EXAMPLES)
    config = LossConfig("orpo", beta=0.2)
    assert (config.sft_weight, config.length_normalize, config.needs_reference) == (1.0, True, False)
    loss, metrics = preference_loss(model, batch, config, layout="padded")
    forward = concatenated_forward(model, batch, length_normalize=True)
    odds, _, _ = orpo_odds_ratio_loss(forward["chosen_logps"], forward["rejected_logps"], beta=0.2)
    pairs = len(EXAMPLES)
    nll = -forward["token_sums"][:pairs].sum() / forward["token_counts"][:pairs].sum()
    assert loss.item() == pytest.approx((odds.mean() + nll).item(), rel=1e-5)
    assert metrics["nll_loss"] == pytest.approx(nll.item(), rel=1e-5)


def test_loss_config_rdpo_uses_the_response_token_counts(tokenizer, collator):
    model, ref = build_test_model(len(tokenizer)), build_test_model(len(tokenizer), seed=1)
    batch = collator(EXAMPLES)
    config = LossConfig("rdpo", beta=0.1, alpha=0.02)
    assert (config.length_normalize, config.needs_reference) == (False, True)
    loss, _ = preference_loss(model, batch, config, ref_model=ref, layout="padded")
    policy = concatenated_forward(model, batch, length_normalize=False)
    with torch.no_grad():
        reference = concatenated_forward(ref, batch, length_normalize=False)
    pairs, counts = len(EXAMPLES), policy["token_counts"]
    z = 0.1 * (
        (policy["chosen_logps"] - reference["chosen_logps"])
        - (policy["rejected_logps"] - reference["rejected_logps"])
    ) + 0.02 * (counts[:pairs] - counts[pairs:])
    assert loss.item() == pytest.approx(torch.nn.functional.softplus(-z).mean().item(), rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "orpo", "length_normalize": False}, "length_normalize must be True"),
        ({"name": "simpo", "alpha": 0.1}, "alpha is R-DPO's"),
        ({"name": "rdpo", "alpha": -0.1}, "alpha"),
        ({"name": "orpo", "gamma": 1.0}, "orpo has none"),
        ({"name": "rdpo", "loss_type": "hinge"}, "one form"),
    ],
)
def test_loss_config_rejects_bad_family_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**kwargs)


def test_rdpo_without_lengths_is_an_error():
    with pytest.raises(ValueError, match="response lengths"):
        LossConfig("rdpo").pairwise_loss(f64(-1.0), f64(-2.0), f64(-1.0), f64(-2.0))


@pytest.mark.parametrize(
    "loss",
    [
        LossConfig("orpo", beta=0.5),
        LossConfig("rdpo", beta=0.5, alpha=0.01),
        LossConfig("dpo", label_smoothing=0.1),
    ],
    ids=["orpo", "rdpo", "cdpo"],
)
def test_each_family_loss_trains(tokenizer, loss):
    model = build_test_model(len(tokenizer))
    ref = build_test_model(len(tokenizer)) if loss.needs_reference else None
    config = TrainConfig(
        loss=loss,
        learning_rate=1e-2,
        max_steps=8,
        batch_size=4,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
    )
    result = train(model, tokenizer, EXAMPLES, config, ref_model=ref, device_policy=CPU, progress=False)
    first, last = result.history[0], result.history[-1]
    assert all(math.isfinite(row["loss"]) for row in result.history)
    assert last["loss"] < first["loss"]
    assert last["rewards/margins"] > first["rewards/margins"]
