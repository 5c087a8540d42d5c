"""The packed, prefix-shared layout (``fast/packing.py``) against the padded ``[2B, T]`` batch it replaces.

Exactness (float32, tiny random Llama with grouped-query attention and Qwen2): per-sequence log-probs and the
loss within 1e-5 of the padded path's; gradients within 1e-4 of each parameter's largest gradient entry
(the shared prompt's gradient is summed before, not after, the layers' float32 reductions). Confinement: a
changed token changes no other sequence's log-probs by a single bit.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import build_test_model
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from simplepo_helpers.batching import PreferenceCollator
from simplepo_helpers.fast.packing import (
    ATTENTION_NAME,
    choose_layout,
    pack_preference_batch,
    packed_support,
    packing_problem,
    segment_attention,
)
from simplepo_helpers.training import (
    LossConfig,
    TrainConfig,
    concatenated_forward,
    preference_loss,
    train,
)

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings(
        "ignore:.*is_gradient_checkpointing.*:FutureWarning"
    ),  # PEFT on transformers 5
]
LOGPS_ATOL = 1e-5  # per-sequence log-probs and losses, float32
GRAD_RTOL = 1e-4  # of each parameter's largest gradient entry
EXAMPLES = [
    {"prompt": "What is two plus three?", "chosen": " Two plus three is five.", "rejected": " Six."},
    {"prompt": "Name a colour.", "chosen": " Blue.", "rejected": " The quick brown fox jumps over the dog."},
    {
        "prompt": [{"role": "user", "content": "Count the letters in the word banana, please."}],
        "chosen": [{"role": "assistant", "content": "It has six letters."}],
        "rejected": [{"role": "assistant", "content": "Sorry, I cannot help with that request."}],
    },
]


def tiny_qwen2(vocab_size: int, seed: int = 0) -> Qwen2ForCausalLM:
    """A 2-layer random Qwen2 (biased q/k/v projections) with grouped-query attention, float32, eval mode."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return Qwen2ForCausalLM(config).eval()


MODELS = {
    "llama": lambda vocab, seed=0: build_test_model(vocab, seed),
    "llama_tied": lambda vocab, seed=0: build_test_model(vocab, seed, tie_word_embeddings=True),
    "qwen2": tiny_qwen2,
}


@pytest.fixture()
def batch(tokenizer):
    return PreferenceCollator(tokenizer)(EXAMPLES)


def test_pack_by_hand():
    # pair 0: prompt [5, 6], chosen [7, 2], rejected [8, 9, 2]; pair 1: prompt [4], chosen [3], rejected [2]
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 2, 0], [4, 3, 0, 0, 0], [5, 6, 8, 9, 2], [4, 2, 0, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]),
        "labels": torch.tensor(
            [
                [-100, -100, 7, 2, -100],
                [-100, 3, -100, -100, -100],
                [-100, -100, 8, 9, 2],
                [-100, 2, -100, -100, -100],
            ]
        ),
    }
    packed = pack_preference_batch(batch)
    assert packed.input_ids.tolist() == [[5, 6, 7, 2, 8, 9, 2, 4, 3, 2]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 2, 3, 4, 0, 1, 1]]
    assert packed.pairs == ((0, 2, 2, 3), (7, 1, 1, 1))
    # chosen 7 from the prompt's end (1), 2 from 7 (2); rejected 8 from the prompt's end (1), 9 from 8 (4),
    # 2 from 9 (5); pair 1: both responses from its one prompt token (7)
    assert packed.positions.tolist() == [1, 2, 1, 4, 5, 7, 7]
    assert packed.targets.tolist() == [7, 2, 8, 9, 2, 3, 2]
    assert packed.sequence.tolist() == [0, 0, 2, 2, 2, 1, 3]
    # 10 positions instead of the padded 4 x 5 = 20; the prompts' 3 tokens once instead of twice


def test_a_collated_batch_packs_from_its_token_ids_without_unpadding(batch, monkeypatch):
    """The collator's batch carries the id lists it padded; packing reads them and never un-pads the batch."""
    import simplepo_helpers.fast.packing as packing

    assert [len(row["prompt_ids"]) for row in batch.rows] == [
        int((labels != -100).nonzero()[0]) for labels in batch["labels"][: len(batch.rows)]
    ]
    unpadded = pack_preference_batch(dict(batch))  # a plain copy: no id lists, so it is un-padded
    monkeypatch.setattr(packing, "_row_parts", lambda *args: pytest.fail("un-padded a collated batch"))
    from_ids = pack_preference_batch(batch)
    for name in ("input_ids", "position_ids", "positions", "targets", "sequence"):
        assert torch.equal(getattr(from_ids, name), getattr(unpadded, name)), name
    assert from_ids.pairs == unpadded.pairs


