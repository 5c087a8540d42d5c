"""token_logps / sequence_logps against a naive loop, hand values, invariances, errors and memory bounds."""

from __future__ import annotations

import math

import pytest
import torch

import simplepo_helpers.logps as logps_module
from simplepo_helpers import sequence_logps, token_logps

IGNORE = -100


def naive_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, *, average: bool) -> torch.Tensor:
    """Reference: a Python loop, one full log_softmax per position (position t-1 scores label t)."""
    results = []
    for row in range(labels.shape[0]):
        total, count = 0.0, 0
        for t in range(1, labels.shape[1]):
            label = int(labels[row, t])
            if label != IGNORE:
                total += float(torch.log_softmax(logits[row, t - 1].double(), dim=-1)[label])
                count += 1
        results.append(total / count if average else total)
    return torch.tensor(results, dtype=torch.float64)


def make_batch(
    *, batch: int = 3, length: int = 9, vocab: int = 11, seed: int = 0, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and labels with a prompt of varying length, a response and right padding per row."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=generator, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    for row in range(batch):
        prompt_len = 1 + row % 3
        response_end = length - row  # rows after the first are right-padded
        labels[row, :prompt_len] = IGNORE
        labels[row, response_end:] = IGNORE
    return logits, labels


@pytest.mark.parametrize("average", [False, True])
def test_matches_naive_loop(average):
    logits, labels = make_batch()
    expected = naive_sequence_logps(logits, labels, average=average)
    torch.testing.assert_close(
        sequence_logps(logits, labels, length_normalize=average), expected, rtol=1e-12, atol=1e-12
    )


def test_token_logps_values_and_mask():
    logits, labels = make_batch(seed=1)
    per_token, mask = token_logps(logits, labels)
    assert per_token.shape == mask.shape == (3, 8)
    assert mask.dtype == torch.bool
    torch.testing.assert_close(mask, labels[:, 1:] != IGNORE)
    for row, t in [(0, 0), (0, 4), (1, 3), (2, 5)]:
        label = int(labels[row, t + 1])
        expected = torch.log_softmax(logits[row, t], dim=-1)[label] if label != IGNORE else torch.tensor(0.0)
        torch.testing.assert_close(per_token[row, t], expected.double())
    assert torch.all(per_token[~mask] == 0)


def test_hand_computed_uniform_logits():
    # equal logits over V tokens -> each response token has log-prob -ln V
    vocab = 4
    logits = torch.zeros(2, 5, vocab, dtype=torch.float64)
    labels = torch.tensor([[IGNORE, IGNORE, 1, 2, 3], [IGNORE, 0, IGNORE, IGNORE, IGNORE]])
    summed = sequence_logps(logits, labels, length_normalize=False)
    torch.testing.assert_close(summed, torch.tensor([-3 * math.log(4), -math.log(4)], dtype=torch.float64))
    averaged = sequence_logps(logits, labels, length_normalize=True)
    torch.testing.assert_close(averaged, torch.full((2,), -math.log(4), dtype=torch.float64))


def test_causal_shift_uses_previous_position():
    # only position 0 predicts label 1; make it certain of token 2, every other position uniform
    logits = torch.zeros(1, 3, 3, dtype=torch.float64)
    logits[0, 0, 2] = 50.0
    labels = torch.tensor([[IGNORE, 2, IGNORE]])
    assert abs(float(sequence_logps(logits, labels, length_normalize=False)[0])) < 1e-20
    labels_unshifted_reading = torch.tensor([[IGNORE, IGNORE, 2]])  # scored by the uniform position 1
    torch.testing.assert_close(
        sequence_logps(logits, labels_unshifted_reading, length_normalize=False),
        torch.tensor([-math.log(3)], dtype=torch.float64),
    )


@pytest.mark.parametrize("average", [False, True])
def test_extra_right_padding_changes_nothing(average):
    logits, labels = make_batch(seed=2)
    generator = torch.Generator().manual_seed(3)
    extra = torch.randn(3, 4, logits.shape[-1], generator=generator, dtype=torch.float64)
    padded_logits = torch.cat([logits, extra], dim=1)
    padded_labels = torch.cat([labels, torch.full((3, 4), IGNORE)], dim=1)
    torch.testing.assert_close(
        sequence_logps(padded_logits, padded_labels, length_normalize=average),
        sequence_logps(logits, labels, length_normalize=average),
        rtol=1e-14,
        atol=1e-14,
    )


@pytest.mark.parametrize("average", [False, True])
def test_prompt_and_padding_positions_get_zero_gradient(average):
    logits, labels = make_batch(seed=4)
    logits.requires_grad_(True)
    sequence_logps(logits, labels, length_normalize=average).sum().backward()
    scored = torch.zeros(labels.shape, dtype=torch.bool)
    scored[:, :-1] = labels[:, 1:] != IGNORE  # position t is scored iff label t+1 is a response token
    assert torch.all(logits.grad[~scored] == 0)
    assert torch.all(logits.grad[scored].abs().sum(-1) > 0)


def test_permuting_the_batch_permutes_the_output():
    logits, labels = make_batch(batch=4, seed=5)
    permutation = torch.tensor([2, 0, 3, 1])
    original = sequence_logps(logits, labels, length_normalize=True)
    permuted = sequence_logps(logits[permutation], labels[permutation], length_normalize=True)
    torch.testing.assert_close(permuted, original[permutation], rtol=0, atol=0)


def test_empty_response_raises_naming_the_row():
    logits, labels = make_batch(seed=6)
    labels[1] = IGNORE
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        sequence_logps(logits, labels, length_normalize=True)


def test_label_only_at_first_position_counts_as_empty():
    # labels[:, 0] is never predicted, so a row whose only label sits there has no scored token
    logits, labels = make_batch(seed=7)
    labels[2] = IGNORE
    labels[2, 0] = 5
    with pytest.raises(ValueError, match=r"\[2\]"):
        sequence_logps(logits, labels, length_normalize=False)


def test_label_outside_vocabulary_raises_naming_the_row():
    logits, labels = make_batch(seed=8)
    labels[2, 6] = logits.shape[-1]  # one past the last id
    with pytest.raises(ValueError, match="row 2"):
        sequence_logps(logits, labels, length_normalize=False)
    labels[2, 6] = -1  # negative but not ignore_index
    with pytest.raises(ValueError, match="row 2"):
        sequence_logps(logits, labels, length_normalize=False)


def test_shape_mismatch_raises():
    logits, labels = make_batch()
    with pytest.raises(ValueError, match="does not match"):
        sequence_logps(logits, labels[:, :-1], length_normalize=True)
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        sequence_logps(logits[0], labels[0], length_normalize=True)


def test_custom_ignore_index():
    logits, labels = make_batch(seed=9)
    relabelled = labels.masked_fill(labels == IGNORE, -1)
    torch.testing.assert_close(
        sequence_logps(logits, relabelled, length_normalize=True, ignore_index=-1),
        sequence_logps(logits, labels, length_normalize=True),
    )


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_logits_give_float32_close_to_float32_computation(half):
    logits, labels = make_batch(batch=4, length=12, vocab=50, seed=10, dtype=half)
    result = sequence_logps(logits, labels, length_normalize=True)
    assert result.dtype == torch.float32
    # the upcast is exact, so the float32 computation on the same values must agree to float32 precision
    expected = sequence_logps(logits.float(), labels, length_normalize=True)
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-6)


