"""LoRA via PEFT: only adapters train, merging reproduces the adapter model, DPO's reference is the base."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from simplepo_helpers import (
    LossConfig,
    PreferenceCollator,
    TrainConfig,
    preference_loss,
    train,
    training_step,
)
from simplepo_helpers.scale.lora import LoraOptions, adapter_disabled_reference, apply_lora
from simplepo_helpers.training import concatenated_forward

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*is_gradient_checkpointing.*:FutureWarning"
)  # PEFT on transformers 5
ROWS = [
    {"prompt": "What is two plus three?", "chosen": "Two plus three is five.", "rejected": "It is six."},
    {"prompt": "Name a colour.", "chosen": "Blue is a colour.", "rejected": "The dog."},
    {"prompt": "Please count the letters in banana.", "chosen": "It has six letters.", "rejected": "Sorry."},
    {"prompt": "Hello world", "chosen": "Hello! Happy to help.", "rejected": "I cannot help with that."},
]


@pytest.fixture()
def batch(tokenizer):
    return PreferenceCollator(tokenizer)(ROWS)


def randomise_adapters(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every lora_B a random value so the adapters change the outputs (PEFT starts them at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def test_only_adapter_parameters_receive_gradients(tiny_model, batch):
    model = apply_lora(tiny_model, r=4, alpha=8, dropout=0.0)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert base_before and lora_before
    model.train()
    loss, _ = preference_loss(model, batch, LossConfig("simpo", beta=2.5, gamma=0.5))
    loss.backward()
    for name, parameter in model.named_parameters():
        is_adapter = "lora_A" in name or "lora_B" in name
        assert parameter.requires_grad == is_adapter, name
        assert (parameter.grad is not None) == is_adapter, name
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # the second step moves lora_A too (its gradient is zero while B is zero)
        training_step(model, batch, optimizer, None, LossConfig("simpo", beta=2.5, gamma=0.5))
    after = dict(model.named_parameters())
    for name, value in base_before.items():
        assert torch.equal(after[name], value), f"frozen base weight {name} changed"
    changed = [name for name, value in lora_before.items() if not torch.equal(after[name], value)]
    assert len(changed) == len(lora_before)


def test_merged_weights_reproduce_the_adapter_model(tiny_model, batch):
    base_logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model = apply_lora(tiny_model, r=4, alpha=8, dropout=0.0).eval()
    randomise_adapters(model)
    with torch.no_grad():
        adapted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        merged_model = model.merge_and_unload()
        assert not any("lora_" in name for name, _ in merged_model.named_parameters())
        merged = merged_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert (adapted - base_logits).abs().max() > 1e-2  # the adapters matter
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)


def test_adapter_disabled_reference_is_the_base_model_without_a_copy(tiny_model, batch):
    base = copy.deepcopy(tiny_model).eval()
    model = apply_lora(tiny_model, r=4, alpha=8, dropout=0.1)
    randomise_adapters(model)
    reference = adapter_disabled_reference(model)
    model.train()
    reference.eval().to("cpu")  # what train() does to a ref_model: must not touch the policy
    assert model.training

    ref_out = concatenated_forward(reference, batch, length_normalize=False)
    base_out = concatenated_forward(base, batch, length_normalize=False)
    torch.testing.assert_close(ref_out["chosen_logps"], base_out["chosen_logps"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref_out["rejected_logps"], base_out["rejected_logps"], atol=1e-5, rtol=1e-5)
    assert not ref_out["chosen_logps"].requires_grad
    assert model.training  # train mode restored after the reference forward

    model.eval()
    policy_out = concatenated_forward(model, batch, length_normalize=False)
    assert (policy_out["chosen_logps"] - base_out["chosen_logps"]).abs().max() > 1e-3  # adapters back on

    policy_storage = {p.data_ptr() for p in model.parameters()}
    assert {p.data_ptr() for p in reference.parameters()} <= policy_storage  # shared, not copied
    assert not list(reference.children()) and not reference.state_dict()


def test_dpo_with_lora_starts_at_ln2_and_trains_away_from_the_base(tokenizer, tiny_model, batch):
    base = copy.deepcopy(tiny_model).eval()
    model = apply_lora(tiny_model, r=4, alpha=8, dropout=0.0)
    reference = adapter_disabled_reference(model)
    dpo = LossConfig("dpo", beta=0.1)
    loss, metrics = preference_loss(model, batch, dpo, ref_model=reference)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # vector D2: policy == reference
    assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-6)

    config = TrainConfig(loss=dpo, learning_rate=5e-2, max_steps=4, batch_size=4, warmup_ratio=0.0, seed=0)
    result = train(model, tokenizer, ROWS, config, ref_model=reference, progress=False)
    assert result.history[-1]["loss"] < math.log(2) - 1e-3
    ref_after = concatenated_forward(reference, batch, length_normalize=False)["chosen_logps"]
    base_after = concatenated_forward(base, batch, length_normalize=False)["chosen_logps"]
    torch.testing.assert_close(ref_after, base_after, atol=1e-5, rtol=1e-5)  # the reference did not move


def test_bad_lora_settings_name_the_problem(tiny_model):
    with pytest.raises(
        ValueError, match=r"lora.target_modules=\['nope'\].*linear layers of this model: .*q_proj"
    ):
        apply_lora(tiny_model, target_modules=["nope"])
    with pytest.raises(TypeError, match="unknown settings"):
        apply_lora(tiny_model, rank=8)
    with pytest.raises(ValueError, match="dropout must be in"):
        LoraOptions(dropout=1.5)
    model = apply_lora(tiny_model, r=2)
    with pytest.raises(ValueError, match="already has PEFT adapters"):
        apply_lora(model)
    with pytest.raises(TypeError, match="needs a PEFT model"):
        adapter_disabled_reference(torch.nn.Linear(2, 2))