def test_pack_refuses_batches_it_cannot_share_with_the_reason(batch):
    different = {key: value.clone() for key, value in batch.items()}
    different["input_ids"][3, 0] += 1  # the first rejected row's prompt no longer matches its chosen row's
    with pytest.raises(ValueError, match="rows 0 and 3"):
        pack_preference_batch(different)
    unlabelled = {key: value.clone() for key, value in batch.items()}
    unlabelled["labels"][1] = -100
    with pytest.raises(ValueError, match="row 1 has no response tokens"):
        pack_preference_batch(unlabelled)
    holed = {key: value.clone() for key, value in batch.items()}
    first = int((holed["labels"][4] != -100).nonzero()[0])
    holed["labels"][4, first + 1] = -100
    with pytest.raises(ValueError, match="row 4: the labelled tokens are not one block"):
        pack_preference_batch(holed)


def test_auto_layout_scores_a_batch_it_cannot_pack_on_the_padded_path(tokenizer, batch):
    """Any padded batch still gets a loss: "auto" packs what shares its prompts and pads the rest."""
    model = build_test_model(len(tokenizer))
    assert packing_problem(batch) is None and choose_layout(model, batch=batch) == "packed"
    different = {key: value.clone() for key, value in batch.items()}
    # pair 0's rejected row under another prompt (like an exercise's random batch)
    different["input_ids"][3, 0] += 1
    assert "rows 0 and 3" in packing_problem(different)
    assert choose_layout(model, batch=different) == "padded"
    config = LossConfig("simpo", beta=2.5, gamma=0.5)
    auto_loss, _ = preference_loss(model, different, config, layout="auto")
    padded_loss, _ = preference_loss(model, different, config)  # the default: the plain path
    assert torch.equal(auto_loss, padded_loss)
    with pytest.raises(ValueError, match="rows 0 and 3"):
        # asked for by name: the reason, not a fallback
        preference_loss(model, different, config, layout="packed")


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("average", [True, False])
def test_logps_equal_the_padded_path(name, average, tokenizer, batch):
    model = MODELS[name](len(tokenizer))
    assert packed_support(model) is None
    padded = concatenated_forward(model, batch, length_normalize=average, layout="padded")
    for keep_logits in (False, True):
        packed = concatenated_forward(
            model, batch, length_normalize=average, layout="packed", keep_logits=keep_logits
        )
        for key in ("chosen_logps", "rejected_logps", "token_sums"):
            torch.testing.assert_close(packed[key], padded[key], atol=LOGPS_ATOL, rtol=1e-6)
        assert torch.equal(packed["token_counts"], padded["token_counts"])
    assert packed["logits"].shape[:2] == packed["labels"].shape == (1, int(padded["token_counts"].sum()) + 1)


def assert_gradients_close(model, padded_grads):
    for (name, parameter), expected in zip(model.named_parameters(), padded_grads, strict=True):
        if expected is None:
            assert parameter.grad is None, name
            continue
        error = (parameter.grad - expected).abs().max()
        assert error <= GRAD_RTOL * expected.abs().max() + 1e-8, f"{name}: {error} vs {expected.abs().max()}"


def loss_and_gradients(model, batch, config, layout, **kwargs):
    model.zero_grad(set_to_none=True)
    loss, metrics = preference_loss(model, batch, config, layout=layout, **kwargs)
    loss.backward()
    return loss.detach(), metrics, [None if p.grad is None else p.grad.clone() for p in model.parameters()]


LOSSES = {
    "simpo": (LossConfig("simpo", beta=2.5, gamma=0.5), False),
    "simpo_sft": (LossConfig("simpo", sft_weight=0.7), False),
    "dpo_live_reference": (LossConfig("dpo", beta=0.3), True),
    "dpo_kl": (LossConfig("dpo", beta=0.3, kl_weight=0.5), True),
    "simpo_kl": (LossConfig("simpo", kl_weight=0.5), True),
}


@pytest.mark.parametrize("name", ["llama", "qwen2"])
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_loss_and_gradients_equal_the_padded_path(name, loss_name, tokenizer, batch):
    config, needs_ref = LOSSES[loss_name]
    model = MODELS[name](len(tokenizer)).train()
    ref_model = MODELS[name](len(tokenizer), seed=1) if needs_ref else None
    padded_loss, padded_metrics, padded_grads = loss_and_gradients(
        model, batch, config, "padded", ref_model=ref_model
    )
    loss, metrics, _ = loss_and_gradients(model, batch, config, "packed", ref_model=ref_model)
    torch.testing.assert_close(loss, padded_loss, atol=LOGPS_ATOL, rtol=1e-6)
    assert metrics.keys() == padded_metrics.keys()
    for key, value in padded_metrics.items():
        assert metrics[key] == pytest.approx(value, abs=LOGPS_ATOL, rel=1e-6), key
    assert_gradients_close(model, padded_grads)


def test_dpo_with_precomputed_reference_logps(tokenizer, batch):
    model = build_test_model(len(tokenizer)).train()
    reference = build_test_model(len(tokenizer), seed=1)
    with torch.no_grad():
        ref = concatenated_forward(reference, batch, length_normalize=False)
    precomputed = {
        **batch,
        "ref_chosen_logps": ref["chosen_logps"],
        "ref_rejected_logps": ref["rejected_logps"],
    }
    config = LossConfig("dpo", beta=0.2)
    padded_loss, _, padded_grads = loss_and_gradients(model, precomputed, config, "padded")
    loss, _, _ = loss_and_gradients(model, precomputed, config, "packed")
    torch.testing.assert_close(loss, padded_loss, atol=LOGPS_ATOL, rtol=1e-6)
    assert_gradients_close(model, padded_grads)