def test_output_dtype_follows_float64_logits():
    logits, labels = make_batch(dtype=torch.float64)
    assert sequence_logps(logits, labels, length_normalize=True).dtype == torch.float64


def test_logits_without_grad_build_no_graph():
    logits, labels = make_batch(dtype=torch.float32)
    assert not sequence_logps(logits, labels, length_normalize=True).requires_grad


def test_chunk_size_follows_the_vocabulary(monkeypatch):
    monkeypatch.setattr(logps_module, "CHUNK_ELEMENTS", 1000)
    assert logps_module.default_chunk_tokens(100) == 10
    assert logps_module.default_chunk_tokens(5000) == 1  # never zero positions


def test_gradient_passes_gradcheck():
    logits, labels = make_batch(batch=2, length=6, vocab=7, seed=12, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: sequence_logps(x, labels, length_normalize=True), (logits,))


def test_is_log_softmax_then_gather():
    logits, labels = make_batch(batch=3, length=10, vocab=30, seed=13, dtype=torch.float32)
    targets, mask = labels[:, 1:], labels[:, 1:] != IGNORE
    picked = torch.log_softmax(logits[:, :-1], -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    per_token, kit_mask = token_logps(logits, labels)
    assert torch.equal(kit_mask, mask)
    torch.testing.assert_close(per_token, picked * mask)
