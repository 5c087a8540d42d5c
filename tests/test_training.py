"""The concatenated forward, the losses by name, gradient accumulation, the loop and its failure modes.

Expected values come from per-row forwards of unpadded sequences and a naive per-token loop, written here
independently of logps.py / losses.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import build_test_model

from simplepo_helpers import (
    LossConfig,
    PreferenceCollator,
    TrainConfig,
    concatenated_forward,
    precompute_reference_logps,
    preference_loss,
    train,
    training_step,
)
from simplepo_helpers.runtime.batch_order import ShuffledStream
from simplepo_helpers.runtime.device import DevicePolicy
from simplepo_helpers.runtime.optim import build_optimizer
from simplepo_helpers.training import NonFiniteLossError

EXAMPLES = [
    {"prompt": "What is two plus three?", "chosen": " Two plus three is five.", "rejected": " It is six."},
    {"prompt": "Name a colour.", "chosen": " Blue is a colour.", "rejected": " The quick brown fox jumps."},
    {
        "prompt": [{"role": "user", "content": "Count the letters in banana."}],
        "chosen": [{"role": "assistant", "content": "It has six letters."}],
        "rejected": [{"role": "assistant", "content": "Sorry, I cannot help."}],
    },
    {"prompt": "Say hello.", "chosen": " hello world", "rejected": " dog"},
    {
        "prompt": [{"role": "user", "content": "What is 2 + 3?"}],
        "chosen": [{"role": "assistant", "content": "5"}],
        "rejected": [{"role": "assistant", "content": "The answer is 6, I think."}],
    },
]
CPU = DevicePolicy(torch.device("cpu"), torch.float32, None, False, "tests")


@pytest.fixture(scope="module")
def collator(tokenizer):
    return PreferenceCollator(tokenizer)


@pytest.fixture()
def ref_model(tokenizer):
    return build_test_model(len(tokenizer), seed=1)


# ---------- independent reference computations ----------


def naive_row_logps(model, input_ids, labels):
    """Forward one unpadded row; log-probs of its response tokens one by one, and their predicting logits."""
    with torch.no_grad():
        logits = model(input_ids=input_ids[None]).logits[0]  # [T, V]
    values, next_logits = [], []
    for t in range(len(input_ids) - 1):
        if labels[t + 1] != -100:
            values.append(torch.log_softmax(logits[t].double(), dim=-1)[labels[t + 1]].item())
            next_logits.append(logits[t].double())
    return values, next_logits


def naive_terms(model, batch, *, average, ref_model=None):
    """Per-row sequence log-probs (and next-token logits) from separate unpadded forwards."""
    rows = []
    for row in range(batch["input_ids"].shape[0]):
        length = int(batch["attention_mask"][row].sum())
        ids, labels = batch["input_ids"][row, :length], batch["labels"][row, :length]
        values, logits = naive_row_logps(model, ids, labels)
        ref_logits = naive_row_logps(ref_model, ids, labels)[1] if ref_model is not None else None
        rows.append({"tokens": values, "logits": logits, "ref_logits": ref_logits})
    seq = [sum(r["tokens"]) / len(r["tokens"]) if average else sum(r["tokens"]) for r in rows]
    return rows, seq


def softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def expected_loss(model, batch, config, ref_model=None):
    rows, seq = naive_terms(model, batch, average=config.length_normalize, ref_model=ref_model)
    pairs = len(seq) // 2
    if config.name == "dpo":
        _, ref_seq = naive_terms(ref_model, batch, average=config.length_normalize)
        seq = [s - r for s, r in zip(seq, ref_seq, strict=True)]
    margins = [config.beta * (seq[i] - seq[pairs + i]) - config.gamma for i in range(pairs)]
    loss = sum(softplus(-z) for z in margins) / pairs
    metrics = {
        "rewards/chosen": sum(config.beta * s for s in seq[:pairs]) / pairs,
        "rewards/rejected": sum(config.beta * s for s in seq[pairs:]) / pairs,
        "rewards/accuracies": sum(z + config.gamma > 0 for z in margins) / pairs,
    }
    if config.sft_weight:
        chosen_tokens = [v for r in rows[:pairs] for v in r["tokens"]]
        metrics["nll_loss"] = -sum(chosen_tokens) / len(chosen_tokens)
        loss += config.sft_weight * metrics["nll_loss"]
    if config.kl_weight:
        kls = [
            (F.softmax(p, -1) * (F.log_softmax(p, -1) - F.log_softmax(q, -1))).sum().item()
            for r in rows
            for p, q in zip(r["logits"], r["ref_logits"], strict=True)
        ]
        metrics["kl"] = sum(kls) / len(kls)
        loss += config.kl_weight * metrics["kl"]
    metrics["loss"] = loss
    return metrics


# ---------- loss and forward ----------


@pytest.mark.parametrize(
    "config",
    [
        LossConfig("simpo", beta=2.5, gamma=1.375),
        LossConfig("simpo", beta=2.0, gamma=0.5, length_normalize=False),
        LossConfig("dpo", beta=0.1),
        LossConfig("simpo", beta=2.0, gamma=1.0, sft_weight=0.5, kl_weight=0.3),
    ],
    ids=["simpo", "simpo-sum", "dpo", "simpo+sft+kl"],
)
def test_loss_matches_separate_forwards(tiny_model, ref_model, collator, config):
    batch = collator(EXAMPLES[:4])
    use_ref = ref_model if config.needs_reference else None
    expected = expected_loss(tiny_model, batch, config, ref_model=use_ref)
    loss, metrics = preference_loss(tiny_model, batch, config, ref_model=use_ref)
    assert loss.item() == pytest.approx(expected["loss"], rel=1e-5)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert metrics["rewards/margins"] == pytest.approx(
        metrics["rewards/chosen"] - metrics["rewards/rejected"], abs=1e-5
    )


def test_concatenated_forward_is_one_pass_and_keeps_row_order(tiny_model, collator):
    batch = collator(EXAMPLES[:3])
    calls = []
    handle = tiny_model.register_forward_hook(lambda module, args, output: calls.append(1))
    out = concatenated_forward(tiny_model, batch, length_normalize=True)
    handle.remove()
    assert len(calls) == 1
    _, expected = naive_terms(tiny_model, batch, average=True)
    torch.testing.assert_close(out["chosen_logps"], torch.tensor(expected[:3], dtype=torch.float32))
    torch.testing.assert_close(out["rejected_logps"], torch.tensor(expected[3:], dtype=torch.float32))
    assert out["logits"].shape[:2] == out["labels"].shape == batch["input_ids"].shape


def test_step_reports_the_loss_before_its_update(tiny_model, collator):
    batch = collator(EXAMPLES)
    config = LossConfig("simpo", beta=2.0, gamma=1.0)
    expected = expected_loss(tiny_model, batch, config)["loss"]
    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.1)
    metrics = training_step(tiny_model, [batch], optimizer, None, config)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert preference_loss(tiny_model, batch, config)[1]["loss"] < expected  # the step lowered it


def test_the_sft_baseline_is_the_chosen_tokens_nll_alone(tiny_model, collator):
    """LossConfig("sft"): no preference term; the loss is the token-weighted NLL of the chosen responses."""
    batch = collator(EXAMPLES)
    config = LossConfig("sft")
    assert (config.sft_weight, config.length_normalize, config.needs_reference) == (1.0, True, False)
    rows, seq = naive_terms(tiny_model, batch, average=True)
    pairs = len(EXAMPLES)
    chosen_tokens = [v for r in rows[:pairs] for v in r["tokens"]]
    loss, metrics = preference_loss(tiny_model, batch, config)
    assert loss.item() == pytest.approx(-sum(chosen_tokens) / len(chosen_tokens), rel=1e-5)
    expected_accuracy = sum(seq[i] > seq[pairs + i] for i in range(pairs)) / pairs
    assert metrics["rewards/accuracies"] == pytest.approx(expected_accuracy)
    with pytest.raises(ValueError, match="gamma is SimPO's target margin and sft has none"):
        LossConfig("sft", gamma=1.0)


def test_bad_batches_are_rejected_with_the_reason(tiny_model, collator):
    batch = collator(EXAMPLES[:2])
    odd = {key: value[:3] for key, value in batch.items()}
    with pytest.raises(ValueError, match="even, positive number of rows"):
        concatenated_forward(tiny_model, odd, length_normalize=True)
    with pytest.raises(KeyError, match="'labels'"):
        concatenated_forward(
            tiny_model, {k: batch[k] for k in ("input_ids", "attention_mask")}, length_normalize=True
        )


# ---------- DPO reference: live forward or precomputed ----------


def test_dpo_with_precomputed_reference_equals_live_reference(tiny_model, ref_model, collator):
    config = LossConfig("dpo", beta=0.1)
    precomputed = precompute_reference_logps(ref_model, EXAMPLES, collator, batch_size=2)
    assert (
        precomputed["ref_chosen_logps"].shape == (len(EXAMPLES),) and precomputed["length_normalize"] is False
    )
    batch = collator(EXAMPLES[1:4])
    _, ref_seq = naive_terms(ref_model, batch, average=False)
    torch.testing.assert_close(
        precomputed["ref_chosen_logps"][1:4], torch.tensor(ref_seq[:3], dtype=torch.float32)
    )
    live_loss, live_metrics = preference_loss(tiny_model, batch, config, ref_model=ref_model)
    batch_with_ref = {**batch, **{k: precomputed[k][1:4] for k in ("ref_chosen_logps", "ref_rejected_logps")}}
    pre_loss, pre_metrics = preference_loss(tiny_model, batch_with_ref, config)
    assert pre_loss.item() == pytest.approx(live_loss.item(), rel=1e-5)
    assert pre_metrics == pytest.approx(live_metrics, rel=1e-5, abs=1e-6)


def test_dpo_training_with_precomputed_reference_matches_live(tokenizer, ref_model, collator):
    config = TrainConfig(
        loss=LossConfig("dpo", beta=0.5), learning_rate=1e-2, max_steps=3, batch_size=2, log_every=1
    )
    live = train(
        build_test_model(len(tokenizer)),
        tokenizer,
        EXAMPLES,
        config,
        ref_model=ref_model,
        device_policy=CPU,
        progress=False,
    )
    ref_logps = precompute_reference_logps(ref_model, EXAMPLES, collator, batch_size=5)
    pre = train(
        build_test_model(len(tokenizer)),
        tokenizer,
        EXAMPLES,
        config,
        ref_logps=ref_logps,
        device_policy=CPU,
        progress=False,
    )
    for live_row, pre_row in zip(live.history, pre.history, strict=True):
        for name in ("loss", "rewards/margins", "rewards/accuracies", "grad_norm"):
            assert pre_row[name] == pytest.approx(live_row[name], rel=1e-4, abs=1e-6), name


# ---------- gradient accumulation ----------


def run_sgd_step(tokenizer, collator, ref_model, split, config):
    """One SGD step over EXAMPLES[:4] cut into micro-batches of the given sizes; weights and metrics after."""
    model = build_test_model(len(tokenizer))
    starts = [sum(split[:i]) for i in range(len(split))]
    micro_batches = [collator(EXAMPLES[s : s + n]) for s, n in zip(starts, split, strict=True)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    metrics = training_step(
        model, micro_batches, optimizer, None, config, ref_model=ref_model, max_grad_norm=0.5
    )
    return {n: p.detach().clone() for n, p in model.named_parameters()}, metrics


@pytest.mark.parametrize("split", [[2, 2], [1, 3], [3, 1], [1, 1, 1, 1]])
@pytest.mark.parametrize(
    "config",
    [LossConfig("simpo", beta=2.0, gamma=1.0), LossConfig("dpo", beta=0.5, sft_weight=0.7, kl_weight=0.2)],
    ids=["simpo", "dpo+sft+kl"],
)
def test_accumulated_micro_batches_equal_one_large_batch(tokenizer, collator, ref_model, split, config):
    ref = ref_model if config.needs_reference else None
    big_weights, big_metrics = run_sgd_step(tokenizer, collator, ref, [4], config)
    weights, metrics = run_sgd_step(tokenizer, collator, ref, split, config)
    for name, value in big_weights.items():
        torch.testing.assert_close(weights[name], value, atol=1e-6, rtol=1e-5, msg=name)
    assert metrics.keys() == big_metrics.keys()
    assert metrics == pytest.approx(big_metrics, rel=1e-5, abs=1e-6)


def test_unweighted_micro_batch_means_would_differ(tiny_model, collator):
    """The accumulation test above can fail: averaging micro-batch means is not the large-batch mean."""
    config = LossConfig("simpo", beta=2.0, gamma=1.0)
    big = preference_loss(tiny_model, collator(EXAMPLES[:4]), config)[0].item()
    naive = (
        preference_loss(tiny_model, collator(EXAMPLES[:1]), config)[0].item()
        + preference_loss(tiny_model, collator(EXAMPLES[1:4]), config)[0].item()
    ) / 2
    assert abs(naive - big) > 1e-3


# ---------- the loop ----------


def test_training_learns_a_tiny_preference_set(tokenizer):
    model = build_test_model(len(tokenizer))
    config = TrainConfig(
        loss=LossConfig("simpo", beta=2.0, gamma=1.0),
        learning_rate=1e-2,
        max_steps=15,
        batch_size=5,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
    )
    result = train(model, tokenizer, EXAMPLES, config, device_policy=CPU, progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < 0.25 * first["loss"]
    assert last["rewards/margins"] > first["rewards/margins"] + 1.0
    assert last["rewards/accuracies"] == 1.0
    assert not model.training  # left in eval mode
    after = preference_loss(model, PreferenceCollator(tokenizer)(EXAMPLES), config.loss)[1]
    assert after["loss"] < last["loss"]


def test_learning_rate_follows_warmup_then_cosine(tokenizer):
    config = TrainConfig(
        learning_rate=1e-3, max_steps=8, batch_size=2, warmup_ratio=0.3
    )  # ceil(2.4) = 3 warm-up
    result = train(
        build_test_model(len(tokenizer)), tokenizer, EXAMPLES, config, device_policy=CPU, progress=False
    )
    expected = []
    for done in range(8):  # the lr used at step done+1
        if done < 3:
            expected.append(1e-3 * done / 3)
        else:
            expected.append(1e-3 * 0.5 * (1 + math.cos(math.pi * (done - 3) / 5)))
    assert [row["lr"] for row in result.history] == pytest.approx(expected, abs=1e-12)
    assert [row["step"] for row in result.history] == list(range(1, 9))
    assert result.final_metrics["step"] == 8 and "seconds" not in result.final_metrics


def test_data_order_is_a_seeded_permutation_per_epoch():
    stream = ShuffledStream(5, seed=3)
    epochs = [stream.take(5 * e, 5) for e in range(3)]
    assert all(sorted(order) == list(range(5)) for order in epochs)
    assert len({tuple(order) for order in epochs}) > 1  # reshuffled each epoch
    assert ShuffledStream(5, seed=3).take(7, 6) == epochs[1][2:] + epochs[2][:3]  # random access
    assert ShuffledStream(5, seed=4).take(0, 15) != sum(epochs, [])


def test_non_finite_loss_names_the_step(tokenizer):
    model = build_test_model(len(tokenizer))
    forward_calls = []

    def poison_third_forward(module, args, output):
        forward_calls.append(1)
        return output * float("nan") if len(forward_calls) == 3 else output

    model.lm_head.register_forward_hook(poison_third_forward)
    config = TrainConfig(learning_rate=1e-3, max_steps=5, batch_size=5)
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* at step 3") as caught:
        train(model, tokenizer, EXAMPLES, config, device_policy=CPU, progress=False)
    assert (caught.value.step, caught.value.metric) == (3, "loss")
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN never reached the weights


def test_bad_example_is_named_by_its_index(tokenizer):
    examples = EXAMPLES[:3] + [{"prompt": "Hi", "chosen": "", "rejected": " no"}]
    config = TrainConfig(max_steps=1, batch_size=4)
    with pytest.raises(ValueError, match=r"step 1: could not collate examples \[.*3.*\]"):
        train(
            build_test_model(len(tokenizer)), tokenizer, examples, config, device_policy=CPU, progress=False
        )


def test_fp16_policy_needs_and_uses_a_grad_scaler(tiny_model, collator):
    fp16 = DevicePolicy(torch.device("cpu"), torch.float32, torch.float16, True, "fp16 on cpu for a test")
    batch = collator(EXAMPLES[:2])
    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.1)
    config = LossConfig()
    with pytest.raises(ValueError, match="make_grad_scaler"):
        training_step(tiny_model, [batch], optimizer, None, config, device_policy=fp16)
    fp32_loss = preference_loss(tiny_model, batch, config)[0].item()
    before = tiny_model.lm_head.weight.detach().clone()
    scaler = fp16.make_grad_scaler()
    metrics = training_step(
        tiny_model, [batch], optimizer, None, config, device_policy=fp16, grad_scaler=scaler
    )
    assert metrics["loss"] == pytest.approx(fp32_loss, rel=2e-2)
    assert not torch.equal(before, tiny_model.lm_head.weight)


def test_optimizer_is_fused_adamw_where_supported_and_decays_matrices_only(tiny_model):
    optimizer, impl = build_optimizer(tiny_model, learning_rate=1e-5, weight_decay=0.1)
    decayed, plain = optimizer.param_groups
    assert all(p.ndim == 2 for p in decayed["params"]) and decayed["weight_decay"] == 0.1
    assert all(p.ndim == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0
    assert len(decayed["params"]) + len(plain["params"]) == len(list(tiny_model.parameters()))
    assert (impl == "fused") == bool(decayed["fused"])


def test_result_plot_and_dataframe(tokenizer):
    result = train(
        build_test_model(len(tokenizer)),
        tokenizer,
        EXAMPLES,
        TrainConfig(max_steps=2, batch_size=2),
        device_policy=CPU,
        progress=False,
    )
    figure = result.plot(title="tiny")
    assert len(figure.axes) == 4 and len(figure.axes[3].lines) == 2
    frame = result.to_dataframe()
    assert list(frame["step"]) == [1, 2] and {"loss", "rewards/accuracies", "lr", "seconds"} <= set(
        frame.columns
    )


# ---------- configuration errors ----------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "ipo"}, "name must be one of"),
        ({"name": "simpo", "beta": -1.0}, "beta must be > 0"),
        ({"name": "simpo", "gamma": -0.5}, "gamma"),
        ({"name": "dpo", "gamma": 1.0}, "dpo has none"),
        ({"name": "simpo", "loss_type": "ipo"}, "unknown loss_type 'ipo'"),
        ({"name": "simpo", "label_smoothing": 0.1, "loss_type": "hinge"}, "label_smoothing"),
        ({"name": "simpo", "sft_weight": -1.0}, "sft_weight must be >= 0"),
    ],
)
def test_loss_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**kwargs)


def test_loss_config_defaults_per_loss():
    simpo, dpo = LossConfig("simpo"), LossConfig("dpo")
    assert (simpo.beta, simpo.gamma, simpo.length_normalize, simpo.needs_reference) == (2.0, 1.0, True, False)
    assert (dpo.beta, dpo.gamma, dpo.length_normalize, dpo.needs_reference) == (0.1, 0.0, False, True)
    assert LossConfig("simpo", kl_weight=0.1).needs_reference


def test_missing_reference_is_an_error(tiny_model, tokenizer, collator):
    batch = collator(EXAMPLES[:2])
    with pytest.raises(ValueError, match="DPO needs a reference"):
        preference_loss(tiny_model, batch, LossConfig("dpo"))
    with pytest.raises(ValueError, match="KL term"):
        preference_loss(tiny_model, batch, LossConfig("simpo", kl_weight=0.1))
    with pytest.raises(ValueError, match="DPO needs a reference"):
        train(
            tiny_model,
            tokenizer,
            EXAMPLES,
            TrainConfig(loss=LossConfig("dpo")),
            device_policy=CPU,
            progress=False,
        )
    summed = {"ref_chosen_logps": [0.0] * 5, "ref_rejected_logps": [0.0] * 5, "length_normalize": True}
    with pytest.raises(ValueError, match="length_normalize=True but the loss uses the other"):
        train(
            tiny_model,
            tokenizer,
            EXAMPLES,
            TrainConfig(loss=LossConfig("dpo")),
            ref_logps=summed,
            device_policy=CPU,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_steps": 0}, "max_steps"),
        ({"lr_scheduler_type": "cosine_typo"}, "cosine_typo"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"learning_rate": -1.0}, "learning_rate"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"learning_rate": "1e-5"}, ("TrainConfig.learning_rate", "'1e-5'", "str", "a number")),
        ({"max_steps": 10.0}, ("TrainConfig.max_steps", "10.0", "float", "int")),
        ({"batch_size": True}, ("TrainConfig.batch_size", "True", "bool", "int")),
        ({"max_grad_norm": "1"}, ("TrainConfig.max_grad_norm", "'1'", "a number or None")),
        ({"output_dir": 3}, ("TrainConfig.output_dir", "3", "int", "str or Path or None")),
        ({"lr_scheduler_type": None}, ("TrainConfig.lr_scheduler_type", "None", "NoneType", "str")),
    ],
)
def test_train_config_names_a_field_of_the_wrong_type(kwargs, fragments):
    """A wrong type fails at construction naming the field, the value and the type expected (a string is
    never read as a number)."""
    with pytest.raises(TypeError) as caught:
        TrainConfig(**kwargs)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_train_config_wants_a_loss_config_not_its_name():
    with pytest.raises(TypeError, match=r"TrainConfig.loss must be a LossConfig.*'simpo'.*LossConfig\("):
        TrainConfig(loss="simpo")
    assert TrainConfig(loss={"name": "dpo"}).loss == LossConfig("dpo")  # a config read back from a checkpoint
    assert TrainConfig(learning_rate=1).learning_rate == 1  # an int is a number


def test_each_batch_is_checked_once_per_step(tokenizer, monkeypatch):
    import simplepo_helpers.training as training

    checked = []
    check = training.check_preference_batch
    monkeypatch.setattr(training, "check_preference_batch", lambda batch: checked.append(1) or check(batch))
    config = TrainConfig(max_steps=2, batch_size=2, grad_accum_steps=2, learning_rate=1e-3, warmup_ratio=0.0)
    train(build_test_model(len(tokenizer)), tokenizer, EXAMPLES, config, device_policy=CPU, progress=False)
    assert len(checked) == 2 * 2  # steps x micro-batches


@pytest.mark.parametrize(
    ("config", "precomputed", "live"),
    [
        (LossConfig("simpo"), "none", "none"),
        (LossConfig("sft"), "none", "none"),
        (LossConfig("dpo"), "precomputed", "live"),
        (LossConfig("dpo", kl_weight=0.1), "live", "live"),
        (LossConfig("simpo", kl_weight=0.1), "live", "live"),
    ],
)
def test_loss_config_alone_decides_the_reference_mode(config, precomputed, live):
    assert config.reference_mode() == precomputed
    assert config.reference_mode("live") == live
    with pytest.raises(ValueError, match="prefer"):
        config.reference_mode("auto")


def test_reward_accuracy_counts_a_tie_as_half(tiny_model, collator):
    """One convention for the training metric and held-out reward accuracy: DPO's first step (policy ==
    reference, every margin exactly 0) scores 0.5, not 0."""
    batch = collator(EXAMPLES[:4])
    _, metrics = preference_loss(tiny_model, batch, LossConfig("dpo"), ref_model=tiny_model, layout="padded")
    assert metrics["rewards/margins"] == 0.0 and metrics["rewards/accuracies"] == 0.5