def test_lora_policy_and_adapter_disabled_reference(tokenizer, batch):
    from simplepo_helpers.scale.lora import adapter_disabled_reference, apply_lora

    model = apply_lora(build_test_model(len(tokenizer)), r=4, alpha=8, dropout=0.0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "lora_B" in parameter_name:  # PEFT starts B at zero: make the adapters matter
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    reference = adapter_disabled_reference(model)
    assert packed_support(model) is None and packed_support(reference) is None
    model.train()
    for config in (LossConfig("simpo", sft_weight=0.5), LossConfig("dpo", beta=0.3, kl_weight=0.2)):
        padded_loss, _, padded_grads = loss_and_gradients(model, batch, config, "padded", ref_model=reference)
        loss, _, _ = loss_and_gradients(model, batch, config, "packed", ref_model=reference)
        torch.testing.assert_close(loss, padded_loss, atol=LOGPS_ATOL, rtol=1e-6)
        assert any(g is not None for g in padded_grads)
        assert_gradients_close(model, padded_grads)


def _perturbed(batch, row, start, stop):
    """A copy of ``batch`` with the tokens of ``row`` in [start, stop) changed (lengths unchanged)."""
    changed = {key: value.clone() for key, value in batch.items()}
    for key in ("input_ids", "labels"):
        part = changed[key][row, start:stop]
        changed[key][row, start:stop] = torch.where(part == -100, part, (part + 7) % 300 + 4)
    return changed


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_a_changed_sequence_changes_no_other_sequence_by_one_bit(name, tokenizer, batch):
    model = MODELS[name](len(tokenizer))
    pairs = batch["input_ids"].shape[0] // 2
    before = concatenated_forward(model, batch, length_normalize=False, layout="packed")["token_sums"]
    # the rejected response of pair 1: only that sequence may change (its chosen response does not see it)
    response = (batch["labels"][pairs + 1] != -100).nonzero().flatten()
    after = concatenated_forward(
        model,
        _perturbed(batch, pairs + 1, int(response[0]), int(response[-1]) + 1),
        length_normalize=False,
        layout="packed",
    )["token_sums"]
    changed = (after != before).nonzero().flatten().tolist()
    assert changed == [pairs + 1]
    # the prompt of pair 0 (both of its rows): every sequence of the other pairs stays bit-identical
    prompt_end = int((batch["labels"][0] != -100).nonzero()[0])
    perturbed = _perturbed(_perturbed(batch, 0, 1, prompt_end), pairs, 1, prompt_end)
    after = concatenated_forward(model, perturbed, length_normalize=False, layout="packed")["token_sums"]
    assert (after != before).nonzero().flatten().tolist() == [0, pairs]


def test_segment_attention_refuses_a_call_without_the_layout():
    query = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match=ATTENTION_NAME):
        segment_attention(torch.nn.Module(), query, query, query, None)


def test_other_architectures_keep_the_padded_layout(tokenizer, batch):
    torch.manual_seed(0)
    mistral = MistralForCausalLM(
        MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    assert "MistralForCausalLM" in packed_support(mistral)
    loss, metrics = preference_loss(mistral, batch, LossConfig("simpo"), layout="auto")  # padded
    padded, _ = preference_loss(mistral, batch, LossConfig("simpo"), layout="padded")
    assert torch.equal(loss, padded)


def test_train_uses_the_packed_layout_and_says_so(tokenizer, monkeypatch, capsys):
    import simplepo_helpers.training as training

    layouts = []
    forward = training._forward
    monkeypatch.setattr(training, "_forward", lambda *a, **k: layouts.append(forward(*a, **k)) or layouts[-1])
    model = build_test_model(len(tokenizer))
    padded_model = copy.deepcopy(model)
    config = TrainConfig(max_steps=2, batch_size=3, learning_rate=1e-3, warmup_ratio=0.0)
    from simplepo_helpers.runtime.device import DevicePolicy

    cpu = DevicePolicy(torch.device("cpu"), torch.float32, None, False, "cpu")
    result = train(model, tokenizer, EXAMPLES, config, device_policy=cpu, progress=True)
    assert [out["layout"] for out in layouts] == ["packed", "packed"]
    assert "batch layout: packed" in capsys.readouterr().out
    # the same run on the padded path: the same losses up to float rounding
    monkeypatch.setattr(training.fast, "choose_layout", lambda *models, batch=None: "padded")
    padded = train(padded_model, tokenizer, EXAMPLES, config, device_policy=cpu, progress=False)
    assert [out["layout"] for out in layouts[2:]] == ["padded", "padded"]
    for row, expected in zip(result.history, padded.history, strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], abs=LOGPS_ATOL)
